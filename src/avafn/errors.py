"""The error policy's one base type.

A :class:`UserError` is a mistake in what the user gave avafn (a file, an option, a store, a
machine without the asked device): the command line prints it as one line
``avafn CMD: error: MESSAGE`` and exits with status 1. Its message names the file / option /
utterance and what was expected. Anything else that escapes a command is a bug.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user's mistake, reported in one line without a traceback."""
