"""The ``rnnlab`` command line: run the pipeline, and use a trained language model.

    rnnlab repro                             # `dvc repro` with one Prefect server for the whole run (make run)
    rnnlab dvc exp run -S train.word.lr=0.01 # any dvc command, likewise
    rnnlab recipe char-text corpus.txt       # a measured configuration on your own text, as a DVC experiment
    rnnlab server --port 4200                # a Prefect server and its UI, in the foreground (make server)
    rnnlab sample --prime "the cat" --temperature 0.8 --top-k 10 --count 3
    rnnlab sample --level char --greedy --stop .
    rnnlab complete "the cat" -k 5 --json
    rnnlab score "the cat ran." --json
    rnnlab neighbors cat dog -k 5            # skip-gram embeddings: nearest words by cosine
    rnnlab classify "a wonderful film" --json   # the sentiment classifier (tasks/dvc.yaml)

Models load from ``artifacts/<level>/checkpoints`` (``--checkpoint`` for another),
with the vocabulary recorded in the checkpoint (``--vocab`` for another; its sha256
must match). No Prefect server starts for those: they run in about a second.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pipeline import paths
from pipeline.errors import RnnlabError, refuse
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
    p.add_argument("--checkpoint", help=f"checkpoint file or folder (default: {paths.checkpoints('<level>')})")
    p.add_argument("--vocab", help="vocabulary file (default: the one the checkpoint records)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent sequence models: data stages under DVC, training under Prefect.",
        epilog="Run the whole pipeline with `rnnlab repro` (make run); see README.md.",
    )
    volume = p.add_mutually_exclusive_group()
    volume.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (no progress)")
    volume.add_argument("-v", "--verbose", action="store_true", help="also debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    rp = sub.add_parser(
        "repro",
        help="dvc repro, with one Prefect server for the whole run",
        description="Run `dvc repro ARGS...` with every flow stage recording to one Prefect server: the one "
        "PREFECT_API_URL names, else one started now on a free port of 127.0.0.1 (state in .prefect/, so "
        "`make server` shows the runs afterwards) and stopped at the end.",
    )
    rp.add_argument("--port", type=_positive_int, help="port for the server this starts (default: a free one)")
    rp.add_argument("dvc_args", nargs=argparse.REMAINDER, help="arguments for `dvc repro` (e.g. lm@word -f)")

    dv = sub.add_parser(
        "dvc",
        help="any dvc command, with one Prefect server for the whole run",
        description="Run `dvc ARGS...` (e.g. `exp run -S train.word.lr=0.01`) as `rnnlab repro` runs `dvc repro`.",
    )
    dv.add_argument("--port", type=_positive_int, help="port for the server this starts (default: a free one)")
    dv.add_argument("dvc_args", nargs=argparse.REMAINDER, help="the dvc command and its arguments")

    from ops import recipes  # yaml and params only: --help stays fast

    recipes.add_parser(sub)

    sv = sub.add_parser(
        "server",
        help="a Prefect server and its UI, in the foreground",
        description="`prefect server start` on 127.0.0.1:PORT with its UI pointed at its own API (state in "
        "Prefect's home, .prefect/ here). Stop it with Ctrl-C.",
    )
    sv.add_argument("--port", type=_positive_int, default=4200, help="(default: %(default)s)")

    s = sub.add_parser(
        "sample",
        help="generate text after a prime",
        description="Generate text after a prime: "
        "temperature sampling (p_i ∝ exp(log p_i / T)), top-k, or greedy decoding.",
    )
    s.add_argument("--prime", default="", help="text to continue (default: a new document)")
    s.add_argument("--count", type=_positive_int, default=1, help="samples, with seeds seed, seed+1, ... (default: 1)")
    s.add_argument("--max-tokens", type=_positive_int, default=50, help="new tokens at most (default: 50)")
    s.add_argument("--temperature", type=_positive_float, default=1.0, help="(default: 1.0)")
    s.add_argument("--top-k", type=_positive_int, help="sample among the k likeliest tokens only")
    s.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    s.add_argument("--stop", help="end a sample after this token (e.g. '.')")
    s.add_argument("--seed", type=int, default=0, help="(default: 0)")
    _model_options(s)

    c = sub.add_parser(
        "complete",
        help="the likeliest next tokens",
        description="The k likeliest next tokens after a text, with their probabilities.",
    )
    c.add_argument("text", help="the text so far ('-' reads stdin)")
    c.add_argument("-k", type=_positive_int, default=5, help="how many (default: 5)")
    _model_options(c)

    r = sub.add_parser(
        "score",
        help="log-probability and perplexity of a text",
        description="Total log-probability (nats) and perplexity of a text, read as the start of a document.",
    )
    r.add_argument("text", help="the text ('-' reads stdin)")
    r.add_argument("--end", action="store_true", help="the text is a whole document: also score its closing <eos>")
    _model_options(r)

    n = sub.add_parser(
        "neighbors",
        help="nearest words in the skip-gram embeddings",
        description="The k nearest words by cosine similarity in the skip-gram embeddings (the skipgram stage's).",
    )
    n.add_argument("words", nargs="+", help="one or more words of the vocabulary")
    n.add_argument("-k", type=_positive_int, default=10, help="how many (default: 10)")
    n.add_argument("--embeddings", default=str(paths.EMBEDDINGS), help="(default: %(default)s)")
    n.add_argument("--vocab", help="vocabulary file (default: the one embeddings.json records)")
    n.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    k = sub.add_parser(
        "classify",
        help="sentiment of a text",
        description="Class probabilities of a text from the "
        "sentiment classifier (`dvc repro tasks/dvc.yaml:sentiment` trains it).",
    )
    k.add_argument("text", nargs="+", help="one or more texts ('-' reads stdin)")
    k.add_argument("--checkpoint", default=str(paths.SENTIMENT_CHECKPOINTS), help="(default: %(default)s)")
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
    out = {
        "embeddings": args.embeddings,
        "neighbors": {w: [{"word": t, "cosine": c} for t, c in nb] for w, nb in zip(args.words, lists)},
    }
    human = "\n".join(f"{w}: " + ", ".join(f"{t} ({c:.3f})" for t, c in nb) for w, nb in zip(args.words, lists))
    return out, human


def _classify(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from models.classify import Classifier
    from models.device import resolve_device

    clf = Classifier.load(args.checkpoint, args.vocab, resolve_device(args.device, "--device"))
    texts = [_text(t) for t in args.text]
    probs = clf(texts)
    out = {
        "checkpoint": args.checkpoint,
        "results": [{"text": t, "label": max(p, key=p.get), "probabilities": p} for t, p in zip(texts, probs)],
    }
    human = "\n".join(
        f"{r['label']}  " + " ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items()) for r in out["results"]
    )
    return out, human


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.command == "neighbors":
        return _neighbors(args)
    if args.command == "classify":
        return _classify(args)
    from models.sampling import LanguageModel  # torch loads only when a command runs, not for --help

    path = args.checkpoint or str(paths.checkpoints(args.level))
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


def _server(port: int) -> int:
    """Replace this process with the server, so that Ctrl-C and SIGTERM reach it directly."""
    from ops import server

    server.check_port(port)
    print(f"Prefect UI: http://{server.HOST}:{port}  (API {server.api_url(port)}); Ctrl-C stops it", flush=True)
    # Default Ctrl-C and SIGTERM for the server, even under a parent that ignored them (`make server &`).
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
    os.execve(server.command(port)[0], server.command(port), server.server_env(port))
    return 0  # not reached


def _passthrough(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[int | None, list[str]]:
    """``rnnlab repro|dvc [--port N] ARGS...``: the port, and DVC's arguments untouched, whatever they
    look like (argparse would take ``-f`` or ``-s STAGE`` for options of its own)."""
    command, rest = argv[0], argv[1:]
    if rest in (["-h"], ["--help"]):
        parser.parse_args([command, "--help"])  # prints the help and exits
    port = None
    if rest[:1] == ["--port"] or (rest and rest[0].startswith("--port=")):
        value, rest = (rest[1], rest[2:]) if rest[0] == "--port" and len(rest) > 1 else (rest[0][7:], rest[1:])
        port = parser.parse_args([command, "--port", value]).port
    return port, (["repro", *rest] if command == "repro" else rest)


def main(argv: Sequence[str] | None = None) -> int:
    """The exit code: 0, 2 for a user error (also one that a stage under DVC refused), 130 or 143
    when SIGINT or SIGTERM stopped the command, else the code of what failed (DVC's)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C in a command that runs no stages: no traceback for it
        return 128 + signal.SIGINT


def _volume(argv: list[str]) -> list[str]:
    """Take the leading -q/-v off ``argv``: they set RNNLAB_LOG_LEVEL, for this process and every stage
    it starts (pipeline/log.py). The rest goes to the command untouched."""
    from pipeline import log

    levels = {"-q": "WARNING", "--quiet": "WARNING", "-v": "DEBUG", "--verbose": "DEBUG"}
    while argv[:1] and argv[0] in levels:
        os.environ[log.LEVEL_ENV] = levels[argv.pop(0)]
    log.setup()
    return argv


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    argv = _volume(list(sys.argv[1:] if argv is None else argv))
    again = shlex.join(["rnnlab", *argv])  # what resumes an interrupted run
    if argv[:1] in (["repro"], ["dvc"]):
        from ops import repro

        port, dvc_args = _passthrough(parser, argv)
        if not dvc_args:
            parser.error("rnnlab dvc: name a dvc command, e.g. `rnnlab dvc exp run -S train.word.lr=0.01`")
        return repro.main(dvc_args, port, again)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "recipe":
        from ops import recipes

        return recipes.main(args, again)
    if args.command == "server":
        try:
            return _server(args.port)
        except RnnlabError as e:
            return refuse(e)
    try:
        out, human = _run(args)
    except RnnlabError as e:
        if args.json:
            print(json.dumps({"error": str(e)}))
        return refuse(e)
    print(json.dumps(out, ensure_ascii=False) if args.json else human)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
