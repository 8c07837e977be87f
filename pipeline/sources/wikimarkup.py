"""Wikitext → plain prose: the markup stripper of the Wikipedia source, with no knowledge of dumps.

A hand-written pass (``strip_markup``) turns wikitext into prose: comments,
``<ref>``/``<math>``/``<gallery>``… with their content, nested ``{{templates}}``
and ``{| tables |}`` (one stack-based scan), File/Image/Category and
interlanguage links go; ``[[target|text]]`` → text, ``[url text]`` → text,
bold/italic quotes and list markers go, headings stay as lines, HTML entities
are decoded. mwparserfromhell (0.7.2, C tokenizer) was evaluated against it on
the 106 articles (5.75 MB of wikitext) of the real enwiki fragment: ``strip_code``
left 3 tables, 13 ``<ref``, 4 ``[[``, 1 ``{{``, 5 bold quotes and 911 ``thumb|``
captions behind, and ran many times slower than bz2 decompresses, so a dump reader
could not afford it; this pass leaves none of them. ``python -m bench.wikipedia --markup``
measures both. Its cases are pinned by tests.

The steps that one regex would make quadratic or worse on hostile input (unclosed
tags, templates and links, deep nesting) are hand-written scans in linear time;
``python -m bench.wikipedia --hostile`` measures them against real text.
"""

from __future__ import annotations

import functools
import html
import re

# Namespace prefixes whose links are not prose: removed with their captions.
# A dump's <siteinfo> adds its localized names (e.g. "Файл", "Категория"):
# see pipeline.sources.wikipedia.drop_prefixes_from.
DROP_LINK_PREFIXES = frozenset({"file", "image", "media", "category"})

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Tags whose content is not prose: removed with everything inside.
_DROP_TAGS = (
    "ref|references|math|chem|ce|gallery|timeline|score|syntaxhighlight|source|pre|code|imagemap|"
    "graph|mapframe|maplink|templatedata|hiero|inputbox|categorytree|includeonly|noinclude"
)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
# Template and table delimiters: whole runs of braces ("}}}}}" may close a parameter
# and a template), "{|", and a "|" followed by "}" (matched without the "}", so that
# "{{x|}}" still yields its "}}"). Whether "{|" and "|}" stand at the start of a line,
# which makes them table delimiters, is checked in Python: a "^" alternative under
# re.M slows the whole scan down.
_BRACES = re.compile(r"(\{\{+|\}\}+|\{\||\|(?=\}))")
_URL_SCHEMES = r"(?:https?:|ftps?:|news:|irc:|ircs:|gopher:|nntp:|telnet:|svn:|git:|sftp:|ssh:)?//|mailto:"
# "[http://e.org label]": the opening here; _external_links finds the rest. Possessive "*+":
# nothing after the URL can match a character the URL took, so backtracking (which made a
# regex for the whole link cubic in a line of "[//"s) cannot help and is ruled out.
_EXTERNAL_OPEN = re.compile(rf"\[(?=[/fghimnst])(?:{_URL_SCHEMES})", re.IGNORECASE)
_EXTERNAL_URL = re.compile(r"[^\s\]]*+[ \t]*+")
# Most links have no namespace prefix: plain regex substitutions take those; only
# links with a ":" go through the Python callback.
_PLAIN_LINK = re.compile(r"\[\[([^\[\]|:]*)\]\]")
_PIPED_LINK = re.compile(r"\[\[[^\[\]|:]*\|([^\[\]]+)\]\]")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
# The link passes below run at most 8 times, 3 passes each, and a pass takes at most one "[["
# from the end of a run of "[" (the one before the innermost link) and one "]]" from the start
# of a run of "]": 24 pairs. Brackets beyond those are left to the final replace("[[", ""),
# whatever happens. So a longer run is cut to its last (first, for "]") 48 brackets, keeping
# its parity: the same result, without 24 passes over each bracket of a 10,000-deep nest.
_BRACKET_RUN_KEEP = 48
_BRACKET_RUN = re.compile(rf"\[{{{_BRACKET_RUN_KEEP + 2},}}|\]{{{_BRACKET_RUN_KEEP + 2},}}")
# Inline templates whose last argument is prose ({{lang|grc|ἀναρχία}}, {{nowrap|1 May}}):
# the argument is kept, innermost first, before every other template is removed.
# Its lookahead (?=...), like those of _EXTERNAL_OPEN and _prefixed_link, checks the first
# letter of the names that follow and so rejects most positions in one step: in a run of
# thousands of "{{" or "[[", trying every alternative at every bracket outweighed the rest of the stripper.
_INLINE_TEMPLATE = re.compile(
    r"\{\{(?=[ \t]*[lnste])[ \t]*(?:lang|lang-[A-Za-z-]+|nowrap|nobr|transl|script|small|smallcaps|sic|em|strong)[ \t]*"
    r"\|(?:[^{}|]*+\|)*+([^{}|=]*+)\}\}",  # possessive: giving back a "|"-ended argument never helps
    re.IGNORECASE,
)
_LANG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*|simple")
_QUOTES = re.compile(r"''+")  # a literal prefix: faster than '{2,}
_MAGIC = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"\([ \t\u00a0,;:]*\)")


_PAIRED_NAMES = frozenset(_DROP_TAGS.split("|"))
# The closing tag of each name: "</ref>", "</REF >".
_PAIRED_CLOSE = {name: re.compile(rf"</{name}\s*+>", re.IGNORECASE) for name in _PAIRED_NAMES}
_PAIRED_CLOSE_ANY = re.compile(rf"</({_DROP_TAGS})\s*+>", re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def _paired_open(names: frozenset[str]) -> re.Pattern[str]:
    """The opening of a paired tag among ``names``, one named group per name (m.lastgroup names it)."""
    alternatives = "|".join(f"(?P<{name}>{name})" for name in sorted(names))
    return re.compile(rf"<(?:{alternatives})\b", re.IGNORECASE)


def _drop_paired(text: str) -> str:
    r"""Remove ``<ref>…</ref>``, ``<math>…</math>``, … (_DROP_TAGS) with their content, in linear time.

    The result is that of ``re.sub(r"<(tag)\b[^>]*(?<!/)>.*?</\1\s*>", "", text, flags=re.I | re.S)``
    (for ASCII tag names): an opening tag that is not self-closing, up to the first closing
    tag of the same name; an opening tag never closed is left in place (the tag pass below
    removes the tag alone). That regex, run as one pattern, rescans to the end of the page
    from every opening tag that is never closed, so its time grew with the square of the
    number of stray ``<ref>``. Here each opening tag's ``>`` and each name's next
    closing tag are found once and reused by every opening tag before them, and the opening
    tags of a name are no longer looked for once no closing tag of that name is left. So the
    page is scanned a bounded number of times (about once per tag name in it), whatever is
    left unclosed.
    """
    if _PAIRED_CLOSE_ANY.search(text) is None:  # nothing is ever closed: nothing can match
        return text
    names = _PAIRED_NAMES
    out: list[str] = []
    pos = 0  # the text before pos is settled: copied to out, or removed
    gt = -1  # the first ">" at or after the opening tag under consideration
    # name -> (start, end) of its first closing tag at or after some point
    closes: dict[str, tuple[int, int]] = {}
    opening = _paired_open(names)
    m = opening.search(text)
    while m is not None:
        start, end = m.span()
        if gt < end:
            gt = text.find(">", end)
            if gt < 0:  # no ">" left: no opening tag can end, so nothing more can match
                break
        if text[gt - 1] == "/":  # <ref name="a" />: self-closing, nothing to remove
            m = opening.search(text, end)
            continue
        name = m.lastgroup
        close = closes.get(name)
        if close is None or close[0] <= gt:
            found = _PAIRED_CLOSE[name].search(text, gt + 1)
            if found is None:  # never closed from here on: stop looking for its opening tags at all
                names = names - {name}
                if not names:
                    break
                opening = _paired_open(names)
                m = opening.search(text, end)
                continue
            close = closes[name] = found.span()
        out.append(text[pos:start])
        pos = close[1]
        m = opening.search(text, pos)  # opening tags inside the removed element are skipped here, in C
    out.append(text[pos:])
    return "".join(out)


def _external_links(text: str) -> str:
    r"""``[http://e.org label]`` → ``label``, in linear time.

    The result is that of ``re.sub(r"\[(?:scheme)[^\s\]]*[ \t]*([^\]\n]*)\]", r"\1", text, flags=re.I)``.
    Such a link never spans lines and ends at the first "]" after its opening, so it
    matches exactly when that "]" comes before the next newline. The next "]" and the next
    newline are found once and reused by every opening before them: as one regex, each
    opening without a "]" rescanned its line, and backtracking made that cubic in the length of
    a line of "[//".
    """
    out: list[str] = []
    pos = 0
    n = len(text)
    close = newline = -1  # the next "]" and "\n" at or after the opening under consideration (n: none)
    for m in _EXTERNAL_OPEN.finditer(text):
        start, url = m.start(), m.end()
        if start < pos:  # inside the link just replaced
            continue
        if close < url:
            close = text.find("]", url)
            if close < 0:  # no "]" left: no more links
                break
        if newline < url:
            newline = text.find("\n", url)
            newline = n if newline < 0 else newline
        if newline < close:  # the line ends first: not a link
            continue
        label = _EXTERNAL_URL.match(text, url, close).end()  # past the URL and the spaces after it
        out.append(text[pos:start])
        out.append(text[label:close])
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def _pipe_trick(name: str) -> str:
    r"""``[[Mercury (planet)|]]`` shows "Mercury": ``re.sub(r"\s*\(.*\)$", "", name)`` in linear time.

    (The regex retried ``.*\)$`` from every "(" and every space of a long target.) It removes
    the last line's first "(" through its final ")" with the spaces before it; ``$`` also
    matches before a final newline, which stays.
    """
    body = name.removesuffix("\n")
    if not body.endswith(")"):
        return name
    paren = body.find("(", body.rfind("\n") + 1)
    if paren < 0:
        return name
    return body[:paren].rstrip() + name[len(body) :]


def _short_run(m: re.Match[str]) -> str:
    """A run of brackets cut to _BRACKET_RUN_KEEP, its parity kept."""
    run = m.group()
    return run[0] * (_BRACKET_RUN_KEEP + len(run) % 2)


@functools.lru_cache(maxsize=16)
def _prefixed_link(drop: frozenset[str]) -> re.Pattern[str]:
    """The opening of a link to be removed whole: ``[[File:``, ``[[Category:``, ..."""
    names = "|".join(re.escape(name) for name in sorted(drop, key=len, reverse=True))
    first = "".join(sorted({re.escape(name[0]) for name in drop if name}))
    return re.compile(rf"\[\[(?=[ \t]*[{first}])[ \t]*(?:{names})[ \t]*:", re.IGNORECASE)


def _remove_prefixed_links(text: str, drop: frozenset[str]) -> str:
    r"""Remove File/Image/Category links whole, with nested links and single brackets in captions.

    A caption such as ``[[File:x.jpg|thumb|in 1927 [above], [[Stalin]]]]`` defeats a
    regex over ``[^\[\]]``, so the matching ``]]`` is found by counting. The next ``]]`` is
    found once and reused until the scan passes it: searching again from every nested
    ``[[`` or every unclosed link was quadratic.
    """
    opening = _prefixed_link(drop)
    m = opening.search(text)
    if m is None:
        return text
    out = []
    pos = 0
    n = len(text)
    close = -1  # the first "]]" at or after i, once found (n: there is none left)
    while m is not None:
        out.append(text[pos : m.start()])
        depth, i = 1, m.end()
        while depth:
            if close < i:
                close = text.find("]]", i)
                close = n if close < 0 else close
            if close == n:  # never closed: drop the rest of the line
                nl = text.find("\n", m.end())
                i = n if nl < 0 else nl
                break
            inner = text.find("[[", i, close)
            if inner >= 0:
                depth, i = depth + 1, inner + 2
            else:
                depth, i = depth - 1, close + 2
        pos = i
        m = opening.search(text, pos)
    out.append(text[pos:])
    return "".join(out)


def _at_line_start(parts: list[str], k: int, allowed: str) -> bool:
    """True when delimiter ``parts[k]`` has only ``allowed`` characters before it on its line."""
    prev = parts[k - 1]
    nl = prev.rfind("\n")
    if nl < 0 and k > 1:  # an earlier delimiter stands on the same line
        return False
    return not prev[nl + 1 :].strip(allowed)


class _Open:
    """The constructs _strip_nested holds open, innermost last, run-length encoded.

    Entry i stands for ``counts[i]`` constructs of ``kinds[i]`` ("t" template, "param",
    "table") opened by one run of braces; closing any of them truncates the output back to
    ``marks[i]``, its length then. So a run of 10,000 "{{" is one entry and one step. Three
    flat lists rather than a list per entry: hundreds of thousands of small lists alive at
    once made Python's cyclic GC a large part of the cost of a page of unclosed templates.
    """

    __slots__ = ("counts", "kinds", "marks", "opened")

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.marks: list[int] = []
        self.counts: list[int] = []
        self.opened = {"t": 0, "param": 0, "table": 0}

    def push(self, kind: str, mark: int, count: int) -> None:
        self.kinds.append(kind)
        self.marks.append(mark)
        self.counts.append(count)
        self.opened[kind] += count

    def close_braces(self, n: int, out: list[str]) -> int:
        """Close what a run of ``n`` closing braces closes; return the braces left over (0 or 1).

        Greedily from the innermost: three braces end a parameter, two a template (even when a
        parameter is innermost); past the bottom of the stack, pairs are stray closers. The
        moves are planned against the stack as it is, then made, as runs: [kind, how many].
        """
        kinds, counts = self.kinds, self.counts
        plan: list[list] = []
        e = len(kinds) - 1
        left = counts[e] if e >= 0 else 0  # constructs of entry e not yet planned to close
        while n >= 2:
            if e < 0:
                kind, count, n = "t", n // 2, n % 2
            elif kinds[e] == "param" and n >= 3:
                kind, count = "param", min(left, n // 3)
                n -= 3 * count
            elif kinds[e] == "param":
                kind, count = "t", 1
                n -= 2
            else:
                kind, count = "t", min(left, n // 2)
                n -= 2 * count
            if plan and plan[-1][0] == kind:
                plan[-1][1] += count
            else:
                plan.append([kind, count])
            left -= count
            if left <= 0 and e >= 0:
                e -= 1
                left = counts[e] if e >= 0 else 0
        for kind, count in plan:
            self.close(kind, count, out)
        return n

    def close(self, kind: str, count: int, out: list[str]) -> None:
        """Close ``count`` constructs of ``kind``, innermost first, with all that they hold open.

        A closer with nothing of its kind open is dropped.
        """
        kinds, marks, counts, opened = self.kinds, self.marks, self.counts, self.opened
        while count and opened[kind]:
            if kinds[-1] != kind:  # opened inside the one being closed: closed with it
                opened[kinds.pop()] -= counts.pop()
                marks.pop()
                continue
            closing = min(count, counts[-1])
            counts[-1] -= closing
            opened[kind] -= closing
            count -= closing
            mark = marks[-1]
            if not counts[-1]:
                kinds.pop()
                marks.pop()
                counts.pop()
            del out[mark:]


def _strip_nested(text: str) -> str:
    """Remove {{templates}}, {{{parameters}}} and {| tables |}, nested in any order, in one pass.

    Everything is appended to the output as it is scanned; closing a construct
    truncates the output back to where that construct opened. So a stray closer
    is dropped, and an opener never closed is taken as literal text (as
    MediaWiki renders it) with only its delimiter dropped, while constructs
    closed inside it are still removed. Linear time however many openers a page
    leaves unclosed: each piece is appended once and removed at most once, and a
    run of braces is one step (_Open).
    """
    if "{" not in text and "}" not in text:
        return text
    # split() with a capturing group alternates text and delimiters (odd indices).
    # Walking that list is faster than finditer's match objects.
    parts = _BRACES.split(text)
    out = [parts[0]]
    stack = _Open()
    opened, kinds, marks, counts = stack.opened, stack.kinds, stack.marks, stack.counts
    for k in range(1, len(parts), 2):
        tok = parts[k]
        after = parts[k + 1]
        if tok == "{{":  # by far the most common delimiter: one template opens (push, inlined)
            kinds.append("t")
            marks.append(len(out))
            counts.append(1)
            opened["t"] += 1
        elif tok[0] == "{" and tok[1] == "{":
            # "{{{" opens a parameter, "{{" a template; longer runs are several ({{{{x}}|y}}),
            # outermost first: "{{{{{" is a template, then a parameter.
            n, mark = len(tok), len(out)
            if n % 2 == 0:
                stack.push("t", mark, n // 2)
            else:
                if n > 3:
                    stack.push("t", mark, (n - 3) // 2)
                stack.push("param", mark, 1)
        elif tok[0] == "}":
            after = "}" * stack.close_braces(len(tok), out) + after
        elif tok == "{|" and _at_line_start(parts, k, " \t:"):
            stack.push("table", len(out), 1)
        elif tok == "|" and after[:1] == "}" and _at_line_start(parts, k, " \t"):
            stack.close("table", 1, out)
            after = after[1:]  # "|}", not "|}}": split left its "}" in the next piece
        elif tok == "|":  # not a table delimiter: plain text
            out.append(tok)
        # else: a "{|" that is not at the start of a line, dropped like an unclosed "{{": no markup is left
        out.append(after)
    return "".join(out)


def _link(m: re.Match[str], drop: frozenset[str]) -> str:
    target, pipe, label = m.group(1).partition("|")
    target = target.strip()
    if target.startswith(":"):  # [[:Category:X]]: a visible link to a category page
        target = target[1:]
    else:
        prefix, colon, _ = target.partition(":")
        if colon:
            key = prefix.strip().lower()
            if key in drop:
                return ""
            if not pipe and _LANG.fullmatch(key):  # interlanguage link: [[de:Foo]]
                return ""
    if pipe:
        if label.strip():
            return label
        return _pipe_trick(target.partition(":")[2] or target)
    return target


def strip_markup(text: str, drop_prefixes: frozenset[str] = DROP_LINK_PREFIXES) -> str:
    """Wikitext → plain prose, one paragraph or heading per line.

    Args:
        text: a page's wikitext (XML entities already decoded by the parser).
        drop_prefixes: lower-case link prefixes whose links are removed whole
            (File, Image, Media, Category and their localized names).
    """
    # "".join(P.split(text)) is P.sub(r"\1" or "", text) for a pattern with at most
    # one group, and faster: no template expansion per match.
    if "<" in text:
        text = "".join(_COMMENT.split(text))
        text = _drop_paired(text)
        text = _BR.sub(" ", text)
        text = "".join(_TAG.split(text))
    if "{{" in text:
        for _ in range(4):
            text, n = _INLINE_TEMPLATE.subn(r"\1", text)
            if not n:
                break
    text = _strip_nested(text)
    if "[" in text:
        text = _remove_prefixed_links(text, drop_prefixes)
        text = _external_links(text)
        if "[" * _BRACKET_RUN_KEEP in text or "]" * _BRACKET_RUN_KEEP in text:
            text = _BRACKET_RUN.sub(_short_run, text)
        for _ in range(8):  # innermost links first: a File caption may hold links
            text = "".join(_PLAIN_LINK.split(text))
            text = "".join(_PIPED_LINK.split(text))
            if "[[" not in text:
                break
            text, n = _LINK.subn(lambda m: _link(m, drop_prefixes), text)
            if not n:
                break
        text = text.replace("[[", "").replace("]]", "")
    if "''" in text:
        text = "".join(_QUOTES.split(text))
    if "__" in text:
        text = _MAGIC.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    if "(" in text:
        text = _EMPTY_PARENS.sub("", text)
    return _lines(text)


def _lines(text: str) -> str:
    """One line per paragraph, heading or list item: markers dropped, whitespace collapsed."""
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        first = line[0]
        if first == "=" and line[-1] == "=":  # == Heading ==
            line = line.strip("=").strip()
        elif first in "*#:;":  # list items and indentation
            line = line.lstrip("*#:;").strip()
        elif line.startswith("----"):  # horizontal rule
            line = line.lstrip("-").strip()
        if "  " in line or "\t" in line or "\u00a0" in line:
            line = " ".join(line.split())
        if line:
            out.append(line)
    return "\n".join(out)
