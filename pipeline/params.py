"""params.yaml, validated into typed sections: the single source of truth.

Each stage asks for the dotted keys it declares in dvc.yaml and gets only
those back::

    cfg = load_params(["windows.word"])["windows.word"]   # -> WindowsParams

The whole file is still validated on every load, so a typo anywhere fails
fast, with every problem listed and each one named by its key::

    params.yaml has 2 problems:
      windows.word.length: must be ≥ 2, got 1
      corpus.source: must be one of 'grammar', 'text', got 'wiki'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import ParamsError

PARAMS_FILE = Path("params.yaml")
LEVELS = ("word", "char")
Level = Literal["word", "char"]
SPLITS = ("train", "valid", "test")
# Reserved ids, in this order, at the front of every vocabulary.
SPECIALS = ("<pad>", "<unk>", "<eos>")


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- corpus ---------------------------------------------------------------------------


class GrammarParams(Section):
    """Seed 003's nonsense grammar; the default corpus, with a known entropy."""

    seed: int = 0
    # ~11 words per document, so 20k documents is ~230k training tokens: enough for
    # a small LSTM to get close to the oracle within the CPU time budget.
    train_docs: int = Field(20_000, ge=1)
    valid_docs: int = Field(2_000, ge=1)
    test_docs: int = Field(2_000, ge=1)


class TextParams(Section):
    """Local plain-text files: one document per line, or one per file."""

    train: str = "data/raw/train.txt"  # a file, or a directory of files matching `glob`
    valid: str | None = None  # if absent, `holdout` of train's documents become valid
    test: str | None = None  # likewise for test
    unit: Literal["line", "file"] = "line"
    glob: str = "*.txt"
    errors: Literal["strict", "replace"] = "strict"  # strict: invalid UTF-8 is an error
    holdout: float = Field(0.05, ge=0.0, lt=0.5)  # per missing held-out split
    seed: int = 0  # decides which train documents are held out


def _sha256_hex(v: str | None) -> str | None:
    if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise ValueError(f"must be 64 hex digits (a sha256) or null, got {v!r}")
    return v.lower() if v is not None else None


class DownloadParams(Section):
    """Where a source's file comes from: fetched once by pipeline.download into ``cache_dir``."""

    url: str  # http(s):// URL, file:// URL or local path (local files are read in place)
    sha256: str | None = None  # verify the file when given
    size: int | None = Field(None, ge=0)  # bytes; verify when given
    cache_dir: str = "data/cache"  # pipeline.paths.DOWNLOADS: not a DVC output, survives reruns
    retries: int = Field(5, ge=0)  # attempts without progress, with exponential backoff
    timeout: float = Field(30.0, gt=0)  # seconds to connect and per read

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        return _sha256_hex(v)


class WikipediaParams(DownloadParams):
    """A MediaWiki XML dump (pages-articles), stripped to plain prose (seed 001)."""

    url: str = "https://dumps.wikimedia.org/simplewiki/latest/simplewiki-latest-pages-articles.xml.bz2"
    index_url: str | None = None  # multistream index (…-multistream-index.txt.bz2): read stream by stream
    namespaces: tuple[int, ...] = (0,)  # 0: articles
    min_chars: int = Field(1, ge=1)  # drop pages whose stripped text is shorter
    max_articles: int | None = Field(None, ge=1)  # stop after this many (null: the whole dump)
    holdout: float = Field(0.01, ge=0.0, lt=0.5)  # fraction each for valid and test
    seed: int = 0  # decides which pages are held out (hash of seed and page id)


class ArxivParams(Section):
    """Abstracts from the arXiv API (seed 001): categories AND keywords, paged and cached."""

    url: str = "https://export.arxiv.org/api/query"
    categories: tuple[str, ...] = ("cs.LG", "cs.NE", "math.OC")  # any of these ...
    keywords: tuple[str, ...] = ("neural", "network", "deep")  # ... and any of these (all: fields)
    page_size: int = Field(100, ge=1, le=2000)
    max_results: int = Field(5000, ge=1)  # stop after this many papers
    sort_by: Literal["submittedDate", "lastUpdatedDate", "relevance"] = "submittedDate"
    sort_order: Literal["ascending", "descending"] = "ascending"  # oldest first: cached pages stay valid
    delay: float = Field(3.0, ge=0.0)  # seconds between requests, as arXiv's terms ask
    page_retries: int = Field(3, ge=0)  # refetch an empty or short page this many times
    text: Literal["abstract", "title_abstract"] = "abstract"  # what the LM reads
    cache_dir: str = "data/cache"  # every page is kept here: a rerun never refetches
    retries: int = Field(5, ge=0)
    timeout: float = Field(30.0, gt=0)
    holdout: float = Field(0.05, ge=0.0, lt=0.5)  # fraction each for valid and test
    seed: int = 0


class ImdbParams(DownloadParams):
    """The Large Movie Review Dataset (Maas et al. 2011): a tar.gz, or an extracted aclImdb/ folder."""

    url: str = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
    sha256: str | None = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
    unsup: bool = False  # also the 50k unlabelled reviews (split "unsup")
    holdout: float = Field(0.1, ge=0.0, lt=0.5)  # of train, moved to valid (IMDB has no valid split)
    seed: int = 0


class OcrParams(DownloadParams):
    """Taskar's OCR letters (letter.data): handwritten words as image sequences."""

    url: str = "https://ai.stanford.edu/~btaskar/ocr/letter.data.gz"
    valid_folds: tuple[int, ...] = (8,)  # folds 0-9; the rest is train
    test_folds: tuple[int, ...] = (9,)
    max_length: int | None = Field(None, ge=1)  # pad words to this many letters (null: the longest word)

    @field_validator("valid_folds", "test_folds")
    @classmethod
    def _folds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [f for f in v if not 0 <= f <= 9]
        if bad or not v:
            raise ValueError(f"must list folds between 0 and 9, got {list(v)}")
        return v


class CorpusParams(Section):
    source: Literal["grammar", "text", "wikipedia", "arxiv", "imdb", "ocr"] = "grammar"
    grammar: GrammarParams = GrammarParams()
    text: TextParams = TextParams()
    wikipedia: WikipediaParams = WikipediaParams()
    arxiv: ArxivParams = ArxivParams()
    imdb: ImdbParams = ImdbParams()
    ocr: OcrParams = OcrParams()


# --- tokenize ---------------------------------------------------------------------------


class WordTokenizeParams(Section):
    # Seed 001's rule. A pattern of the shape `[class]+|[class]` with ASCII classes
    # takes the vectorized fast path; any other regex falls back to Python's `re`.
    pattern: str = r"[A-Za-z]+|[!?.:,()]"
    lowercase: bool = True
    shard_rows: int = Field(50_000, ge=1)  # documents per Parquet shard

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e}), got {v!r}") from e
        if compiled.search("") is not None:
            raise ValueError(f"must not match the empty string, got {v!r}")
        return v


class CharTokenizeParams(Section):
    lowercase: bool = False
    shard_rows: int = Field(20_000, ge=1)


class TokenizeParams(Section):
    word: WordTokenizeParams = WordTokenizeParams()
    char: CharTokenizeParams = CharTokenizeParams()


# --- vocab ------------------------------------------------------------------------------


class VocabLevelParams(Section):
    max_size: int = 10_000  # including the specials
    min_count: int = Field(1, ge=1)

    @field_validator("max_size")
    @classmethod
    def _room_for_specials(cls, v: int) -> int:
        if v < len(SPECIALS) + 1:
            raise ValueError(
                f"must be ≥ {len(SPECIALS) + 1} (the specials {', '.join(SPECIALS)} plus one token), got {v}"
            )
        return v


class VocabParams(Section):
    word: VocabLevelParams = VocabLevelParams()
    char: VocabLevelParams = VocabLevelParams(max_size=1_000)


# --- windows ----------------------------------------------------------------------------

Mode = Literal["stream", "window", "padded"]


class WindowsParams(Section):
    modes: tuple[Mode, ...] = ("stream", "window", "padded")
    length: int = Field(35, ge=2)  # window mode: tokens per window (inputs; targets shift by one)
    stride: int | None = Field(None, ge=1)  # window mode: default length // 2, as in seed 001
    max_length: int = Field(64, ge=2)  # padded mode: longer sequences are truncated
    unit: Literal["document", "sentence"] = "document"  # padded mode: one row per ...
    sentence_end: tuple[str, ...] = (".", "!", "?")  # tokens that end a sentence

    @field_validator("modes")
    @classmethod
    def _modes_nonempty_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("must list at least one of 'stream', 'window', 'padded'")
        if len(set(v)) != len(v):
            raise ValueError(f"lists a mode twice, got {list(v)}")
        return v

    @property
    def effective_stride(self) -> int:
        return self.stride if self.stride is not None else max(1, self.length // 2)


class WindowsLevels(Section):
    word: WindowsParams = WindowsParams()
    char: WindowsParams = WindowsParams(length=128, max_length=256)


# --- train / evaluate / sample: the language models (models/, flows/) ---------------------


class LoopParams(Section):
    """The training loop every model shares (models.trainer.Trainer): optimizer, clipping,
    LR schedule, epochs, checkpoints, seed and device. Task sections extend it."""

    optimizer: Literal["adam", "rmsprop", "adadelta", "sgd"] = "adam"
    lr: float = Field(0.002, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)  # sgd and rmsprop
    weight_decay: float = Field(0.0, ge=0.0)
    clip: Literal["norm", "value", "none"] = "norm"  # global grad norm (seed 002) | per value (seed 001)
    clip_value: float = Field(1.0, gt=0.0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)  # lr *= factor when valid loss stops falling
    plateau_patience: int = Field(0, ge=0)  # epochs without improvement before that
    epochs: int = Field(10, ge=1)
    epoch_size: int | None = Field(None, ge=1)  # optimizer steps per epoch; null: one pass over train
    checkpoint_every: int | None = Field(None, ge=1)  # steps; null: at the end of each epoch only
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when present (bf16 autocast there)


class TrainParams(LoopParams):
    """One level's recurrent language model and its training loop. Flat, so that
    ``dvc exp run -S train.word.lr=0.01`` works; models.config explains the defaults."""

    cell: str = "lstm"  # rnn_tanh | rnn_relu | lstm | gru, or a variant: lstm_peephole | lstm_cifg | lstm_ln | gru_ln
    emb_dim: int | None = Field(None, ge=1)  # null: round(vocab_size ** 0.25), seed 000's rule
    hidden: int = Field(200, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # between layers and on the output
    tie_weights: bool = False  # decoder shares the embedding: needs emb_dim == hidden
    mode: Mode = "stream"  # which windows dataset trains: stream (TBPTT) | window | padded
    batch_size: int = Field(32, ge=1)
    bptt: int = Field(35, ge=1)  # stream mode: steps of truncated backprop through time

    @field_validator("cell")
    @classmethod
    def _cell_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError(f"must be a cell name such as 'lstm' or 'gru', got {v!r}")
        return v


class TrainLevels(Section):
    word: TrainParams = TrainParams()
    char: TrainParams = TrainParams(cell="gru")


class EvaluateParams(Section):
    """Held-out metrics of the trained models (both levels)."""

    splits: tuple[Literal["train", "valid", "test"], ...] = ("valid", "test")
    batch_size: int = Field(64, ge=1)  # sequences evaluated side by side; every token is still scored once


class SampleParams(Section):
    """Generated text from one level's model (seed 001's temperature, seed 003's greedy stop)."""

    prime: str = "the"  # tokenized like the training data; "" starts a fresh document
    count: int = Field(5, ge=0)  # temperature samples
    max_tokens: int = Field(50, ge=1)  # new tokens per sample at most (a sample also ends at <eos>)
    temperature: float = Field(1.0, gt=0.0)  # p_i ∝ exp(log p_i / T)
    top_k: int | None = Field(None, ge=1)  # sample among the k likeliest tokens only
    greedy_stop: str | None = "."  # also decode greedily, stopping after this token; null: no greedy line
    seed: int = 0


class SampleLevels(Section):
    word: SampleParams = SampleParams()
    char: SampleParams = SampleParams(max_tokens=200)


# --- the file ---------------------------------------------------------------------------


class Params(Section):
    """The whole of params.yaml. Every section must be present."""

    corpus: CorpusParams
    tokenize: TokenizeParams
    vocab: VocabParams
    windows: WindowsLevels
    train: TrainLevels
    evaluate: EvaluateParams
    sample: SampleLevels


def _key(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the section at ``loc`` (for 'unknown key' hints)."""
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _describe(err: dict[str, Any]) -> str:
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        valid = _fields_at(tuple(err["loc"][:-1]))
        return "unknown key" + (f"; valid keys here: {', '.join(valid)}" if valid else "")
    if kind == "missing":
        return "missing; add it to params.yaml"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']}, got {got!r}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}, got {got!r}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx['le']}, got {got!r}"
    if kind == "less_than":
        return f"must be < {ctx['lt']}, got {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected'].replace(' or ', ', ')}, got {got!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got!r}"


def validate(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params mapping; raise ParamsError listing every problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        problems = [f"  {_key(err['loc'])}: {_describe(err)}" for err in e.errors()]
        noun = "problem" if len(problems) == 1 else "problems"
        raise ParamsError(f"{source} has {len(problems)} {noun}:\n" + "\n".join(problems)) from None


def read_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root, or pass --params") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return validate(raw, str(path))


def lookup(params: BaseModel, key: str) -> Any:
    """Return the value at a dotted key, e.g. ``lookup(p, "windows.word.length")``."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ParamsError(f"params: no key {key!r} (stopped at {part!r})")
        node = getattr(node, part)
    return node


def load_params(keys: Iterable[str], path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Validate the whole file, then return only ``keys`` (a stage's declared params)."""
    params = read_params(path)
    return {key: lookup(params, key) for key in keys}
