"""`dvc plots show` renders offline: the page from .dvc/config's plots.html_template (vega, vega-lite and
vega-embed inlined) in the real Chromium with the network shut off draws every plot dvc.yaml declares.

One module-scoped tiny run in a copy of the repo (`rnnlab repro`, as `make run` does, on shrunk
params), then `dvc plots show`. Chromium is told to use a proxy that refuses everything and a
resolver that finds no host, so a page that needed the network would draw nothing; a control
run of DVC's own page (vega from a CDN) shows that it does draw nothing under those flags.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from lxml import html

from bench.harness import VENV_BIN, copy_repo, run, tool_env, write_params
from tests.conftest import LM_PARAMS
from tests.test_schedule_server import CHROMIUM, chromium, wait_for

# No network: every request goes to a proxy on a closed port, and no host name resolves.
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
PAGE = ["--window-size=1400,2400", "--virtual-time-budget=15000"]
RENDER_TIMEOUT = 180  # seconds for the page to draw every plot; one load of a few seconds here
# Skip-gram, shrunk like LM_PARAMS' models: a few steps of a small model.
PARAMS = {
    **LM_PARAMS,
    "skipgram": {"emb_dim": 16, "negatives": 8, "batch_size": 64, "valid_pairs": 500, "epochs": 2, "epoch_size": 10},
}
# Vega's SVG groups of data marks: lines and bars ("role-mark"), not axes, legends, titles or hover points.
MARKS = ("mark-line", "mark-rect")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed: `make test` installs Debian's package "
        "when run as root with apt (apt-get install chromium); otherwise install it to run this check",
    ),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project after a tiny run of every stage: `rnnlab repro` (one Prefect server for the run)."""
    root = copy_repo(tmp_path_factory.mktemp("plots") / "repo")
    write_params(root / "params.yaml", PARAMS)
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):  # the project's prefect.toml decides: .prefect/ in the copy
        env.pop(name, None)
    run(root, str(VENV_BIN / "rnnlab"), "repro", env=env)
    return root


def declared(root: Path, dvc_yaml: str = "dvc.yaml") -> dict[str, dict]:
    """The top-level plots of ``dvc_yaml``, by name."""
    return {name: d for item in yaml.safe_load((root / dvc_yaml).read_text())["plots"] for name, d in item.items()}


def expected_marks(root: Path, plot: dict) -> int:
    """How many data marks a plot must draw at least: a line per y series, a bar per row of a bar chart."""
    if plot["template"] == "bars_by_split":
        (file,) = plot["y"]
        return len(json.loads((root / file).read_text()))  # a row per bar
    return sum(len(f) if isinstance(f, list) else 1 for f in plot["y"].values())


def drawn(dom: str, plot_id: str) -> int:
    """The data marks vega drew as SVG in the element ``plot_id``: paths with a shape, in mark groups."""
    box = html.fromstring(dom).get_element_by_id(plot_id, None)
    if box is None:
        return 0
    kinds = " or ".join(f"contains(@class, '{m}')" for m in MARKS)
    paths = box.xpath(
        f".//*[local-name()='g'][contains(@class, 'role-mark')][{kinds}]/*[local-name()='path'][string-length(@d) > 2]"
    )
    return len(paths)


def dump_dom(page: Path, user_data: Path) -> str:
    return chromium(*OFFLINE, *PAGE, "--dump-dom", page.as_uri(), user_data=user_data).stdout


def test_the_plots_page_draws_every_declared_plot_offline(repo: Path, tmp_path: Path) -> None:
    shown = run(repo, "dvc", "plots", "show")
    page = repo / "dvc_plots/index.html"
    assert shown.stdout.strip() == page.as_uri(), shown.stdout + shown.stderr
    text = page.read_text(encoding="utf-8")
    # Nothing to fetch: no script, style sheet, image or frame from elsewhere, no CDN.
    external = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text, re.I)
    assert not external and "cdn.jsdelivr" not in text and "@import" not in text, external

    plots = declared(repo)
    want = {name: expected_marks(repo, plot) for name, plot in plots.items()}
    assert set(want) >= {
        f"{lvl}-{kind}" for lvl in ("word", "char") for kind in ("loss", "loss-time", "lr", "perplexity")
    }
    attempts = iter(range(1_000_000))

    def all_drawn() -> dict[str, int] | None:
        dom = dump_dom(page, tmp_path / f"chromium-{next(attempts)}")
        got = {name: drawn(dom, name) for name in plots}
        return got if all(got[n] >= want[n] for n in plots) else None

    got = wait_for(
        f"Chromium, offline, to draw every plot of dvc.yaml in {page} (marks: at least {want})",
        all_drawn,
        RENDER_TIMEOUT,
        log=None,
    )
    print("marks drawn per plot", got)

    # The side tasks' plots (tasks/dvc.yaml) have no data in this run: left out, not empty boxes.
    dom = dump_dom(page, tmp_path / "chromium-tasks")
    for name in declared(repo, "tasks/dvc.yaml"):
        box = html.fromstring(dom).get_element_by_id(name)
        assert "display: none" in (box.get("style") or ""), name

    folder = Path(os.environ.get("RNNLAB_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "dvc-plots-offline.png"
    proc = chromium(*OFFLINE, *PAGE, f"--screenshot={shot}", page.as_uri(), user_data=tmp_path / "chromium-shot")
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-3000:]
    print(f"screenshot of {page}: {shot}")


def test_the_flags_keep_chromium_offline_dvcs_own_page_draws_nothing(repo: Path, tmp_path: Path) -> None:
    """The control: DVC's default page loads vega from a CDN, so under the same flags it stays blank."""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "dvc-default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    out = tmp_path / "default-page"
    run(repo, "dvc", "plots", "show", "--html-template", str(default), "--out", str(out))
    page = out / "index.html"
    assert "cdn.jsdelivr.net/npm/vega" in page.read_text(encoding="utf-8")
    dom = html.fromstring(dump_dom(page, tmp_path / "chromium"))
    assert dom.get_element_by_id("word-loss") is not None  # the page loaded, its plots' boxes are there
    assert all(drawn(html.tostring(dom, encoding="unicode"), name) == 0 for name in declared(repo))
