"""Pixels off the Earth (a geostationary satellite's disc edge): NaN lat/lon, reported by validation; labels from
the data's metadata (satellite, not "radar rain rate").

Small files in the layout of EUMETSAT NWC SAF's CRR product (what pysteps' ``saf_crri`` importer reads: GDAL
georeferencing attributes, ``crr_intensity`` in mm/h, 65535 for no data) and a CF netCDF on the same
geostationary grid are written here. Which pixels see the Earth is computed here from the geometry alone: the
line of sight from the satellite at a distance H from the Earth's centre meets a sphere of radius a when its
angle from nadir, cos(theta) = cos(x / h) cos(y / h), is at most asin(a / H).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import xarray as xr

import geostp
from geostp.cube import OffGridWarning, describe, validate_cube
from geostp.data.adapters import open_source
from geostp.errors import CubeError

netCDF4 = pytest.importorskip("netCDF4")

HEIGHT = 35785831.0  # above the surface, m
RADIUS = 6378137.0  # a sphere, so that the disc's edge is known exactly
PROJ = f"+proj=geos +h={HEIGHT:.0f} +a={RADIUS:.0f} +b={RADIUS:.0f} +lon_0=0 +sweep=y +units=m +no_defs"
PIXEL = 30000.0
NX, NY = 60, 40
X0, Y0 = 4_500_000.0, 1_200_000.0  # upper-left corner (edges): the eastern limb, north of the equator
TIMES = pd.date_range("2020-07-01 12:00", periods=6, freq="15min")


def _centres() -> tuple[np.ndarray, np.ndarray]:
    x = X0 + (np.arange(NX) + 0.5) * PIXEL
    y = Y0 - (np.arange(NY) + 0.5) * PIXEL  # north to south
    return x, y


def _visible() -> tuple[np.ndarray, np.ndarray]:
    """Pixels that surely see the Earth, and pixels that surely do not (1e-5 rad from the edge either way)."""
    x, y = _centres()
    cos_theta = np.cos(y[:, None] / HEIGHT) * np.cos(x[None, :] / HEIGHT)
    theta = np.arccos(np.clip(cos_theta, -1, 1))
    edge = np.arcsin(RADIUS / (HEIGHT + RADIUS))
    return theta < edge - 1e-5, theta > edge + 1e-5


def _rain(k: int) -> np.ndarray:
    x, y = _centres()
    xx, yy = np.meshgrid(np.arange(NX), np.arange(NY))
    rate = 8.0 * np.exp(-(((xx - 15 - k) / 6.0) ** 2 + ((yy - 20) / 5.0) ** 2))
    rate[rate < 0.2] = 0.0
    on_earth, _ = _visible()
    return np.where(on_earth, rate, 65535.0).astype(np.float32)


@pytest.fixture(scope="module")
def crr_dir(tmp_path_factory) -> Path:
    """Six CRR files in NWC SAF's layout (GDAL georeferencing attributes, as pysteps' saf_crri reads them)."""
    folder = tmp_path_factory.mktemp("crr")
    for k, t in enumerate(TIMES):
        with netCDF4.Dataset(folder / f"S_NWC_CRR_MSG4_Europe-VISIR_{t:%Y%m%dT%H%M%S}Z.nc", "w") as nc:
            nc.createDimension("ny", NY)
            nc.createDimension("nx", NX)
            nc.setncattr("gdal_projection", PROJ)
            nc.setncattr("gdal_geotransform_table", np.array([X0, PIXEL, 0.0, Y0, 0.0, -PIXEL]))
            nc.setncattr("gdal_xgeo_up_left", X0)
            nc.setncattr("gdal_ygeo_up_left", Y0)
            nc.setncattr("gdal_xgeo_low_right", X0 + NX * PIXEL)
            nc.setncattr("gdal_ygeo_low_right", Y0 - NY * PIXEL)
            nc.setncattr("institution", "EUMETSAT NWC SAF (test file)")
            v = nc.createVariable("crr_intensity", "f4", ("ny", "nx"))
            v.units = "mm/h"
            v[:] = _rain(k)
            q = nc.createVariable("crr_quality", "u1", ("ny", "nx"))
            q[:] = 8
    return folder


def _crr(folder: Path, **extra):
    return open_source("radar", dict(importer="saf_crri", pattern=str(folder / "S_NWC_CRR_*.nc"),
                                     fn_pattern="S_NWC_CRR_MSG4_Europe-VISIR_%Y%m%dT%H%M%SZ", fn_ext="nc",
                                     timestep=15, **extra))


def test_pixels_off_the_disc_have_nan_lat_lon_and_validation_counts_them(crr_dir):
    ds = _crr(crr_dir)
    on_earth, off_earth = _visible()
    assert on_earth.sum() > 300 and off_earth.sum() > 300, "the grid must straddle the disc's edge"
    lat, lon = ds["lat"].values, ds["lon"].values
    assert np.isfinite(lat[on_earth]).all() and np.isfinite(lon[on_earth]).all()
    assert np.isnan(lat[off_earth]).all() and np.isnan(lon[off_earth]).all()
    assert not np.isinf(lat).any() and not np.isinf(lon).any()
    assert np.array_equal(np.isnan(lat), np.isnan(lon))
    # the data: rain rates, 0 where dry, NaN off the disc (the file's 65535)
    frame = ds["precipitation"].isel(time=0).values
    np.testing.assert_array_equal(np.isnan(frame), _rain(0) == 65535)
    assert (frame == 0).any() and np.nanmax(frame) > 5
    # validation reports them: a count, and a line in the description
    info = validate_cube(ds, source="crr", sample_frames=2)
    assert info.n_off_grid == int(np.isnan(lat).sum()) and info.n_off_grid >= off_earth.sum()
    assert f"off the Earth: {info.n_off_grid} of {NX * NY} pixels" in describe(ds, info)


def test_labels_come_from_the_metadata_not_a_fixed_radar_name(crr_dir):
    var = _crr(crr_dir)["precipitation"]
    assert var.attrs["long_name"] == "satellite rain rate"
    assert var.attrs["source"] == "satellite (EUMETSAT NWC SAF (test file)), read by pysteps importer saf_crri"
    assert "radar" not in var.attrs["long_name"] and var.attrs["units"] == "mm h-1"
    assert _crr(crr_dir).attrs["title"].startswith("satellite")


def test_cf_netcdf_on_a_geostationary_grid_gets_nan_lat_lon(tmp_path):
    crs = pyproj.CRS.from_proj4(PROJ)
    x, y = _centres()
    rain = np.stack([_rain(k) for k in range(len(TIMES))])
    rain[rain == 65535] = np.nan
    src = xr.Dataset(
        {"crr": (("time", "y", "x"), rain, {"units": "mm h-1", "long_name": "convective rainfall rate from cloud "
                                             "physical properties", "source": "satellite", "grid_mapping": "proj"}),
         "proj": ((), 0, crs.to_cf())},
        coords={"time": TIMES, "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
                "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"})})
    src.to_netcdf(tmp_path / "crr.nc")
    ds = open_source("netcdf", {"path": str(tmp_path / "crr.nc")})
    _, off_earth = _visible()
    assert np.isnan(ds["lat"].values[off_earth]).all() and not np.isinf(ds["lon"].values).any()
    assert ds["crr"].attrs["long_name"].startswith("convective rainfall rate") and ds["crr"].attrs["source"] == \
        "satellite"
    assert validate_cube(ds).n_off_grid == int(np.isnan(ds["lat"].values).sum()) > 0
    # ingested, the NaN positions stay NaN and stay counted
    store = geostp.ingest(ds, tmp_path / "crr.zarr", progress=False)
    back = geostp.open_cube(store)
    np.testing.assert_array_equal(np.isnan(back["lat"].values), np.isnan(ds["lat"].values))
    assert validate_cube(back).n_off_grid == validate_cube(ds).n_off_grid


def test_infinite_coordinates_warn_and_non_finite_axes_are_refused(crr_dir):
    ds = _crr(crr_dir)
    inf = ds.assign_coords(lat=ds["lat"].fillna(np.inf))
    with pytest.warns(OffGridWarning, match=r"coordinates lat \(\d+ pixels\) are infinite; expected NaN"):
        info = validate_cube(inf, check_values=False)
    assert info.n_off_grid == validate_cube(ds, check_values=False).n_off_grid
    with warnings.catch_warnings():
        warnings.simplefilter("error", OffGridWarning)  # NaN is what an adapter writes: no warning
        validate_cube(ds, check_values=False)
    x = ds["x"].values.copy()
    x[3] = np.nan
    with pytest.raises(CubeError, match=r"coordinate 'x' holds 1 non-finite value\(s\) \(first at index 3"):
        validate_cube(ds.assign_coords(x=("x", x, ds["x"].attrs)), check_values=False)


def test_a_cube_with_pixels_off_the_disc_forecasts_and_maps(crr_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geostp.plot as gplot

    cube = _crr(crr_dir).load()
    fc = geostp.forecast(cube, model="optical_flow", steps=2, progress=False)
    _, off_earth = _visible()
    assert fc.sizes["lead_time"] == 2 and np.isnan(fc["lat"].values[off_earth]).all()
    assert np.nanmax(fc.values) > 1.0
    ax = gplot.plot_map(cube, time=cube["time"].values[-1], natural_earth=False)
    assert "satellite rain rate" in ax.get_title()
    ax.figure.savefig(tmp_path / "crr.png")
    assert (tmp_path / "crr.png").stat().st_size > 5_000
    plt.close(ax.figure)
