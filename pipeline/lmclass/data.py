"""Stage ``lmclass_data`` (tasks/dvc.yaml): one windows dataset per IMDB class, for the class language models.

    python -m pipeline.lmclass.data         # reads lmclass.windows

Filters ``data/imdb/tokens`` by label and cuts each class's reviews with
``windows.build`` and the shared ``data/imdb/vocab.json`` into
``data/imdb/lm/<label>/`` (stream.npy per split by default), so that every class
model is trained by the shared LM trainer and scores the same test ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import stage
from pipeline.codedeps import code_deps
from pipeline.params import load_params
from pipeline.paths import IMDB_DATA
from pipeline.textdata import class_windows
from pipeline.vocab import Vocab


def spec() -> stage.StageSpec:
    return stage.StageSpec(
        params=("lmclass.windows",),
        deps=(
            *code_deps("pipeline.lmclass.data"),
            str(IMDB_DATA.tokens),
            str(IMDB_DATA.vocab),
        ),
        outs=(str(IMDB_DATA.lm),),
    )


def run(params_file: str) -> dict:
    cfg = load_params(spec().params, params_file)["lmclass.windows"]
    return class_windows(IMDB_DATA.tokens, Vocab.load(IMDB_DATA.vocab), cfg, IMDB_DATA.lm)


def main(argv: Sequence[str] | None = None) -> int:
    args = stage.parser(__doc__).parse_args(argv)
    return stage.run(lambda: run(args.params))


if __name__ == "__main__":
    raise SystemExit(main())
