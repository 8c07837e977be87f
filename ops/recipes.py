"""``rnnlab recipe``: a named, measured configuration, run as a DVC experiment on your own text.

    rnnlab recipe char-text corpus.txt                          # lm@char on corpus.txt
    rnnlab recipe word-wikitext train.txt --valid valid.txt --test test.txt --name wt2
    rnnlab recipe char-text corpus.txt -S train.char.epochs=4   # the recipe, then your overrides
    rnnlab recipe char-text corpus.txt --dry-run                # print the dvc command, run nothing

A recipe is ``recipes/<name>.yaml`` (or any .yaml path): a flat mapping of dotted params keys to
values, exactly what ``dvc exp run -S`` takes. The command

1. checks the corpus paths exist, and every key and value of the recipe, then of the corpus keys
   and your ``-S`` overrides, against params.yaml and its typed schema (pipeline/params.py), so a
   typo fails here in a second with the key named, never halfway through a DVC run;
2. sets ``corpus.source=text`` and ``corpus.text.{train,valid,test}`` (absent splits: null, so that
   ``corpus.text.holdout`` of train is held out for each);
3. runs ``dvc exp run [lm@<level>] -S ...`` through ops/repro.py, with one Prefect server for the
   whole run. A recipe whose keys name one level (``train.char.*``, ...) runs that level's model
   and the data stages under it only: the other level's model would train on your corpus with
   params.yaml's defaults, for nothing.

Values go to DVC as Hydra override strings (DVC parses ``-S`` with Hydra's grammar), and your own
``-S`` strings are parsed by that same parser here, so what is checked is what DVC applies
(pipeline/overrides.py).
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError, RnnlabError, refuse, shown
from pipeline.overrides import KEY, hydra_value, parse_sets
from pipeline.params import LEVELS, read_params, validate
from pipeline.paths import PARAMS_FILE, RECIPES

# Sections whose second key is a level: a recipe that sets only one level's keys runs lm@<level>.
LEVEL_SECTIONS = ("train", "tokenize", "vocab", "windows", "ngram", "sample")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a git ref component, as DVC needs for -n


class RecipeError(RnnlabError):
    """A recipe, corpus path or override that cannot run; the message says which and why."""


@dataclass(frozen=True)
class Plan:
    """What ``rnnlab recipe`` runs: the dvc arguments, and how they came about."""

    recipe: Path
    level: str | None  # the one level the recipe trains (its lm@<level> is the target), or None: all stages
    overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> Hydra value string, in -S order
    dvc_args: list[str] = field(default_factory=list)  # `dvc ...` arguments

    def command(self) -> str:
        return shlex.join(["dvc", *self.dvc_args])


# --- recipes ---------------------------------------------------------------------------------


def available(folder: Path = RECIPES) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def recipe_path(name: str, folder: Path = RECIPES) -> Path:
    """``name`` in ``folder`` (``char-text`` -> recipes/char-text.yaml), or a path to a .yaml file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise RecipeError(f"recipe file {name} not found; give a recipe name ({_names(folder)}) or a .yaml path")
        return path
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown recipe {name!r}; {folder}/ has {_names(folder)} (or give a path to a .yaml file)")
    return path


def _names(folder: Path) -> str:
    names = available(folder)
    return ", ".join(names) if names else f"none (run from the repository root, where {folder}/ is)"


def load_recipe(path: Path) -> dict[str, Any]:
    """A recipe file: a flat mapping of dotted params keys to values."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: cannot be read as YAML ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(raw, dict) or not raw:
        raise RecipeError(f"{path}: must be a mapping of dotted params keys to values, e.g. 'train.char.lr: 0.01'")
    for key, value in raw.items():
        if isinstance(value, dict):  # params.yaml's nesting, copied in: say how to flatten it
            raise RecipeError(f"{path}: {shown(key)} is a mapping; write one dotted key per value ({key}.<name>: ...)")
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise RecipeError(f"{path}: key {shown(key)} is not a dotted params key such as 'train.char.lr'")
    return raw


def level_of(keys: Sequence[str]) -> str | None:
    """The one level whose sections the keys set (``train.char.lr`` -> char), else None."""
    levels = {k.split(".")[1] for k in keys if k.split(".")[0] in LEVEL_SECTIONS and k.count(".") >= 2}
    levels &= set(LEVELS)
    return levels.pop() if len(levels) == 1 else None


# --- checking against params.yaml ------------------------------------------------------------


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key of a params mapping in place. The key must already be in the file:
    DVC's ``-S`` refuses keys that params.yaml lacks."""
    node: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the top level"
        if not isinstance(node, dict):
            raise RecipeError(f"{key}: {where} is a value, not a section, in params.yaml")
        if part not in node:
            keys = ", ".join(str(k) for k in node)
            raise RecipeError(f"{key} is not a key of params.yaml; keys of {where}: {keys}")
        if depth == len(parts) - 1:
            node[part] = copy.deepcopy(value)
        node = node[part]


def _one_line(e: ParamsError, name: str) -> str:
    """validate()'s message ("X has 2 problems:\\n  a: ...\\n  b: ...") on one line, blamed on ``name``."""
    _, _, rest = str(e).partition(":\n")
    problems = [line.strip() for line in rest.splitlines() if line.strip()]
    return f"{name}: {'; '.join(problems)}" if problems else str(e)


def check(params_file: Path, layers: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Apply each layer of overrides in turn to params.yaml and validate after each, so that a
    problem is blamed on the layer that brought it (``name`` says which). Returns the result."""
    read_params(params_file)  # the file itself first: its own problems are not the recipe's
    raw = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    for name, overrides in layers:
        for key, value in overrides.items():
            try:
                set_key(raw, key, value)
            except RecipeError as e:
                raise RecipeError(f"{name}: {e}") from None
        try:
            validate(raw, name)
        except ParamsError as e:
            raise RecipeError(_one_line(e, name)) from None
    return raw


def corpus_keys(train: str, valid: str | None, test: str | None, root: Path) -> dict[str, Any]:
    """``corpus.source=text`` and the split paths, each checked to exist. A path inside the
    repository is written relative to it (what a teammate's checkout can resolve)."""

    def path(arg: str | None, split: str) -> str | None:
        if arg is None:
            return None
        p = Path(arg).expanduser()
        if not p.exists():
            raise RecipeError(f"{split} corpus {arg} not found: give a UTF-8 text file, or a folder of .txt files")
        resolved = p.resolve()
        return str(resolved.relative_to(root.resolve())) if resolved.is_relative_to(root.resolve()) else str(resolved)

    return {
        "corpus.source": "text",
        "corpus.text.train": path(train, "training"),
        "corpus.text.valid": path(valid, "validation"),
        "corpus.text.test": path(test, "test"),
    }


def plan(
    recipe: str,
    train: str,
    *,
    valid: str | None = None,
    test: str | None = None,
    sets: Sequence[str] = (),
    name: str | None = None,
    force: bool = False,
    params_file: Path = PARAMS_FILE,
    folder: Path = RECIPES,
) -> Plan:
    """Everything ``rnnlab recipe`` checks, and the dvc command it would run. Raises RecipeError."""
    path = recipe_path(recipe, folder)
    values = load_recipe(path)
    if name is not None and not _NAME.fullmatch(name):
        raise RecipeError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (it becomes a git ref)")
    root = Path(params_file).resolve().parent
    corpus = corpus_keys(train, valid, test, root)
    user = parse_sets(sets, "rnnlab recipe")
    clash = sorted(set(user) & set(corpus))
    if clash:
        raise RecipeError(f"-S {clash[0]}: set the corpus with the command's arguments (CORPUS, --valid, --test)")
    check(
        Path(params_file),
        [(str(path), values), ("corpus arguments", corpus), ("-S overrides", {k: v for k, (v, _) in user.items()})],
    )
    # One -S per key, the last word winning: recipe, then corpus, then the user's own strings.
    overrides = {k: hydra_value(v) for k, v in {**values, **corpus}.items()}
    overrides.update({k: text.partition("=")[2] for k, (_, text) in user.items()})
    for k in user:  # keep the user's keys last, in their order
        overrides[k] = overrides.pop(k)
    level = level_of([*values, *user])
    args = [
        "exp",
        "run",
        *([f"lm@{level}"] if level else []),
        *(["-n", name] if name else []),
        *(["-f"] if force else []),
    ]
    for key, value in overrides.items():
        args += ["-S", f"{key}={value}"]
    return Plan(path, level, overrides, args)


# --- the command -----------------------------------------------------------------------------


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {text}")
    return port


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """``rnnlab recipe``'s options, on the CLI's subparsers."""
    names = ", ".join(available()) or "see recipes/"
    p = sub.add_parser(
        "recipe",
        help="run a named configuration on your own text, as a DVC experiment",
        description="Run a recipe (recipes/NAME.yaml: dotted params keys and values) on a plain-text corpus as "
        "`dvc exp run -S ...`, with one Prefect server for the run. The recipe's keys, the corpus paths and your "
        "-S overrides are checked against params.yaml's schema first. A recipe for one level runs that level's "
        "lm stage and the data stages under it. Without --valid/--test, corpus.text.holdout of the training "
        "documents (lines) is held out for each.",
        epilog=f"recipes here: {names}. Results: `dvc exp show --only-changed`, `dvc metrics show`. "
        "See README, 'Your own text'.",
    )
    p.add_argument("recipe", help=f"a recipe name ({names}) or a path to a .yaml recipe")
    p.add_argument("corpus", help="training text: a UTF-8 file (one document per line) or a folder of .txt files")
    p.add_argument("--valid", help="validation text (default: hold out corpus.text.holdout of CORPUS)")
    p.add_argument("--test", help="test text (default: hold out corpus.text.holdout of CORPUS)")
    p.add_argument("--name", "-n", help="the experiment's name (default: DVC picks one)")
    p.add_argument(
        "-S",
        "--set-param",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params override applied after the recipe's, as for `dvc exp run -S` (repeatable)",
    )
    p.add_argument(
        "--force",
        "-f",
        action="store_true",
        help="rerun every stage, e.g. after editing the corpus "
        "file itself (DVC follows it through its path only); an unchanged training stays a cache hit",
    )
    p.add_argument("--dry-run", action="store_true", help="check everything, print the dvc command, run nothing")
    p.add_argument("--port", type=_port, help="port for the Prefect server this starts (default: a free one)")
    return p


def main(args: argparse.Namespace, again: str | None = None) -> int:
    """Check, then run (or with --dry-run print) the experiment; exit 2 with one line on a problem.

    Running, it exits as ``rnnlab repro`` does (ops/repro.py): 2 when a stage refused a user
    error, 130 or 143 when stopped, else DVC's code. ``again`` is the command that resumes it.
    """
    try:
        p = plan(
            args.recipe, args.corpus, valid=args.valid, test=args.test, sets=args.sets, name=args.name, force=args.force
        )
    except RnnlabError as e:
        return refuse(e)
    if args.dry_run:
        print(p.command())
        return 0
    target = f"lm@{p.level} and the stages under it" if p.level else "every stage"
    print(f"rnnlab: recipe {p.recipe} ({target}): {p.command()}", file=sys.stderr, flush=True)
    from ops import repro  # Prefect loads only when something runs

    return repro.main(p.dvc_args, args.port, again or f"rnnlab recipe {shlex.quote(args.recipe)} ...")
