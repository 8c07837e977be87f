"""Errors a user can act on.

Raise these (never bare ``Exception``) when the cause is the user's input: the
message names the file, key or value and says how to fix it. Stages and commands
print the message without a traceback and exit with status 2 (``refuse``).
"""

import reprlib
import sys

USER_ERROR = 2  # the exit status of every stage and command that refuses a user error


class RnnlabError(Exception):
    """A problem with the user's input, config or data, with its fix in the message."""


class ParamsError(RnnlabError):
    """params.yaml is missing, malformed, or has invalid keys or values."""


class DataError(RnnlabError):
    """An input or intermediate file is missing, empty, malformed, or inconsistent."""


def refuse(error: object) -> int:
    """Say a user error as one line on stderr, ``error: <error>``, with no traceback; return USER_ERROR."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return USER_ERROR


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    A value that had to be cut gets its type and size, e.g. ``'aaaa...aaaa' (str, 5000000 chars)``.
    Time and memory stay bounded whatever the value: the full repr of a YAML alias bomb, a
    megabyte-long field or a 10,000-digit integer is never built.
    """
    short = _REPR.repr(value)
    if len(short) <= limit and "..." not in short:
        return short
    cut = short if len(short) <= limit else short[: limit - 1] + "…"
    if isinstance(value, (str, bytes, bytearray)):
        size = f"{len(value)} {'chars' if isinstance(value, str) else 'bytes'}"
    elif isinstance(value, int):
        size = f"about {value.bit_length() * 30103 // 100000 + 1} digits"
    elif hasattr(value, "__len__"):
        try:
            size = f"{len(value)} items"  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # a __len__ that fails: the size is not worth a second error
            size = "size unknown"
    else:
        return cut
    return f"{cut} ({type(value).__name__}, {size})"


class _BoundedRepr(reprlib.Repr):
    """reprlib, but also bounded for bytes and huge integers (reprlib would build their whole repr)."""

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    repr_bytearray = repr_bytes

    def repr_int(self, x: int, level: int) -> str:
        # Python refuses to print an int of over 4300 digits; long before that it is noise.
        if x.bit_length() > 3 * self.maxlong:
            return "<a very large integer>..."
        return super().repr_int(x, level)


def _bounded_repr() -> _BoundedRepr:
    r = _BoundedRepr()
    r.maxlevel = 3
    r.maxstring = 160  # below `limit`: a long string keeps its head...tail form uncut
    r.maxlong = r.maxother = 200
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 8
    return r


_REPR = _bounded_repr()
