"""``rnnlab recipe`` on a user's own text of every kind: each run works, or refuses before training.

Seven corpora of the kinds users brought (news without a ".", a book on one line, Chinese verse,
Python source saved on Windows, five lines, mixed scripts, numbers only), built at run time under
``tmp_path`` (each under 1 MB, generated or cut from ``../shared/data`` read in place), go through
the real ``rnnlab recipe char-text FILE`` and ``rnnlab recipe word-wikitext FILE``: the recipe's
tokenizer and sampling settings as shipped, with a tiny budget (one epoch of three steps, a small
hidden layer). Batch size and bptt stay the recipe's too, since checking them against a small
corpus is part of what is tested.

Each run either completes (exit 0, ``artifacts/<level>/metrics.json`` with finite perplexities, a
``samples.txt`` of non-empty lines) or refuses before training (exit 2, exactly one ``error:`` line
that names a key or a file, no checkpoint written); none prints a traceback. ``EXPECTED`` states
which, per corpus and recipe, and the warning lines a run must print where a sampling default
(``sample.<level>.prime`` "the", ``greedy_stop`` ".") does not fit the corpus and is adapted.

One repository copy per recipe runs its corpora one experiment after another, as a user would in
one checkout; the two copies run side by side. Every run records to one real Prefect server
(``PREFECT_API_URL``), so that no stage starts a server of its own. ``pytest -rP`` prints the
table of outcomes: one line per corpus and recipe.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness import ROOT, SHARED_DATA, VENV_BIN, copy_repo, tool_env
from pipeline import procs

pytestmark = pytest.mark.slow

MAX_BYTES = 1 << 20  # every corpus stays under 1 MB
RUN_TIMEOUT = 600.0  # seconds for one `rnnlab recipe`; 45-110 s each were measured on a busy 2-core machine


# --- corpora -----------------------------------------------------------------------------------


def _write(path: Path, text: str, *, newline: str = "\n", bom: bool = False) -> Path:
    data = text.replace("\n", newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    assert 0 < path.stat().st_size < MAX_BYTES, (path, path.stat().st_size)
    return path


def no_period(folder: Path) -> Path:
    """News in Penn Treebank's language-model form: lower case, numbers as N, rare words as <unk>,
    no punctuation at all, so not a single "." (the Lee corpus of ABC news, 300 documents)."""
    lines = (SHARED_DATA / "gensim-lee-corpus" / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    docs = [re.findall(r"[a-z]+(?:'[a-z]+)?|\d[\d,.:]*", line.lower()) for line in lines if line.strip()]
    docs = [["N" if w[0].isdigit() else w for w in doc] for doc in docs]
    counts: dict[str, int] = {}
    for doc in docs:
        for w in doc:
            counts[w] = counts.get(w, 0) + 1
    text = "".join(" " + " ".join(w if counts[w] > 1 else "<unk>" for w in doc) + " \n" for doc in docs)
    assert "." not in text and "<unk>" in text
    return _write(folder / "ptb-news.txt", text)


def one_line(folder: Path) -> Path:
    """A book as one line and no newline at the end: WikiText-2's test articles, headings dropped,
    paragraphs joined by a space (about 600 KB)."""
    paragraphs = []
    size = 0
    for line in (SHARED_DATA / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("="):
            paragraphs.append(line)
            size += len(line.encode("utf-8")) + 1
            if size > 600_000:
                break
    text = " ".join(paragraphs)
    assert "\n" not in text
    return _write(folder / "book.txt", text)


# Frequent Chinese characters, in rough order of frequency: enough for plausible verse.
HANZI = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天"
    "而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些"
    "与高意进把法此实回二理美点月明社长山水风花雪云春秋江河湖海草木鸟鱼飞落归来去无情思君故乡夜雨孤舟客愁梦酒杯"
    "千万里人家城门楼台旧新青白红黄金玉烟波寒暖清远近朝暮今古心事声色香影光阴时节南北东西路边桥柳松竹石泉雁猿钟"
)


def cjk(folder: Path) -> Path:
    """Chinese verse without spaces: one quatrain per line, five or seven characters a verse, "，" and
    "。" between them (characters drawn by a Zipf law from HANZI; about 330 KB)."""
    rng = random.Random(18)
    chars = list(dict.fromkeys(HANZI))
    weights = [1 / (rank + 1) for rank in range(len(chars))]
    poems = []
    for _ in range(3000):
        n = rng.choice((5, 7))
        verses = ["".join(rng.choices(chars, weights, k=n)) for _ in range(4)]
        poems.append(f"{verses[0]}，{verses[1]}。{verses[2]}，{verses[3]}。")
    return _write(folder / "poems.txt", "\n".join(poems) + "\n")


def windows_source(folder: Path) -> Path:
    """Python source as a Windows editor saves it, CRLF line ends and a UTF-8 byte-order mark: the
    project's own modules (pipeline/, models/, flows/, ops/), read in place and concatenated until
    about 500 KB."""
    parts = []
    size = 0
    for path in sorted(
        [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("models/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("ops/*.py")]
    ):
        text = path.read_text(encoding="utf-8")
        if size + len(text.encode("utf-8")) > 500_000:
            break
        parts.append(text)
        size += len(text.encode("utf-8"))
    return _write(folder / "source.py.txt", "".join(parts), newline="\r\n", bom=True)


def five_lines(folder: Path) -> Path:
    """Five lines of prose: far fewer tokens than one batch of either recipe."""
    text = (
        "The river rose in the night and by morning the lower fields were under water.\n"
        "Nobody in the village could remember a flood like it.\n"
        "The old bridge held, though the water reached its arches.\n"
        "By noon the rain had stopped and the children came out to look.\n"
        "In the evening the river began, slowly, to fall.\n"
    )
    return _write(folder / "five.txt", text)


# Words of each script, for lines such as a multilingual chat or forum would hold.
SCRIPTS = {
    "cyrillic": "москва город река дом книга время человек жизнь день работа слово место вопрос страна мир "
    "голова сила конец часть привет спасибо хорошо сегодня завтра київ місто їжак ґанок дякую",
    "hanzi": "北京 上海 中国 首都 城市 朋友 学生 老师 今天 明天 电话 工作 时间 天气 很好 谢谢 我们 你们",
    "kana": "ありがとう こんにちは カタカナ ひらがな トウキョウ すし ラーメン さようなら コーヒー",
    "hangul": "서울 한국어 감사합니다 안녕하세요 사랑 학교 친구 오늘 내일 커피",
    "hebrew": "שלום עולם ירושלים ספר בית אהבה תודה מים ילד עיר היום מחר",
    "accents": "naïve café déjà vu São Paulo Zürich Ångström crème brûlée façade jalapeño Øresund Łódź "
    "İstanbul señora Müller garçon cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "emoji": "😀 😂 👍🏽 🎉 ❤\ufe0f 🐕 🔥 👨\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 👩🏽\u200d💻 🧑\u200d🚀 🇫🇷 🇯🇵 🇧🇷",
    "english": "the the the and of to in is was for with on at by it this that we you they",
}
INDIC_DIGITS = ("٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹")  # Arabic-Indic and Persian


def mixed_scripts(folder: Path) -> Path:
    """Lines mixing Cyrillic, CJK (hanzi, kana, hangul), Hebrew, numbers in Arabic-Indic digits,
    precomposed and combining accents, and emoji (ZWJ sequences, skin tones and flags included):
    words of each script drawn at random, as in a multilingual chat (about 250 KB)."""
    rng = random.Random(18)
    pools = {name: words.split() for name, words in SCRIPTS.items()}
    names = list(pools)

    def word() -> str:
        name = rng.choice([*names, "english", "number"])
        if name == "number":
            digits = rng.choice(INDIC_DIGITS)
            return "".join(rng.choice(digits) for _ in range(rng.randint(1, 4)))
        return rng.choice(pools[name])

    lines = [" ".join(word() for _ in range(rng.randint(4, 16))) + rng.choice(".!?。…") for _ in range(3000)]
    return _write(folder / "mixed.txt", "\n".join(lines) + "\n")


def digits(folder: Path) -> Path:
    """Digits only (and the spaces between numbers): lines of numbers drawn by a Zipf law, no letter
    or punctuation anywhere (about 250 KB)."""
    rng = random.Random(18)
    numbers = [str(rng.randrange(10 ** rng.randint(1, 6))) for _ in range(3000)]
    weights = [1 / (rank + 1) for rank in range(len(numbers))]
    lines = [" ".join(rng.choices(numbers, weights, k=rng.randint(8, 30))) for _ in range(3500)]
    text = "\n".join(lines) + "\n"
    assert set(text) <= set("0123456789 \n")
    return _write(folder / "digits.txt", text)


CORPORA: dict[str, Callable[[Path], Path]] = {
    "no-period": no_period,
    "one-line": one_line,
    "cjk": cjk,
    "windows-source": windows_source,
    "five-lines": five_lines,
    "mixed-scripts": mixed_scripts,
    "digits": digits,
}


def test_each_corpus_is_of_its_kind_and_under_a_megabyte(tmp_path: Path) -> None:
    """The corpora are what their names say (the cases the runs stand for)."""
    files = {name: build(tmp_path) for name, build in CORPORA.items()}
    raw = {name: path.read_bytes() for name, path in files.items()}
    assert all(len(b) < MAX_BYTES for b in raw.values())
    assert b"." not in raw["no-period"] and b"<unk>" in raw["no-period"]
    assert b"\n" not in raw["one-line"] and len(raw["one-line"]) > 100_000
    text = raw["cjk"].decode("utf-8")
    assert " " not in text and "，" in text and "。" in text and len(raw["cjk"]) > 200_000
    assert raw["five-lines"].count(b"\n") == 5
    crlf = raw["windows-source"]
    assert crlf.startswith(b"\xef\xbb\xbf") and crlf.count(b"\r\n") == crlf.count(b"\n") > 1000
    mixed = raw["mixed-scripts"].decode("utf-8")
    for char in ("ж", "京", "タ", "서", "ש", "٣", "ï", "\u0301", "😂", "\u200d", "🇫"):
        assert char in mixed, char
    assert set(raw["digits"]) <= set(b"0123456789 \n")
    ast.parse(raw["windows-source"])  # whole modules, one after another: still Python (BOM and CRLF too)


# --- what each corpus gets -----------------------------------------------------------------------

RECIPES = {"char-text": "char", "word-wikitext": "word"}
# The tiny budget: one epoch of three steps on a small model. Batch size, bptt, the tokenizer and
# the sampling params stay the recipe's (and params.yaml's): they are what meets the corpus.
TINY = {
    "char": ["train.char.epochs=1", "train.char.epoch_size=3", "train.char.hidden=32"],
    "word": ["train.word.epochs=1", "train.word.epoch_size=3", "train.word.hidden=32", "train.word.emb_dim=32"],
}
SAMPLE_LINES = 5 + 1  # params.yaml's sample.<level>.count temperature samples, then the greedy line


@dataclass(frozen=True)
class Expect:
    """What a run must end with: ``refusal`` None means it works, else the one ``error:`` line matches
    it (a regular expression); ``warns`` are the keys of the sampling defaults that it adapts, each
    told in one ``warning:`` line."""

    refusal: str | None = None
    warns: tuple[str, ...] = ()


def too_few_tokens(level: str, bptt: int, tokens: int) -> Expect:
    """The refusal of a train split shorter than one batch of the recipe (batch_size 32)."""
    key = f"train.{level}"
    return Expect(
        rf"^error: {key}\.batch_size=32 × \({key}\.bptt={bptt} \+ 1\) needs {tokens:,} tokens of train for one "
        rf"batch, but the {level} train split has \d+; lower {key}\.batch_size to \d+ or less, or give more text$"
    )


def adapts(level: str, *names: str) -> Expect:
    return Expect(warns=tuple(f"sample.{level}.{name}" for name in names))


EXPECTED: dict[tuple[str, str], Expect] = {
    # No "." anywhere: the greedy line stops at <eos> instead, said in one warning.
    ("no-period", "char-text"): adapts("char", "greedy_stop"),
    ("no-period", "word-wikitext"): adapts("word", "greedy_stop"),
    # One document: train, valid and test are cut from it by characters.
    ("one-line", "char-text"): Expect(),
    ("one-line", "word-wikitext"): Expect(),
    # Neither "the" nor "." is in a Chinese vocabulary: samples start a new document, the greedy
    # line stops at <eos>. At the word level each hanzi is a token (the unicode preset).
    ("cjk", "char-text"): adapts("char", "prime", "greedy_stop"),
    ("cjk", "word-wikitext"): adapts("word", "prime", "greedy_stop"),
    ("windows-source", "char-text"): Expect(),
    ("windows-source", "word-wikitext"): Expect(),
    # About 300 characters and 60 words: refused before training, with the sizes named.
    ("five-lines", "char-text"): too_few_tokens("char", 50, 32 * 51),
    ("five-lines", "word-wikitext"): too_few_tokens("word", 35, 32 * 36),
    ("mixed-scripts", "char-text"): Expect(),
    ("mixed-scripts", "word-wikitext"): Expect(),
    # No letter and no ".": the prime and the stop token adapt; numbers are the unicode preset's words.
    ("digits", "char-text"): adapts("char", "prime", "greedy_stop"),
    ("digits", "word-wikitext"): adapts("word", "prime", "greedy_stop"),
}


# --- running them ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One ``rnnlab recipe`` run and what it left in its level's artifacts."""

    command: str
    code: int
    stdout: str
    stderr: str
    seconds: float
    checkpoints_before: dict[str, str]
    checkpoints_after: dict[str, str]
    metrics: dict[str, float] | None = None
    samples: list[str] | None = None

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(prefix)]

    def adapted(self) -> list[str]:
        """The key each ``warning:`` line is about (the first it names), sorted."""
        return sorted(m[0] for line in self.lines("warning:") if (m := re.search(r"sample\.\w+\.\w+", line)))

    def summary(self) -> str:
        """The outcome in one line: the error line, or the perplexities and warnings."""
        errors = self.lines("error:")
        if self.code != 0:
            return f"exit {self.code}, {errors[-1] if errors else 'no error line'} ({self.seconds:.0f} s)"
        m = self.metrics or {}
        ppl = ", ".join(f"{k} {v:.1f}" for k, v in m.items() if k.endswith("perplexity"))
        return f"works: {ppl}; adapted {self.adapted() or 'nothing'} ({self.seconds:.0f} s)"

    def told(self) -> str:
        """The command and all it printed, for an assertion's message."""
        head = f"$ {self.command}\n(exit {self.code} after {self.seconds:.0f} s)"
        return f"{head}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def checkpoint_files(repo: Path, level: str) -> dict[str, str]:
    """Each file in the level's checkpoints folder, by name, with its sha256."""
    folder = repo / "artifacts" / level / "checkpoints"
    if not folder.is_dir():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def run_recipe(repo: Path, recipe: str, corpus: Path, name: str, api: str) -> Outcome:
    """``rnnlab recipe RECIPE CORPUS`` with the tiny budget in ``repo``, recording to ``api``; on a
    timeout the whole process tree is stopped (SIGTERM, as a user's Ctrl-C, then SIGKILL)."""
    level = RECIPES[recipe]
    argv = [str(VENV_BIN / "rnnlab"), "recipe", recipe, str(corpus), "--name", name]
    argv += [a for s in TINY[level] for a in ("-S", s)]
    env = tool_env(PREFECT_HOME=str(repo / ".prefect"), PREFECT_API_URL=api)
    before = checkpoint_files(repo, level)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        procs.stop(proc, 60.0)  # SIGTERM to the whole run (rnnlab stops DVC and its stage), SIGKILL after a minute
        out, err = proc.communicate()
        err += f"\n[test: no end after {RUN_TIMEOUT:.0f} s; stopped]"
    outcome = Outcome(
        " ".join(argv[1:]),
        proc.returncode,
        out,
        err,
        time.monotonic() - start,
        before,
        checkpoint_files(repo, level),
    )
    if proc.returncode == 0:
        artifacts = repo / "artifacts" / level
        with contextlib.suppress(OSError, ValueError):
            outcome.metrics = json.loads((artifacts / "metrics.json").read_text(encoding="utf-8"))
        with contextlib.suppress(OSError):
            outcome.samples = (artifacts / "samples.txt").read_text(encoding="utf-8").removesuffix("\n").split("\n")
    return outcome


def run_in(repo: Future[Path], recipe: str, corpus: Path, name: str, api: str) -> Outcome:
    """``run_recipe`` in the copy ``repo`` will hold (made by the same worker, before)."""
    return run_recipe(repo.result(), recipe, corpus, f"own-{name}", api)


Runs = dict[tuple[str, str], Future[Outcome]]  # (corpus, recipe) -> its run


@pytest.fixture(scope="module")
def outcomes(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Every (corpus, recipe) run, started at once: one repository copy and one worker thread per
    recipe, whose runs follow one another there in CORPORA's order; the two recipes run side by side."""
    root = tmp_path_factory.mktemp("own-text")
    corpora = root / "corpora"
    corpora.mkdir()
    files = {name: build(corpora) for name, build in CORPORA.items()}
    pools = {recipe: ThreadPoolExecutor(1, thread_name_prefix=recipe) for recipe in RECIPES}
    futures: Runs = {}
    try:
        for recipe, pool in pools.items():
            repo_made = pool.submit(copy_repo, root / recipe)
            for name, path in files.items():
                futures[name, recipe] = pool.submit(run_in, repo_made, recipe, path, name, prefect_api)
        yield futures
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


def outcome_of(outcomes: Runs, corpus: str, recipe: str) -> Outcome:
    deadline = RUN_TIMEOUT * (len(CORPORA) + 1)  # this run and all before it in its copy
    try:
        return outcomes[corpus, recipe].result(timeout=deadline)
    except TimeoutError:
        pytest.fail(f"`rnnlab recipe {recipe}` on the {corpus} corpus had not ended after {deadline:.0f} s")


@pytest.mark.parametrize(("corpus", "recipe"), list(EXPECTED), ids=[f"{c}-{r}" for c, r in EXPECTED])
def test_a_recipe_on_own_text_works_or_refuses_before_training(outcomes: Runs, corpus: str, recipe: str) -> None:
    o = outcome_of(outcomes, corpus, recipe)
    wrong = problems(o, EXPECTED[corpus, recipe])
    print(f"{corpus} x {recipe}: {o.summary()}")  # the table of outcomes, with pytest -rP
    assert not wrong, "\n".join(["", *wrong, "", o.told()])


def problems(o: Outcome, expect: Expect) -> list[str]:
    """Every way the run differs from what ``expect`` says, each in one line (all of them at once)."""
    wrong = []
    if "Traceback" in o.stdout + o.stderr:
        wrong.append("a traceback was printed")
    if (warned := o.adapted()) != sorted(expect.warns):
        wrong.append(f"`warning:` lines name {warned}, expected {sorted(expect.warns)}")
    errors = o.lines("error:")
    if expect.refusal is not None:
        if o.code != 2:
            wrong.append(f"exit {o.code}, expected 2 (a refused user error)")
        if len(errors) != 1 or not re.search(expect.refusal, errors[0]):
            wrong.append(f"{len(errors)} `error:` lines, expected one matching {expect.refusal!r}: {errors}")
        if o.checkpoints_after != o.checkpoints_before:
            wrong.append(f"a refused run wrote checkpoints: {o.checkpoints_before} -> {o.checkpoints_after}")
        return wrong
    if o.code != 0 or errors:
        wrong.append(f"exit {o.code} with {len(errors)} `error:` lines {errors}, expected exit 0 and none")
    perplexities = {k: v for k, v in (o.metrics or {}).items() if k.endswith("perplexity")}
    if not {"test_perplexity", "ngram_perplexity"} <= set(perplexities):
        wrong.append(f"metrics.json lacks the test and n-gram perplexities: {o.metrics}")
    if not all(math.isfinite(v) and v >= 1 for v in perplexities.values()):
        wrong.append(f"a perplexity that is not finite: {o.metrics}")
    if o.samples is None or len(o.samples) != SAMPLE_LINES:
        wrong.append(f"samples.txt holds {o.samples!r}, expected {SAMPLE_LINES} lines")
    elif not all(o.samples):
        empty = [i + 1 for i, line in enumerate(o.samples) if not line]
        wrong.append(f"samples.txt lines {empty} are empty (a sample with no text at all): {o.samples}")
    return wrong
