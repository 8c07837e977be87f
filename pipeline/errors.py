"""Errors a user can act on.

Raise these (never bare ``Exception``) when the cause is the user's input: the
message names the file, key or value and says how to fix it. Stage entry
points print the message without a traceback and exit with status 2.
"""


class RnnlabError(Exception):
    """A problem with the user's input, config or data, with its fix in the message."""


class ParamsError(RnnlabError):
    """params.yaml is missing, malformed, or has invalid keys or values."""


class DataError(RnnlabError):
    """An input or intermediate file is missing, empty, malformed, or inconsistent."""
