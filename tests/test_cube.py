"""Cube validation: every kind of bad cube gets a CubeError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geostp.cube import (
    find_gaps,
    forecast_to_dataarray,
    validate_cube,
    window_to_tensor,
)
from geostp.errors import CubeError, GeostpError


def make_cube(nt=6, ny=4, nx=5, step="5min", times=None, **attrs):
    times = pd.date_range("2024-01-01", periods=nt, freq=step) if times is None else pd.DatetimeIndex(times)
    data = np.random.default_rng(0).random((len(times), ny, nx)).astype("float32")
    var_attrs = {"units": "mm h-1", "standard_name": "lwe_precipitation_rate", **attrs}
    return xr.Dataset(
        {"rain": (("time", "y", "x"), data, var_attrs)},
        coords={"time": times, "y": np.arange(ny) * 1000.0, "x": np.arange(nx) * 1000.0},
    )


def test_valid_cube_is_described():
    info = validate_cube(make_cube())
    assert info.variables == ("rain",)
    assert info.dims == ("time", "y", "x")
    assert info.step == np.timedelta64(5, "m")
    assert info.gaps == ()


def test_dask_and_numpy_backed_give_the_same_info():
    ds = make_cube()
    assert validate_cube(ds) == validate_cube(ds.chunk({"time": 2}))


def test_missing_dim():
    ds = make_cube().isel(x=0)
    with pytest.raises(CubeError, match=r"'rain'.*missing dim\(s\) \['x'\]"):
        validate_cube(ds)


def test_unexpected_dim():
    ds = make_cube().expand_dims(member=2)
    with pytest.raises(CubeError, match=r"unexpected dim\(s\) \['member'\]"):
        validate_cube(ds)


def test_non_monotonic_times():
    t = pd.date_range("2024-01-01", periods=4, freq="5min")
    ds = make_cube(times=[t[0], t[2], t[1], t[3]])
    with pytest.raises(CubeError, match="not strictly increasing: decreasing"):
        validate_cube(ds)


def test_duplicated_times():
    t = pd.date_range("2024-01-01", periods=4, freq="5min")
    ds = make_cube(times=[t[0], t[1], t[1], t[2]])
    with pytest.raises(CubeError, match="duplicated times at index 1-2"):
        validate_cube(ds)


def test_irregular_step():
    t = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 00:05", "2024-01-01 00:10", "2024-01-01 00:17"])
    with pytest.raises(CubeError, match=r"irregular time step: 0 days 00:07:00.*multiple of.*00:05:00"):
        validate_cube(make_cube(times=t))


def test_gaps_are_reported_not_errors():
    t = pd.date_range("2024-01-01", periods=10, freq="5min").delete([3, 4, 7])
    info = validate_cube(make_cube(times=t))
    assert [g.missing for g in info.gaps] == [2, 1]
    assert info.gaps[0].after == np.datetime64("2024-01-01T00:10")
    assert info.n_missing == 3
    assert "2 missing step(s) between 2024-01-01 00:10:00" in str(info.gaps[0])


def test_declared_step_overrides_the_most_common_difference():
    t = pd.date_range("2024-01-01", periods=4, freq="10min")
    ds = make_cube(times=t)
    ds.attrs["time_step"] = "5min"
    assert [g.missing for g in find_gaps(ds)] == [1, 1, 1]


def test_missing_units():
    ds = make_cube()
    del ds["rain"].attrs["units"]
    with pytest.raises(CubeError, match="'rain' has no 'units'"):
        validate_cube(ds)


def test_missing_names():
    ds = make_cube()
    del ds["rain"].attrs["standard_name"]
    with pytest.raises(CubeError, match="neither 'standard_name' nor 'long_name'"):
        validate_cube(ds)


def test_unreadable_grid_mapping():
    ds = make_cube(grid_mapping="crs")
    ds["crs"] = ((), 0, {"grid_mapping_name": "no_such_projection"})
    with pytest.raises(CubeError, match="'crs' cannot be read as a CRS by pyproj"):
        validate_cube(ds)


def test_grid_mapping_variable_missing():
    ds = make_cube(grid_mapping="crs")
    with pytest.raises(CubeError, match="no such variable"):
        validate_cube(ds)


def test_readable_grid_mapping():
    import pyproj

    ds = make_cube(grid_mapping="crs")
    ds["crs"] = ((), 0, pyproj.CRS.from_epsg(3035).to_cf())
    info = validate_cube(ds)
    assert pyproj.CRS.from_wkt(info.crs_wkt).equals(pyproj.CRS.from_epsg(3035), ignore_axis_order=True)


def test_nan_only_variable():
    ds = make_cube()
    ds["rain"][:] = np.nan
    with pytest.raises(CubeError, match="'rain' holds only NaN"):
        validate_cube(ds)


def test_non_monotonic_space():
    ds = make_cube()
    ds = ds.assign_coords(x=[0.0, 2.0, 1.0, 3.0, 4.0])
    with pytest.raises(CubeError, match="'x' is not strictly monotonic"):
        validate_cube(ds)


def test_errors_are_geostp_errors():
    with pytest.raises(GeostpError):
        validate_cube(make_cube().isel(y=0))


def test_window_to_tensor_masks_nan():
    ds = make_cube()
    ds["rain"][1, 2, 3] = np.nan
    x, mask = window_to_tensor(ds, ["rain"], fill_value=-1.0)
    assert tuple(x.shape) == (6, 1, 4, 5)
    assert mask.sum().item() == 6 * 4 * 5 - 1
    assert not mask[1, 0, 2, 3]
    assert x[1, 0, 2, 3].item() == -1.0
    np.testing.assert_allclose(x[0, 0].numpy(), ds["rain"][0].values)


def test_forecast_to_dataarray_keeps_labels(radar_cube):
    ref = radar_cube.time.values[9]
    values = np.random.default_rng(1).random((3, 1, 48, 40)).astype("float32")
    da = forecast_to_dataarray(values, radar_cube, reference_time=ref, variables=["precipitation"],
                               attrs={"model": "test"})
    assert da.dims == ("lead_time", "y", "x")
    assert (da.lead_time.values == np.array([5, 10, 15], "timedelta64[m]")).all()
    assert da.valid_time.values[0] == ref + np.timedelta64(5, "m")
    assert da.forecast_reference_time.values == ref
    assert da.attrs["units"] == "mm h-1" and da.attrs["grid_mapping"] == "crs"
    assert "lat" in da.coords and "crs" in da.coords
    np.testing.assert_array_equal(da.x.values, radar_cube.x.values)
    np.testing.assert_array_equal(da.values, values[:, 0])


def test_forecast_to_dataarray_several_reference_times(radar_cube):
    refs = radar_cube.time.values[[5, 9]]
    values = np.zeros((2, 4, 1, 48, 40), "float32") + 1
    da = forecast_to_dataarray(values, radar_cube, reference_time=refs, variables=["precipitation"])
    assert da.dims == ("time", "lead_time", "y", "x")
    assert da.valid_time.dims == ("time", "lead_time")
    assert da.valid_time.values[1, 0] == refs[1] + np.timedelta64(5, "m")


def test_forecast_to_dataarray_wrong_grid(radar_cube):
    with pytest.raises(CubeError, match="differs from the cube"):
        forecast_to_dataarray(np.zeros((2, 1, 10, 10)), radar_cube, reference_time=radar_cube.time.values[0],
                              variables=["precipitation"])
