"""Deprecated alias of :mod:`geostp.operate`, kept for one release.

The operational runner moved: the file feed to :mod:`geostp.operate.feed`,
the runner to :mod:`geostp.operate.runner`, the forecast files to
:mod:`geostp.writers`.  Import from :mod:`geostp.operate`; this module only
re-exports the names it held (and warns about nothing).
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
from geostp.operate.runner import (
    COMMIT_DELAY_ENV,
    GRID_NAME,
    LOCK_NAME,
    NowcastLockedError,
    NowcastRunner,
    output_stem,
)
from geostp.writers import TMP_MARK

__all__ = [
    "FeedPolicy",
    "FileFeed",
    "BadFile",
    "NowcastRunner",
    "NowcastLockedError",
    "output_stem",
    "COMMIT_DELAY_ENV",
    "Frame",
    "grid_signature",
    "grid_difference",
    "LOCK_NAME",
    "GRID_NAME",
    "TMP_MARK",
]
