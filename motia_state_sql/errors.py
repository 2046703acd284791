"""The error tree of motia_state_sql: one base class, a few subclasses grouped by cause."""

from __future__ import annotations

import errno

__all__ = [
    "ConfigError",
    "ConflictError",
    "InvalidKeyError",
    "InvalidOperationError",
    "InvalidValueError",
    "SchemaError",
    "StateError",
    "StoreUnavailableError",
    "UnsupportedError",
    "from_os_error",
]


class StateError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidKeyError(StateError, ValueError):
    """A group id or key is empty, not a ``str``, holds NUL; or a ``ttl`` is not a positive number."""


class ConfigError(StateError, ValueError):
    """A constructor argument or URL parameter is out of range, of the wrong type, or unknown."""


class InvalidValueError(StateError, ValueError, TypeError):
    """A value is not a JSON value this package can store exactly, or is larger than allowed."""


class InvalidOperationError(StateError, ValueError):
    """An update op or a filter is malformed, or cannot apply to the current value."""


class ConflictError(StateError):
    """A conditional write's condition failed, or a transaction met a conflicting write."""


class SchemaError(StateError):
    """The store holds something this version of the package cannot safely open."""


class StoreUnavailableError(StateError):
    """The store could not be reached in time (server down, database locked past its timeout)."""


class UnsupportedError(StateError):
    """The backend's storage format cannot hold what was asked for (e.g. TTL in Motia's JSON file)."""


def from_os_error(exc: OSError, doing: str) -> StateError:
    """The error of ours that tells the truth about ``exc``, met while ``doing`` (``"create x"``).

    A path this process may not write, or with a file where a folder belongs, cannot get better
    by retrying: ``ConfigError``. Anything else (disk full, I/O error) may pass:
    ``StoreUnavailableError``.
    """
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(
            f"cannot {doing}: {exc.strerror}{where}; to read an existing store there, open it with "
            "read_only=True (?mode=ro)"
        )
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return ConfigError(f"cannot {doing}: a part of its folder path is a file{where}")
    return StoreUnavailableError(f"cannot {doing}: {exc.strerror}{where}")
