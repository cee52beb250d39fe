"""Deprecated alias (one release): the dask client moved to :mod:`geostp.cluster`, torch DDP to :mod:`geostp.train.ddp`."""

from __future__ import annotations

from geostp.cluster import active_client, dask_client
from geostp.train.ddp import (
    barrier,
    init_from_env,
    is_distributed,
    is_main_process,
    launch_local,
    rank,
    shutdown,
    world_size,
)

__all__ = [
    "dask_client",
    "active_client",
    "init_from_env",
    "launch_local",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "barrier",
    "shutdown",
]
