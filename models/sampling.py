"""Generate, complete and score text with a trained model, statefully.

    lm = LanguageModel.load("artifacts/word/checkpoints")          # checks the vocabulary's sha256
    lm.generate("the cat", max_tokens=30, temperature=0.8, top_k=10, seed=1).text
    lm.generate("the cat", greedy=True, stop=".").text              # greedy up to "."
    lm.complete("the cat", k=5)                                     # [(token, probability), ...]
    lm.score("the cat ran.")                                        # total log-prob, perplexity

The prime is fed once; every new token then costs one recurrent step on the
carried state, never a re-run of the prefix. Text becomes tokens with the
tokenizer settings stored in the checkpoint, so no params file is read.

Temperature sampling follows Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for
Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6; greedy decoding up to a
stop token follows the nonsense-language LSTM tutorial notebook of the ``theano_lstm``
package.

Memory: generation and completion build the output distribution of the last
position only, and scoring computes the targets' log-probabilities over slices of
at most ``logits_mb`` MiB of logits, so a long text costs no (T, V) tensor. Models
with ``output: adaptive`` give exact log-probabilities (nn.AdaptiveLogSoftmaxWithLoss.log_prob).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import torch
from torch import Tensor

from models import checkpoint as ckpt
from models.device import autocast, resolve_device
from models.rnn import RNNLanguageModel, State
from pipeline.tokenize import WordTokenizer, char_tokens
from pipeline.vocab import EOS, PAD, UNK, Vocab

_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)])")


def next_token_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
    """Temperature (Abrahams et al. 2016, ch. 6): p_i ∝ exp(log p_i / T) = softmax(logits / T) (log p_i and logits
    differ by a constant); with ``top_k`` only the k likeliest keep mass; <pad> never does.

    logits (V,): raw logits or log-probabilities -> probabilities (V,).
    """
    scaled = logits.float() / temperature if temperature != 1.0 else logits.float().clone()
    scaled[PAD] = -math.inf
    if top_k is not None and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    return torch.softmax(scaled, dim=-1)


def draw(probs: Tensor, gen: torch.Generator) -> int:
    """One index with probability ``probs`` (V,), by inverting the CDF with one uniform draw
    (torch.multinomial costs ~15x more per call on CPU at V = 10k: bench/sample_speed.py)."""
    cdf = probs.cumsum(0)
    u = torch.rand(1, generator=gen, device=probs.device).mul_(cdf[-1])
    return min(int(torch.searchsorted(cdf, u, right=True)), probs.numel() - 1)


@dataclass(frozen=True)
class Generation:
    prime: list[str]  # the prime's tokens
    tokens: list[str]  # the new tokens (a final <eos> is dropped)
    text: str  # prime and new tokens, detokenized


class LanguageModel:
    """A model, its vocabulary and its tokenizer, for inference on one device."""

    def __init__(
        self,
        model: RNNLanguageModel,
        vocab: Vocab,
        tokenizer: dict[str, Any],
        device: torch.device,
        logits_mb: float | None,
    ):
        self.model, self.vocab, self.tokenizer, self.device = model.eval(), vocab, tokenizer, device
        self.logits_mb = logits_mb  # the largest logits slice ``score`` holds (MiB)
        self.level = tokenizer["level"]
        self._word = WordTokenizer(tokenizer["pattern"], tokenizer["lowercase"]) if self.level == "word" else None

    @classmethod
    def load(
        cls,
        path: str | Path,
        vocab: str | Path | None = None,
        device: str = "auto",
        logits_mb: float | Literal["trained"] | None = "trained",
    ) -> LanguageModel:
        """From a checkpoint file or folder; ``vocab`` overrides the vocabulary path it recorded.

        ``logits_mb``: the largest logits slice ``score`` holds (MiB; None: one slice). "trained": the
        budget the model was trained with, its checkpoint's ``train.logits_mb``.
        """
        dev = resolve_device(device, "--device")
        model, v, c = ckpt.load_model(path, dev, vocab)
        if logits_mb == "trained":
            # A checkpoint written before the key existed held a whole batch's logits: one slice, as then.
            logits_mb = c["train"].get("logits_mb")
        return cls(model, v, c["tokenizer"], dev, logits_mb)

    # --- text <-> ids -------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        arr = pa.array([text], pa.string())
        out = self._word(arr) if self._word else char_tokens(arr, self.tokenizer["lowercase"])
        return out[0].values.to_pylist()

    def encode(self, text: str) -> list[int]:
        """<eos> (a document starts after one, as in stream.npy) then the text's token ids."""
        return [EOS, *self.vocab.encode(self.tokenize(text))]

    def detokenize(self, tokens: list[str]) -> str:
        if self.level == "char":
            return "".join(tokens)
        return _NO_SPACE_BEFORE.sub(r"\1", " ".join(tokens))

    # --- inference ----------------------------------------------------------------------

    def _features(self, ids: list[int], state: State | None) -> tuple[Tensor, State]:
        """Feed ids (one sequence): the output layer's inputs after each (T, H), and the state."""
        x = torch.tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)  # (T, 1)
        with autocast(self.device):
            h, state = self.model.features(x, state)  # (T, 1, H)
        return h[:, 0], state

    def _last_logits(self, h: Tensor) -> Tensor:
        """h (T, H) -> the logits (or log-probabilities) after the last position (V,), fp32."""
        with autocast(self.device):
            return self.model.output(h[-1:])[0].float()

    @torch.inference_mode()
    def _step(self, ids: list[int], state: State | None) -> tuple[Tensor, State]:
        """Feed ids (one sequence); return log-probabilities after each (T, V), and the state.
        Holds a (T, V) tensor: for tests and short inputs; ``score`` slices instead."""
        h, state = self._features(ids, state)
        with autocast(self.device):
            logits = self.model.output(h).float()  # (T, V)
        return torch.log_softmax(logits, dim=-1), state

    @torch.inference_mode()
    def generate(
        self,
        prime: str = "",
        max_tokens: int = 50,
        temperature: float = 1.0,
        top_k: int | None = None,
        greedy: bool = False,
        stop: str | None = None,
        seed: int = 0,
    ) -> Generation:
        """Sample (p_i ∝ exp(log p_i / temperature), Abrahams et al. 2016, ch. 6) or decode greedily, after ``prime``.

        Ends after ``max_tokens``, at <eos>, or after the ``stop`` token (kept); without a prime,
        not before the first token. The prime goes through the model once; each new token is then
        one step on the carried state.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        stop_id = None
        if stop is not None:
            stop_id = self.vocab.id(stop)
            if self.vocab.tokens[stop_id] != stop:
                raise ValueError(f"stop token {stop!r} is not in the {self.level} vocabulary")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        ids = self.encode(prime)
        h, state = self._features(ids, None)  # (T, H)
        last = self._last_logits(h)  # (V,)
        x = torch.empty(1, 1, dtype=torch.long, device=self.device)  # reused: one token per step
        amp = autocast(self.device)  # re-entrant: one context for every step
        out: list[int] = []
        for i in range(max_tokens):
            if i == 0 and len(ids) == 1:
                # A new document (no prime): it never ends before its first token, as no document in
                # the training data is empty; an <eos> here would only give an empty sample.
                last[EOS] = -math.inf
            if greedy:
                last[PAD] = -math.inf  # <pad> is never a real next token
                nxt = int(last.argmax())
            else:
                nxt = draw(next_token_probs(last, temperature, top_k), gen)
            if nxt == EOS:
                break
            out.append(nxt)
            if nxt == stop_id or i == max_tokens - 1:
                break
            x.fill_(nxt)
            with amp:
                logits, state = self.model.step(x, state)  # one step on the carried state: (1, 1, V)
            last = logits[0, 0].float()
        prime_tokens = self.vocab.decode(ids[1:])
        new = self.vocab.decode(out)
        return Generation(prime_tokens, new, self.detokenize(prime_tokens + new))

    @torch.inference_mode()
    def complete(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` likeliest next tokens after ``text``, with their probabilities (<pad> excluded)."""
        h, _ = self._features(self.encode(text), None)  # (T, H)
        probs = torch.softmax(self._last_logits(h), dim=-1)  # (V,)
        probs[PAD] = 0.0
        top = torch.topk(probs, min(k, probs.numel()))
        return [(self.vocab.tokens[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]

    @torch.inference_mode()
    def score(self, text: str, end: bool = False) -> dict[str, Any]:
        """Total log-probability (nats) of ``text``'s tokens given a document start, and perplexity.

        ``end``: also score the <eos> that closes the document (as the evaluation does).
        """
        ids = self.encode(text)
        targets = ids[1:] + ([EOS] if end else [])
        if not targets:
            raise ValueError("nothing to score: the text has no tokens")
        h, _ = self._features(ids if end else ids[:-1], None)  # (n, H): predicts ids[1:] (+ <eos>)
        with autocast(self.device):
            lp = self.model.target_logprobs(h, torch.tensor(targets, device=self.device), self.logits_mb)  # (n,)
        total = float(lp.sum())
        return {
            "tokens": len(targets),
            "unknown": sum(1 for i in targets if i == UNK),
            "log_prob": total,
            "nats_per_token": -total / len(targets),
            "perplexity": math.exp(-total / len(targets)),
        }
