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


class StoreUnreachable(TrackingError):
    """The tracking server stopped answering during a run (after ``logger.patience_s`` of retries)."""


class CheckpointInUse(TrackingError):
    """Another process is writing this run's checkpoints."""


class StorageFull(RuntimeError):
    """A disk filled (or refused a write) while a run wrote its checkpoint, store or artifacts."""


USER_ERRORS = (ConfigError, DataError, TrackingError, StorageFull)

_FULL = ("no space left on device", "database or disk is full", "disk quota exceeded", "file write failed")


def causes(err: BaseException | None):
    """The exception, then each one it was raised from or during, to the first (cycles cut)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def storage_full(err: BaseException | None) -> bool:
    """Whether an exception, or one it was raised from, is a full disk (ENOSPC, EDQUOT, SQLite's
    'database or disk is full', torch's 'file write failed')."""
    import errno

    return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
               or any(text in str(e).lower() for text in _FULL) for e in causes(err))
