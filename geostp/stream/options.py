"""How batches are read and served: :class:`LoaderOptions`, one object for :class:`~geostp.stream.CubeDataset`'s
batching, sharding and reading keywords and :func:`~geostp.stream.make_loader`'s worker keywords.

::

    opts = LoaderOptions(batch_size=32, seed=7, streams=4, num_workers=4)
    loader = make_loader(CubeDataset(store, ["precipitation"], spec, loader=opts), loader=opts)

Each field is the keyword of that name; the dataset reads its fields (``batch_size`` ... ``reader``) and
the loader the worker fields (``num_workers`` ... ``timeout``).  No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geostp.errors import ConfigError

__all__ = ["LoaderOptions"]


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LoaderOptions:
    """Batching, sharding and reading of a :class:`~geostp.stream.CubeDataset`, and its DataLoader's workers.

    The dataset's fields are described in :class:`~geostp.stream.CubeDataset` (``batch_size``, ``shuffle``,
    ``seed``, ``drop_last``, ``rank``, ``world_size``, ``shard``, ``streams``, ``shuffle_blocks``,
    ``block_megabytes``, ``cache_megabytes``, ``fill_value``, ``reader``), the workers' in
    :func:`~geostp.stream.make_loader` (``num_workers``, ``persistent_workers``, ``prefetch_factor``,
    ``pin_memory``, ``multiprocessing_context``, ``timeout``).
    """

    batch_size: int = 16
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    rank: int | None = None
    world_size: int | None = None
    shard: str = "streams"
    streams: int = 2
    shuffle_blocks: int = 2
    block_megabytes: float = 48.0
    cache_megabytes: float | None = None
    fill_value: float | None = None
    reader: str = "auto"
    num_workers: int = 2
    persistent_workers: bool = False
    prefetch_factor: int | None = 2
    pin_memory: bool = False
    multiprocessing_context: Any = None
    timeout: float = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "streams", "shuffle_blocks", "prefetch_factor"):
            value = getattr(self, name)
            if name == "prefetch_factor" and value is None:  # torch's own default
                continue
            if not _integer(value) or value < 1:
                raise ConfigError(f"LoaderOptions {name}={value!r}; expected a positive integer")
        for name in ("seed", "num_workers"):
            value = getattr(self, name)
            if not _integer(value) or value < 0:
                raise ConfigError(f"LoaderOptions {name}={value!r}; expected an integer, 0 or more")
        for name in ("rank", "world_size"):
            value = getattr(self, name)
            if value is not None and (not _integer(value) or value < (1 if name == "world_size" else 0)):
                raise ConfigError(f"LoaderOptions {name}={value!r}; expected None or an integer "
                                  f"{'>= 1' if name == 'world_size' else '>= 0'}")
        if self.rank is not None and self.world_size is not None and self.rank >= self.world_size:
            raise ConfigError(f"LoaderOptions rank={self.rank}, world_size={self.world_size}; expected "
                              "rank < world_size")
        for name in ("shuffle", "drop_last", "persistent_workers", "pin_memory"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"LoaderOptions {name}={value!r}; expected True or False")
        if self.shard not in ("streams", "batches"):
            raise ConfigError(f"LoaderOptions shard={self.shard!r}; expected 'streams' or 'batches'")
        if self.reader not in ("auto", "zarr", "xarray"):
            raise ConfigError(f"LoaderOptions reader={self.reader!r}; expected 'auto', 'zarr' or 'xarray'")
        if not (_number(self.block_megabytes) and self.block_megabytes > 0):
            raise ConfigError(f"LoaderOptions block_megabytes={self.block_megabytes!r}; expected a positive size")
        for name in ("cache_megabytes", "fill_value"):
            value = getattr(self, name)
            if value is not None and not _number(value):
                raise ConfigError(f"LoaderOptions {name}={value!r}; expected None or a number")
        if not (_number(self.timeout) and self.timeout >= 0):
            raise ConfigError(f"LoaderOptions timeout={self.timeout!r}; expected seconds, 0 or more")
