"""Operational nowcasting: a file feed, the runner that forecasts each new reference time once, and its outputs.

``feed``
    :class:`FileFeed` (files of one source arriving in a folder, read one at a
    time through an adapter that declares it can serve a feed),
    :class:`FeedPolicy`, :class:`Frame`, :class:`BadFile` and the grid checks.
``runner``
    :class:`NowcastRunner` (cycles, signals, the folder lock; the feed
    policy is in its docstring).
``journal``
    The runner's JSON-lines log (written, and read back by a restarted
    runner so that it logs nothing twice) and the safe open of its own files.

Forecast files are written by :mod:`geostp.writers`, maps drawn by :mod:`geostp.plot`.
"""

from __future__ import annotations

from geostp.operate.feed import (
    BadFile,
    FeedPolicy,
    FileFeed,
    Frame,
    grid_difference,
    grid_signature,
)
from geostp.operate.runner import COMMIT_DELAY_ENV, NowcastLockedError, NowcastRunner, output_stem

__all__ = [
    "FeedPolicy",
    "FileFeed",
    "Frame",
    "BadFile",
    "grid_signature",
    "grid_difference",
    "NowcastRunner",
    "NowcastLockedError",
    "output_stem",
    "COMMIT_DELAY_ENV",
]
