"""The model's shape as a plain dataclass: built from ``train.<level>`` params, saved in checkpoints.

    cfg = ModelConfig.from_params(params.train.word, vocab_size=len(vocab))
    model = RNNLanguageModel(cfg)             # models.rnn
    ckpt["config"] = cfg.to_dict()            # plain types: torch.load(weights_only=True) reads it

Only what fixes the module's parameters and forward pass lives here; the
optimizer, data mode and schedule stay in ``TrainParams`` (also in the checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from pipeline.errors import ParamsError
from pipeline.params import TrainParams


class ModelConfigError(ParamsError, ValueError):
    """A model shape that cannot be built (unknown cell, tied weights of different sizes, ...)."""


class SavedConfig:
    """A config dataclass that a checkpoint stores as plain types (torch.load(weights_only=True) reads them).

    ``from_dict`` refuses keys the dataclass does not know: a checkpoint written by a newer rnnlab
    fails loudly instead of losing a setting.
    """

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # the subclass is a dataclass

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if unknown:
            raise ModelConfigError(
                f"checkpoint {cls.__name__} has unknown keys {unknown}; it was written by a newer rnnlab: upgrade"
            )
        return cls(**d)


def default_emb_dim(vocab_size: int) -> int:
    """A rule of thumb for the embedding width: round(V^¼), the fourth root of the vocabulary size (at least 1)."""
    return max(1, round(vocab_size**0.25))


def default_cutoffs(vocab_size: int) -> tuple[int, int]:
    """``output: adaptive`` with ``cutoffs: null``: the head holds the most frequent 20% of the ids,
    a first cluster the next 30% and a second the rest (ids are sorted by frequency), up to
    fairseq's WikiText-103 cutoffs, [20000, 60000], which large vocabularies get.

    Measured on WikiText-2 (V = 18k, ``python -m bench.vocab --wikitext``): after 2 epochs
    20% / 50% matched the full softmax's validation perplexity, where 10% / 30% was 7% worse and
    one cluster at 10% 44% worse. The cap keeps the head narrow enough for adaptive to train
    several times faster than the full softmax at V = 267k (``python -m bench.vocab``).
    """
    first = min(max(1, vocab_size // 5), 20_000)
    return first, max(first + 1, min(vocab_size - 1, vocab_size // 2, 60_000))


@dataclass(frozen=True)
class ModelConfig(SavedConfig):
    """Everything that fixes an ``RNNLanguageModel``'s parameters; ``from_params`` builds it from
    ``train.<level>``, whose values params.yaml gives."""

    vocab_size: int  # from the vocabulary file: ids 0..vocab_size-1, <pad>=0, <unk>=1, <eos>=2
    cell: str  # a key of models.rnn.CELLS
    emb_dim: int  # embedding width; must equal `hidden` when tie_weights
    hidden: int  # state width of every layer
    layers: int
    dropout: float  # on the embeddings, between layers and before the decoder
    tie_weights: bool  # decoder.weight is embedding.weight (Press & Wolf 2017)
    # "full" softmax, or "adaptive" (nn.AdaptiveLogSoftmaxWithLoss) with the ids where its head's
    # shortlist and each tail cluster end (empty for full).
    output: str
    cutoffs: tuple[int, ...]

    @classmethod
    def from_params(cls, p: TrainParams, vocab_size: int) -> ModelConfig:
        emb = p.emb_dim if p.emb_dim is not None else default_emb_dim(vocab_size)
        cutoffs: tuple[int, ...] = ()
        if p.output == "adaptive":
            cutoffs = tuple(p.cutoffs) if p.cutoffs is not None else default_cutoffs(vocab_size)
        return cls(vocab_size, p.cell, emb, p.hidden, p.layers, p.dropout, p.tie_weights, p.output, cutoffs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        # Checkpoints written before output and cutoffs existed had a full softmax: they load as one.
        d = {"output": "full", "cutoffs": (), **d}
        return super().from_dict({**d, "cutoffs": tuple(d["cutoffs"])})  # a list once saved
