"""The generic CF netCDF / zarr adapter on small files written here: orientation, units, time, series, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import pytest
import xarray as xr

from geostp.cube import cube_crs, find_gaps, validate_cube
from geostp.data.netcdf import open_netcdf
from geostp.errors import ConfigError, DataError

LAEA = pyproj.CRS.from_proj4("+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m")


def _cf_file(path, *, times, south_up=True, km=False, units="kg m-2", time_bounds=None, nx=6, ny=5, seed=0):
    """A small CF file: rows stored south to north (y increasing) unless told otherwise."""
    rng = np.random.default_rng(seed)
    x = 4_000_000.0 + 1000.0 * (np.arange(nx) + 0.5)
    y = 3_000_000.0 + 1000.0 * (np.arange(ny) + 0.5)
    if not south_up:
        y = y[::-1]
    values = rng.uniform(0, 2, (len(times), ny, nx)).astype(np.float32)
    values[:, 0, 0] = np.nan
    scale = 1e-3 if km else 1.0
    ds = xr.Dataset(
        {"rain": (("time", "y", "x"), values, {
            "units": units, "grid_mapping": "lambert",
            "standard_name": "precipitation_amount" if units == "kg m-2" else "lwe_precipitation_rate"}),
         "lambert": ((), np.int8(0), LAEA.to_cf())},
        coords={"time": ("time", pd.DatetimeIndex(times).values),
                "y": ("y", y * scale, {"standard_name": "projection_y_coordinate", "units": "km" if km else "m"}),
                "x": ("x", x * scale, {"standard_name": "projection_x_coordinate", "units": "km" if km else "m"})},
        attrs={"Conventions": "CF-1.8", "title": "test"},
    )
    if time_bounds is not None:
        tb = np.stack([ds["time"].values - pd.Timedelta(time_bounds), ds["time"].values], axis=1)
        ds["time_bnds"] = (("time", "nv"), tb)
        ds["time"].attrs["bounds"] = "time_bnds"
        ds["time"].encoding["units"] = ds["time_bnds"].encoding["units"] = "seconds since 1970-01-01"
    ds.to_netcdf(path)
    return values, x, y


def test_single_file_south_up_is_flipped_and_amounts_become_rates(tmp_path):
    times = pd.date_range("2024-05-01T00:00", periods=4, freq="15min")
    values, x, y = _cf_file(tmp_path / "a.nc", times=times, time_bounds="15min")
    ds = open_netcdf(tmp_path / "a.nc", "rain")
    assert np.all(np.diff(ds["y"].values) < 0) and ds["y"].values[0] == y.max()
    np.testing.assert_allclose(ds["rain"].values, values[:, ::-1, :] * 4.0, rtol=1e-6)  # mm/15 min -> mm/h
    assert np.isnan(ds["rain"].values[:, -1, 0]).all(), "the south-west no-data pixel moves to the last row"
    assert ds["rain"].attrs["units"] == "mm h-1" and ds["rain"].attrs["accumulation_minutes"] == 15.0
    assert ds.attrs["time_step"] == "15min"
    assert cube_crs(ds).equals(LAEA)
    lon, lat = pyproj.Transformer.from_crs(LAEA, "EPSG:4326", always_xy=True).transform(x[0], y[-1])
    assert (ds["lon"].values[0, 0], ds["lat"].values[0, 0]) == pytest.approx((lon, lat), abs=1e-5)
    validate_cube(ds)
    kept = open_netcdf(tmp_path / "a.nc", to_rain_rate=False)
    assert kept["rain"].attrs["units"] == "kg m-2"
    np.testing.assert_allclose(kept["rain"].values, values[:, ::-1, :], rtol=1e-6)


def test_kilometre_coordinates_and_zarr_store(tmp_path):
    times = pd.date_range("2024-05-01", periods=3, freq="5min")
    values, x, y = _cf_file(tmp_path / "k.nc", times=times, km=True, south_up=False, units="mm h-1")
    ds = open_netcdf(tmp_path / "k.nc")
    np.testing.assert_allclose(ds["x"].values, x, atol=1e-6)
    np.testing.assert_allclose(ds["y"].values, y, atol=1e-6)
    np.testing.assert_allclose(ds["rain"].values, values, rtol=1e-6)
    assert ds["rain"].attrs["units"] == "mm h-1"  # a rate already: no accumulation period needed
    xr.open_dataset(tmp_path / "k.nc").to_zarr(tmp_path / "k.zarr", zarr_format=3, consolidated=False)
    z = open_netcdf(tmp_path / "k.zarr")
    assert z["rain"].chunks is not None
    np.testing.assert_allclose(z["rain"].values, values, rtol=1e-6)


def test_series_of_files_with_gap_and_accumulation_start(tmp_path):
    starts = pd.date_range("2024-05-01T00:00", periods=6, freq="10min")
    expected = {}
    for i, t in enumerate(starts):
        if i == 3:
            continue  # a missing frame
        v, _, _ = _cf_file(tmp_path / f"r_{t:%H%M}.nc", times=[t], seed=i)
        with xr.open_dataset(tmp_path / f"r_{t:%H%M}.nc") as d:
            d = d.load()
        d["begin"] = ((), (t - pd.Timedelta("10min")).to_datetime64())
        d = d.squeeze("time").reset_coords("time")  # one scalar time per file, as radar archives store it
        d["time"].attrs["standard_name"] = "time"
        d.to_netcdf(tmp_path / f"s_{t:%H%M}.nc")
        expected[t] = v[0, ::-1]
    ds = open_netcdf(str(tmp_path / "s_*.nc"), time="time", accumulation_start="begin")
    assert ds.sizes["time"] == 5 and ds.attrs["time_step"] == "10min"
    (gap,) = find_gaps(ds)
    assert gap.missing == 1 and pd.Timestamp(gap.after) == starts[2]
    for k, t in enumerate(ds["time"].values):
        np.testing.assert_allclose(ds["rain"].isel(time=k).values, expected[pd.Timestamp(t)] * 6.0, rtol=1e-6)
    # a truncated file in the middle: named by default, a gap on request
    bad = tmp_path / "s_0020.nc"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"s_0020.nc could not be opened as netCDF"):
        open_netcdf(str(tmp_path / "s_*.nc"), accumulation_start="begin")
    lenient = open_netcdf(str(tmp_path / "s_*.nc"), accumulation_start="begin", on_error="gap")
    assert lenient.sizes["time"] == 4 and lenient.attrs["n_missing_steps"] == 2
    assert "s_0020.nc" in lenient.attrs["skipped_files"]


def test_netcdf_errors(tmp_path):
    times = pd.date_range("2024-05-01", periods=2, freq="5min")
    _cf_file(tmp_path / "a.nc", times=times)
    with pytest.raises(DataError, match=r"netCDF file .*nope.nc does not exist"):
        open_netcdf(tmp_path / "nope.nc")
    with pytest.raises(DataError, match=r"a.nc: no variable 'snow'; the file has rain, lambert"):
        open_netcdf(tmp_path / "a.nc", "snow")
    with pytest.raises(ConfigError, match=r"variable 'rain' is a precipitation amount .* accumulation period is "
                                          r"unknown; pass accumulation_minutes"):
        open_netcdf(tmp_path / "a.nc")
    assert open_netcdf(tmp_path / "a.nc", accumulation_minutes=5)["rain"].attrs["units"] == "mm h-1"
    (tmp_path / "b.nc").write_text("plain text")
    with pytest.raises(DataError, match=r"b.nc could not be opened as a netCDF file or zarr store"):
        open_netcdf(tmp_path / "b.nc")
    with pytest.raises(DataError, match=r"holds no time step between 2030"):
        open_netcdf(tmp_path / "a.nc", start="2030-01-01", accumulation_minutes=5)
    with pytest.raises(ConfigError, match="time step 'often' is not a positive interval"):
        open_netcdf(tmp_path / "a.nc", time_step="often")


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"])
def test_a_classic_netcdf_file_cut_short_is_refused_at_open(fmt, tmp_path):
    """netCDF-C reads the missing end of a classic (CDF-1, -2, -5) file as fill values without a word: the header's
    offsets and shapes give the size it must have, checked for every file at open time."""
    netCDF4 = pytest.importorskip("netCDF4")
    from geostp.data.netcdf import classic_size_problem

    times = pd.date_range("2024-07-01 12:00", periods=4, freq="5min")
    for k, t in enumerate(times):
        with netCDF4.Dataset(tmp_path / f"r{k}.nc", "w", format=fmt) as nc:
            nc.createDimension("time", None)  # a record dimension: two record variables, a fixed one
            nc.createDimension("y", 5)
            nc.createDimension("x", 6)
            tv = nc.createVariable("time", "f8", ("time",))
            tv.units, tv.standard_name = "seconds since 1970-01-01", "time"
            tv[:] = [(t - pd.Timestamp("1970-01-01")).total_seconds()]
            for name, axis in (("y", "Y"), ("x", "X")):
                c = nc.createVariable(name, "f8", (name,))
                c.units, c.axis, c.standard_name = "m", axis, f"projection_{name}_coordinate"
                c[:] = 1000.0 * np.arange(nc.dimensions[name].size)[:: -1 if name == "y" else 1]
            rain = nc.createVariable("rain", "f4", ("time", "y", "x"))
            rain.units = "mm h-1"
            rain[0] = np.full((5, 6), k + 1.0, np.float32)
            flag = nc.createVariable("flag", "i2", ("time", "x"))
            flag[0] = np.arange(6)
    whole = open_netcdf(tmp_path / "r*.nc", variable="rain")
    assert whole.sizes["time"] == 4 and all(classic_size_problem(p) is None for p in tmp_path.glob("r*.nc"))
    cut = tmp_path / "r2.nc"
    cut.write_bytes(cut.read_bytes()[:-2])  # two bytes of the last record's padding-free end
    with pytest.raises(DataError, match=r"r2.nc holds \d+ bytes; its classic netCDF header places data up to byte "
                                        r"\d+: the file is cut short; expected a whole netCDF file"):
        open_netcdf(tmp_path / "r*.nc", variable="rain")
    with pytest.raises(DataError, match=r"r2.nc holds .* cut short"):
        open_netcdf(cut, variable="rain")  # one file alone too
    gap = open_netcdf(tmp_path / "r*.nc", variable="rain", on_error="gap")
    assert gap.sizes["time"] == 3 and "r2.nc" in gap.attrs["skipped_files"] and gap.attrs["n_missing_steps"] == 1
    np.testing.assert_array_equal(gap["rain"].isel(time=2).values, 4.0)
    header = tmp_path / "r3.nc"
    header.write_bytes(header.read_bytes()[:40])  # cut inside its header
    with pytest.raises(DataError, match=r"r3.nc has a classic netCDF header that is cut short"):
        open_netcdf(header, variable="rain")


def _amount_file(path, units, values):
    """A CF file of one precipitation amount (ERA5-style standard name) in ``units``."""
    times = pd.date_range("2024-05-01T01:00", periods=len(values), freq="1h")
    ds = xr.Dataset(
        {"tp": (("time", "y", "x"), values, {"units": units, "standard_name": "lwe_thickness_of_precipitation_amount"})},
        coords={"time": times.values, "y": 3_000_000.0 - 1000.0 * np.arange(values.shape[1]),
                "x": 4_000_000.0 + 1000.0 * np.arange(values.shape[2])})
    ds.to_netcdf(path)


def test_an_amount_in_metres_becomes_a_rate_in_mm_per_hour(tmp_path):
    values = np.full((3, 4, 5), 0.002, np.float32)  # 2 mm in an hour, given in metres
    _amount_file(tmp_path / "era5.nc", "m", values)
    ds = open_netcdf(tmp_path / "era5.nc", accumulation_minutes=60)
    assert ds["tp"].attrs["units"] == "mm h-1"
    np.testing.assert_allclose(ds["tp"].values, 2.0, rtol=1e-5)


def test_an_amount_in_units_geostp_cannot_convert_is_refused_naming_file_and_units(tmp_path):
    _amount_file(tmp_path / "cm.nc", "cm", np.ones((3, 4, 5), np.float32))
    with pytest.raises(DataError, match=r"cm\.nc.*'tp'.*'cm'.*expected mm, kg m-2 or m"):
        open_netcdf(tmp_path / "cm.nc", accumulation_minutes=60)
