"""What an adapter declares when it can read the files of an operational feed one at a time.

A file feed (:class:`geostp.operate.FileFeed`) hands an adapter one newly
arrived file at a time.  It must know which of the adapter's arguments takes
the files, which one the file-name time pattern, the time step and the file
extension, and which select an archive's files (dropped: the feed picks the
files itself).  The adapter says so; nobody inspects its signature::

    from geostp.data.feed_support import FeedSupport, serves_file_feed

    @serves_file_feed(FeedSupport(files_arg="paths", step_arg="step"))
    def open_my_radar(paths, step=None, ...): ...

An adapter without a declaration cannot serve a feed (:func:`feed_support`
says so with a :class:`~geostp.errors.ConfigError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from geostp.errors import ConfigError

__all__ = ["FeedSupport", "serves_file_feed", "feed_support", "FEED_ATTR"]

#: The attribute of an adapter that holds its :class:`FeedSupport`.
FEED_ATTR = "__geostp_feed__"

A = TypeVar("A", bound=Callable[..., Any])


@dataclass(frozen=True)
class FeedSupport:
    """The adapter arguments a file feed fills in.

    Parameters
    ----------
    files_arg
        Receives the list of files to read (one file per call).
    time_pattern_arg
        Takes the file-name time pattern (pysteps' ``fn_pattern`` convention),
        if the adapter reads times from names; the feed fills it in.
    step_arg
        Takes the nominal time step; a feed's default step.
    extension_arg
        Takes the file extension; the feed fills it in.
    archive_args
        Select an archive's files or time range; dropped from a feed's arguments.
    """

    files_arg: str
    time_pattern_arg: str | None = None
    step_arg: str | None = None
    extension_arg: str | None = None
    archive_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.files_arg, str) or not self.files_arg:
            raise ConfigError(f"FeedSupport(files_arg={self.files_arg!r}): expected the name of an argument")
        object.__setattr__(self, "archive_args", tuple(self.archive_args))


def serves_file_feed(support: FeedSupport) -> Callable[[A], A]:
    """Declare that an adapter can serve a file feed (a decorator; returns the adapter unchanged)."""
    if not isinstance(support, FeedSupport):
        raise TypeError(f"serves_file_feed takes a FeedSupport, got {type(support).__name__}")

    def declare(adapter: A) -> A:
        setattr(adapter, FEED_ATTR, support)
        return adapter

    return declare


def feed_support(adapter: Callable[..., Any], name: str | None = None) -> FeedSupport:
    """An adapter's :class:`FeedSupport`; ConfigError if it declares none."""
    support = getattr(adapter, FEED_ATTR, None)
    if not isinstance(support, FeedSupport):
        label = name or getattr(adapter, "__name__", repr(adapter))
        raise ConfigError(f"adapter {label!r} cannot serve a file feed: it declares no FeedSupport (adapters that "
                          "can read arriving files one at a time are declared with "
                          "geostp.data.feed_support.serves_file_feed)")
    return support
