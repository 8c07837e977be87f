"""Wikipedia dump extraction speed, as a ratio against plain bz2 decompression of the same file.

    .venv/bin/python -m bench.wikipedia                 # the gensim enwiki fragment in ../shared/data
    .venv/bin/python -m bench.wikipedia --file dump.xml.bz2 --repeat 5
    .venv/bin/python -m bench.wikipedia --markup        # also: hand-written stripper vs mwparserfromhell
    .venv/bin/python -m bench.wikipedia --hostile       # only: pathological pages vs the real fragment

Every figure is MB of *decompressed XML* per second (best of ``--repeat`` runs),
measured in this process, one after the other:

- ``bz2 (python)``: ``bz2.open(...).read()`` in chunks, nothing else: the plain decoder.
- ``bzip2 -dc``: the bzip2 program writing to a pipe that is drained and dropped.
- ``extractor``: ``open_dump`` + ``iter_articles``: decompression, lxml iterparse, page
  filter and markup stripping, every article's text produced. One row per decoder.

The target is extractor / plain decode ≥ 0.8. The extractor overlaps decompression
(another process or thread) with parsing and stripping (this thread), so on two
free cores it is bound by whichever of the two is slower.

``--hostile`` strips pathological pages of 50 KB, 500 KB and 5 MB (bench/harness.py ``hostile_pages``:
unclosed tags, templates and links, 10,000-deep nesting) and prints each one's MB/s as a
ratio to ``strip_markup``'s MB/s on the real fragment's articles, all in this run, taking
turns. The target is ≥ 0.3 for every page: a hostile page costs at most a few times what
real text of its size costs, so no page can stall the corpus stage.
"""

from __future__ import annotations

import argparse
import bz2
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import KINDS
from pipeline.sources import dumpfiles, wikimarkup, wikipedia

ROOT = Path(__file__).resolve().parents[1]

DEFAULT = (
    ROOT.parent
    / "shared"
    / "data"
    / "wikipedia-xml"
    / ("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
)
CHUNK = 1 << 20


def interleaved(repeat: int, candidates: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds per run for each candidate, the candidates taking turns (round-robin).

    On a shared machine the load drifts; taking turns exposes every candidate to
    the same drift, so the ratios hold up better than the absolute speeds.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeat):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    return min(interleaved(repeat, {"x": fn})["x"])


def python_bz2(path: Path) -> int:
    n = 0
    with bz2.open(path, "rb") as f:
        while block := f.read(CHUNK):
            n += len(block)
    return n


def bzip2_program(path: Path) -> int:
    n = 0
    with subprocess.Popen(["bzip2", "-dc", "--", str(path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while block := proc.stdout.read(CHUNK):
            n += len(block)
    return n


def extract(path: Path, decoder: str) -> int:
    chars = 0
    with dumpfiles.open_dump(path, decoder=decoder) as stream:
        for article in wikipedia.iter_articles(stream, source=str(path)):
            chars += len(article.text)
    return chars


def cpu_seconds(path: Path, repeat: int) -> dict[str, float]:
    """CPU seconds (best of ``repeat``) of each stage alone: less sensitive to other load than wall time."""
    import io

    with bz2.open(path, "rb") as f:
        xml = f.read()
    out: dict[str, list[float]] = {"bz2 (python) decode": [], "bzip2 -dc decode": [], "parse + strip (no decode)": []}
    for _ in range(repeat):
        t0 = time.process_time()
        python_bz2(path)
        out["bz2 (python) decode"].append(time.process_time() - t0)
        if shutil.which("bzip2"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            bzip2_program(path)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out["bzip2 -dc decode"].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        t0 = time.process_time()
        for _article in wikipedia.iter_articles(io.BytesIO(xml), source=str(path)):
            pass
        out["parse + strip (no decode)"].append(time.process_time() - t0)
    return {k: min(v) for k, v in out.items() if v}


def article_wikitext(path: Path) -> list[str]:
    """The raw wikitext of the dump's articles (namespace 0, not redirects)."""
    from lxml import etree

    texts = []
    with dumpfiles.open_dump(path) as stream:
        for _, el in etree.iterparse(stream, tag="{*}page", resolve_entities=False, no_network=True, huge_tree=True):
            if el.findtext("{*}ns") == "0" and el.find("{*}redirect") is None:
                texts.append(el.findtext("{*}revision/{*}text") or "")
            el.clear()
    return texts


def hostile(path: Path, repeat: int) -> float:
    """Hostile pages' stripping speed as ratios to the real articles' in the same run; returns the worst."""
    texts = article_wikitext(path)
    real_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    sizes = {"50 KB": 50_000, "500 KB": 500_000, "5 MB": 5_000_000}
    pages = {(kind, label): make(size) for kind, make in KINDS.items() for label, size in sizes.items()}
    candidates: dict[str, Callable[[], object]] = {"real": lambda: [wikimarkup.strip_markup(t) for t in texts]}
    for (kind, label), page in pages.items():
        candidates[f"{kind} {label}"] = lambda page=page: wikimarkup.strip_markup(page)
    times = interleaved(repeat, candidates)  # taking turns: drift in the machine's load hits all alike
    real = real_mb / min(times["real"])
    print(f"\nhostile pages: strip_markup MB/s, best of {repeat} interleaved runs, as a ratio to the real fragment")
    print(f"  real: {len(texts)} articles of {path.name}, {real_mb:.2f} MB: {real:.1f} MB/s")
    print(f"  {'page':26s}" + "".join(f"{label:>16s}" for label in sizes))
    worst = float("inf")
    for kind in KINDS:
        cells = []
        for label in sizes:
            page = pages[(kind, label)]
            speed = len(page) / 1e6 / min(times[f"{kind} {label}"])  # ASCII: characters are bytes
            worst = min(worst, speed / real)
            cells.append(f"{speed:7.1f} {speed / real:5.2f}x")
        print(f"  {kind:26s}" + "".join(f"{c:>16s}" for c in cells))
    print(f"worst ratio {worst:.2f}x (target >= 0.3x); cells are MB/s and the ratio to the real fragment")
    return worst


def markup(path: Path, repeat: int) -> None:
    """Hand-written stripper vs mwparserfromhell on the same kept pages: speed and leftovers."""
    import mwparserfromhell

    texts = article_wikitext(path)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    tokens = ("{{", "}}", "[[", "]]", "{|", "|}", "<ref", "'''", "thumb|")
    print(f"\nmarkup stripping: {len(texts)} articles, {mb:.2f} MB of wikitext")
    print(f"{'stripper':28s} {'MB/s':>7s}  " + " ".join(f"{t:>6s}" for t in tokens))
    candidates: list[tuple[str, Callable[[str], str]]] = [
        ("hand-written (strip_markup)", wikimarkup.strip_markup),
        (
            f"mwparserfromhell {mwparserfromhell.__version__}",
            lambda t: mwparserfromhell.parse(t).strip_code(normalize=True, collapse=True),
        ),
    ]
    for name, fn in candidates:
        out: list[str] = []
        seconds = best_of(repeat, lambda out=out, fn=fn: out.__setitem__(slice(None), [fn(t) for t in texts]))
        joined = "\n".join(out)
        counts = " ".join(f"{joined.count(t):6d}" for t in tokens)
        print(f"{name:28s} {mb / seconds:7.1f}  {counts}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", type=Path, default=DEFAULT)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--markup", action="store_true", help="also compare markup strippers")
    p.add_argument("--hostile", action="store_true", help="only: pathological pages against the real fragment")
    args = p.parse_args(argv)
    path: Path = args.file
    if not path.is_file():
        print(f"{path}: not found", file=sys.stderr)
        return 2
    if args.hostile:
        hostile(path, max(1, min(args.repeat, 3)))
        return 0
    size = python_bz2(path)  # also warms the page cache
    mb = size / 1e6
    have_bzip2 = shutil.which("bzip2") is not None
    candidates: dict[str, Callable[[], object]] = {"bz2 (python), plain decode": lambda: python_bz2(path)}
    if have_bzip2:
        candidates["bzip2 -dc, plain decode"] = lambda: bzip2_program(path)
    for decoder in (["bzip2"] if have_bzip2 else []) + ["thread", "inline"]:
        candidates[f"extractor, decoder={decoder}"] = lambda d=decoder: extract(path, d)
    times = interleaved(args.repeat, candidates)
    best = {name: mb / min(t) for name, t in times.items()}
    median = {name: mb / statistics.median(t) for name, t in times.items()}
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB bz2 -> {mb:.2f} MB XML; {args.repeat} interleaved runs")
    print(f"  {'MB of XML per second':34s} {'best':>7s} {'median':>7s}")
    for name in candidates:
        print(f"  {name:34s} {best[name]:7.1f} {median[name]:7.1f}")
    auto = "extractor, decoder=" + ("bzip2" if have_bzip2 else "thread")
    for ref in [n for n in candidates if "plain decode" in n]:
        print(
            f"ratio {auto.split(', ')[1]} extractor / {ref.split(',')[0]}: best {best[auto] / best[ref]:.2f}, "
            f"median {median[auto] / median[ref]:.2f}  (target >= 0.8)"
        )
    cpu = cpu_seconds(path, args.repeat)
    print(f"  {'CPU-seconds per stage, as MB/s':34s}")
    for name, seconds in cpu.items():
        print(f"  {name:34s} {mb / seconds:7.1f}")
    if "bzip2 -dc decode" in cpu:
        bound = mb / max(cpu["bzip2 -dc decode"], cpu["parse + strip (no decode)"])
        print(
            f"on two free cores the bzip2 pipeline is bound by its slower stage: {bound:.1f} MB/s, "
            f"{bound / (mb / cpu['bz2 (python) decode']):.2f} of bz2 (python), "
            f"{bound / (mb / cpu['bzip2 -dc decode']):.2f} of bzip2 -dc"
        )
    if args.markup:
        markup(path, max(1, args.repeat // 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
