"""MRMS on its latitude/longitude grid, through the radar adapter (pysteps' mrms_grib importer): the shared files.

NOAA's MRMS PrecipRate (2019-06-10 00:00-00:14 UTC, 8 frames every 2 min) is
3500 x 7000 pixels of 0.01 degree over the contiguous US. Expected grid points
and values are read here with pygrib itself (the GRIB message's first and last
grid points, its values with -3 as no coverage), independently of pysteps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyproj  # noqa: E402
import pytest  # noqa: E402

import geostp  # noqa: E402
from geostp.cube import cube_crs, validate_cube  # noqa: E402
from geostp.data.adapters import open_source  # noqa: E402
from geostp.data.catalog import open_catalog  # noqa: E402
from geostp.errors import ConfigError, DataError, GeostpError  # noqa: E402

pygrib = pytest.importorskip("pygrib", reason="MRMS needs pygrib: pip install 'geostp[radar]'")

pytestmark = pytest.mark.realdata

FOLDER = "mrms/2019/06/10"
FN_PATTERN = "PrecipRate_00.00_%Y%m%d-%H%M%S"
SMALL = {"lon": [-86.0, -84.0], "lat": [45.0, 46.0]}  # Lake Michigan/Huron, where it rained: 100 x 200 pixels


def _args(folder: Path, **extra) -> dict:
    return {**dict(importer="mrms_grib", pattern=str(folder / "PrecipRate_00.00_*.grib2"), fn_pattern=FN_PATTERN,
                   fn_ext="grib2", timestep=2, importer_kwargs={"window_size": 1}), **extra}


@pytest.fixture(scope="module")
def mrms_dir(shared_data) -> Path:
    return shared_data / FOLDER


@pytest.fixture(scope="module")
def raw(mrms_dir):
    """The first file's message, read with pygrib: grid points and values (no coverage -3 as NaN)."""
    with pygrib.open(str(sorted(mrms_dir.glob("*.grib2"))[0])) as grib:
        msg = grib.read(1)[0]
        values = np.asarray(msg.values, float)
        corners = {k: float(msg[k]) for k in ("latitudeOfFirstGridPointInDegrees", "longitudeOfFirstGridPointInDegrees",
                                               "latitudeOfLastGridPointInDegrees", "longitudeOfLastGridPointInDegrees")}
    values[values == -3] = np.nan
    return values, corners


@pytest.fixture(scope="module")
def small(mrms_dir):
    return open_source("radar", _args(mrms_dir, region=SMALL))


def _count_imports(monkeypatch) -> list[str]:
    from geostp.data.radar import _pysteps_io

    pio = _pysteps_io()
    original = pio.interface._importer_methods["mrms_grib"]
    calls: list[str] = []

    def counting(filename, *args, **kwargs):
        calls.append(Path(filename).name)
        return original(filename, *args, **kwargs)

    monkeypatch.setitem(pio.interface._importer_methods, "mrms_grib", counting)
    return calls


def test_mrms_opens_through_the_catalog_and_by_name_lazily(shared_data, mrms_dir, monkeypatch):
    calls = _count_imports(monkeypatch)
    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    ds = open_catalog("radar").open("mrms")
    assert len(calls) == 1, "opening reads one frame (the grid and units), no more"
    assert ds.sizes == {"time": 8, "y": 600, "x": 800}  # the catalog's Great Lakes box of 6 x 8 degrees
    assert ds["precipitation"].chunks[0] == (1,) * 8  # one file per frame, read by dask
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2019-06-10 00:00")
    assert ds.attrs["time_step"] == "2min" and ds.attrs["n_gaps"] == 0
    assert np.isfinite(ds["precipitation"].isel(time=5).values).any()
    assert calls[1:] == ["PrecipRate_00.00_20190610-001000.grib2"]  # computing one frame reads that file only
    validate_cube(ds, check_values=False)

    by_name = open_source("radar", _args(mrms_dir, region={"lon": [-90, -82], "lat": [42, 48]}))
    np.testing.assert_array_equal(by_name["x"].values, ds["x"].values)
    np.testing.assert_array_equal(by_name["y"].values, ds["y"].values)


def test_mrms_is_a_cf_latitude_longitude_grid_in_the_right_place(mrms_dir, raw, small):
    _, corners = raw
    whole = open_source("radar", _args(mrms_dir))  # the whole CONUS frame, still lazy
    assert whole.sizes == {"time": 8, "y": 3500, "x": 7000}
    crs = pyproj.CRS.from_cf(whole["crs"].attrs)
    assert crs.is_geographic and whole["crs"].attrs["grid_mapping_name"] == "latitude_longitude"
    assert cube_crs(whole).is_geographic
    assert whole["precipitation"].attrs["grid_mapping"] == "crs"
    assert whole["x"].attrs["units"] == "degrees_east" and whole["y"].attrs["units"] == "degrees_north"
    # row 0 / column 0 is the GRIB message's first grid point (its north-west corner), the last its south-east one
    # (within 1e-5 degree, about 1 m: GRIB stores micro-degrees and gives the last latitude as 20.005001)
    assert whole["y"].values[0] == pytest.approx(corners["latitudeOfFirstGridPointInDegrees"], abs=1e-5)
    assert whole["x"].values[0] == pytest.approx(corners["longitudeOfFirstGridPointInDegrees"] - 360, abs=1e-5)
    assert whole["y"].values[-1] == pytest.approx(corners["latitudeOfLastGridPointInDegrees"], abs=1e-5)
    assert whole["x"].values[-1] == pytest.approx(corners["longitudeOfLastGridPointInDegrees"] - 360, abs=1e-5)
    assert np.allclose(np.diff(whole["x"].values), 0.01) and np.allclose(np.diff(whole["y"].values), -0.01)
    # 2-D lat/lon agree with the axes; Chicago (41.8781 N, 87.6298 W) is the pixel whose centre is nearest
    row = int(round((54.995 - 41.8781) / 0.01))
    col = int(round((-87.6298 + 129.995) / 0.01))
    assert whole["lat"].values[row, col] == pytest.approx(41.8781, abs=0.005)
    assert whole["lon"].values[row, col] == pytest.approx(-87.6298, abs=0.005)
    # the region is the pixels whose centres lie in the box, nothing else
    assert small.sizes == {"time": 8, "y": 100, "x": 200}
    assert small["x"].values[0] == pytest.approx(-85.995) and small["x"].values[-1] == pytest.approx(-84.005)
    assert small["y"].values[0] == pytest.approx(45.995) and small["y"].values[-1] == pytest.approx(45.005)
    assert small["lat"].shape == (100, 200) and small["lon"].values[0, 0] == pytest.approx(-85.995)


def test_mrms_values_are_rain_rates_with_dry_zero_and_no_coverage_nan(mrms_dir, raw, small):
    values, _ = raw
    assert small["precipitation"].attrs["units"] == "mm h-1"
    assert small["precipitation"].attrs["standard_name"] == "lwe_precipitation_rate"
    got = small["precipitation"].isel(time=0).values
    np.testing.assert_allclose(got, values[900:1000, 4400:4600], rtol=1e-6)  # rows/cols of the box in the frame
    assert (got == 0).any() and (got > 1).any()  # dry pixels are 0, rain is there
    # south of Florida the composite has no coverage: NaN, apart from dry 0
    coast = open_source("radar", _args(mrms_dir, region={"lon": [-80, -78], "lat": [21, 23]}))
    frame = coast["precipitation"].isel(time=0).values
    assert 0.1 < np.isnan(frame).mean() < 0.6 and (frame == 0).any()
    row0, col0 = int(round((54.995 - coast["y"].values[0]) / 0.01)), int(round((coast["x"].values[0] + 129.995) / 0.01))
    expected = values[row0: row0 + frame.shape[0], col0: col0 + frame.shape[1]]
    np.testing.assert_array_equal(np.isnan(frame), np.isnan(expected))


@pytest.mark.slow
def test_mrms_ingests_forecasts_and_maps(small, tmp_path):
    import matplotlib.pyplot as plt

    import geostp.plot as gplot
    from geostp.store import open_cube

    cube = small.isel(time=slice(-6, None)).load()  # six frames: what geostp's extrapolation reads by default
    store = geostp.ingest(cube, tmp_path / "mrms.zarr", progress=False)
    back = open_cube(store)
    np.testing.assert_array_equal(back["precipitation"].values, cube["precipitation"].values)
    assert pyproj.CRS.from_cf(back["crs"].attrs).is_geographic

    fc = geostp.forecast(back, model="optical_flow", steps=2, progress=False)
    assert fc.sizes["lead_time"] == 2 and fc.sizes["y"] == 100 and fc.sizes["x"] == 200
    assert list(fc["lead_time"].values.astype("timedelta64[m]").astype(int)) == [2, 4]
    assert pd.Timestamp(fc["forecast_reference_time"].values) == pd.Timestamp("2019-06-10 00:14")
    np.testing.assert_array_equal(fc["lat"].values, small["lat"].values)
    assert np.nanmax(fc.values) > 1.0

    ax = gplot.plot_map(back, time=back["time"].values[-1], natural_earth=False)
    ax.figure.savefig(tmp_path / "mrms.png")
    assert (tmp_path / "mrms.png").stat().st_size > 5_000
    plt.close(ax.figure)


def test_bad_mrms_input_names_the_file(mrms_dir, tmp_path):
    first = sorted(mrms_dir.glob("*.grib2"))[0]
    cut = tmp_path / first.name
    cut.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{cut.name} is a truncated GRIB file .*no '7777' end marker.*expected a "
                                        r"whole GRIB file for importer mrms_grib"):
        open_source("radar", _args(tmp_path))
    with pytest.raises(DataError, match=rf"{cut.name} could not be read by the mrms_grib importer"):
        open_source("radar", _args(tmp_path, check_files=False))
    with pytest.raises(ConfigError, match=r"region .* holds no pixel of the grid of .*grib2"):
        open_source("radar", _args(mrms_dir, region={"lon": [0, 10], "lat": [40, 50]}))  # Europe
    with pytest.raises(ConfigError, match="not a box"):
        open_source("radar", _args(mrms_dir, region={"lon": [-90, -80], "north": 3}))
    with pytest.raises(ConfigError, match="use region="):
        open_source("radar", _args(mrms_dir, importer_kwargs={"extent": [-90, -80, 40, 45]}))
    with pytest.raises(GeostpError):  # every failure is a GeostpError, whatever its kind
        open_source("radar", _args(tmp_path))
    shutil.copy(first, tmp_path / "PrecipRate_00.00_20190610-000200.grib2")
    gap = open_source("radar", _args(tmp_path, region=SMALL, on_error="gap"))
    assert gap.sizes["time"] == 1 and gap.attrs["n_skipped_files"] == 1
    assert cut.name in gap.attrs["skipped_files"] and "7777" in gap.attrs["skipped_files"]
