"""Errors that geostp raises for everything a user can get wrong.

Every user-facing failure ends in a :class:`GeostpError` (or one of its few
subclasses) whose message names the file or variable involved, what was found
and what was expected.  Catch ``GeostpError`` to handle any of them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "GeostpError",
    "CubeError",
    "CubeValueError",
    "DataError",
    "StoreError",
    "ConfigError",
    "UnknownNameError",
    "CheckpointError",
    "UnsafePathError",
    "WriteError",
    "writing",
]


class GeostpError(Exception):
    """Base class of every error geostp raises on purpose."""


class CubeError(GeostpError, ValueError):
    """A dataset does not follow the cube conventions (dims, time, units, CRS)."""


class CubeValueError(CubeError):
    """A cube's values cannot be right: not finite, outside what its variable can physically take (an undecoded
    fill value such as 1e30), or no data at all where a forecast needs some (a radar outage)."""


class DataError(GeostpError, OSError):
    """A source file or directory is missing, unreadable, corrupt or of the wrong format."""


class StoreError(GeostpError, OSError):
    """A zarr store is missing, incomplete (an interrupted write) or not a geostp cube."""


class ConfigError(GeostpError, ValueError):
    """A catalog, recipe or argument is malformed or impossible."""


class UnknownNameError(ConfigError, KeyError):
    """A name was looked up in a registry or catalog that does not hold it."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(GeostpError, OSError):
    """A checkpoint is missing, unsafe, or does not fit the data it is used on."""


class UnsafePathError(GeostpError, OSError):
    """A file geostp would write or keep open (a lock, a log) is a symbolic link, a hard link or not a regular file:
    writing through it would touch a file geostp did not write, so geostp refuses and leaves it as it is."""


class WriteError(GeostpError, OSError):
    """geostp cannot write where it was asked to: a read-only folder, a file where a folder belongs, a full disk.
    :func:`writing` is the one place an ``OSError`` on writing becomes one, naming the path."""


_WRITE_HINTS = {
    errno.EACCES: "the folder is read-only or not yours",
    errno.EPERM: "the folder is read-only or not yours",
    errno.EROFS: "the file system is read-only",
    errno.EEXIST: "a file is there where a folder belongs",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a folder is there where a file belongs",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.ENAMETOOLONG: "the name is too long",
}


@contextmanager
def writing(path: str | os.PathLike[str], what: str = "output") -> Iterator[None]:
    """Run a block that writes ``path`` (``what`` it is, for the message): an ``OSError`` raised in it (other than
    a :class:`GeostpError`) becomes a :class:`WriteError` naming the path, the file the system refused and why."""
    try:
        yield
    except GeostpError:
        raise
    except OSError as exc:
        hint = _WRITE_HINTS.get(exc.errno or -1, exc.strerror or type(exc).__name__)
        refused = f" ({exc.filename}: {exc.strerror})" if exc.filename and str(exc.filename) != str(path) else \
            f" ({exc.strerror})" if exc.strerror else f" ({exc})"
        raise WriteError(f"cannot write the {what} {path}: {hint}{refused}; expected a folder that geostp may "
                         "create files in") from None
