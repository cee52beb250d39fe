"""geostp: spatiotemporal forecasting of gridded geophysical data on labelled xarray/zarr cubes."""

from __future__ import annotations

from geostp._version import __version__
from geostp.errors import (
    CheckpointError,
    ConfigError,
    CorruptStoreError,
    CubeError,
    CubeValueError,
    DataError,
    GeostpError,
    StoreError,
    UnknownNameError,
    WriteError,
)

__all__ = [
    "__version__",
    "forecast",
    "fit",
    "evaluate",
    "motion",
    "ForecastOptions",
    "load_forecaster",
    "open_catalog",
    "open_cube",
    "ingest",
    "verify_store",
    "GeostpError",
    "CubeError",
    "DataError",
    "StoreError",
    "CorruptStoreError",
    "ConfigError",
    "UnknownNameError",
    "CheckpointError",
    "CubeValueError",
    "WriteError",
]


# The one-call API. Bound here, after the submodules of the same names are imported, so that
# ``geostp.forecast`` is the function (none of these imports torch; models load on first use).
from geostp.advection import motion  # noqa: E402  (pysteps loads on first use)
from geostp.api import forecast  # noqa: E402
from geostp.data.catalog import open_catalog  # noqa: E402
from geostp.evaluate import evaluate  # noqa: E402
from geostp.fit import fit  # noqa: E402
from geostp.forecast import ForecastOptions, load_forecaster  # noqa: E402
from geostp.store import ingest, open_cube, verify_store  # noqa: E402
