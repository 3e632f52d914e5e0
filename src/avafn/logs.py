"""How the library's lines reach a terminal.

The library never prints: each module logs through its own logger
(``logging.getLogger(__name__)``, all under ``avafn``). :func:`to_console` is what the command
line (``avafn ...`` and the ``python -m`` entry points) installs: every line exactly as it is
written, INFO on standard output, WARNING and above on standard error. A Python caller
configures :mod:`logging` as it likes; without any configuration Python shows the warnings and
drops the rest.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ROOT = "avafn"
#: loggers whose lines are a prediction's progress and notes (shown on standard error)
PROGRESS = ("avafn.inference.predictor", "avafn.inference.inputs", "avafn.diarize")
_INDENT: ContextVar[str] = ContextVar("avafn_log_indent", default="")


def is_progress(name: str) -> bool:
    """Whether logger ``name`` is one of :data:`PROGRESS` or below one."""
    return any(name == p or name.startswith(p + ".") for p in PROGRESS)


@contextmanager
def indented(prefix: str = "  ") -> Iterator[None]:
    """Progress lines logged inside this block are shown after ``prefix``."""
    token = _INDENT.set(_INDENT.get() + prefix)
    try:
        yield
    finally:
        _INDENT.reset(token)


class ConsoleHandler(logging.Handler):
    """The message alone, on the ``sys.stdout`` / ``sys.stderr`` of the moment (so a
    redirection or a test's capture made after it was installed still applies)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            progress = is_progress(record.name)
            stream = sys.stderr if progress or record.levelno >= logging.WARNING else sys.stdout
            stream.write((_INDENT.get() if progress else "") + self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001  (logging's own convention: never raise from emit)
            self.handleError(record)


def to_console(level: int = logging.INFO) -> None:
    """Show the ``avafn`` loggers' lines on the console from ``level`` up (once: calling it
    again only sets the level)."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
