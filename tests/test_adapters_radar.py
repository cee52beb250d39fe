"""Radar adapters on the real pysteps example composites: laziness, georeferencing, values, gaps, bad files.

Expected corners and values are computed here independently of the adapters:
corners from each provider's documented grid (EPSG definitions, the corner
coordinates the files publish), values from a raw read of each file (h5py,
netCDF4, PIL) with the file's own scale, offset and no-data value.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tracemalloc
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest

from geostp.cube import cube_crs, find_gaps, validate_cube
from geostp.data.catalog import open_catalog
from geostp.data.radar import open_radar
from geostp.errors import ConfigError, DataError, GeostpError, UnknownNameError

KNMI_ARGS = dict(importer="knmi_hdf5", path_fmt="%Y/%m", fn_pattern="RAD_NL25_RAP_5min_%Y%m%d%H%M", fn_ext="h5",
                 timestep=5, importer_kwargs={"accutime": 5, "qty": "ACRR"})
RMI_ARGS = dict(importer="odim_hdf5", path_fmt="%Y%m%d", fn_pattern="%Y%m%d%H%M00.rad.best.comp.rate.qpe",
                fn_ext="hdf", timestep=5, importer_kwargs={"qty": "RATE", "accutime": 5.0})
MCH_KW = {"product": "AQC", "unit": "mm", "accutime": 5}


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RadarSources:
    """The radar catalog with its ``${GEOSTP_DATA}`` pointed at the real data folder."""

    def __init__(self, data: Path):
        self.data = data
        self.catalog = open_catalog("radar")

    def open(self, name: str, **overrides):
        with _env(GEOSTP_DATA=str(self.data)):
            return self.catalog.open(name, **overrides)

    def args(self, name: str) -> dict:
        with _env(GEOSTP_DATA=str(self.data)):
            return self.catalog.resolved_args(name)


@pytest.fixture(scope="module")
def radar(shared_data) -> RadarSources:
    return RadarSources(shared_data)


def _corner_edges(ds) -> dict[str, tuple[float, float]]:
    """Projected coordinates of the outer corners of the grid (pixel edges), from the cube's centres."""
    x, y = ds["x"].values, ds["y"].values
    dx, dy = x[1] - x[0], y[0] - y[1]
    return {"UL": (x[0] - dx / 2, y[0] + dy / 2), "UR": (x[-1] + dx / 2, y[0] + dy / 2),
            "LL": (x[0] - dx / 2, y[-1] - dy / 2), "LR": (x[-1] + dx / 2, y[-1] - dy / 2)}


def _cube_lonlat(ds, points: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    to_ll = pyproj.Transformer.from_crs(cube_crs(ds), "EPSG:4326", always_xy=True)
    return {k: to_ll.transform(*v) for k, v in points.items()}


def _assert_north_up(ds):
    y, x, lat, lon = ds["y"].values, ds["x"].values, ds["lat"].values, ds["lon"].values
    assert np.all(np.diff(y) < 0), "y must decrease down the rows"
    assert np.all(np.diff(x) > 0), "x must increase along the rows"
    assert lat[0].mean() > lat[-1].mean() + 1.0, "row 0 must be the northernmost"
    assert lon[:, 0].mean() < lon[:, -1].mean() - 1.0, "column 0 must be the westernmost"
    assert np.all(np.diff(lat[:, lat.shape[1] // 2]) < 0), "latitude must fall down the middle column"


# ----------------------------------------------------------------------------- laziness


@pytest.mark.parametrize("name", ["mch", "knmi", "rmi", "bom_rf3"])
def test_radar_source_opens_lazily(radar, name, monkeypatch):
    # (bom_rf3's metadata read loops over coordinates in Python: too slow under tracemalloc, so its
    # memory is measured on the netCDF path below; the call count is checked here all the same)
    measure = name != "bom_rf3"
    from geostp.data.radar import _pysteps_io

    pio = _pysteps_io()  # imported before measuring memory: the import is not the adapter's
    importer = radar.args(name)["importer"]
    original = pio.interface._importer_methods[importer]
    calls: list[str] = []

    def counting(filename, *args, **kwargs):
        calls.append(Path(filename).name)
        return original(filename, *args, **kwargs)

    monkeypatch.setitem(pio.interface._importer_methods, importer, counting)
    if measure:
        tracemalloc.start()
    try:
        ds = radar.open(name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    var = ds["precipitation"]
    frame_bytes = var.nbytes / ds.sizes["time"]
    assert var.chunks is not None and var.data.chunksize[0] == 1, "dask-backed, one frame per chunk"
    assert len(calls) == 1, f"opening read {len(calls)} frames; expected the one metadata read"
    if measure:  # one frame (float64 inside pysteps) plus lat/lon: far below the whole series
        assert 0 < peak < 8 * frame_bytes + 8e6, (peak, frame_bytes)
        assert peak < var.nbytes / 2
    k = ds.sizes["time"] - 3
    frame = var.isel(time=k).values
    assert len(calls) == 2, "computing one time step reads exactly one file"
    stamp = pd.Timestamp(ds["time"].values[k])
    digits = re.sub(r"\D", "", calls[-1])
    assert stamp.strftime("%H%M") in digits, (calls[-1], stamp)
    assert np.isfinite(frame).any()


def test_netcdf_series_opens_lazily(radar, monkeypatch):
    import netCDF4  # noqa: F401  (imported before measuring memory)

    from geostp.data import netcdf

    reads: list[int] = []
    original = netcdf._read_series_block

    def counting(*args, block_info=None, **kwargs):
        reads.append(block_info[None]["array-location"][0][0])
        return original(*args, block_info=block_info, **kwargs)

    monkeypatch.setattr(netcdf, "_read_series_block", counting)
    tracemalloc.start()
    try:
        ds = radar.open("bom")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reads == [], "opening must read no frame"
    assert ds["precipitation"].chunks is not None
    assert peak < ds["precipitation"].nbytes / 8, peak
    assert np.isfinite(ds["precipitation"].isel(time=5).values).any()
    assert reads == [5]


# ----------------------------------------------------------------------------- georeferencing


def test_mch_grid_is_swiss_lv03(radar):
    ds = radar.open("mch")
    _assert_north_up(ds)
    # MeteoSwiss' documented grid: LV03, easting 255-965 km, northing -160-480 km, 1 km pixels.
    # EPSG:21781 names easting "Y" and northing "X" (Swiss usage); pyproj with always_xy takes
    # (easting, northing): the domain's long side (710 km) is the easting, along the columns.
    assert ds.sizes == {"time": 120, "y": 640, "x": 710}
    assert ds["x"].values[0] - 500 == 255_000 and ds["x"].values[-1] + 500 == 965_000
    assert ds["y"].values[0] + 500 == 480_000 and ds["y"].values[-1] - 500 == -160_000
    lv03 = pyproj.Transformer.from_crs("EPSG:21781", "EPSG:4326", always_xy=True)
    for (row, col), (e, n) in {(0, 0): (255_500, 479_500), (0, -1): (964_500, 479_500),
                               (-1, 0): (255_500, -159_500), (-1, -1): (964_500, -159_500)}.items():
        lon, lat = lv03.transform(e, n)
        assert ds["lon"].values[row, col] == pytest.approx(lon, abs=1e-4)
        assert ds["lat"].values[row, col] == pytest.approx(lat, abs=1e-4)
    # Bern (Zytglogge 46.9480 N, 7.4474 E) lies at LV03 (600.7 km, 199.7 km): the pixel nearest it
    # in lat/lon must be that one, and it must be inside Switzerland's part of the domain.
    dist = np.hypot(ds["lat"].values - 46.9480, (ds["lon"].values - 7.4474) * np.cos(np.radians(46.948)))
    row, col = np.unravel_index(dist.argmin(), dist.shape)
    assert (ds["x"].values[col], ds["y"].values[row]) == (600_500.0, 199_500.0)
    gaps = find_gaps(ds)
    assert len(gaps) == 2 and ds.attrs["time_step"] == "5min"  # three events, two gaps between them


def test_knmi_grid_matches_published_corners(radar, shared_data):
    import h5py

    ds = radar.open("knmi")
    _assert_north_up(ds)
    first = sorted((shared_data / "radar" / "KNMI" / "2010" / "08").glob("*.h5"))[0]
    with h5py.File(first, "r") as h:
        c = h["geographic"].attrs["geo_product_corners"].astype(float).reshape(4, 2)  # lon, lat: LL UL UR LR
    published = {"LL": c[0], "UL": c[1], "UR": c[2], "LR": c[3]}
    got = _cube_lonlat(ds, _corner_edges(ds))
    for k, (lon, lat) in published.items():
        assert got[k][0] == pytest.approx(lon, abs=2e-3) and got[k][1] == pytest.approx(lat, abs=2e-3), k
    # KNMI's documented grid: polar stereographic, true scale at 60 N, lon_0 0, on the WGS84-like
    # ellipsoid (a=6378.137 km, b=6356.752 km); columns 0..700 km, rows -3650..-4415 km.
    stere = pyproj.CRS.from_proj4("+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752 +units=m")
    to_ll = pyproj.Transformer.from_crs(stere, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(699_500.0, -4_414_500.0)
    assert (ds["lon"].values[-1, -1], ds["lat"].values[-1, -1]) == pytest.approx((lon, lat), abs=1e-5)
    lon, lat = to_ll.transform(500.0, -3_650_500.0)
    assert (ds["lon"].values[0, 0], ds["lat"].values[0, 0]) == pytest.approx((lon, lat), abs=1e-5)


def test_rmi_grid_matches_odim_corners_and_belgian_lambert(radar, shared_data):
    import h5py

    ds = radar.open("rmi")
    _assert_north_up(ds)
    first = sorted((shared_data / "radar" / "rmi" / "radqpe" / "20210704").glob("*.hdf"))[0]
    with h5py.File(first, "r") as h:
        where = dict(h["where"].attrs)
    got = _cube_lonlat(ds, _corner_edges(ds))
    for k in ("UL", "UR", "LL", "LR"):
        assert got[k] == pytest.approx((where[f"{k}_lon"], where[f"{k}_lat"]), abs=1e-6), k
    # the projdef is Belgian Lambert 2008 (EPSG:3812): the cube's x/y must be in that system
    lambert = pyproj.Transformer.from_crs("EPSG:3812", "EPSG:4326", always_xy=True)
    for k, (x, y) in _corner_edges(ds).items():
        assert lambert.transform(x, y) == pytest.approx(got[k], abs=1e-6)
    assert _corner_edges(ds)["UL"] == pytest.approx((300_000.0, 1_000_000.0), abs=1e-3)


def test_bom_grid_from_the_files_own_grid_mapping(radar, shared_data):
    import netCDF4

    ds = radar.open("bom")
    _assert_north_up(ds)
    first = sorted((shared_data / "radar" / "bom" / "prcp-c10" / "66" / "2020" / "10" / "31").glob("*.nc"))[0]
    with netCDF4.Dataset(first) as nc:
        p = nc["proj"]
        assert p.grid_mapping_name == "albers_conical_equal_area"
        proj = (f"+proj=aea +lat_1={p.standard_parallel[0]} +lat_2={p.standard_parallel[1]} "
                f"+lat_0={p.latitude_of_projection_origin} +lon_0={p.longitude_of_central_meridian} "
                f"+x_0={p.false_easting} +y_0={p.false_northing} +a={p.semi_major_axis} "
                f"+b={p.semi_minor_axis} +units=m")
        xb, yb = nc["x_bounds"][:] * 1000.0, nc["y_bounds"][:] * 1000.0  # km in the file
    to_ll = pyproj.Transformer.from_crs(pyproj.CRS.from_proj4(proj), "EPSG:4326", always_xy=True)
    expected = {"UL": (xb.min(), yb.max()), "UR": (xb.max(), yb.max()), "LL": (xb.min(), yb.min()),
                "LR": (xb.max(), yb.min())}
    got = _cube_lonlat(ds, _corner_edges(ds))
    for k, xy in expected.items():
        assert got[k] == pytest.approx(to_ll.transform(*xy), abs=1e-7), k
    # the grid is centred on the Mt Stapylton radar (27.718 S, 153.240 E): 256 km square at 0.5 km
    centre = pyproj.Transformer.from_crs(cube_crs(ds), "EPSG:4326", always_xy=True).transform(0.0, 0.0)
    assert centre == pytest.approx((153.240, -27.718), abs=1e-3)
    assert (ds["x"].values[[0, -1]] == [-127_750.0, 127_750.0]).all()
    # pysteps' bom_rf3 path places the same pixels (it reports first/last centres as the extent) and
    # agrees on every value; its origin is rounded to 0.001 degree, so lat/lon differ by < 0.0005 degree
    other = radar.open("bom_rf3")
    np.testing.assert_array_equal(other["x"].values, ds["x"].values)
    np.testing.assert_array_equal(other["y"].values, ds["y"].values)
    assert np.abs(other["lat"].values - ds["lat"].values).max() < 5e-4
    np.testing.assert_allclose(other["precipitation"].isel(time=40).values,
                               ds["precipitation"].isel(time=40).values, rtol=1e-6)


@pytest.mark.parametrize("name", ["mch", "knmi", "rmi", "bom", "bom_rf3", "mch_20160711"])
def test_catalog_sources_are_valid_cubes(radar, name):
    ds = radar.open(name)
    info = validate_cube(ds, source=name, sample_frames=2)
    assert info.crs_wkt is not None and pyproj.CRS.from_wkt(info.crs_wkt).is_projected
    assert ds["precipitation"].attrs["units"] == "mm h-1"
    assert ds["precipitation"].attrs["standard_name"] == "lwe_precipitation_rate"
    assert pd.Timedelta(ds.attrs["time_step"]) == pd.Timedelta(info.step)
    assert radar.catalog.entry(name).license, "every real source names its terms"


# ----------------------------------------------------------------------------- values


def _frame_time(cube, k):
    return pd.Timestamp(cube["time"].values[k]).to_pydatetime()


def _check_frame(got: np.ndarray, expected: np.ndarray):
    assert np.isnan(expected).any() and (expected == 0).any() and (expected > 0.5).any(), \
        "the sample must hold no-data, dry and wet pixels to test anything"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6)


def test_knmi_values_match_raw_hdf5(radar, shared_data):
    import h5py

    ds = radar.open("knmi")
    for k in (20, 55, 70):
        t = _frame_time(ds, k)
        path = shared_data / "radar" / "KNMI" / t.strftime("%Y/%m") / f"RAD_NL25_RAP_5min_{t:%Y%m%d%H%M}.h5"
        with h5py.File(path, "r") as h:
            raw = h["image1/image_data"][...]
            cal = h["image1/calibration"].attrs
            gain, offset = map(float, re.match(r"GEO=([\d.eE+-]+)\*PV\+([\d.eE+-]+)",
                                               cal["calibration_formulas"].decode()).groups())
            nodata = int(cal["calibration_missing_data"][0])
            start = datetime.strptime(h["overview"].attrs["product_datetime_start"][0].decode()[:20],
                                      "%d-%b-%Y;%H:%M:%S")
            end = datetime.strptime(h["overview"].attrs["product_datetime_end"][0].decode()[:20],
                                    "%d-%b-%Y;%H:%M:%S")
        assert end == t, "KNMI labels frames by the end of the accumulation, as the cube does"
        minutes = (end - start).total_seconds() / 60
        expected = np.where(raw == nodata, np.nan, raw * gain + offset) * (60.0 / minutes)
        _check_frame(ds["precipitation"].isel(time=k).values, expected)


def test_rmi_values_match_raw_odim(radar, shared_data):
    import h5py

    ds = radar.open("rmi")
    for k in (3, 20, 37):
        t = _frame_time(ds, k)
        path = shared_data / "radar" / "rmi" / "radqpe" / f"{t:%Y%m%d}" / f"{t:%Y%m%d%H%M}00.rad.best.comp.rate.qpe.hdf"
        with h5py.File(path, "r") as h:
            what = dict(h["dataset1/data1/what"].attrs)
            assert what["quantity"] == b"RATE"
            raw = h["dataset1/data1/data"][...].astype(np.float64)
            assert h["what"].attrs["time"].decode()[:4] == f"{t:%H%M}"
        gain, offset = float(what.get("gain", 1.0)), float(what.get("offset", 0.0))
        expected = raw * gain + offset
        if "nodata" in what:
            expected[raw == what["nodata"]] = np.nan
        _check_frame(ds["precipitation"].isel(time=k).values, expected)


def test_bom_values_match_raw_netcdf(radar, shared_data):
    import netCDF4

    ds = radar.open("bom")
    folder = shared_data / "radar" / "bom" / "prcp-c10" / "66" / "2020" / "10" / "31"
    for k in (30, 60, 140):
        t = _frame_time(ds, k)
        with netCDF4.Dataset(folder / f"66_{t:%Y%m%d_%H%M%S}.prcp-c10.nc") as nc:
            nc.set_auto_maskandscale(False)
            v = nc["precipitation"]
            raw = v[:].astype(np.float64)
            expected = np.where(raw == v._FillValue, np.nan, raw * v.scale_factor + v.add_offset)
            minutes = (int(nc["valid_time"][...]) - int(nc["start_time"][...])) / 60
            assert pd.Timestamp(int(nc["valid_time"][...]), unit="s") == pd.Timestamp(t)
            assert nc["y"][0] > nc["y"][-1], "the file is stored north-up, as the cube"
        got = ds["precipitation"].isel(time=k).values
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected * 60.0 / minutes, rtol=2e-6, atol=1e-6)
        assert np.nanmax(expected) > 0.5


def _mch_rate(indices: np.ndarray) -> np.ndarray:
    """MeteoSwiss AQC palette: DN 0-1 and 251-254 dry, 255 no data, else Z = 316 R^1.5 with dBZ = (DN - 71.5) / 2.

    The values are millimetres in the 5 minutes of the frame (pysteps' data-source settings for AQC).
    """
    dn = indices.astype(np.float64)
    rate = (10.0 ** ((dn - 71.5) / 20.0) / 316.0) ** (1.0 / 1.5)
    rate[(indices < 2) | ((indices > 250) & (indices < 255))] = 0.0
    rate[indices == 255] = np.nan
    return rate


def test_mch_values_match_gif_palette_indices(radar, shared_data):
    # A second, independent path: the GIF's palette indices through PIL and the documented
    # index-to-rate relation written here (the colour palette itself is not needed).
    from PIL import Image

    ds = radar.open("mch")
    for k in (5, 60, 110):
        t = _frame_time(ds, k)
        (path,) = (shared_data / "radar" / "mch").glob(f"*/AQC{t:%y%j%H%M}?_00005.801.gif")
        with Image.open(path) as img:
            assert img.mode == "P" and img.size == (710, 640)
            indices = np.asarray(img)
        _check_frame(ds["precipitation"].isel(time=k).values, _mch_rate(indices) * 12.0)


# ----------------------------------------------------------------------------- gaps and bad files


def _copy_series(src: Path, dst_root: Path, sub: str, names: list[str]) -> Path:
    d = dst_root / sub
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(src / n, d / n)
    return d


@pytest.fixture
def knmi_series(shared_data, tmp_path):
    src = shared_data / "radar" / "KNMI" / "2010" / "08"
    names = [f"RAD_NL25_RAP_5min_201008260{m:03d}.h5" for m in (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55)]
    _copy_series(src, tmp_path / "KNMI", "2010/08", names)
    return tmp_path / "KNMI", names


def test_missing_frames_are_reported_as_gaps(knmi_series):
    root, names = knmi_series
    d = root / "2010" / "08"
    for m in ("0010", "0015", "0040"):
        (d / f"RAD_NL25_RAP_5min_20100826{m}.h5").unlink()
    ds = open_radar(root=root, start="2010-08-26T00:00", end="2010-08-26T00:55", **KNMI_ARGS)
    assert ds.sizes["time"] == 9
    gaps = find_gaps(ds)
    assert [(str(pd.Timestamp(g.after).time()), g.missing) for g in gaps] == [("00:05:00", 2), ("00:35:00", 1)]
    assert ds.attrs["time_step"] == "5min" and ds.attrs["n_missing_steps"] == 3
    # a pattern over the same files finds the same axis, times read from the names
    ds2 = open_radar(pattern=str(d / "*.h5"), **KNMI_ARGS)
    np.testing.assert_array_equal(ds2["time"].values, ds["time"].values)


def test_truncated_file_in_the_middle(knmi_series):
    root, names = knmi_series
    bad = root / "2010" / "08" / names[5]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{names[5]} is a damaged HDF5 file \(.*truncated.*frame 6 of 12"):
        open_radar(root=root, start="2010-08-26T00:00", end="2010-08-26T00:55", **KNMI_ARGS)
    ds = open_radar(root=root, start="2010-08-26T00:00", end="2010-08-26T00:55", on_error="gap", **KNMI_ARGS)
    assert ds.sizes["time"] == 11
    (gap,) = find_gaps(ds)
    assert gap.missing == 1 and pd.Timestamp(gap.after) == pd.Timestamp("2010-08-26T00:20")
    assert names[5] in ds.attrs["skipped_files"] and ds.attrs["n_skipped_files"] == 1
    assert np.isfinite(ds["precipitation"].isel(time=5).values).any()


def test_file_that_breaks_after_opening_is_named_at_read_time(knmi_series):
    root, names = knmi_series
    ds = open_radar(root=root, start="2010-08-26T00:00", end="2010-08-26T00:55", **KNMI_ARGS)
    (root / "2010" / "08" / names[7]).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataError, match=rf"{names[7]} could not be read by the knmi_hdf5 importer"):
        ds["precipitation"].isel(time=7).compute()
    lenient = open_radar(root=root, start="2010-08-26T00:00", end="2010-08-26T00:55", check_files=False,
                         on_error="gap", **KNMI_ARGS)
    with pytest.warns(UserWarning, match=rf"{names[7]}.*frame left as NaN"):
        frames = lenient["precipitation"].isel(time=slice(6, 9)).values
    assert np.isnan(frames[1]).all() and np.isfinite(frames[0]).any() and np.isfinite(frames[2]).any()


def test_truncated_gif(shared_data, tmp_path):
    src = shared_data / "radar" / "mch" / "20160711"
    names = sorted(p.name for p in src.glob("*.gif"))[:4]
    d = _copy_series(src, tmp_path, "mch", names)
    (d / names[2]).write_bytes((src / names[2]).read_bytes()[:20_000])
    args = dict(importer="mch_gif", pattern=str(d / "*.gif"), fn_pattern="AQC%y%j%H%M?_00005.801", fn_ext="gif",
                importer_kwargs=MCH_KW)
    with pytest.raises(DataError, match=rf"{names[2]} is a truncated GIF .*no GIF trailer.*frame 3 of 4"):
        open_radar(**args)
    ds = open_radar(on_error="gap", **args)
    assert ds.sizes["time"] == 3 and ds.attrs["n_missing_steps"] == 1 and ds.attrs["time_step"] == "5min"
    # two files for one time (MeteoSwiss' F and V variants) are refused, both named
    twin = names[0][:12] + ("F" if names[0][12] == "V" else "V") + names[0][13:]
    shutil.copyfile(src / names[0], d / twin)
    with pytest.raises(DataError, match=rf"{min(names[0], twin)} and {max(names[0], twin)} both carry time "
                                        r"2016-07-11 20:45:00; expected one file per time"):
        open_radar(on_error="gap", **args)


def test_wrong_format_files(shared_data, tmp_path):
    d = tmp_path / "KNMI" / "2010" / "08"
    d.mkdir(parents=True)
    (d / "RAD_NL25_RAP_5min_201008260000.h5").write_text("not radar data\n")
    with pytest.raises(DataError, match=r"RAD_NL25_RAP_5min_201008260000.h5 is not a HDF5 file \(starts with "
                                        r"b'not rada'; expected b'\\x89HDF"):
        open_radar(root=tmp_path / "KNMI", start="2010-08-26T00:00", end="2010-08-26T00:00", **KNMI_ARGS)
    # a sound HDF5 file of another layout (an ODIM file) given to the KNMI importer
    rmi = sorted((shared_data / "radar" / "rmi" / "radqpe" / "20210704").glob("*.hdf"))[0]
    shutil.copyfile(rmi, d / "RAD_NL25_RAP_5min_201008260000.h5")
    with pytest.raises(DataError, match=r"RAD_NL25_RAP_5min_201008260000.h5 could not be read by the knmi_hdf5 "
                                        r"importer \(KeyError.*expected a file in the format knmi_hdf5 reads"):
        open_radar(root=tmp_path / "KNMI", start="2010-08-26T00:00", end="2010-08-26T00:00", **KNMI_ARGS)


def test_bad_arguments_get_clear_errors(shared_data, tmp_path):
    root = shared_data / "radar" / "KNMI"
    with pytest.raises(UnknownNameError, match=r"unknown radar importer 'knmi_hfd5'; pysteps' importers are: "
                                               r".*knmi_hdf5.*mch_gif.*odim_hdf5"):
        open_radar(**{**KNMI_ARGS, "importer": "knmi_hfd5"}, root=root, start="2010-08-26", end="2010-08-26")
    with pytest.raises(DataError, match=r"radar directory .*nowhere does not exist"):
        open_radar(root=tmp_path / "nowhere", start="2010-08-26", end="2010-08-26T01:00", **KNMI_ARGS)
    with pytest.raises(DataError, match=r"no radar file in .*KNMI between 2011-01-01 00:00:00 and "
                                        r"2011-01-01 01:00:00 .*RAD_NL25_RAP_5min_%Y%m%d%H%M.h5 every 0 days 00:05"):
        open_radar(root=root, start="2011-01-01T00:00", end="2011-01-01T01:00", **KNMI_ARGS)
    with pytest.raises(ConfigError, match=r"empty time range: start 2010-08-26 01:00:00 is after end"):
        open_radar(root=root, start="2010-08-26T01:00", end="2010-08-26T00:00", **KNMI_ARGS)
    with pytest.raises(DataError, match=r"pattern .*nothing/\*.h5 matched no file \(folder .*nothing does not exist"):
        open_radar(pattern=str(tmp_path / "nothing" / "*.h5"), **KNMI_ARGS)
    with pytest.raises(DataError, match=r"none of the 92 files matched by .* lies between"):
        open_radar(pattern=str(root / "2010" / "08" / "*.h5"), start="2012-01-01", **KNMI_ARGS)
    with pytest.raises(ConfigError, match="on_error='skip' is not a policy"):
        open_radar(root=root, start="2010-08-26", end="2010-08-26", on_error="skip", **KNMI_ARGS)
    with pytest.raises(ConfigError, match="importer 'mch_gif' rejected its arguments"):
        open_radar(importer="mch_gif", pattern=str(shared_data / "radar" / "mch" / "20160711" / "*.gif"),
                   fn_pattern="AQC%y%j%H%M?_00005.801", fn_ext="gif")
    with pytest.raises(DataError, match=r"file name .* does not match fn_pattern 'AQC%y%j%H%M\?_00005.801'"):
        open_radar(importer="mch_gif", pattern=str(root / "2010" / "08" / "*.h5"),
                   fn_pattern="AQC%y%j%H%M?_00005.801", fn_ext="h5", importer_kwargs=MCH_KW)
    assert issubclass(DataError, GeostpError) and issubclass(ConfigError, GeostpError)


def test_reflectivity_is_kept_or_converted_with_a_stated_zr(shared_data, tmp_path):
    import h5py

    src = sorted((shared_data / "radar" / "rmi" / "radqpe" / "20210704").glob("*.hdf"))[:2]
    d = tmp_path / "odim" / "20210704"
    d.mkdir(parents=True)
    dn = np.zeros((700, 700), np.uint8)
    dn[:, :350] = 255  # no data
    dn[100:200, 400:500] = 110  # 0.5 * 110 - 32 = 23 dBZ
    dn[300:400, 400:500] = 0  # undetect (the importer gives -30 dBZ): dry
    for p in src:
        target = d / p.name
        shutil.copyfile(p, target)
        with h5py.File(target, "r+") as h:
            g = h["dataset1/data1"]
            del g["data"]
            g.create_dataset("data", data=dn)
            for k, v in {"quantity": np.bytes_(b"DBZH"), "gain": 0.5, "offset": -32.0, "nodata": 255.0,
                         "undetect": 0.0}.items():
                g["what"].attrs[k] = v
    args = {**RMI_ARGS, "importer_kwargs": {"qty": "DBZH"}}
    ds = open_radar(root=tmp_path / "odim", start="2021-07-04T15:50", end="2021-07-04T15:55", **args)
    z = ds["reflectivity"].isel(time=0).values
    assert ds["reflectivity"].attrs["units"] == "dBZ"
    assert z[150, 450] == pytest.approx(23.0) and np.isnan(z[0, 0]) and z[350, 450] == pytest.approx(-30.0)
    rr = open_radar(root=tmp_path / "odim", start="2021-07-04T15:50", end="2021-07-04T15:55",
                    reflectivity_to_rain_rate=True, **args)["precipitation"]
    assert rr.attrs["zr_a"] == 200.0 and rr.attrs["zr_b"] == 1.6 and rr.attrs["units"] == "mm h-1"
    assert rr.attrs["zr_origin"] == "Marshall-Palmer default"  # pysteps' odim importer reports no Z-R relation
    r = rr.isel(time=0).values
    assert r[150, 450] == pytest.approx((10 ** 2.3 / 200.0) ** (1 / 1.6), rel=1e-5)  # 23 dBZ: ~1.2 mm/h
    assert np.isnan(r[0, 0]) and r[350, 450] == 0.0  # ODIM's 'undetect' (no echo) is dry: exactly 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r2 = open_radar(root=tmp_path / "odim", start="2021-07-04T15:50", end="2021-07-04T15:50",
                        reflectivity_to_rain_rate=True, zr_a=300.0, zr_b=1.4, **args)["precipitation"]
        assert r2.isel(time=0).values[150, 450] == pytest.approx((10 ** 2.3 / 300.0) ** (1 / 1.4), rel=1e-5)


def test_rows_stored_south_to_north_are_flipped(shared_data, monkeypatch):
    """An importer whose row 0 is the southernmost (yorigin 'lower') gives the same north-up cube."""
    from geostp.data.radar import _pysteps_io

    pio = _pysteps_io()
    root = shared_data / "radar" / "KNMI"
    span = dict(root=root, start="2010-08-26T07:00", end="2010-08-26T07:35")
    north_up = open_radar(**span, **KNMI_ARGS)
    original = pio.interface._importer_methods["knmi_hdf5"]

    def south_up(filename, **kwargs):
        values, quality, meta = original(filename, **kwargs)
        return values[::-1].copy(), quality, {**meta, "yorigin": "lower"}

    monkeypatch.setitem(pio.interface._importer_methods, "knmi_hdf5", south_up)
    flipped = open_radar(**span, time_chunk=3, **KNMI_ARGS)
    assert flipped["precipitation"].chunks[0] == (3, 3, 2)
    np.testing.assert_array_equal(flipped["y"].values, north_up["y"].values)
    np.testing.assert_array_equal(flipped["lat"].values, north_up["lat"].values)
    np.testing.assert_array_equal(flipped["precipitation"].values, north_up["precipitation"].values)


def test_frames_read_in_parallel_threads(radar):
    """netCDF4 and HDF5 are not thread-safe: the adapter serialises their reads, so dask's threads are safe."""
    import dask

    a = radar.open("bom_rf3")["precipitation"].isel(time=slice(60, 66))
    b = radar.open("bom")["precipitation"].isel(time=slice(60, 66))
    with dask.config.set(scheduler="threads", num_workers=4):
        sa, sb = dask.compute(a.sum(("y", "x")), b.sum(("y", "x")))
    np.testing.assert_allclose(sa.values, sb.values, rtol=1e-5)
    assert sa.values.min() > 0
