"""Tokenizer throughput: rnnlab's word tokenizer against a per-line regex loop.

    python -m bench.tokenizer [--mb 50] [--unicode-mb 20] [--shared ../shared/data]

Builds ~50 MB of real text (WikiText-2 valid + test, repeated) once, then
times each variant in its own subprocess (so each reports its own peak RSS)
on the same input, in the same run:

- reference:  ``[t.lower() for t in re.findall(PAT, line)]`` per line (the loop of
              Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine
              Intelligence*, Bleeding Edge Press, 2016, chapter 6)
- reference': ``re.findall(PAT, line.lower())`` per line (a faster variant)
- kernel:     ``WordTokenizer`` on in-memory Arrow batches, 1 thread
- stage:      ``tokenize_table``: Parquet document table in, zstd token shards
              out, with 1 and 2 threads (what ``dvc repro`` runs)

Then the ``unicode`` preset on ~20 MB of non-Latin text: the Bulgarian Wikipedia
dump fragment's article texts (wiki markup kept) plus generated lines of Chinese,
Japanese, Korean, Hebrew with points, Devanagari, Arabic digits and emoji, repeated:

- reference:  ``re.findall(unicode_regex(), line)`` per line (the same tokens)
- kernel:     ``WordTokenizer("unicode", lowercase=False)`` on Arrow batches, 1 thread
- tokenizers: Hugging Face ``tokenizers``' closest rule, BertNormalizer (CJK
              characters spaced out, no lowercasing or accent stripping) then
              BertPreTokenizer, per line and batched, 1 thread. Its tokens differ
              (it splits "<unk>" and keeps emoji sequences whole), so only its
              speed compares. Skipped when the package is not installed; it is
              not a dependency of rnnlab.

Prints MB/s for each and the ratios against the reference.
"""

from __future__ import annotations

import argparse
import bz2
import html
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PATTERN = r"[A-Za-z]+|[!?.:,()]"  # Abrahams et al. 2016, ch. 6


def build_corpus(shared: Path, mb: float, work: Path) -> tuple[Path, Path, int]:
    """Write the text file and the matching document table; return (text, docs, bytes)."""
    from pipeline.corpus import write_documents
    from pipeline.params import TextParams, read_params
    from pipeline.sources import text as text_source

    src = b"".join((shared / f).read_bytes() for f in ("wikitext-2/valid.txt", "wikitext-2/test.txt"))
    reps = max(1, round(mb * 1e6 / len(src)))
    text_file = work / "corpus.txt"
    text_file.write_bytes(src * reps)
    changes = {"train": str(text_file), "valid": str(text_file), "test": str(text_file), "holdout": 0.0}
    cfg = TextParams.model_validate({**read_params(ROOT / "params.yaml").corpus.text.model_dump(), **changes})
    # One copy as train is enough for the stage timing; valid/test point at the same file.
    batches = (b for b in text_source.read(cfg) if b["split"][0].as_py() == "train")
    docs = work / "docs"
    write_documents(_with_splits(batches), docs, "bench corpus")
    return text_file, docs, len(src) * reps


BGWIKI = "wikipedia-xml/bgwiki-latest-pages-articles-shortened.xml.bz2"
UNICODE_VARIANTS = ("u_reference", "u_kernel", "u_tokenizers_line", "u_tokenizers_batch")


def generated_lines(n: int, seed: int = 0) -> list[str]:
    """Lines of scripts the Bulgarian text lacks: CJK without spaces, hangul, pointed Hebrew, Devanagari, emoji."""
    rng = random.Random(seed)
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    kana = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)]
    hangul = [chr(c) for c in range(0xAC00, 0xAC00 + 2000)]
    pieces = [
        lambda: "".join(rng.choices(han, k=rng.randint(5, 14))) + rng.choice("，。、！？"),
        lambda: "".join(rng.choices(han + kana, k=rng.randint(4, 12))) + "「" + "".join(rng.choices(kana, k=3)) + "」",
        lambda: " ".join("".join(rng.choices(hangul, k=rng.randint(1, 4))) for _ in range(4)) + ".",
        lambda: rng.choice(["שָׁלוֹם עוֹלָם", "בְּרֵאשִׁית בָּרָא", "नमस्ते दुनिया", "हिन्दी भाषा", "مرحبا ١٢٣٤"]),
        lambda: rng.choice(["naïve café", "Straße", "Ελληνικά", "Привет, мир!", "<unk> @-@"]),
        lambda: rng.choice(["😀", "👍🏽", "👨‍👩‍👧", "🇧🇬", "✓", "€12,50", "\ufeffБОМ"]),
    ]
    return [" ".join(rng.choice(pieces)() for _ in range(rng.randint(3, 9))) for _ in range(n)]


def build_unicode_corpus(shared: Path, mb: float, work: Path) -> tuple[Path, list[str], int]:
    """Write the non-Latin text file; return (file, one copy of its lines, bytes)."""
    # The dump is UTF-16 XML; its <text> elements hold the articles' wiki markup.
    xml = bz2.decompress((shared / BGWIKI).read_bytes()).decode("utf-16")
    articles = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", xml, re.S)]
    lines = "\n".join(articles).split("\n")
    lines += generated_lines(len(lines))
    rng = random.Random(1)
    rng.shuffle(lines)
    src = ("\n".join(lines) + "\n").encode()
    reps = max(1, round(mb * 1e6 / len(src)))
    text_file = work / "unicode.txt"
    text_file.write_bytes(src * reps)
    return text_file, lines, len(src) * reps


def check_same_tokens(lines: list[str]) -> int:
    """The kernel gives the reference regex's tokens on every line of one copy; return the token count."""
    import pyarrow as pa

    from pipeline.tokenize import WordTokenizer, unicode_regex

    rx = re.compile(unicode_regex())
    want = [rx.findall(line) for line in lines]
    got = WordTokenizer("unicode", lowercase=False)(pa.array(lines)).to_pylist()
    assert got == want, "the unicode kernel and its reference regex disagree"
    return sum(map(len, want))


def _with_splits(batches):
    """The corpus stage wants all three splits; give one document each to valid and test."""
    import pyarrow as pa

    yield from batches
    for split in ("valid", "test"):
        yield pa.table({"split": [split], "text": ["x"], "source_id": ["bench"]})


def peak_rss_mb() -> float:
    """This process's peak RSS since it started its program."""
    # ru_maxrss survives exec, so a worker would report the parent's peak at fork; VmHWM starts anew.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _count_shard_tokens(folder: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["split", "tokens"])
    train = table.filter(pc.equal(table["split"], "train"))
    return pc.sum(pc.list_value_length(train["tokens"])).as_py()


def unicode_worker(variant: str, text_file: Path) -> dict[str, float] | None:
    import pyarrow as pa

    from pipeline.tokenize import WordTokenizer, unicode_regex

    tokens = 0
    if variant == "u_reference":
        rx = re.compile(unicode_regex())
        t0 = time.perf_counter()
        with open(text_file, encoding="utf-8") as f:
            for line in f:
                tokens += len(rx.findall(line))
        seconds = time.perf_counter() - t0
    elif variant == "u_kernel":
        lines = text_file.read_text(encoding="utf-8").split("\n")
        batches = [pa.array(lines[i : i + 1024]) for i in range(0, len(lines), 1024)]
        del lines
        tok = WordTokenizer("unicode", lowercase=False)
        t0 = time.perf_counter()
        for b in batches:
            tokens += len(tok(b).values)
        seconds = time.perf_counter() - t0
    else:
        try:
            from tokenizers import Tokenizer, normalizers, pre_tokenizers
            from tokenizers.models import WordLevel
        except ImportError:
            return None
        norm = normalizers.BertNormalizer(
            clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False
        )
        pre = pre_tokenizers.BertPreTokenizer()
        if variant == "u_tokenizers_line":
            t0 = time.perf_counter()
            with open(text_file, encoding="utf-8") as f:
                for line in f:
                    tokens += len(pre.pre_tokenize_str(norm.normalize_str(line)))
            seconds = time.perf_counter() - t0
        else:
            # A word-level model with an empty vocabulary: encode_batch then costs the rule plus the
            # Encoding objects, which is as close to a batched pre-tokenizer as the library offers.
            tok = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
            tok.normalizer, tok.pre_tokenizer = norm, pre
            lines = text_file.read_text(encoding="utf-8").split("\n")
            chunks = [lines[i : i + 1024] for i in range(0, len(lines), 1024)]
            del lines
            t0 = time.perf_counter()
            for chunk in chunks:
                tokens += sum(len(e) for e in tok.encode_batch(chunk))
            seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}


def worker(variant: str, text_file: Path, docs: Path, out: Path) -> dict[str, float] | None:
    import pyarrow as pa

    from pipeline.tokenize import WordTokenizer, tokenize_table

    if variant in UNICODE_VARIANTS:
        return unicode_worker(variant, text_file)
    rx = re.compile(PATTERN)
    tokens = 0
    if variant in ("reference", "reference_linelower"):
        t0 = time.perf_counter()
        with open(text_file, encoding="utf-8") as f:
            for line in f:
                if variant == "reference":
                    tokens += len([t.lower() for t in rx.findall(line)])
                else:
                    tokens += len(rx.findall(line.lower()))
        seconds = time.perf_counter() - t0
    elif variant == "kernel":
        lines = text_file.read_text(encoding="utf-8").split("\n")
        batches = [pa.array(lines[i : i + 1024]) for i in range(0, len(lines), 1024)]
        del lines
        tok = WordTokenizer(PATTERN)
        t0 = time.perf_counter()
        for b in batches:
            tokens += len(tok(b).values)
        seconds = time.perf_counter() - t0
    else:
        workers = int(variant.split("_")[1])
        t0 = time.perf_counter()
        tokenize_table(docs, out / variant, WordTokenizer(PATTERN), shard_rows=50_000, workers=workers)
        seconds = time.perf_counter() - t0
        tokens = _count_shard_tokens(out / variant)
    return {"seconds": seconds, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}


def run_variant(variant: str, text_file: Path, docs: Path, work: Path) -> dict[str, float] | None:
    """Time one variant in a fresh process, one thread everywhere."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        "-m",
        "bench.tokenizer",
        "--worker",
        variant,
        "--paths",
        str(text_file),
        str(docs),
        str(work),
    ]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=50.0, help="ASCII corpus size in MB (default: %(default)s)")
    p.add_argument("--unicode-mb", type=float, default=20.0, help="non-Latin corpus size in MB (default: %(default)s)")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--paths", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, *args.paths)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        work = Path(tmp)
        text_file, docs, size = build_corpus(args.shared, args.mb, work)
        mb = size / 1e6
        print(f"corpus: {mb:.1f} MB of WikiText-2 (valid+test repeated), pattern {PATTERN!r}, {os.cpu_count()} cores")
        results = {}
        for variant in ("reference", "reference_linelower", "kernel", "stage_1", "stage_2"):
            results[variant] = run_variant(variant, text_file, docs, work)
        ref = mb / results["reference"]["seconds"]
        labels = {
            "reference": "reference: [t.lower() for t in re.findall] per line",
            "reference_linelower": "reference': re.findall(line.lower()) per line",
            "kernel": "rnnlab WordTokenizer kernel, 1 thread",
            "stage_1": "rnnlab tokenize stage (Parquet->shards), 1 thread",
            "stage_2": "rnnlab tokenize stage (Parquet->shards), 2 threads",
        }
        print(f"{'variant':<56} {'MB/s':>7} {'x ref':>6} {'x ref2':>6} {'peak RSS':>9}")
        ref2 = mb / results["reference_linelower"]["seconds"]
        counts = {r["tokens"] for r in results.values()}
        assert len(counts) == 1, f"variants disagree on the token count: {results}"
        for variant, r in results.items():
            speed = mb / r["seconds"]
            print(
                f"{labels[variant]:<56} {speed:7.1f} {speed / ref:6.2f} {speed / ref2:6.2f} {r['peak_rss_mb']:7.0f} MB"
            )

        text_file.unlink()
        unicode_file, copy, size = build_unicode_corpus(args.shared, args.unicode_mb, work)
        sample_tokens = check_same_tokens(copy)
        mb = size / 1e6
        print(
            f"\ncorpus: {mb:.1f} MB of non-Latin text (bgwiki articles + generated CJK and mixed lines, repeated), "
            f"preset 'unicode'; kernel == re.findall(unicode_regex()) on one copy ({sample_tokens} tokens)"
        )
        results = {v: run_variant(v, unicode_file, docs, work) for v in UNICODE_VARIANTS}
        assert results["u_reference"]["tokens"] == results["u_kernel"]["tokens"], results
        labels = {
            "u_reference": "reference: re.findall(unicode_regex(), line) per line",
            "u_kernel": "rnnlab WordTokenizer('unicode') kernel, 1 thread",
            "u_tokenizers_line": "HF tokenizers BertNormalizer+BertPreTokenizer, per line",
            "u_tokenizers_batch": "HF tokenizers, encode_batch of 1024 lines, 1 thread",
        }
        ref = mb / results["u_reference"]["seconds"]
        print(f"{'variant':<56} {'MB/s':>7} {'x ref':>6} {'tokens':>10} {'peak RSS':>9}")
        for variant, r in results.items():
            if r is None:
                print(f"{labels[variant]:<56} skipped: `tokenizers` is not installed")
                continue
            speed = mb / r["seconds"]
            print(f"{labels[variant]:<56} {speed:7.1f} {speed / ref:6.2f} {r['tokens']:10d} {r['peak_rss_mb']:7.0f} MB")


if __name__ == "__main__":
    main()
