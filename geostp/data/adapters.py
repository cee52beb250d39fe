"""The adapter registry's built-in entries: each turns keyword arguments into a lazy cube.

Every adapter has the same contract: ``adapter(**args) -> xarray.Dataset``, a
lazy cube that :func:`geostp.cube.validate_cube` accepts. Third-party code adds
its own with ``@geostp.data.adapters.register("name")``.
"""

from __future__ import annotations

import os

import xarray as xr

from geostp.data import crowdflow, netcdf, radar, synthetic, video
from geostp.data.catalog import adapters
from geostp.store import open_cube

register = adapters.register

__all__ = ["adapters", "register"]


@register("zarr_cube")
def zarr_cube(path: str | os.PathLike[str]) -> xr.Dataset:
    """A store written by :func:`geostp.ingest` (lazy)."""
    return open_cube(path)


register("synthetic_radar", synthetic.synthetic_radar)
register("moving_mnist", synthetic.moving_mnist)

# Real archives (see docs/adapters.md). Heavy readers (pysteps, netCDF4, imageio) load on first use.
register("radar", radar.open_radar)
register("netcdf", netcdf.open_netcdf)
register("taxibj", crowdflow.open_taxibj)
register("moving_mnist_npy", video.open_moving_mnist_npy)
register("frame_folders", video.open_frame_folders)
register("video_files", video.open_video_files)
