"""Pathological wikitext pages for the markup stripper: what a hostile or broken dump can hold.

Each kind once took the stripper super-linear time (or is a shape the stripper's passes handle
differently); together they are the inputs the linear-time claim is about. Used by
tests/test_wikipedia_strip_property.py (a loose linear bound) and ``bench/wikipedia.py
--hostile`` (throughput against the real enwiki fragment).
"""

from __future__ import annotations

from collections.abc import Callable

DEPTH = 10_000  # "10,000-deep nesting"


def _repeat(unit: str, size: int) -> str:
    return unit * max(1, size // len(unit))


def _nested(opener: str, middle: str, closer: str, size: int) -> str:
    """Blocks of DEPTH-deep nesting, as many as fit in ``size`` (at least one)."""
    block = opener * DEPTH + middle + closer * DEPTH
    return block * max(1, size // len(block))


# name -> page of about `size` characters (ASCII, so characters are bytes)
KINDS: dict[str, Callable[[int], str]] = {
    "unclosed <ref>": lambda size: _repeat("<ref>x ", size),
    "<ref without '>'": lambda size: _repeat("<ref name=x ", size),
    "unclosed {{template": lambda size: _repeat("{{cite x ", size),
    "unclosed [[File: link": lambda size: _repeat("[[File:x.jpg|thumb|a [[b]]\n", size),
    "unclosed [http link": lambda size: _repeat("[//e.org ", size),
    "pipe trick, many (": lambda size: "[[" + _repeat("( ", size) + "x|]]",
    "10,000-deep {{ }}": lambda size: _nested("{{", "x", "}}", size),
    "10,000-deep [[ ]]": lambda size: _nested("[[", "x", "]]", size),
    "10,000-deep <ref>": lambda size: _nested("<ref>", "x", "</ref>", size),
    "mixed, all unclosed": lambda size: _repeat("<ref>{{x [[File:y [//z <!-- c --> '' {| \n", size),
}


def hostile_pages(size: int) -> dict[str, str]:
    """One page of each kind, of about ``size`` characters."""
    return {name: make(size) for name, make in KINDS.items()}
