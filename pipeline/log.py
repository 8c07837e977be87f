"""Logging for rnnlab: named loggers under ``rnnlab``, one short stderr handler, the level from the environment.

Every module logs through the standard library, under its own name::

    logger = logging.getLogger(f"rnnlab.{__name__}")   # rnnlab.pipeline.tokenize, rnnlab.models.trainer, ...
    logger.info("resumed from %s at step %d", path, step)

A process's entry point (``pipeline.stage.run``, the CLI, ``models.ddp_train``) calls ``setup()`` once:
the ``rnnlab`` logger then writes to stderr as ``rnnlab: message`` (DEBUG and INFO), ``warning:
message`` and ``error: message``, at the level ``RNNLAB_LOG_LEVEL`` names (DEBUG, INFO, WARNING or
ERROR; default INFO). It does not propagate to the root logger, so Prefect's console handler
does not print the same line a second time; Prefect sends it to the flow run's log in the UI
instead, through ``logging.extra_loggers = "rnnlab"`` in prefect.toml. The variable is read by
every process, so a level set once (``rnnlab -q``) reaches the stages DVC starts too.

Log lines and tqdm bars share stderr: a record written while a bar is drawn clears the bar, is
printed, and the bar is drawn again below it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

LEVEL_ENV = "RNNLAB_LOG_LEVEL"
ROOT = "rnnlab"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LEVEL = "INFO"


class ShortFormatter(logging.Formatter):
    """``rnnlab: message`` below WARNING, ``warning: message``, ``error: message`` from ERROR on."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            prefix = "error"
        elif record.levelno >= logging.WARNING:
            prefix = "warning"
        else:
            prefix = ROOT
        text = f"{prefix}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (pytest and redirections swap it), around any tqdm bar.

    A record marked ``rnnlab_console=False`` (a progress line while a bar shows the same numbers)
    is left to the other handlers (Prefect's, which sends it to the UI).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(ShortFormatter())

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always the current sys.stderr

    def filter(self, record: logging.LogRecord) -> bool:
        # The rnnlab logger's level, not only the emitting logger's: a module whose level was
        # lowered (to collect its DEBUG records, say) still prints only what the setting asks for.
        if record.levelno < logging.getLogger(ROOT).getEffectiveLevel():
            return False
        return getattr(record, "rnnlab_console", True) and bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        tqdm_module = sys.modules.get("tqdm")  # a bar is only drawn once tqdm has been imported
        if tqdm_module is not None and getattr(tqdm_module.tqdm, "_instances", None):
            with tqdm_module.tqdm.external_write_mode(file=sys.stderr):
                super().emit(record)
        else:
            super().emit(record)


def level_from_env() -> tuple[int, str | None]:
    """The level ``RNNLAB_LOG_LEVEL`` names, and a complaint when its value is not a level."""
    value = os.environ.get(LEVEL_ENV, "").strip()
    if not value:
        return logging.INFO, None
    if value.upper() in LEVELS:
        return logging.getLevelName(value.upper()), None
    return logging.INFO, f"{LEVEL_ENV}={value!r} is not one of {', '.join(LEVELS)}; logging at {DEFAULT_LEVEL}"


def setup() -> logging.Logger:
    """Configure the ``rnnlab`` logger for this process: the stderr handler (once) and the level
    from ``RNNLAB_LOG_LEVEL`` (read again on every call). Returns the logger."""
    logger = logging.getLogger(ROOT)
    level, complaint = level_from_env()
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        logger.addHandler(StderrHandler())
    if complaint:
        logger.warning(complaint)
    return logger


@contextlib.contextmanager
def capture(name: str = ROOT, level: int = logging.DEBUG) -> Iterator[list[str]]:
    """Collect the messages logged under ``name`` (and below) at ``level`` or above, as the block runs."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(name)
    handler = _Collect(level)
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
