"""Re-take the README's two screenshots from a real run: a terminal during `make run`, and the plots page.

    .venv/bin/python docs/img/capture.py                 # docs/img/make-run.png and docs/img/plots-offline.png
    .venv/bin/python docs/img/capture.py --keep /tmp/cap # keep the repo copy, every terminal frame and the HTML

It copies the project (bench/harness.py ``copy_repo``: tracked and untracked files, as a fresh git and
DVC repo) into a temporary folder and runs ``rnnlab repro`` there, which is what ``make run`` runs
once the venv exists (``make run`` in the copy would first build a venv of its own), in a tmux terminal
of ``--cols`` × ``--rows``. The terminal is read every ``--every`` seconds; the frame taken ``--delay``
seconds after ``--when`` first appears (by default the word model's training) becomes HTML with its
colours and is photographed by headless Chromium. Then ``dvc plots show`` in the copy, and a photograph
of that page with the network shut off. pngquant and optipng shrink both PNGs when they are installed
(``apt-get install pngquant optipng``); each must stay under 200 KB for the README.

Needs tmux and Chromium (``make chromium``). The run uses params.yaml as it is: the default run.
"""

from __future__ import annotations

import argparse
import html
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages (bench.harness) import from the root

from bench.harness import VENV_BIN, copy_repo, run, tool_env  # noqa: E402

OUT = ROOT / "docs" / "img"
SOCKET = "rnnlab-capture"  # a tmux server of its own: never the user's sessions
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"]
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
LIMIT = 200_000  # bytes: the README's budget per picture
RUN_TIMEOUT = 1800  # seconds for the whole default run; about 80 s on 2 idle cores

# A dark terminal's 16 colours (xterm's order: black, red, green, yellow, blue, magenta, cyan, white; then bright).
PALETTE = [
    "#1e1e1e", "#f14c4c", "#23d18b", "#e5e510", "#3b8eea", "#d670d6", "#29b8db", "#cccccc",
    "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#e5e5e5",
]  # fmt: skip
FG, BG = "#d4d4d4", "#1e1e1e"
FONT_PX, CHAR_W, LINE_H, PAD, BAR = 14, 0.602, 1.3, 14, 30  # DejaVu Sans Mono advances 0.602 em per cell


@dataclass
class Style:
    fg: str | None = None
    bg: str | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    reverse: bool = False

    def css(self) -> str:
        fg, bg = (self.bg or BG, self.fg or FG) if self.reverse else (self.fg, self.bg)
        rules = [f"color:{fg}" if fg else "", f"background:{bg}" if bg else ""]
        rules += ["font-weight:bold" if self.bold else "", "opacity:0.7" if self.dim else ""]
        rules += ["font-style:italic" if self.italic else "", "text-decoration:underline" if self.underline else ""]
        return ";".join(r for r in rules if r)


def color_256(n: int) -> str:
    """xterm's 256-colour table: 16 named, a 6×6×6 cube, 24 greys."""
    if n < 16:
        return PALETTE[n]
    if n < 232:
        r, g, b = ((n - 16) // 36, (n - 16) // 6 % 6, (n - 16) % 6)
        return "#" + "".join(f"{0 if c == 0 else 55 + 40 * c:02x}" for c in (r, g, b))
    return "#" + f"{8 + 10 * (n - 232):02x}" * 3


def apply_sgr(style: Style, params: list[int]) -> Style:
    """The style after one SGR escape (``ESC [ params m``)."""
    i = 0
    while i < len(params):
        p = params[i]
        if p == 0:
            style = Style()
        elif p in (1, 2, 3, 4, 7):
            setattr(style, {1: "bold", 2: "dim", 3: "italic", 4: "underline", 7: "reverse"}[p], True)
        elif p == 22:
            style.bold = style.dim = False
        elif p in (23, 24, 27):
            setattr(style, {23: "italic", 24: "underline", 27: "reverse"}[p], False)
        elif 30 <= p <= 37 or 90 <= p <= 97:
            style.fg = PALETTE[p - 30 if p < 90 else p - 82]
        elif 40 <= p <= 47 or 100 <= p <= 107:
            style.bg = PALETTE[p - 40 if p < 100 else p - 92]
        elif p in (39, 49):
            setattr(style, "fg" if p == 39 else "bg", None)
        elif p in (38, 48) and i + 1 < len(params):  # 38;5;n or 38;2;r;g;b
            value = None
            if params[i + 1] == 5 and i + 2 < len(params):
                value, i = color_256(params[i + 2]), i + 2
            elif params[i + 1] == 2 and i + 4 < len(params):
                value, i = "#" + "".join(f"{c:02x}" for c in params[i + 2 : i + 5]), i + 4
            setattr(style, "fg" if p == 38 else "bg", value)
        i += 1
    return style


def ansi_to_html(text: str) -> str:
    """A terminal frame with SGR escapes (tmux capture-pane -e) as HTML spans; other escapes dropped."""
    out, style = [], Style()
    for part in re.split(r"(\x1b\[[0-9;:?]*[A-Za-z])", text):
        if part.startswith("\x1b["):
            if part.endswith("m"):
                style = apply_sgr(style, [int(x) for x in re.split("[;:]", part[2:-1]) if x.isdigit()] or [0])
            continue
        if part:
            css = style.css()
            out.append(f'<span style="{css}">{html.escape(part)}</span>' if css else html.escape(part))
    return "".join(out)


def terminal_page(frame: str, cols: int, rows: int, title: str) -> tuple[str, tuple[int, int]]:
    """The frame as a page drawn like a terminal window, and the window size that fits it exactly."""
    width = round(cols * CHAR_W * FONT_PX) + 2 * PAD
    height = round(rows * LINE_H * FONT_PX) + 2 * PAD + BAR
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: {BG}; }}
.bar {{ height: {BAR}px; background: #323233; color: #b8b8b8; font: 13px system-ui, sans-serif;
        display: flex; align-items: center; justify-content: center; position: relative; }}
.dots {{ position: absolute; left: 12px; display: flex; gap: 8px; }}
.dots i {{ width: 12px; height: 12px; border-radius: 50%; display: block; }}
pre {{ margin: 0; padding: {PAD}px; color: {FG}; font: {FONT_PX}px/{LINE_H} "DejaVu Sans Mono", monospace;
       white-space: pre; overflow: hidden; }}
</style></head><body>
<div class="bar"><span class="dots"><i style="background:#ff5f57"></i><i style="background:#febc2e"></i>
<i style="background:#28c840"></i></span>{html.escape(title)}</div>
<pre>{ansi_to_html(frame)}</pre></body></html>"""
    return page, (width, height)


def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=check).stdout


def record_run(repo: Path, cols: int, rows: int, every: float, frames_dir: Path | None) -> list[tuple[float, str]]:
    """Run ``rnnlab repro`` in ``repo`` in a fresh tmux terminal; return its frames (seconds since start, screen)."""
    env = tool_env()
    for name in ("PREFECT_HOME", "PREFECT_API_URL"):  # the project's prefect.toml decides, as for a user
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    # The pane runs the command itself (a prompt line printed first, as a shell would show it) and stays
    # open when it ends (remain-on-exit), so the last frame is the run's last screen.
    command = ["env", "-u", "PREFECT_HOME", "-u", "PREFECT_API_URL"]
    command += [f"{k}={v}" for k, v in env.items() if k in ("PATH", "TERM", "PYTHONUNBUFFERED") or "ANALYTICS" in k]
    command += ["sh", "-c", "printf '$ rnnlab repro\\n'; exec rnnlab repro"]
    tmux("kill-server", check=False)
    tmux("new-session", "-d", "-s", "run", "-x", str(cols), "-y", str(rows), "-c", str(repo), shlex.join(command),
         ";", "set-option", "-t", "run", "remain-on-exit", "on")  # fmt: skip
    frames: list[tuple[float, str]] = []
    try:
        start = time.monotonic()
        while time.monotonic() - start < RUN_TIMEOUT:
            time.sleep(every)  # the recording's frame rate, not a wait for a condition
            frames.append((time.monotonic() - start, tmux("capture-pane", "-p", "-e", "-t", "run")))
            if frames_dir:
                (frames_dir / f"{frames[-1][0]:08.1f}.ansi").write_text(frames[-1][1], encoding="utf-8")
            status = tmux("display-message", "-p", "-t", "run", "#{pane_dead} #{pane_dead_status}").split()
            if status and status[0] == "1":
                if status[1:] not in ([], ["0"]):  # tmux < 3.4 has no exit status: its last frame tells
                    raise SystemExit(f"error: rnnlab repro in {repo} failed (exit {status[1:]}); see its last frame")
                return frames
        raise SystemExit(f"error: rnnlab repro in {repo} ran past {RUN_TIMEOUT} s; see the frames")
    finally:
        tmux("kill-server", check=False)


def pick(frames: list[tuple[float, str]], when: str, delay: float) -> str:
    """The first frame ``delay`` s after ``when`` first shows (the last frame if it never does)."""
    seen = next((t for t, screen in frames if re.search(when, re.sub(r"\x1b\[[0-9;:?]*[A-Za-z]", "", screen))), None)
    if seen is None:
        print(f"warning: {when!r} never appeared; taking the last frame", file=sys.stderr)
        return frames[-1][1]
    return next((screen for t, screen in frames if t >= seen + delay), frames[-1][1])


def screenshot(url: str, size: tuple[int, int], shot: Path, work: Path, offline: bool = False) -> None:
    if CHROMIUM is None:
        raise SystemExit("error: chromium is not installed: make chromium (or apt-get install chromium)")
    args = [*CHROMIUM_FLAGS, *(OFFLINE if offline else []), f"--user-data-dir={work / ('chromium-' + shot.stem)}"]
    args += [f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=15000", f"--screenshot={shot}", url]
    subprocess.run([CHROMIUM, *args], capture_output=True, text=True, timeout=300, check=True)


def shrink(png: Path) -> None:
    """Fewer colours (pngquant), then lossless recompression (optipng), when they are installed."""
    if shutil.which("pngquant"):
        subprocess.run(["pngquant", "--force", "--skip-if-larger", "--strip", "--speed", "1", "--quality", "70-95",
                        "--output", str(png), str(png)], check=False)  # fmt: skip
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o5", "-strip", "all", str(png)], check=True)
    size = png.stat().st_size
    print(f"{png}: {size:,} bytes{'' if size <= LIMIT else f' (over the {LIMIT:,} budget)'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs (default: %(default)s)")
    ap.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder, removed)")
    ap.add_argument("--cols", type=int, default=110)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between terminal frames")
    ap.add_argument("--when", default=r"Running stage 'lm@char'", help="regex: the moment to show")
    ap.add_argument("--delay", type=float, default=45.0, help="seconds after --when first shows")
    ap.add_argument("--plots-size", default="1160,900", help="the plots page's window, WIDTH,HEIGHT")
    ap.add_argument("--reuse", action="store_true", help="with --keep: pick from its frames again, no new run")
    args = ap.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="rnnlab-capture-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        repo, frames_dir = work / "repo", work / "frames" if args.keep else None
        if args.reuse and frames_dir:  # the name of a frame is its time in the run
            frames = [(float(f.stem), f.read_text(encoding="utf-8")) for f in sorted(frames_dir.glob("*.ansi"))]
        else:
            copy_repo(repo)
            if frames_dir:
                frames_dir.mkdir(exist_ok=True)
            frames = record_run(repo, args.cols, args.rows, args.every, frames_dir)
        page, size = terminal_page(pick(frames, args.when, args.delay), args.cols, args.rows, "make run")
        (work / "terminal.html").write_text(page, encoding="utf-8")
        args.out.mkdir(parents=True, exist_ok=True)
        screenshot((work / "terminal.html").as_uri(), size, args.out / "make-run.png", work)
        shrink(args.out / "make-run.png")

        run(repo, str(VENV_BIN / "dvc"), "plots", "show")
        w, h = (int(x) for x in args.plots_size.split(","))
        page_url = (repo / "dvc_plots/index.html").as_uri()
        screenshot(page_url, (w, h), args.out / "plots-offline.png", work, offline=True)
        shrink(args.out / "plots-offline.png")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
