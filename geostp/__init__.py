"""geostp: spatiotemporal forecasting of gridded geophysical data on labelled xarray/zarr cubes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from geostp.errors import (
    CheckpointError,
    ConfigError,
    CubeError,
    DataError,
    GeostpError,
    StoreError,
    UnknownNameError,
)

try:
    __version__ = version("geostp")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "__version__",
    "GeostpError",
    "CubeError",
    "DataError",
    "StoreError",
    "ConfigError",
    "UnknownNameError",
    "CheckpointError",
]
