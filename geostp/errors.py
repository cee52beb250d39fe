"""Errors that geostp raises for everything a user can get wrong.

Every user-facing failure ends in a :class:`GeostpError` (or one of its few
subclasses) whose message names the file or variable involved, what was found
and what was expected.  Catch ``GeostpError`` to handle any of them.
"""

from __future__ import annotations

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
