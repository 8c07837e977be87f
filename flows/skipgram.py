"""Flow ``skipgram``: word2vec skip-gram embeddings on the word-level windows.

    python -m flows.skipgram

Trains models/skipgram.py with the shared Trainer on ``data/windows/word``
(train stream; the valid stream's pairs are the held-out loss) and writes, under
``artifacts/skipgram/``:

    checkpoints/last.pt   the rolling checkpoint (persist: a killed run resumes; a finished one is reused)
    checkpoints/best.pt   the best validation epoch's weights: what is exported
    embeddings.npy        (V, D) float32, one row per id of data/vocab/word.json
    embeddings.json       which vocabulary those rows belong to (path, size, sha256)
    vectors.txt           the same vectors in word2vec text format (specials left out)
    report.json           held-out loss, nearest neighbours, analogy accuracy when skipgram.analogies is set
    plots/metrics/*.tsv   DVCLive: train and held-out loss per epoch (the DVC plot)
    metrics.json          DVCLive: the held-out loss (and analogy accuracy): the DVC metrics

A markdown artifact ``skipgram-neighbors`` lists the nearest neighbours by cosine. The
model and its training follow Abrahams, Hafner, Erwitt & Scarpinelli, *TensorFlow for
Machine Intelligence* (Bleeding Edge Press, 2016), chapter 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import (
    fingerprint,
    markdown_table,
    stage_main,
    train_all,
    windows_data,
    write_live,
)
from models.skipgram import SkipgramTask, analogy_accuracy, nearest
from models.trainer import Trainer
from pipeline import paths, stage
from pipeline.codedeps import code_deps, model_code
from pipeline.io import write_json
from pipeline.params import SkipgramParams, load_params
from pipeline.vectors import save_embeddings, write_word2vec
from pipeline.vocab import NUM_SPECIALS, Vocab

CURVES = ("train_loss", "valid_loss")
# What the fingerprint hashes: the models/ modules this flow loads, and the pair sampler.
CODE = model_code("flows.skipgram", "pipeline.skipgram.pairs")
NEIGHBOURS = 10  # listed per word


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("skipgram",),
        deps=(
            *code_deps("flows.skipgram"),
            str(paths.windows("word")),
            str(paths.vocab("word")),
        ),
        outs=(
            str(paths.SKIPGRAM_CHECKPOINTS),
            str(paths.EMBEDDINGS),
            str(paths.EMBEDDINGS_META),
            str(paths.WORD_VECTORS),
            str(paths.SKIPGRAM_REPORT),
            str(paths.SKIPGRAM_PLOTS),
        ),
        metrics=(str(paths.SKIPGRAM_METRICS),),
    )


@task(name="export", cache_policy=NO_CACHE)
def export(task_: SkipgramTask, vocab: Vocab) -> None:
    """embeddings.npy (+ .json) aligned to the vocabulary, and vectors.txt in word2vec text format."""
    matrix = task_.embeddings()
    n = task_.cfg.vocab_size  # trained rows; the rest repeat <unk>'s
    save_embeddings(paths.EMBEDDINGS, matrix, vocab, paths.vocab("word"), trained=n)
    write_word2vec(paths.WORD_VECTORS, matrix[NUM_SPECIALS:n], vocab.tokens[NUM_SPECIALS:n])


@task(name="report", cache_policy=NO_CACHE)
def report(task_: SkipgramTask, vocab: Vocab, p: SkipgramParams, history: list[dict[str, Any]]) -> dict[str, Any]:
    matrix, n = task_.embeddings(), task_.cfg.vocab_size
    words = [w for w in p.neighbors if vocab.id(w) < n and vocab.tokens[vocab.id(w)] == w]
    missing = [w for w in p.neighbors if w not in words]
    if missing:
        get_run_logger().warning(f"skipgram.neighbors: {missing} not among the {n} trained words; left out")
    if not p.neighbors:
        words = list(vocab.tokens[NUM_SPECIALS : min(n, NUM_SPECIALS + 10)])  # the 10 most frequent
    lists = nearest(matrix, vocab.tokens, [vocab.id(w) for w in words], NEIGHBOURS, candidates=n)
    result: dict[str, Any] = {
        "valid_loss": history[-1]["valid_loss"],
        "train_loss": history[-1]["train_loss"],
        "vocab_size": n,
        "emb_dim": p.emb_dim,
        "neighbors": {w: [t for t, _ in nb] for w, nb in zip(words, lists)},
    }
    if p.analogies:
        result["analogy"] = analogy_accuracy(matrix, vocab, p.analogies, candidates=n)
    rows = [{"word": w, "neighbours (cosine)": ", ".join(f"{t} {s:.2f}" for t, s in nb)} for w, nb in zip(words, lists)]
    md = f"# Skip-gram nearest neighbours\n\nheld-out loss {result['valid_loss']:.4f} per pair\n\n"
    md += markdown_table(rows, ["word", "neighbours (cosine)"])
    if "analogy" in result:
        a = result["analogy"]
        md += f"\n\nanalogy accuracy {a['accuracy']:.4f} ({a['correct']}/{a['answered']}; {a['skipped']} skipped: OOV)"
    create_markdown_artifact(key="skipgram-neighbors", markdown=md, description="nearest neighbours by cosine")
    return result


@flow(name="skipgram")
def skipgram(params: SkipgramParams) -> dict[str, Any]:
    """Train (or resume, or reuse) the embeddings; export them; report neighbours and analogies."""
    log = get_run_logger()
    data = paths.windows("word")
    vocab = Vocab.load(paths.vocab("word"))
    fp = fingerprint("skipgram", params, windows_data(data), CODE)
    trainer = Trainer(
        lambda device: SkipgramTask(params, data, vocab, device, vocab_path=str(paths.vocab("word"))),
        params,
        paths.SKIPGRAM_CHECKPOINTS,
        fp,
        key="skipgram",
    )
    log.info(
        f"{trainer.task.cfg} on {trainer.device}: {trainer.task.steps_per_pass} steps per pass, "
        f"{trainer.steps_per_epoch} per epoch, {params.epochs} epochs"
    )
    train_all({"": trainer})
    export(trainer.task, vocab)
    result = report(trainer.task, vocab, params, trainer.history)
    write_json(paths.SKIPGRAM_REPORT, result)
    headline = {"valid_loss": result["valid_loss"]}
    if "analogy" in result:
        headline["analogy_accuracy"] = result["analogy"]["accuracy"]
    write_live(paths.SKIPGRAM, trainer.history, CURVES, headline)
    return result


def run(params_file: str) -> dict[str, Any]:
    return skipgram(load_params(spec().params, params_file)["skipgram"])


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(__doc__, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
