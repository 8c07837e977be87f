"""params.yaml, validated into typed sections: the single source of truth.

Each stage asks for the dotted keys it declares in dvc.yaml and gets only
those back::

    cfg = load_params(["windows.word"])["windows.word"]   # -> WindowsParams

The whole file is still validated on every load, so a typo anywhere fails
fast, with every problem listed and each one named by its key::

    params.yaml has 2 problems:
      windows.word.length: must be ≥ 2, got 1
      corpus.source: must be one of 'grammar', 'text', got 'wiki'

Where a value or a rule follows a published source, a comment here or in
params.yaml cites it in short. Those sources:

- Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for Machine Intelligence*
  (Bleeding Edge Press, 2016), chapter 6: the Wikipedia, arXiv, IMDB and OCR
  corpora, the word tokenizer's pattern, the window stride, per-value clipping,
  the sampling temperature, and the skip-gram, sentiment and OCR settings.
- The nonsense-language LSTM tutorial notebook of the ``theano_lstm`` package:
  the default grammar and the greedy decode up to ".".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ParamsError, shown
from pipeline.paths import PARAMS_FILE


def _cell_name(v: str) -> str:
    # The factory (models/rnn.py) knows the cells; here only the shape, since pipeline/ has no torch.
    if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
        raise ValueError(f"must be a cell name such as 'lstm' or 'gru', got {v!r}")
    return v


CellName = Annotated[str, AfterValidator(_cell_name)]

LEVELS = ("word", "char")
Level = Literal["word", "char"]
SPLITS = ("train", "valid", "test")
# Reserved ids, in this order, at the front of every vocabulary.
SPECIALS = ("<pad>", "<unk>", "<eos>")


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are frozen, and no field has a
    default: params.yaml gives every value (tests load it and change what they need)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- corpus ---------------------------------------------------------------------------


class GrammarParams(Section):
    """The ``theano_lstm`` tutorial's nonsense grammar; the default corpus, with a known entropy."""

    seed: int
    train_docs: int = Field(ge=1)
    valid_docs: int = Field(ge=1)
    test_docs: int = Field(ge=1)


class TextParams(Section):
    """Local plain-text files: one document per line, or one per file."""

    train: str  # a file, or a directory of files matching `glob`
    valid: str | None  # if absent, `holdout` of train's documents become valid
    test: str | None  # likewise for test
    unit: Literal["line", "file"]
    glob: str
    errors: Literal["strict", "replace"]  # strict: invalid UTF-8 is an error
    holdout: float = Field(ge=0.0, lt=0.5)  # per missing held-out split
    seed: int  # decides which train documents are held out


def sha256_hex(v: str | None) -> str | None:
    """A sha256 in lower case, or None; ValueError unless it is 64 hex digits (params and pipeline.download)."""
    if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise ValueError(f"must be 64 hex digits (a sha256) or null, got {shown(v)}")
    return v.lower() if v is not None else None


class DownloadParams(Section):
    """Where a source's file comes from: fetched once by pipeline.download into ``cache_dir``."""

    url: str  # http(s):// URL, file:// URL or local path (local files are read in place)
    sha256: str | None  # verify the file when given
    size: int | None = Field(ge=0)  # bytes; verify when given
    cache_dir: str  # not a DVC output: downloads survive reruns
    retries: int = Field(ge=0)  # attempts without progress, with exponential backoff
    timeout: float = Field(gt=0)  # seconds to connect and per read

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        return sha256_hex(v)


class WikipediaParams(DownloadParams):
    """A MediaWiki XML dump (pages-articles), stripped to plain prose (Abrahams et al. 2016, ch. 6)."""

    url: str
    index_url: str | None  # multistream index (…-multistream-index.txt.bz2): read stream by stream
    namespaces: tuple[int, ...]  # 0: articles
    min_chars: int = Field(ge=1)  # drop pages whose stripped text is shorter
    max_articles: int | None = Field(ge=1)  # stop after this many (null: the whole dump)
    holdout: float = Field(ge=0.0, lt=0.5)  # fraction each for valid and test
    seed: int  # decides which pages are held out (hash of seed and page id)


class ArxivParams(Section):
    """Abstracts from the arXiv API (Abrahams et al. 2016, ch. 6): categories AND keywords, paged and cached."""

    url: str
    categories: tuple[str, ...]  # any of these ...
    keywords: tuple[str, ...]  # ... and any of these (all: fields)
    page_size: int = Field(ge=1, le=2000)
    max_results: int = Field(ge=1)  # stop after this many papers
    sort_by: Literal["submittedDate", "lastUpdatedDate", "relevance"]
    sort_order: Literal["ascending", "descending"]  # oldest first: cached pages stay valid
    delay: float = Field(ge=0.0)  # seconds between requests, as arXiv's terms ask
    page_retries: int = Field(ge=0)  # refetch an empty or short page this many times
    text: Literal["abstract", "title_abstract"]  # what the LM reads
    cache_dir: str  # every page is kept here: a rerun never refetches
    retries: int = Field(ge=0)
    timeout: float = Field(gt=0)
    holdout: float = Field(ge=0.0, lt=0.5)  # fraction each for valid and test
    seed: int


class ImdbParams(DownloadParams):
    """The Large Movie Review Dataset (Maas et al. 2011): a tar.gz, or an extracted aclImdb/ folder."""

    url: str
    sha256: str | None
    unsup: bool  # also the 50k unlabelled reviews (split "unsup")
    # One review file at most (MB = 10**6 bytes); a real review is under 15 KB. A larger member is an
    # error naming it, before it is read: memory stays bounded whatever the archive holds.
    max_review_mb: float = Field(gt=0)
    holdout: float = Field(ge=0.0, lt=0.5)  # of train, moved to valid (IMDB has no valid split)
    seed: int


class OcrParams(DownloadParams):
    """Taskar's OCR letters (letter.data): handwritten words as image sequences."""

    url: str
    valid_folds: tuple[int, ...]  # folds 0-9; the rest is train
    test_folds: tuple[int, ...]
    max_length: int | None = Field(ge=1)  # pad words to this many letters (null: the longest word)
    # With max_length null, a word longer than this is an error naming it and this key. Padding to the
    # longest word makes the table words x longest x 128 bytes: one hostile 10,000-letter word would
    # need gigabytes. Taskar's longest word has 14 letters.
    length_cap: int = Field(ge=1)
    max_line_mb: float = Field(gt=0)  # one line of the file at most (MB = 10**6 bytes); a real one is ~270 bytes

    @field_validator("valid_folds", "test_folds")
    @classmethod
    def _folds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [f for f in v if not 0 <= f <= 9]
        if bad or not v:
            raise ValueError(f"must list folds between 0 and 9, got {list(v)}")
        return v


class CorpusParams(Section):
    source: Literal["grammar", "text", "wikipedia", "arxiv", "imdb", "ocr"]
    grammar: GrammarParams
    text: TextParams
    wikipedia: WikipediaParams
    arxiv: ArxivParams
    imdb: ImdbParams
    ocr: OcrParams


# --- tokenize ---------------------------------------------------------------------------


class WordTokenizeParams(Section):
    # A pattern of the shape `[class]+|[class]` with ASCII classes takes the vectorized fast path; any
    # other regex falls back to Python's `re`. A preset name (pipeline/tokenize.py PRESETS: ascii,
    # unicode) stands for its rule.
    pattern: str
    lowercase: bool
    shard_rows: int = Field(ge=1)  # documents per Parquet shard

    @field_validator("pattern")
    @classmethod
    def _preset_or_regex(cls, v: str) -> str:
        # Imported here: pipeline.tokenize imports this module, and only the names are needed.
        from pipeline.tokenize import PRESETS

        if v in PRESETS:
            return v
        presets = ", ".join(PRESETS)
        # A bare name (letters, digits, "_", "-") would match only itself as a regex: take it for a
        # mistyped preset rather than tokenize the text into nothing.
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", v):
            raise ValueError(f"unknown preset {v!r}; use one of the presets ({presets}) or a regular expression")
        try:
            compiled = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e}) nor a preset ({presets}), got {v!r}") from e
        if compiled.search("") is not None:
            raise ValueError(f"must not match the empty string, got {v!r}")
        return v


class CharTokenizeParams(Section):
    lowercase: bool
    shard_rows: int = Field(ge=1)


class TokenizeParams(Section):
    word: WordTokenizeParams
    char: CharTokenizeParams


# --- vocab ------------------------------------------------------------------------------


class VocabLevelParams(Section):
    max_size: int  # including the specials
    min_count: int = Field(ge=1)

    @field_validator("max_size")
    @classmethod
    def _room_for_specials(cls, v: int) -> int:
        if v < len(SPECIALS) + 1:
            raise ValueError(
                f"must be ≥ {len(SPECIALS) + 1} (the specials {', '.join(SPECIALS)} plus one token), got {v}"
            )
        return v


class VocabParams(Section):
    word: VocabLevelParams
    char: VocabLevelParams


# --- windows ----------------------------------------------------------------------------

Mode = Literal["stream", "window", "padded"]


class WindowsParams(Section):
    modes: tuple[Mode, ...]
    length: int = Field(ge=2)  # window mode: tokens per window (inputs; targets shift by one)
    stride: int | None = Field(ge=1)  # window mode; null: length // 2 (Abrahams et al. 2016, ch. 6)
    max_length: int = Field(ge=2)  # padded mode: longer sequences are truncated
    unit: Literal["document", "sentence"]  # padded mode: one row per ...
    sentence_end: tuple[str, ...]  # tokens that end a sentence

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
    word: WindowsParams
    char: WindowsParams


# --- preprocess: corpus → tokenize → vocab fanned out over Dask (flows/preprocess.py) ------


class PreprocessParams(Section):
    """Where the sharded preprocessing flow runs its tasks (docs/scaling.md, "Sharded preprocessing").

    No output's content depends on these (``range_mb`` only decides how the Parquet folders
    are cut into files), so they are not params of any DVC stage.
    """

    scheduler: str | None  # a running Dask scheduler (tcp://host:8786); null: a LocalCluster here
    workers: int = Field(ge=1)  # LocalCluster worker processes, one thread each
    # Multistream dumps: consecutive bz2 streams (~100 pages each) are grouped into pieces of
    # about this many compressed MB, one task each: ~600 tasks for a 20 GB dump.
    range_mb: float = Field(gt=0)
    retries: int = Field(ge=0)  # Prefect retries of a failed task (Dask reruns one whose worker died)
    # per-piece shards and manifests: a rerun reuses finished pieces
    work_dir: str


# --- train / evaluate / sample: the language models (models/, flows/) ---------------------


class DistributedParams(Section):
    """Data-parallel training (models/distributed.py, docs/scaling.md, "Distributed training")."""

    # 1: train in the flow's own process. N > 1: the flow runs `torchrun --standalone
    # --nproc_per_node N` (one process per GPU; gloo on CPU). The global batch stays
    # batch_size rows, split over the N processes, so results match 1 process up to float
    # rounding; the training fingerprint leaves nproc out, and checkpoints resume with any N.
    nproc: int = Field(ge=1)


class LoopParams(Section):
    """The training loop every model shares (models.trainer.Trainer): optimizer, clipping,
    LR schedule, epochs, checkpoints, seed and device. Task sections extend it."""

    optimizer: Literal["adam", "rmsprop", "adadelta", "sgd"]
    lr: float = Field(gt=0.0)
    momentum: float = Field(ge=0.0, lt=1.0)  # sgd and rmsprop
    weight_decay: float = Field(ge=0.0)
    clip: Literal["norm", "value", "none"]  # global grad norm | per value (Abrahams et al. 2016, ch. 6)
    clip_value: float = Field(gt=0.0)
    plateau_factor: float = Field(gt=0.0, lt=1.0)  # lr *= factor when valid loss stops falling
    plateau_patience: int = Field(ge=0)  # epochs without improvement before that
    epochs: int = Field(ge=1)
    epoch_size: int | None = Field(ge=1)  # optimizer steps per epoch; null: one pass over train
    checkpoint_every: int | None = Field(ge=1)  # steps; null: at the end of each epoch only
    # Stop once validation has not improved for this many epochs (validations); null: train every epoch.
    # The weights of the best validation epoch are kept either way (checkpoints/best.pt).
    early_stop: int | None = Field(ge=1)
    seed: int
    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when present (bf16 autocast there)


class TrainParams(LoopParams):
    """One level's recurrent language model and its training loop. Flat, so that
    ``dvc exp run -S train.word.lr=0.01`` works; models.config explains what a null emb_dim or cutoffs becomes."""

    # rnn_tanh | rnn_relu | lstm | gru, or a variant: lstm_peephole | lstm_cifg | lstm_ln | gru_ln
    cell: CellName
    emb_dim: int | None = Field(ge=1)  # null: round(vocab_size ** 0.25), the fourth root of V
    hidden: int = Field(ge=1)
    layers: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)  # between layers and on the output
    tie_weights: bool  # decoder shares the embedding: needs emb_dim == hidden
    # full: one softmax over the vocabulary. adaptive: torch's AdaptiveLogSoftmaxWithLoss (Grave et
    # al. 2017): a head over the `cutoffs[0]` most frequent ids plus one entry per tail cluster, for
    # large vocabularies (docs/models.md, "Large vocabularies and memory"). Ids are sorted by frequency.
    output: Literal["full", "adaptive"]
    cutoffs: tuple[int, ...] | None  # adaptive: where the head and each cluster end; null: models.config's rule
    mode: Mode  # which windows dataset trains: stream (TBPTT) | window | padded
    batch_size: int = Field(ge=1)
    bptt: int = Field(ge=1)  # stream mode: steps of truncated backprop through time
    # MiB: the largest logits tensor (rows x vocabulary, fp32) that training and validation hold at once.
    # The output layer runs over slices of rows (time steps x sequences) below it, so memory does not
    # grow with the vocabulary; results are the same up to float summation order. `rnnlab score` uses
    # the checkpoint's value.
    logits_mb: float = Field(gt=0)
    distributed: DistributedParams  # `-S train.word.distributed.nproc=2`

    @field_validator("cutoffs")
    @classmethod
    def _increasing(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or v[0] < 1 or list(v) != sorted(set(v))):
            raise ValueError(f"must be increasing ids ≥ 1, e.g. [2000, 10000], or null, got {list(v)}")
        return v


class TrainLevels(Section):
    word: TrainParams
    char: TrainParams


class EvaluateParams(Section):
    """Held-out metrics of the trained models (both levels)."""

    splits: tuple[Literal["train", "valid", "test"], ...]
    batch_size: int = Field(ge=1)  # sequences evaluated side by side; every token is still scored once
    logits_mb: float = Field(gt=0)  # largest logits slice held at once: see TrainParams.logits_mb


class SampleParams(Section):
    """Generated text from one level's model: temperature sampling, and a greedy decode up to a stop token."""

    prime: str  # tokenized like the training data; "" starts a fresh document
    count: int = Field(ge=0)  # temperature samples
    max_tokens: int = Field(ge=1)  # new tokens per sample at most (a sample also ends at <eos>)
    temperature: float = Field(gt=0.0)  # p_i ∝ exp(log p_i / T)
    top_k: int | None = Field(ge=1)  # sample among the k likeliest tokens only
    greedy_stop: str | None  # also decode greedily, stopping after this token; null: no greedy line
    seed: int


class SampleLevels(Section):
    word: SampleParams
    char: SampleParams


# --- retrain / schedule: flows/retrain.py and ops/serve.py (docs/teams.md) ---------------


class RetrainParams(Section):
    """When a retrained model replaces the promoted one (flows/retrain.py)."""

    levels: tuple[Level, ...]  # whose models are retrained, compared and promoted
    split: Literal["valid", "test"]  # compared on valid: test stays untouched for reporting
    # Promote when held-out perplexity falls by at least this fraction (0.01: 1 %), so that
    # noise between two equally good runs never churns the promoted model.
    margin: float = Field(ge=0.0, lt=1.0)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must list 'word' and/or 'char', each once, got {list(v)}")
        return v


_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for lowest..): the five fields of a cron expression.
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),  # 0 and 7 are both Sunday
)


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a cron expression Prefect accepts, or None when it is one.

    A subset of what Prefect's (vendored) croniter accepts: five fields with ``*``, numbers or
    names, ranges, lists, ``/step``, ``?``, ``L`` (last day of the month; ``L5``: last Friday)
    and ``5#2`` (second Friday), or a macro such as ``@daily``. Written out here because
    pipeline/ must not import Prefect; tests/test_retrain.py checks it against croniter.
    """
    text = expr.strip().lower()
    if text.startswith("@"):
        return None if text in _CRON_MACROS else f"unknown macro; use one of {', '.join(_CRON_MACROS)}"
    fields = text.split()
    if len(fields) != 5:
        return f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for field, (name, lo, hi, names) in zip(fields, _CRON_FIELDS):

        def value(tok: str, lo: int = lo, hi: int = hi, names: tuple[str, ...] = names) -> bool:
            return tok in names or (tok.isdigit() and lo <= int(tok) <= hi)

        for item in field.split(","):
            base, slash, step = item.partition("/")
            if slash and not (step.isdigit() and int(step) >= 1):
                return f"{name} field {field!r}: the step after '/' must be a whole number ≥ 1"
            if base in ("*", "?") and (base == "*" or name in ("day-of-month", "day-of-week")):
                continue
            if name == "day-of-month" and base == "l" and not slash:
                continue
            if name == "day-of-week" and not slash:
                if base.startswith("l") and value(base[1:]):
                    continue
                day, hash_, nth = base.partition("#")
                if hash_ and value(day) and nth in ("1", "2", "3", "4", "5"):
                    continue
            low, dash, high = base.partition("-")
            if not (value(low) and (not dash or value(high))):
                return f"{name} field {field!r}: {base!r} is not a value from {lo} to {hi}" + (
                    f" or a name ({names[0]}, {names[1]}, ...)" if names else ""
                )
    return None


class ScheduleParams(Section):
    """The retraining deployment that ``python -m ops.serve`` serves (docs/teams.md)."""

    deployment: str = Field(min_length=1)  # shown in the UI as retrain/<deployment>
    cron: str | None  # when to retrain; null: every `interval` seconds instead
    interval: float | None = Field(gt=0)  # seconds between runs, when cron is null
    timezone: str  # IANA name: the cron's clock (3 a.m. where?)
    # `dvc exp run -S key=value` for each scheduled run; empty: plain `dvc repro`.
    overrides: dict[str, str | int | float | bool]

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and (problem := cron_problem(v)):
            raise ValueError(f"not a valid cron expression ({problem}), got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"must be an IANA time zone such as 'UTC' or 'Europe/Berlin', got {v!r}") from None
        return v

    @field_validator("overrides")
    @classmethod
    def _dotted_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+", k)]
        if bad:
            raise ValueError(f"keys must be dotted params keys such as 'train.word.lr', got {bad}")
        return v

    @model_validator(mode="after")
    def _cron_or_interval(self) -> ScheduleParams:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("set exactly one of cron and interval (the other to null)")
        return self


# --- beyond language modelling: baselines and other sequence tasks -------------


class NgramParams(Section):
    """The count-based Kneser-Ney baseline (models/ngram.py), fitted on the train stream."""

    n: int = Field(ge=1)  # order: 3 = trigram
    modified: bool  # Chen & Goodman's three discounts per order instead of one


class NgramLevels(Section):
    word: NgramParams
    char: NgramParams


class SkipgramParams(LoopParams):
    """Skip-gram word embeddings on ``data/windows/word``'s streams (models/skipgram.py)."""

    vocab_size: int = Field(ge=4)  # the top ids of data/vocab/word.json; rarer words count as <unk>
    max_context: int = Field(ge=1)  # each word's window size is drawn uniformly from 1..max_context
    emb_dim: int = Field(ge=1)
    negatives: int = Field(ge=1)  # noise words per batch, shared by its pairs (as tf.nn.nce_loss)
    noise_power: float = Field(ge=0.0)  # noise ∝ unigram count ** noise_power
    loss: Literal["negative_sampling", "nce"]
    subsample: float | None = Field(gt=0.0)  # word2vec's t: keep a word with p = (sqrt(f/t) + 1) t/f; null: off
    batch_size: int = Field(ge=1)  # (center, context) pairs per step
    valid_pairs: int = Field(ge=1)  # held-out pairs scored after each epoch
    neighbors: tuple[str, ...]  # words whose nearest neighbours the report lists; empty: the 10 most frequent
    analogies: str | None  # a questions-words.txt file (": section", then "a b c d" lines); null: none


class ImdbDataParams(Section):
    """IMDB reviews for the classifiers: the source, its tokenizer, vocabulary and padded rows (data/imdb/)."""

    source: ImdbParams
    tokenize: WordTokenizeParams
    vocab: VocabLevelParams
    windows: WindowsParams  # padded: one review per row, with its label


class SentimentParams(LoopParams):
    """A GRU/LSTM sentiment classifier over word embeddings (models/classify.py)."""

    cell: CellName  # gru | lstm, or a variant of models/cells.py
    emb_dim: int = Field(ge=1)  # must equal the width of `embeddings` when given
    hidden: int = Field(ge=1)
    layers: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)  # on the embeddings and before the output layer
    readout: Literal["last", "mean", "max"]  # last relevant output (Abrahams et al.) | mean/max pooling
    embeddings: str | None  # .npy of our vocabulary (artifacts/skipgram) or word2vec/GloVe text; null: random
    freeze_embeddings: bool
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(ge=1)


class LmclassParams(Section):
    """LM-based classification: one language model per class, on data/imdb/lm/<class>/.

    A review goes to the class whose model gives it the higher log-likelihood per token.
    """

    windows: WindowsParams  # stream: each class's reviews as one stream
    train: TrainParams  # the shared LM trainer
    batch_size: int = Field(ge=1)  # test reviews scored side by side


class OcrDataParams(Section):
    """Taskar's OCR letters as a document table of image sequences (data/ocr/)."""

    source: OcrParams


class OcrTaskParams(LoopParams):
    """Sequence labelling of handwritten words (models/ocr.py): one softmax shared over time.

    After Abrahams et al. (2016, ch. 6).
    """

    hidden: int = Field(ge=1)
    layers: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)
    bidirectional: bool
    compare: bool  # also train the unidirectional twin: the DVC plot of their per-letter errors
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(ge=1)


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
    retrain: RetrainParams
    schedule: ScheduleParams
    ngram: NgramLevels
    skipgram: SkipgramParams
    imdb_data: ImdbDataParams
    sentiment: SentimentParams
    lmclass: LmclassParams
    ocr_data: OcrDataParams
    ocr: OcrTaskParams
    preprocess: PreprocessParams


# Error messages stay a few KB whatever the file holds: each problem line is cut to about
# _LINE_CHARS characters (a bad value shows as its first ~200 with its type and length), and
# at most _MAX_PROBLEMS are listed. A 500-byte YAML alias bomb once made a 2.8 GB message.
_MAX_PROBLEMS = 10
_LINE_CHARS = 300
_KEY_CHARS = 60


def _key(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)  # a key may be anything YAML allows; an unknown one may be huge
            out += ("." if out else "") + (name if len(name) <= _KEY_CHARS else shown(name, _KEY_CHARS))
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
    kind, ctx = err["type"], err.get("ctx", {})
    got = shown(err.get("input"))
    if kind == "extra_forbidden":
        valid = _fields_at(tuple(err["loc"][:-1]))
        return "unknown key" + (f"; valid keys here: {', '.join(valid)}" if valid else "")
    if kind == "missing":
        return "missing; add it to params.yaml"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']}, got {got}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}, got {got}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx['le']}, got {got}"
    if kind == "less_than":
        return f"must be < {ctx['lt']}, got {got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected'].replace(' or ', ', ')}, got {got}"
    if kind == "value_error":
        text = str(ctx.get("error", err["msg"]))
        if len(text) > _LINE_CHARS:
            # Our validators end with ", got <repr of the value>": keep the rule, show the value bounded.
            head, sep, _ = text.partition(", got ")
            text = (head[:_LINE_CHARS] + sep + got) if sep else shown(text, _LINE_CHARS)
        return text
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got}"


def validate(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params mapping; raise ParamsError listing its problems (at most _MAX_PROBLEMS)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        problems = [f"  {_key(err['loc'])}: {_describe(err)}"[: _LINE_CHARS + 120] for err in errors[:_MAX_PROBLEMS]]
        noun = "problem" if len(errors) == 1 else "problems"
        more = ""
        if len(errors) > _MAX_PROBLEMS:
            more = f" (the first {_MAX_PROBLEMS} below; fix them and rerun for the rest)"
        raise ParamsError(f"{source} has {len(errors)} {noun}{more}:\n" + "\n".join(problems)) from None
    except RecursionError:  # pydantic walking a structure that YAML nested just under Python's limit
        raise ParamsError(
            f"{source}: a value is nested too deeply to validate; params.yaml needs a few levels"
        ) from None


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _position(data: bytes, offset: int) -> str:
    """``line:column`` (1-based) of a byte offset."""
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    return f"{line}:{offset - line_start + 1}"


def read_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file; every failure is one ParamsError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root, or pass --params") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a file; pass the params file itself (--params)") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot be read ({e.strerror or type(e).__name__}); check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(
            f"{path}:{_position(data, e.start)}: byte {data[e.start]:#04x} is not UTF-8; save the file as UTF-8"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = _cut(str(e.problem or e.context))
        raise ParamsError(f"{where}: not valid YAML ({what}); fix the syntax there") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({_cut(str(e).partition(chr(10))[0])})") from None
    except RecursionError:
        raise ParamsError(
            f"{path}: nested too deeply to parse (Python's recursion limit); params.yaml needs a few levels"
        ) from None
    except (ValueError, OverflowError) as e:  # a YAML int of over 4300 digits, a date such as 2024-13-45
        reason = _cut(str(e).partition(";")[0])  # Python's hint (set_int_max_str_digits) is not the fix here
        raise ParamsError(
            f"{path}: not valid YAML: a number or date cannot be read ({reason}); fix that value"
        ) from None
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
