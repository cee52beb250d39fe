"""Deprecated alias (one release): the zarr store moved to :mod:`geostp.store`."""

from __future__ import annotations

from geostp.store import (
    COMPLETE_ATTR,
    PARTIAL_INFIX,
    STORE_ARRAY_KEY,
    default_chunks,
    ingest,
    open_cube,
    store_info,
    unmodified_store_path,
)

__all__ = ["ingest", "open_cube", "store_info", "default_chunks", "unmodified_store_path", "COMPLETE_ATTR",
           "PARTIAL_INFIX", "STORE_ARRAY_KEY"]
