"""The default pipeline under real DVC on a shrunk config: `rnnlab repro` with one Prefect server for the
whole run, the runs it leaves for the UI, DVCLive's metrics and plots, the plots page drawn offline,
and the rerun rules of the lm stage under plain `dvc repro` and `dvc exp run -S` (each flow then starts
its own temporary server). One tiny run of every stage serves them all.

`dvc plots show` renders offline: the page from .dvc/config's plots.html_template (vega, vega-lite and
vega-embed inlined) in the real Chromium with the network shut off draws every plot dvc.yaml declares.
Chromium is told to use a proxy that refuses everything and a resolver that finds no host, so a page
that needed the network would draw nothing; a control run of DVC's own page (vega from a CDN) shows
that it does draw nothing under those flags.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from lxml import html

from bench.harness import GIT, PREFECT_HTTP, VENV_BIN, copy_repo, run, tool_env, write_params
from ops.server import local_server, port_taken
from pipeline.io import read_json
from tests.conftest import LM_PARAMS
from tests.support import chromium, needs_chromium, ran, wait_for

DATA_STAGES = {"corpus", *(f"{s}@{lvl}" for s in ("tokenize", "vocab", "windows") for lvl in ("word", "char"))}
MODEL_STAGES = {"lm@word", "lm@char", "skipgram"}


@dataclass(frozen=True)
class Built:
    repo: Path
    env: dict[str, str]
    output: str  # what `rnnlab repro` printed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    repo = copy_repo(tmp_path_factory.mktemp("lm-dvc") / "repo")
    write_params(repo / "params.yaml", LM_PARAMS)
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):  # the project's prefect.toml decides: .prefect/ in the repo
        env.pop(name, None)
    proc = run(repo, str(VENV_BIN / "rnnlab"), "repro", env=env)
    yield Built(repo, env, proc.stdout + proc.stderr)


@pytest.mark.slow
def test_rnnlab_repro_runs_every_stage_against_one_server_then_stops_it(built: Built) -> None:
    assert ran(built.output) == DATA_STAGES | MODEL_STAGES
    (api,) = re.findall(r"started a Prefect server for this run at (http://127\.0\.0\.1:\d+/api)", built.output)
    assert "Starting temporary server" not in built.output  # no stage started a server of its own
    assert not port_taken(int(api.rsplit(":", 1)[1].split("/")[0]))  # and the run's server is gone
    for stage in DATA_STAGES | MODEL_STAGES:  # each stage reported its own work (bench/repro.py reads these)
        assert re.search(rf"rnnlab: stage {re.escape(stage)} worked [0-9.]+ s", built.output), stage


@pytest.mark.slow
def test_the_runs_persist_for_a_later_server(built: Built, tmp_path: Path) -> None:
    """What `make server` then shows: every flow run of every stage, from the project's .prefect/."""
    env = {**built.env, "PREFECT_HOME": str(built.repo / ".prefect")}
    with local_server(log=tmp_path / "server.log", env=env) as api:
        runs = PREFECT_HTTP.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
        flows = {f["id"]: f["name"] for f in PREFECT_HTTP.post(f"{api}/flows/filter", json={}, timeout=30).json()}
        ui = PREFECT_HTTP.get(f"{api.removesuffix('/api')}/ui-settings", timeout=30).json()
    names = sorted(flows[r["flow_id"]] for r in runs)
    # Per level: the lm flow and its four subflows; then skipgram.
    assert names == sorted(["lm", "train", "ngram", "evaluate", "sample"] * 2 + ["skipgram"]), names
    assert {r["state"]["type"] for r in runs} == {"COMPLETED"}
    assert ui["api_url"] == api  # the UI of a server on another port than 4200 talks to its own API


@pytest.mark.slow
def test_dvclive_metrics_fit_a_screen_and_plots_have_one_row_per_epoch(built: Built) -> None:
    shown = run(built.repo, "dvc", "metrics", "show", env=built.env)
    assert "failed to load" not in shown.stdout + shown.stderr  # tasks/dvc.yaml never ran: no warning
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= 140, shown.stdout  # seven flat columns, the best epoch's among them
    header = lines[0].split()
    assert header[0] == "Path" and {
        "test_perplexity",
        "test_bits",
        "oracle_gap",
        "ngram_perplexity",
        "best_epoch",
        "valid_loss",
    } <= set(header)
    oracle = read_json(built.repo / "data/corpus/oracle.json")
    for level in ("word", "char"):
        art = built.repo / "artifacts" / level
        evaluation = read_json(art / "evaluation.json")
        for split in ("valid", "test"):
            assert evaluation[split]["tokens"] == oracle[level][split]["targets"]
            assert evaluation[split]["oracle_gap"] > 0.99
        metrics = read_json(art / "metrics.json")
        assert metrics["test_perplexity"] == evaluation["test"]["perplexity"]
        assert metrics["best_epoch"] == evaluation["test"]["epoch"]
        for curve in ("train_loss", "valid_loss"):
            assert (art / "plots/metrics" / f"{curve}.tsv").read_text().count("\n") == 1 + 2  # header + 2 epochs
        assert len((art / "samples.txt").read_text().splitlines()) == 3  # 2 samples + the greedy line
    # The data stages' statistics are files to open, not metrics that widen the table.
    corpus = run(built.repo, "dvc", "metrics", "show", "data/metrics/corpus.json", env=built.env).stdout
    assert "splits.train.docs" in corpus


# --- the plots page, offline ---------------------------------------------------------------------

# No network: every request goes to a proxy on a closed port, and no host name resolves.
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
PAGE = ["--window-size=1400,2400", "--virtual-time-budget=15000"]
RENDER_TIMEOUT = 180  # seconds for the page to draw every plot; one load of a few seconds here
# Vega's SVG groups of data marks: lines and bars ("role-mark"), not axes, legends, titles or hover points.
MARKS = ("mark-line", "mark-rect")


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


@pytest.mark.slow
@needs_chromium
def test_the_plots_page_draws_every_declared_plot_offline(built: Built, tmp_path: Path) -> None:
    repo = built.repo
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


@pytest.mark.slow
@needs_chromium
def test_the_flags_keep_chromium_offline_dvcs_own_page_draws_nothing(built: Built, tmp_path: Path) -> None:
    """The control: DVC's default page loads vega from a CDN, so under the same flags it stays blank."""
    repo = built.repo
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


# --- rerun rules (last: they change the repository) ------------------------------------------------


@pytest.mark.slow
def test_plain_dvc_repro_keeps_the_rerun_rules(built: Built, prefect_api: str) -> None:
    env = built.env  # no PREFECT_API_URL: a flow stage starts a temporary server (prefect.toml's deadline)
    assert ran(run(built.repo, "dvc", "repro", env=env).stdout) == set()  # nothing changed: nothing runs

    # Forced: DVC runs the stage, and the training inside is a cache hit on its fingerprint.
    forced = run(built.repo, "dvc", "repro", "-f", "-s", "lm@word", env=env)
    assert "Starting temporary server" in forced.stdout + forced.stderr
    assert "cache hit: checkpoint" in forced.stdout + forced.stderr and "epoch 1/2" not in forced.stderr

    env = {**env, "PREFECT_API_URL": prefect_api}  # the rest records to a server, as `rnnlab dvc exp run` does

    # A sampling param re-samples without retraining; a training param retrains; char is untouched.
    run(built.repo, "git", "add", "-A", env=env)
    run(built.repo, *GIT, "commit", "-qm", "baseline: params and dvc.lock", env=env)
    samples = (built.repo / "artifacts/word/samples.txt").read_text()
    exp = run(built.repo, "dvc", "exp", "run", "-S", "sample.word.temperature=0.5", env=env)
    assert ran(exp.stdout) == {"lm@word"} and "cache hit: checkpoint" in exp.stdout + exp.stderr
    assert (built.repo / "artifacts/word/samples.txt").read_text() != samples
    exp = run(built.repo, "dvc", "exp", "run", "-S", "train.word.lr=0.02", env=env)
    assert ran(exp.stdout) == {"lm@word"} and "epoch 1/2" in exp.stdout + exp.stderr
    diff = run(built.repo, "dvc", "metrics", "diff", env=env).stdout
    assert "artifacts/word/metrics.json" in diff and "test_perplexity" in diff
    assert "artifacts/char/metrics.json" not in diff

    # `dvc exp show --only-changed`: the experiments' varying params beside the metrics, a few columns.
    table = run(built.repo, "dvc", "exp", "show", "--only-changed", "--csv", env=env).stdout
    columns = table.splitlines()[0].split(",")
    assert {"sample.word.temperature", "train.word.lr"} <= set(columns) and len(columns) < 30, columns
