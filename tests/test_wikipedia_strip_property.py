"""The markup stripper on generated wikitext: it ends, leaves no markup, never grows the text, and
runs in linear time; its linear-time passes give exactly what the regexes they replace gave."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.harness import KINDS
from pipeline.sources import wikimarkup

# The delimiters of every construct the stripper removes, closed, unclosed and stray, with prose
# around them. Not single "{", "}", "[" or "]" (a stray one next to a removed construct can
# join another into "{|" or "[[": leftover text, not markup), nor "(", ")", "&" or "_" (the
# passes for empty parentheses, HTML entities and magic words run last, and an entity such as
# &#91; is text even when it spells a bracket).
TOKENS = [
    "{{",
    "}}",
    "{{{",
    "}}}",
    "{|",
    "|}",
    "\n{|",
    "\n|}",
    "\n|-",
    "[[",
    "]]",
    "<ref>",
    "</ref>",
    "<ref name=a>",
    "<ref/>",
    "<REF>",
    "<math>",
    "</math>",
    "<!--",
    "-->",
    "''",
    "'''",
    "'",
    "[[File:",
    "[[Category:",
    "[//e.org ",
    "[http://e.org x]",
    "|",
    "=",
    ":",
    "*",
    "\n",
    " ",
    "a",
    "word",
    "two words",
]
wikitext = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
LEFT = ("{{", "[[", "<ref", "{|")
PROPERTY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@PROPERTY
@given(wikitext)
def test_stripper_ends_leaves_no_markup_and_never_grows(text: str) -> None:
    out = wikimarkup.strip_markup(text)
    for token in LEFT:
        assert token not in out, (token, text, out)
    assert len(out) <= len(text)


# --- each linear pass against the regex it replaces (the regexes are the old code, kept as oracles) ---

_OLD_PAIRED = re.compile(rf"<({wikimarkup._DROP_TAGS})\b[^>]*(?<!/)>[^<]*(?:<(?!/\1\s*>)[^<]*)*</\1\s*>", re.IGNORECASE)
_OLD_EXTERNAL = re.compile(rf"\[(?:{wikimarkup._URL_SCHEMES})[^\s\]]*[ \t]*([^\]\n]*)\]", re.IGNORECASE)
_OLD_PIPE_TRICK = re.compile(r"\s*\(.*\)$")


def _mix(*tokens: str, size: int = 25) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(tokens), max_size=size).map("".join)


@pytest.mark.slow
@PROPERTY
@given(
    _mix(
        "<ref>",
        "</ref>",
        "<ref name=a>",
        "<ref/>",
        "<ref",
        "</REF >",
        "<Math>",
        "</math>",
        "<refx>",
        "<references/>",
        ">",
        "/",
        "<",
        "a",
        " ",
        "\n",
        "</ref",
    )
)
def test_drop_paired_is_the_regex(text: str) -> None:
    assert wikimarkup._drop_paired(text) == _OLD_PAIRED.sub("", text)


@pytest.mark.slow
@PROPERTY
@given(_mix("[", "]", "//", "http://", "HTTPS://", "mailto:", "e.org", " ", "\t", "\n", "\r", "a", "[//", "x]"))
def test_external_links_are_the_regex(text: str) -> None:
    assert wikimarkup._external_links(text) == _OLD_EXTERNAL.sub(r"\1", text)


@pytest.mark.slow
@PROPERTY
@given(_mix("(", ")", " ", "\n", "\t", "a", "b c", "\u00a0"))
def test_pipe_trick_is_the_regex(name: str) -> None:
    assert wikimarkup._pipe_trick(name) == _OLD_PIPE_TRICK.sub("", name)


@pytest.mark.slow
@PROPERTY
@given(
    _mix("{{", "}}", "{{{", "}}}", "{{{{{", "}}}}}}}", "{", "}", "{|", "|}", "\n{|", "\n|}", "|", "\n", " ", ":", "a")
)
def test_strip_nested_is_the_plain_stack(text: str) -> None:
    assert wikimarkup._strip_nested(text) == _reference_strip_nested(text)


@pytest.mark.slow
@PROPERTY
@given(
    st.lists(
        st.sampled_from(["[" * 30, "]" * 30, "[[", "]]", "[", "]", "a", "b|c", "x:y", " ", "''"]), max_size=20
    ).map("".join)
)
def test_cutting_long_bracket_runs_changes_nothing(text: str) -> None:
    """The link passes' shortcut (_BRACKET_RUN) against the same passes without it."""
    never = re.compile(r"(?!)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wikimarkup, "_BRACKET_RUN", never)
        uncut = wikimarkup.strip_markup(text)
    assert wikimarkup.strip_markup(text) == uncut


def _reference_strip_nested(text: str) -> str:
    """The stack scanner as it was before run-length encoding, one stack entry per construct."""
    if "{" not in text and "}" not in text:
        return text
    # split() with a capturing group alternates text and delimiters (odd indices).
    # Walking that list is ~2x faster than finditer's match objects.
    parts = wikimarkup._BRACES.split(text)
    out = [parts[0]]
    stack: list[tuple[str, int]] = []  # (kind, len(out) when it opened)
    open_kinds: dict[str, int] = {"t": 0, "param": 0, "table": 0}
    for k in range(1, len(parts), 2):
        tok = parts[k]
        after = parts[k + 1]
        if tok[0] == "{" and tok[1] == "{":
            # "{{{" opens a parameter, "{{" a template; longer runs are several ({{{{x}}|y}}).
            n = len(tok)
            moves = ["param"] * (n % 2 == 1) + ["t"] * ((n - 3 * (n % 2 == 1)) // 2)
            moves.reverse()  # outermost first: "{{{{{" is a template, then a parameter
        elif tok[0] == "}":
            # Close greedily from the innermost: three braces end a parameter, two a template;
            # a last single brace is plain text.
            moves, n, depth = [], len(tok), len(stack)
            while n >= 2:
                top = stack[depth - 1][0] if 0 < depth <= len(stack) else "t"
                if top == "param" and n >= 3:
                    moves.append("/param")
                    n -= 3
                else:
                    moves.append("/t")
                    n -= 2
                depth -= 1
            after = "}" * n + after
        elif tok == "{|" and wikimarkup._at_line_start(parts, k, " \t:"):
            moves = ["table"]
        elif tok == "|" and after[:1] == "}" and wikimarkup._at_line_start(parts, k, " \t"):
            moves, after = ["/table"], after[1:]  # "|}", not "|}}": split left its "}" in the next piece
        else:  # "{|" or "|" that is not a table delimiter
            if tok == "|":  # plain text; a stray "{|" is dropped like an unclosed "{{": no markup is left
                out.append(tok)
            out.append(after)
            continue
        for move in moves:
            if move[0] != "/":
                stack.append((move, len(out)))
                open_kinds[move] += 1
            elif open_kinds[move[1:]]:
                while True:  # close what the matching opener still holds open
                    kind, mark = stack.pop()
                    open_kinds[kind] -= 1
                    if kind == move[1:]:
                        break
                del out[mark:]
            # else: a closer with nothing of its kind open, dropped
        out.append(after)
    return "".join(out)


# --- a loose linear bound ------------------------------------------------------------------


def _seconds(text: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()  # CPU time: less sensitive than wall time to other load on the machine
        wikimarkup.strip_markup(text)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ten_times_the_page_takes_under_thirty_times_as_long(kind: str) -> None:
    """Linear time, loosely: 10x the size, under 30x the time (quadratic would be 100x).

    Not a speed figure (bench/wikipedia.py --hostile gives those); sizes kept small so
    that all kinds together take well under 2 s.
    """
    small, large = KINDS[kind](20_000), KINDS[kind](200_000)
    grown = len(large) / len(small)  # 10, or 5 for the 10,000-deep kinds (one block is 40 KB)
    wikimarkup.strip_markup(small)  # warm up: regex compilation and caches are not the page's cost
    t_small, t_large = _seconds(small), _seconds(large)
    floor = 1e-3  # below a millisecond, timer resolution dominates: compare against 1 ms instead
    ratio = t_large / max(t_small, floor)
    assert ratio < 3 * grown, (
        f"{kind}: {len(small)} chars took {t_small * 1e3:.1f} ms, {len(large)} chars {t_large * 1e3:.1f} ms: "
        f"{ratio:.0f}x the time for {grown:.0f}x the size"
    )
