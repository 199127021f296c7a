"""Every mistake a user can make, as one exception class each, and the tuple the CLIs catch.

The command-line entry points print these as one line (``error: <message>``) and exit 2,
never with a traceback: each message names what is wrong, where, and how to fix it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key has a value that cannot work."""


class DataError(RuntimeError):
    """A data set is missing, truncated, altered or unreadable.

    The message names the path, what was expected, and how to obtain the data.
    """


class TrackingError(RuntimeError):
    """The tracking store cannot be used: malformed URI, server unreachable, store not writable."""


class CheckpointInUse(TrackingError):
    """Another process is writing this run's checkpoints."""


USER_ERRORS = (ConfigError, DataError, TrackingError)
