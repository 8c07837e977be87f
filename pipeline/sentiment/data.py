"""Stage ``imdb_data`` (tasks/dvc.yaml): IMDB reviews → tokens → vocabulary → padded rows with labels.

    python -m pipeline.sentiment.data      # reads imdb_data.{source,tokenize,vocab,windows}

The spine's stage functions with their own params and paths (pipeline/textdata.py):
``data/imdb/docs``, ``data/imdb/tokens``, ``data/imdb/vocab.json``,
``data/imdb/windows`` (``padded.npy``, ``lengths.npy``, ``labels.npy`` per split;
label names in ``meta.json``) and ``data/imdb/metrics.json``. Every class must
have reviews in every split: an empty class is an error that names it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import stage
from pipeline.codedeps import code_deps
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.paths import IMDB_DATA
from pipeline.sources import imdb
from pipeline.textdata import build_text_dataset, check_classes


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("imdb_data",),
        deps=(*code_deps("pipeline.sentiment.data"),),
        outs=tuple(
            str(p) for p in (IMDB_DATA.docs, IMDB_DATA.tokens, IMDB_DATA.vocab, IMDB_DATA.windows, IMDB_DATA.metrics)
        ),
    )


def run(params_file: str) -> dict:
    cfg = load_params(spec().params, params_file)["imdb_data"]
    reviews = imdb.read(cfg.source, key="imdb_data.source")
    stats = build_text_dataset(
        reviews, IMDB_DATA, "word", cfg.tokenize, cfg.vocab, cfg.windows, "IMDB (imdb_data.source)"
    )
    check_classes(stats["labels"], IMDB_DATA.docs)
    write_json(IMDB_DATA.metrics, stats)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    args = stage.parser(__doc__).parse_args(argv)
    return stage.run(lambda: run(args.params))


if __name__ == "__main__":
    raise SystemExit(main())
