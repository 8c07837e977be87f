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


class CorpusParams(Section):
    source: Literal["grammar", "text"] = "grammar"
    grammar: GrammarParams = GrammarParams()
    text: TextParams = TextParams()


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


# --- the file ---------------------------------------------------------------------------


class Params(Section):
    """The whole of params.yaml. Every section must be present."""

    corpus: CorpusParams
    tokenize: TokenizeParams
    vocab: VocabParams
    windows: WindowsLevels


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
        return f"must be one of {ctx['expected']}, got {got!r}"
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
