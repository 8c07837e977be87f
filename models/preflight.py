"""One level's language-model params checked against its data, before any training.

    sample = check_lm("word", train, tokenizer, evaluate, sample, warn=print)

The ``lm@<level>`` stage (flows/lm.py) calls this in its own process before its flow starts, once
the data stages have written the vocabulary and the windows. Every param whose validity depends on
the data is checked here, so that a run on any corpus either works or stops with one ``error:``
line naming the key, its value and the fix, before a step is trained and never as a traceback from
inside a Prefect task. A default that merely does not fit the corpus adapts and says so in one
warning line: the sampling prime and the greedy stop token (``sample.<level>``), whose adapted
values are returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import torch

from models import checkpoint as ckpt
from models.config import ModelConfig, ModelConfigError
from models.data import read_meta
from models.rnn import RNNLanguageModel
from pipeline import paths
from pipeline.errors import DataError, ParamsError, shown
from pipeline.params import EvaluateParams, SampleParams, TrainParams
from pipeline.tokenize import WordTokenizer, char_tokens
from pipeline.vocab import EOS, NUM_SPECIALS, SPECIALS, Vocab

NGRAM_SPLITS = ("train", "valid", "test")  # the n-gram baseline fits train and scores these (flows/ngram.py)


def check_lm(
    level: str,
    train: TrainParams,
    tokenizer: dict[str, Any],
    evaluate: EvaluateParams,
    sample: SampleParams,
    warn: Callable[[str], None],
) -> SampleParams:
    """Raise a ParamsError, DataError or CheckpointError for a value that cannot work on this data;
    return ``sample`` adapted to the vocabulary (each change told through ``warn``)."""
    vocab = Vocab.load(paths.vocab(level))
    if len(vocab) <= NUM_SPECIALS:
        raise DataError(
            f"{paths.vocab(level)} holds no token besides {', '.join(SPECIALS)}: the corpus gave the {level} "
            f"level nothing to learn; check the corpus and tokenize.{level}"
        )
    meta = read_meta(paths.windows(level), vocab)
    check_splits(level, train, evaluate, meta)
    check_model(level, train, len(vocab))
    check_checkpoints(level)
    return adapt_sample(level, sample, tokenizer, vocab, warn)


def check_splits(level: str, train: TrainParams, evaluate: EvaluateParams, meta: dict[str, Any]) -> None:
    """Every split a later step reads exists, in the files it reads, with at least one full training batch."""
    modes, splits = meta["params"]["modes"], meta["splits"]
    if "stream" not in modes:  # the n-gram and the evaluation of stream and window models read the stream
        raise ParamsError(
            f"windows.{level}.modes={list(modes)} lacks 'stream', which the n-gram baseline and the evaluation "
            f"read; add it"
        )
    if train.mode not in modes:
        raise ParamsError(
            f"train.{level}.mode={train.mode!r} but windows.{level}.modes={list(modes)} has no such dataset; "
            f"add {train.mode!r} there or set train.{level}.mode to one of them"
        )
    for split in sorted({"valid", *evaluate.splits, *NGRAM_SPLITS}):
        if splits.get(split, {}).get("stream_tokens", 0) < 2:  # a leading <eos> and at least one target
            raise DataError(
                f"the {split} split of the {level} windows has no tokens; give that split text "
                f"(corpus.text.{split}, or a larger corpus.text.holdout)"
            )
    info, b, key = splits["train"], train.batch_size, f"train.{level}"
    if train.mode == "stream":
        have, need = info["stream_tokens"], b * (train.bptt + 1)
        if have < need:
            fits = have // (train.bptt + 1)
            fix = f"lower {key}.batch_size to {fits} or less" if fits else f"lower {key}.bptt and batch_size"
            raise ParamsError(
                f"{key}.batch_size={b} × ({key}.bptt={train.bptt} + 1) needs {need:,} tokens of train for one "
                f"batch, but the {level} train split has {have:,}; {fix}, or give more text"
            )
        return
    rows = info.get("windows" if train.mode == "window" else "padded_rows", 0)
    if rows < b:
        unit = "windows" if train.mode == "window" else "documents"
        raise ParamsError(
            f"{key}.batch_size={b} needs {b:,} {unit} of train for one batch, but the {level} train split has "
            f"{rows:,}; lower {key}.batch_size to {max(rows, 1)} or less, or give more text"
        )


def check_model(level: str, train: TrainParams, vocab_size: int) -> None:
    """The model's shape against the vocabulary (adaptive cutoffs, tied weights), built without memory."""
    key = f"train.{level}"
    cfg = ModelConfig.from_params(train, vocab_size)
    if train.output == "adaptive" and not (min(cfg.cutoffs) > 0 and max(cfg.cutoffs) < vocab_size):
        if train.cutoffs is not None:
            raise ParamsError(
                f"{key}.cutoffs={list(train.cutoffs)} must lie between 1 and {vocab_size - 1} for this vocabulary of "
                f"{vocab_size:,} tokens; lower them, or set null (20% and 50% of the vocabulary)"
            )
        raise ParamsError(
            f"{key}.output=adaptive needs a larger vocabulary than {vocab_size:,} tokens; set {key}.output: full"
        )
    try:
        with torch.device("meta"):  # shapes only: no memory, whatever the vocabulary
            RNNLanguageModel(cfg)
    except (ModelConfigError, ValueError) as e:
        raise ParamsError(f"{key}: {e}") from None


def check_checkpoints(level: str) -> None:
    """A checkpoint left in the folder (to resume, or the best weights) must be readable."""
    folder = paths.checkpoints(level)
    for path in (folder / ckpt.FILE, folder / ckpt.BEST):
        if path.exists():
            try:
                ckpt.load(path, mmap=True)
            except ckpt.CheckpointError as e:
                raise ckpt.CheckpointError(f"{e}. To train from scratch instead, delete it: rm {path}") from None


def adapt_sample(
    level: str, sample: SampleParams, tokenizer: dict[str, Any], vocab: Vocab, warn: Callable[[str], None]
) -> SampleParams:
    """``sample`` with a prime and a greedy stop token this vocabulary can read."""
    key = f"sample.{level}"
    update: dict[str, Any] = {}
    text = pa.array([sample.prime], pa.string())
    if level == "word":
        prime = WordTokenizer(tokenizer["pattern"], tokenizer["lowercase"])(text)[0].values.to_pylist()
    else:
        prime = char_tokens(text, tokenizer["lowercase"])[0].values.to_pylist()
    unknown = [t for t in prime if vocab.tokens[vocab.id(t)] != t]
    if prime and len(unknown) == len(prime):
        warn(
            f"{key}.prime {shown(sample.prime)} has no token of the {level} vocabulary; samples start a new document "
            f'instead (set {key}.prime to text of your corpus, or "")'
        )
        update["prime"] = ""
    elif unknown:
        warn(f"{key}.prime {shown(sample.prime)}: {shown(unknown)} are not in the {level} vocabulary; read as <unk>")
    stop = sample.greedy_stop
    if stop is not None and vocab.tokens[vocab.id(stop)] != stop:
        eos = vocab.tokens[EOS]
        warn(
            f"{key}.greedy_stop {shown(stop)} is not in the {level} vocabulary; the greedy line ends at {eos} or "
            f"after {key}.max_tokens={sample.max_tokens} instead (set {key}.greedy_stop to a token of your text, "
            "or null for no greedy line)"
        )
        update["greedy_stop"] = eos
    return sample.model_copy(update=update) if update else sample
