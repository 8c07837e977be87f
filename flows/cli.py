"""The ``rnnlab`` command line: use a trained language model.

    rnnlab sample --prime "the cat" --temperature 0.8 --top-k 10 --count 3
    rnnlab sample --level char --greedy --stop .
    rnnlab complete "the cat" -k 5 --json
    rnnlab score "the cat ran." --json
    rnnlab neighbors cat dog -k 5            # skip-gram embeddings: nearest words by cosine
    rnnlab classify "a wonderful film" --json   # the sentiment classifier (tasks/dvc.yaml)

Models load from ``artifacts/<level>/checkpoints`` (``--checkpoint`` for another),
with the vocabulary recorded in the checkpoint (``--vocab`` for another; its sha256
must match). No Prefect server starts: these run in about a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from pipeline.errors import RnnlabError
from pipeline.params import LEVELS


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {s}")
    return v


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", choices=LEVELS, default="word", help="token level (default: %(default)s)")
    p.add_argument("--checkpoint", help="checkpoint file or folder (default: artifacts/<level>/checkpoints)")
    p.add_argument("--vocab", help="vocabulary file (default: the one the checkpoint records)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent sequence models: data stages under DVC, training under Prefect.",
        epilog="Run the whole pipeline with `dvc repro`; see README.md.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("sample", help="generate text after a prime", description="Generate text after a prime: "
                       "temperature sampling (p_i ∝ exp(log p_i / T)), top-k, or greedy decoding.")  # fmt: skip
    s.add_argument("--prime", default="", help="text to continue (default: a new document)")
    s.add_argument("--count", type=_positive_int, default=1, help="samples, with seeds seed, seed+1, ... (default: 1)")
    s.add_argument("--max-tokens", type=_positive_int, default=50, help="new tokens at most (default: 50)")
    s.add_argument("--temperature", type=_positive_float, default=1.0, help="(default: 1.0)")
    s.add_argument("--top-k", type=_positive_int, help="sample among the k likeliest tokens only")
    s.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    s.add_argument("--stop", help="end a sample after this token (e.g. '.')")
    s.add_argument("--seed", type=int, default=0, help="(default: 0)")
    _model_options(s)

    c = sub.add_parser("complete", help="the likeliest next tokens", description="The k likeliest next tokens "
                       "after a text, with their probabilities.")  # fmt: skip
    c.add_argument("text", help="the text so far ('-' reads stdin)")
    c.add_argument("-k", type=_positive_int, default=5, help="how many (default: 5)")
    _model_options(c)

    r = sub.add_parser("score", help="log-probability and perplexity of a text", description="Total log-probability "
                       "(nats) and perplexity of a text, read as the start of a document.")  # fmt: skip
    r.add_argument("text", help="the text ('-' reads stdin)")
    r.add_argument("--end", action="store_true", help="the text is a whole document: also score its closing <eos>")
    _model_options(r)

    n = sub.add_parser("neighbors", help="nearest words in the skip-gram embeddings", description="The k nearest "
                       "words by cosine similarity in the skip-gram embeddings (the skipgram stage's).")  # fmt: skip
    n.add_argument("words", nargs="+", help="one or more words of the vocabulary")
    n.add_argument("-k", type=_positive_int, default=10, help="how many (default: 10)")
    n.add_argument("--embeddings", default="artifacts/skipgram/embeddings.npy", help="(default: %(default)s)")
    n.add_argument("--vocab", help="vocabulary file (default: the one embeddings.json records)")
    n.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    k = sub.add_parser("classify", help="sentiment of a text", description="Class probabilities of a text from the "
                       "sentiment classifier (`dvc repro tasks/dvc.yaml:sentiment` trains it).")  # fmt: skip
    k.add_argument("text", nargs="+", help="one or more texts ('-' reads stdin)")
    k.add_argument("--checkpoint", default="artifacts/sentiment/checkpoints", help="(default: %(default)s)")
    k.add_argument("--vocab", help="vocabulary file (default: the one the checkpoint records)")
    k.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: %(default)s)")
    k.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def _text(arg: str) -> str:
    return sys.stdin.read() if arg == "-" else arg


def _neighbors(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from models.skipgram import nearest
    from pipeline.vectors import embeddings_info, load_embeddings
    from pipeline.vocab import Vocab

    info = embeddings_info(args.embeddings)
    vocab_path = args.vocab or info["vocab"]["path"]
    vocab = Vocab.load(vocab_path)
    matrix = load_embeddings(args.embeddings, vocab, vocab_path)
    trained = info.get("trained", len(vocab))
    for w in args.words:
        if vocab.tokens[vocab.id(w)] != w or vocab.id(w) >= trained:
            raise RnnlabError(f"{w!r} is not among the {trained} words the embeddings were trained on ({vocab_path})")
    lists = nearest(matrix, vocab.tokens, [vocab.id(w) for w in args.words], args.k, candidates=trained)
    out = {"embeddings": args.embeddings, "neighbors": {w: [{"word": t, "cosine": c} for t, c in nb]
                                                        for w, nb in zip(args.words, lists)}}  # fmt: skip
    human = "\n".join(f"{w}: " + ", ".join(f"{t} ({c:.3f})" for t, c in nb) for w, nb in zip(args.words, lists))
    return out, human


def _classify(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from models.classify import Classifier
    from models.device import resolve_device

    clf = Classifier.load(args.checkpoint, args.vocab, resolve_device(args.device, "--device"))
    texts = [_text(t) for t in args.text]
    probs = clf(texts)
    out = {"checkpoint": args.checkpoint, "results": [{"text": t, "label": max(p, key=p.get), "probabilities": p}
                                                      for t, p in zip(texts, probs)]}  # fmt: skip
    human = "\n".join(f"{r['label']}  " + " ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items())
                      for r in out["results"])  # fmt: skip
    return out, human


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.command == "neighbors":
        return _neighbors(args)
    if args.command == "classify":
        return _classify(args)
    from models.sampling import LanguageModel  # torch loads only when a command runs, not for --help

    path = args.checkpoint or f"artifacts/{args.level}/checkpoints"
    lm = LanguageModel.load(path, args.vocab, args.device)
    info = {"checkpoint": str(path), "level": lm.level}
    if args.command == "sample":
        a = args
        gens = [
            lm.generate(a.prime, a.max_tokens, a.temperature, a.top_k, a.greedy, a.stop, a.seed + i)
            for i in range(a.count)
        ]
        out = {**info, "prime": args.prime, "samples": [{"text": g.text, "tokens": g.tokens} for g in gens]}
        return out, "\n".join(g.text for g in gens)
    if args.command == "complete":
        text = _text(args.text)
        nxt = lm.complete(text, args.k)
        out = {**info, "text": text, "next": [{"token": t, "probability": p} for t, p in nxt]}
        return out, "\n".join(f"{p:.4f}  {t!r}" for t, p in nxt)
    text = _text(args.text)
    try:
        s = lm.score(text, end=args.end)
    except ValueError as e:
        raise RnnlabError(str(e)) from None
    human = f"log_prob {s['log_prob']:.4f} nats over {s['tokens']} tokens, perplexity {s['perplexity']:.4f}"
    return {**info, "text": text, **s}, human


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        out, human = _run(args)
    except RnnlabError as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, ensure_ascii=False) if args.json else human)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
