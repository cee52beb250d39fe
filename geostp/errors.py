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
from pathlib import Path

__all__ = [
    "GeostpError",
    "CubeError",
    "CubeValueError",
    "DataError",
    "StoreError",
    "CorruptStoreError",
    "ConfigError",
    "UnknownNameError",
    "CheckpointError",
    "UnsafePathError",
    "WriteError",
    "writing",
    "writable_folder",
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


class CorruptStoreError(StoreError):
    """A store's files are not those ingest wrote: a chunk missing, truncated, overwritten or undecodable.  The
    message names the store, the variable and the chunk, and says what to do (``geostp info --verify``, ingest the
    store again or restore it from a copy)."""


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


def writable_folder(path: str | os.PathLike[str], what: str = "output folder", *,
                    for_file: str | os.PathLike[str] | None = None) -> Path:
    """Check, creating nothing, that ``path`` is a folder geostp can create files in, or that it can be created
    there (its nearest existing ancestor is a folder geostp may write); returns it as a :class:`~pathlib.Path`.

    A :class:`WriteError` names ``path`` (``what`` it is; ``for_file``: the file geostp means to write in it,
    named instead), the part of it that is in the way and what was expected: a regular file where the folder
    (or one of its parents) belongs, a broken symbolic link, a read-only folder.  Entry points call it before
    they write anything, so that a bad output location is refused before any file is created; the writes
    themselves still go through :func:`writing`.
    """
    path = Path(path)
    subject = f"{what} {for_file if for_file is not None else path}"
    expected = "expected a folder that geostp may create files in, or a path where one can be created"

    def refuse(probe: Path, problem: str) -> WriteError:
        where = "it" if probe == path and for_file is None else f"the folder {probe}" if probe == path else str(probe)
        return WriteError(f"cannot write the {subject}: {where} {problem}; {expected}")

    with writing(path, what):  # a folder on the way that cannot even be looked into
        probe = path
        while not probe.exists():
            if probe.is_symlink():
                raise refuse(probe, f"is a symbolic link to {os.readlink(probe)}, which does not exist")
            if probe.parent == probe:  # pragma: no cover - the root always exists
                break
            probe = probe.parent
        if not probe.is_dir():
            raise refuse(probe, "is a file, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise refuse(probe, "is read-only or not yours")
    return path
