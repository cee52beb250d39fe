"""FMI's gzipped PGM composites through the radar adapter (pysteps' fmi_pgm importer): the shared files.

FMI 2016-09-28 14:45-18:00, 40 frames every 5 min, 1226 x 760 pixels of 1 km,
reflectivity as 8-bit classes (dBZ = value / 2 - 32; 0 is "no echo", 255 no
data). Expected values come from a raw decode written here (gzip, the PGM
header, the bytes), FMI's own Z-R relation (a = 223, b = 1.53) applied by
hand; expected positions from the header's own corner coordinates and radar
sites, with the polar stereographic formula on FMI's sphere written here.
"""

from __future__ import annotations

import gzip
import re
import shutil
import warnings
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

pytestmark = pytest.mark.realdata

FOLDER = "radar/fmi/pgm/20160928"
FN_PATTERN = "%Y%m%d%H%M_fmi.radar.composite.lowest_FIN_SUOMI1"
SOUTH = {"lon": [23.0, 27.0], "lat": [60.0, 61.5]}  # the Gulf of Finland coast, where it rained


def _args(pattern: str, **extra) -> dict:
    return {**dict(importer="fmi_pgm", pattern=pattern, fn_pattern=FN_PATTERN, fn_ext="pgm.gz", timestep=5,
                   importer_kwargs={"gzipped": True}), **extra}


@pytest.fixture(scope="module")
def fmi_dir(shared_data) -> Path:
    return shared_data / FOLDER


@pytest.fixture(scope="module")
def files(fmi_dir) -> list[Path]:
    found = sorted(fmi_dir.glob("*.pgm.gz"))
    assert len(found) == 40
    return found


@pytest.fixture(scope="module")
def catalog_fmi(shared_data):
    import os

    old = os.environ.get("GEOSTP_DATA")
    os.environ["GEOSTP_DATA"] = str(shared_data)
    try:
        return open_catalog("radar").open("fmi")
    finally:
        if old is None:
            os.environ.pop("GEOSTP_DATA")
        else:
            os.environ["GEOSTP_DATA"] = old


def _pgm(path: Path) -> tuple[dict[str, list[str]], np.ndarray, bytes]:
    """The header's comment fields, the pixel classes (row 0 first, as stored) and the raw bytes, by hand."""
    raw = gzip.open(path).read()
    fields: dict[str, list[str]] = {}
    for line in raw[:4096].split(b"\n"):
        if line.startswith(b"#"):
            key, *values = line[1:].decode().split()
            fields.setdefault(key, values)
    m = re.match(rb"P5\s(?:#[^\n]*\n)*\s*(\d+)\s+(\d+)\s+(\d+)\s", raw)
    width, height, maxval = (int(v) for v in m.groups())
    assert maxval == 255
    pixels = np.frombuffer(raw[-width * height:], np.uint8).reshape(height, width)
    return fields, pixels, raw


def _stereo_xy(lon: float, lat: float) -> tuple[float, float]:
    """FMI's projection (pysteps' definition): polar stereographic on a sphere of 6371288 m, true scale at 60 N,
    central meridian 25 E, false easting/northing 380886.310 / 3395677.920 m."""
    radius, phi0 = 6371288.0, np.radians(60.0)
    phi, lam = np.radians(lat), np.radians(lon - 25.0)
    k = (1 + np.sin(phi0)) / (1 + np.sin(phi))
    return (380886.310 + radius * k * np.cos(phi) * np.sin(lam),
            3395677.920 - radius * k * np.cos(phi) * np.cos(lam))


def _count_imports(monkeypatch) -> list[str]:
    from geostp.data.radar import _pysteps_io

    pio = _pysteps_io()
    original = pio.interface._importer_methods["fmi_pgm"]
    calls: list[str] = []

    def counting(filename, *args, **kwargs):
        calls.append(Path(filename).name)
        return original(filename, *args, **kwargs)

    monkeypatch.setitem(pio.interface._importer_methods, "fmi_pgm", counting)
    return calls


# ----------------------------------------------------------------------------- tests


def test_fmi_opens_through_the_catalog_and_by_name_lazily(shared_data, fmi_dir, files, monkeypatch):
    calls = _count_imports(monkeypatch)
    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    ds = open_catalog("radar").open("fmi")
    assert len(calls) == 1, "opening reads one frame (the grid and units), no more"
    assert ds.sizes == {"time": 40, "y": 1226, "x": 760}
    assert ds["precipitation"].chunks[0] == (1,) * 40
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2016-09-28 14:45")
    assert pd.Timestamp(ds["time"].values[-1]) == pd.Timestamp("2016-09-28 18:00")
    assert ds.attrs["time_step"] == "5min" and ds.attrs["n_gaps"] == 0
    assert np.isfinite(ds["precipitation"].isel(time=7).values).any()
    assert calls[1:] == [files[7].name], "computing one frame reads that file only"
    info = validate_cube(ds, source="fmi", sample_frames=2)
    assert info.n_off_grid == 0 and pyproj.CRS.from_wkt(info.crs_wkt).is_projected

    by_name = open_source("radar", _args(str(fmi_dir / "*.pgm.gz"), reflectivity_to_rain_rate=True))
    np.testing.assert_array_equal(by_name["x"].values, ds["x"].values)
    np.testing.assert_array_equal(by_name["y"].values, ds["y"].values)
    assert by_name["precipitation"].attrs == ds["precipitation"].attrs


def test_fmi_grid_is_fmi_polar_stereographic_in_the_right_place(catalog_fmi, files):
    ds = catalog_fmi
    fields, _, _ = _pgm(files[0])
    crs = pyproj.CRS.from_cf(ds["crs"].attrs)
    assert crs == cube_crs(ds) and ds["crs"].attrs["grid_mapping_name"] == "polar_stereographic"
    assert ds["precipitation"].attrs["grid_mapping"] == "crs"
    # the outer corners of the grid are the header's bottomleft and topright (lon, lat)
    x, y = ds["x"].values, ds["y"].values
    dx, dy = x[1] - x[0], y[0] - y[1]
    assert dx == pytest.approx(float(fields["metersperpixel_x"][0])) and dy == pytest.approx(
        float(fields["metersperpixel_y"][0]))
    to_ll = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    ll = to_ll.transform(x[0] - dx / 2, y[-1] - dy / 2)
    ur = to_ll.transform(x[-1] + dx / 2, y[0] + dy / 2)
    np.testing.assert_allclose(ll, [float(v) for v in fields["bottomleft"]], atol=1e-4)
    np.testing.assert_allclose(ur, [float(v) for v in fields["topright"]], atol=1e-4)
    # each radar site of the header lies where FMI's projection formula puts it, and the cube's lat/lon agree
    raw = gzip.open(files[0]).read()[:4096].decode("latin-1")
    radars = re.findall(r"# radar (\w+) \d+ ([\d.]+) ([\d.]+)", raw)
    assert len(radars) >= 8
    for _, lon, lat in radars:
        sx, sy = _stereo_xy(float(lon), float(lat))
        col, row = int(np.argmin(np.abs(x - sx))), int(np.argmin(np.abs(y - sy)))
        assert abs(x[col] - sx) <= dx / 2 + 1 and abs(y[row] - sy) <= dy / 2 + 1
        assert ds["lat"].values[row, col] == pytest.approx(float(lat), abs=0.01)
        assert ds["lon"].values[row, col] == pytest.approx(float(lon), abs=0.02)
    # north up: row 0 is the northernmost, latitude falls down the rows
    assert np.all(np.diff(y) < 0) and np.all(np.diff(x) > 0)
    assert ds["lat"].values[0].mean() > ds["lat"].values[-1].mean() + 5


def test_fmi_values_are_rain_rates_with_fmis_zr_dry_zero_and_no_data_nan(catalog_fmi, files):
    var = catalog_fmi["precipitation"]
    assert var.attrs["units"] == "mm h-1" and var.attrs["standard_name"] == "lwe_precipitation_rate"
    # FMI's own Z-R relation, as its importer reports it, is used and recorded
    assert (var.attrs["zr_a"], var.attrs["zr_b"]) == (223.0, 1.53)
    assert var.attrs["zr_origin"] == "reader fmi_pgm" and var.attrs["no_echo_dbz"] == -32.0
    assert "Finnish Meteorological Institute" in var.attrs["source"] and "radar" in var.attrs["long_name"]
    _, pixels, _ = _pgm(files[0])
    got = var.isel(time=0).values
    dbz = pixels / 2.0 - 32.0
    expected = (10.0 ** (dbz / 10.0) / 223.0) ** (1.0 / 1.53)
    expected[pixels == 0] = 0.0  # no echo: dry
    expected[pixels == 255] = np.nan  # no data
    assert (pixels == 0).mean() > 0.3 and (pixels == 255).mean() > 0.1 and (expected > 1).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got == 0, pixels == 0)  # exactly 0 where dry, nowhere else
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    assert np.nanmin(got) == 0.0 and np.nanmin(got[got > 0]) == pytest.approx(
        (10 ** (-31.5 / 10) / 223) ** (1 / 1.53), rel=1e-5)


def test_fmi_zr_is_recorded_in_dbz_and_can_be_overridden(fmi_dir, files):
    pattern = str(fmi_dir / "2016092814*.pgm.gz")
    _, pixels, _ = _pgm(files[0])
    dbz = open_source("radar", _args(pattern))["reflectivity"]
    assert dbz.attrs["units"] == "dBZ" and (dbz.attrs["zr_a"], dbz.attrs["zr_b"]) == (223.0, 1.53)
    assert dbz.attrs["no_echo_dbz"] == -32.0 and "would be" in dbz.attrs["comment"]
    frame = dbz.isel(time=0).values
    np.testing.assert_array_equal(frame[pixels == 0], -32.0)  # kept as read in dBZ
    mine = open_source("radar", _args(pattern, reflectivity_to_rain_rate=True, zr_a=200.0, zr_b=1.6))
    var = mine["precipitation"]
    assert (var.attrs["zr_a"], var.attrs["zr_b"], var.attrs["zr_origin"]) == (200.0, 1.6, "user")
    r = var.isel(time=0).values
    wet = pixels == 100  # 18 dBZ
    assert wet.any()
    np.testing.assert_allclose(r[wet], (10 ** 1.8 / 200.0) ** (1 / 1.6), rtol=1e-6)
    assert (r[pixels == 0] == 0).all()
    # the no-echo level can be moved (here: everything under 0 dBZ is dry)
    clipped = open_source("radar", _args(pattern, reflectivity_to_rain_rate=True, no_echo_dbz=0.0))
    c = clipped["precipitation"].isel(time=0).values
    assert (c[(pixels > 0) & (pixels <= 64)] == 0).all() and (c[(pixels > 64) & (pixels < 255)] > 0).all()
    with pytest.raises(ConfigError, match="give both coefficients"):
        open_source("radar", _args(pattern, reflectivity_to_rain_rate=True, zr_a=300.0))
    with pytest.raises(ConfigError, match="not positive numbers"):
        open_source("radar", _args(pattern, reflectivity_to_rain_rate=True, zr_a=-1.0, zr_b=1.5))


def test_bad_fmi_frames_are_refused_when_the_cube_is_opened(files, tmp_path, monkeypatch):
    """A .pgm.gz cut short, one whose PGM header asks for another size, one that is not gzip: named at open time,
    before any frame is decoded."""
    for f in files[:4]:
        shutil.copy(f, tmp_path / f.name)
    cut = tmp_path / files[1].name
    cut.write_bytes(files[1].read_bytes()[: files[1].stat().st_size * 2 // 3])
    pattern = str(tmp_path / "*.pgm.gz")
    calls = _count_imports(monkeypatch)
    with pytest.raises(DataError, match=rf"{re.escape(cut.name)} is a truncated gzip file .*expected a whole PGM "
                                        r"file for importer fmi_pgm; it is frame 2 of 4"):
        open_source("radar", _args(pattern))
    assert calls == [], "the truncated file is found from its header and gzip stream alone"
    gap = open_source("radar", _args(pattern, on_error="gap"))
    assert gap.sizes["time"] == 3 and gap.attrs["n_skipped_files"] == 1 and cut.name in gap.attrs["skipped_files"]
    assert gap.attrs["n_missing_steps"] == 1
    assert calls == [files[0].name], "under on_error='gap' the one frame read at open is a sound one"
    calls.clear()

    # a whole gzip stream whose PGM content is shorter than its header says (a frame cut before it was compressed)
    _, _, raw = _pgm(files[2])
    short = tmp_path / files[1].name
    with gzip.open(short, "wb", compresslevel=1) as g:
        g.write(raw[:-760])  # one row missing
    with pytest.raises(DataError, match=rf"{re.escape(short.name)} holds {len(raw) - 760} bytes \(decompressed\); its "
                                        rf"PGM header asks for {len(raw)} \(760 x 1226 pixels"):
        open_source("radar", _args(pattern))
    # a header that claims another grid
    with gzip.open(short, "wb", compresslevel=1) as g:
        g.write(raw.replace(b"\n760 1226\n", b"\n760 1227\n", 1))
    with pytest.raises(DataError, match=r"its PGM header asks for \d+ \(760 x 1227 pixels.*the frame is cut short"):
        open_source("radar", _args(pattern))
    # not compressed although the importer is told it is, and the other way round
    short.write_bytes(raw)
    with pytest.raises(DataError, match=rf"{re.escape(short.name)} is not gzip-compressed"):
        open_source("radar", _args(pattern))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / files[0].name[:-3]).write_bytes(raw[:-1])
    with pytest.raises(DataError, match=r"holds \d+ bytes; its PGM header asks for \d+ .*cut short"):
        open_source("radar", _args(str(plain / "*.pgm"), fn_ext="pgm", importer_kwargs={}))
    with pytest.raises(GeostpError):
        open_source("radar", _args(str(tmp_path / "*.pgm.gz")))
    assert calls == []


@pytest.mark.slow
def test_fmi_ingests_forecasts_and_maps(fmi_dir, tmp_path):
    import matplotlib.pyplot as plt

    import geostp.plot as gplot
    from geostp.store import open_cube

    cube = open_source("radar", _args(str(fmi_dir / "*.pgm.gz"), reflectivity_to_rain_rate=True, region=SOUTH,
                                      start="2016-09-28T15:35", end="2016-09-28T16:00")).load()
    assert cube.sizes["time"] == 6 and 150 < cube.sizes["y"] < 260 and 150 < cube.sizes["x"] < 300
    frame = cube["precipitation"].values[-1]
    assert (frame == 0).any() and (frame > 1).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        store = geostp.ingest(cube, tmp_path / "fmi.zarr", progress=False)
    back = open_cube(store)
    np.testing.assert_array_equal(back["precipitation"].values, cube["precipitation"].values)
    assert back["precipitation"].attrs["zr_a"] == 223.0

    fc = geostp.forecast(back, model="optical_flow", steps=2, progress=False)
    assert fc.sizes["lead_time"] == 2 and fc.shape[1:] == (cube.sizes["y"], cube.sizes["x"])
    assert list(fc["lead_time"].values.astype("timedelta64[m]").astype(int)) == [5, 10]
    assert pd.Timestamp(fc["forecast_reference_time"].values) == pd.Timestamp(cube["time"].values[-1])
    np.testing.assert_array_equal(fc["lat"].values, cube["lat"].values)
    assert np.nanmax(fc.values) > 1.0 and (fc.values == 0).any()

    ax = gplot.plot_map(back, time=back["time"].values[-1], natural_earth=False)
    ax.figure.savefig(tmp_path / "fmi.png")
    assert (tmp_path / "fmi.png").stat().st_size > 5_000
    plt.close(ax.figure)
