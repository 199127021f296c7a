"""One exception for every data problem, with a message that says what, where and how to fix."""

from __future__ import annotations


class DataError(RuntimeError):
    """A data set is missing, truncated, altered or unreadable.

    The message names the path, what was expected, and how to obtain the data; the
    command-line entry points print it without a traceback.
    """
