"""Params overrides as ``dvc exp run -S`` reads them: Hydra strings out, Hydra strings in.

    hydra_value(1e-3)                      # "0.001": what -S parses back to exactly this value
    hydra_value("null")                    # "'null'": quoted, or Hydra would read None
    parse_sets(["train.word.lr=0.01"], "rnnlab recipe")    # {"train.word.lr": (0.01, "train.word.lr=0.01")}
    override_text("0.01"), override_text(0.01)              # "0.01", "0.01": text as typed, values for Hydra

DVC parses each ``-S key=value`` with Hydra's override grammar. A value is written here in that
grammar, and a person's own ``-S`` string is read with Hydra's own parser, so that what a command
checks against params.yaml is what DVC applies. ``rnnlab recipe`` (ops/recipes.py) and the
retraining flow (flows/retrain.py) share these rules.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from pipeline.errors import ParamsError, shown

KEY = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+")  # a dotted params key: train.char.lr


class OverrideError(ParamsError):
    """An override that ``dvc exp run -S`` cannot take, or would read as something else."""


def hydra_value(value: Any) -> str:
    """``value`` as a Hydra override value that DVC's ``-S`` parses back to exactly ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "${" in value:  # DVC would resolve it as an OmegaConf interpolation
            raise OverrideError(
                f"value {shown(value)} holds '${{', which DVC would read as an interpolation; rename it"
            )
        if _reads_back(value, value):  # a plain word or path: as typed, easier to read in `dvc exp show`
            return value
        # Quoted, so that 'null', '1e-3' or a regex stay strings. Hydra escapes only backslashes
        # that precede a quote (or end the string), and the quotes themselves.
        return "'" + re.sub(r"(\\*)('|\Z)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value) + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise OverrideError(f"value {shown(value)} ({type(value).__name__}) cannot be passed to `dvc exp run -S`")


@functools.cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def _reads_back(text: str, value: str) -> bool:
    """Does Hydra read the unquoted ``text`` back as exactly the string ``value``?"""
    from hydra.errors import OverrideParseException

    try:
        (o,) = _parser().parse_overrides([f"k.k={text}"])
    except OverrideParseException:
        return False
    return not o.is_sweep_override() and isinstance(o.value(), str) and o.value() == value


def parse_sets(sets: Sequence[str], command: str) -> dict[str, tuple[Any, str]]:
    """``-S key=value`` strings, parsed by the Hydra parser DVC uses: key -> (value, the string).

    ``command`` names what takes them, in the message that refuses a sweep."""
    from hydra.errors import OverrideParseException

    parser = _parser()
    out: dict[str, tuple[Any, str]] = {}
    for text in sets:
        try:
            (o,) = parser.parse_overrides([text])
        except OverrideParseException as e:
            # Hydra's message is several lines with a caret; its first says where it failed.
            first = str(e).strip().splitlines()[0]
            raise OverrideError(
                f"-S {text}: not a key=value override ({first}); quote odd values: key='value'"
            ) from None
        if o.is_sweep_override() or o.is_add() or o.is_force_add() or o.is_delete():
            raise OverrideError(
                f"-S {text}: {command} takes plain key=value overrides (no sweeps, +key or ~key); "
                "for a sweep use `rnnlab dvc exp run -S ...`"
            )
        if not KEY.fullmatch(o.key_or_group):
            raise OverrideError(f"-S {text}: {o.key_or_group!r} is not a dotted params key such as 'train.char.lr'")
        out[o.key_or_group] = (o.value(), text)
    return out


def override_text(value: Any) -> str:
    """What follows ``key=`` in ``-S``: text is taken as typed (DVC parses it, as ``parse_sets`` does),
    any other value is written so that DVC reads back exactly it (``hydra_value``)."""
    return value if isinstance(value, str) else hydra_value(value)
