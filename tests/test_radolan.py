"""DWD RADOLAN binary composites through the radolan adapter (wradlib's reader): the shared files.

Expected values come from a raw decode written here (gzip, the ASCII header's
``GP``, ``PR`` and ``INT`` fields, the 16-bit words with DWD's flag bits, the
8-bit RVP6 classes); expected positions from DWD's published corner
coordinates of its grids and its own trigonometric formula for the polar
stereographic projection on a sphere of 6370.04 km, neither through pyproj.
The shared RW files are two single hours a week apart; a continuous hourly
series is written here from the real RW file (its header's time changed, the
field moved east by two pixels an hour) to forecast on.
"""

from __future__ import annotations

import gzip
import re
from datetime import datetime, timedelta
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

pytest.importorskip("wradlib", reason="the radolan adapter reads with wradlib: pip install 'geostp[radar]'")

pytestmark = pytest.mark.realdata

RW = "raa01-rw_10000-1408102050-dwd---bin.gz"  # 2014-08-10 20:50 UTC, the end of the hour
RW_EARLY = "raa01-rw_10000-1408030950-dwd---bin.gz"
RX = "raa01-rx_10000-1408102050-dwd---bin.gz"
SF = "raa01-sf_10000-1408102050-dwd---bin.gz"
EX = "raa01-ex_10000-1408102050-dwd---bin.gz"
SMALL = {"lon": [9.5, 11.5], "lat": [49.0, 50.0]}  # Franconia, where it rained on 2014-08-10

# DWD's corner coordinates of its grids (RADOLAN/RADVOR-OP Kompositformat; the outer pixel edges), lon, lat
CORNERS_900 = {"LL": (3.5889, 46.9526), "LR": (14.6209, 47.0705), "UR": (15.7208, 54.7405), "UL": (2.0715, 54.5877)}
CORNER_EX_LL = (2.3419, 43.9336)
BERLIN = (13.4050, 52.5200)


# ----------------------------------------------------------------------------- independent readers


def _header_and_body(path: Path) -> tuple[str, bytes]:
    data = gzip.open(path).read()
    end = data.index(b"\x03")
    return data[:end].decode("ascii"), data[end + 1:]


def _raw(path: Path) -> np.ndarray:
    """The file's values as the format description defines them, north up: mm h-1 or dBZ, NaN where flagged."""
    header, body = _header_and_body(path)
    nrow, ncol = (int(v) for v in re.search(r"GP\s*(\d+)x\s*(\d+)", header).groups())
    precision = 10.0 ** int(re.search(r"PR E([+-]\d+)", header).group(1))
    minutes = int(re.search(r"INT\s*(\d+)", header).group(1))
    if header[:2] in ("RX", "EX"):
        raw = np.frombuffer(body, np.uint8).reshape(nrow, ncol).astype(float)
        out = np.where(raw >= 249, np.nan, raw / 2.0 - 32.5)  # 249 clutter, 250 no data
    else:
        words = np.frombuffer(body, "<u2").reshape(nrow, ncol)
        out = (words & 0x0FFF) * precision * (60.0 / minutes)
        out[(words & 0x2000) != 0] = np.nan  # bit 14: no data
        out[(words & 0x8000) != 0] = np.nan  # bit 16: clutter
    return out[::-1]  # RADOLAN's first row is the southernmost


def _dwd_xy(lon: float, lat: float) -> tuple[float, float]:
    """DWD's formula (Kompositformat): polar stereographic on the sphere, metres."""
    r, phi0 = 6370.040, np.radians(60.0)
    phi, lam = np.radians(lat), np.radians(lon - 10.0)
    m = (1 + np.sin(phi0)) / (1 + np.sin(phi))
    return 1000 * r * m * np.cos(phi) * np.sin(lam), -1000 * r * m * np.cos(phi) * np.cos(lam)


def _write_radolan(src: Path, dst: Path, time: datetime, shift: int = 0) -> Path:
    """A copy of a real RADOLAN file with another time in its header and the field moved ``shift`` pixels east."""
    header, body = _header_and_body(src)
    header = header[:2] + time.strftime("%d%H%M") + header[8:13] + time.strftime("%m%y") + header[17:]
    nrow, ncol = (int(v) for v in re.search(r"GP\s*(\d+)x\s*(\d+)", header).groups())
    words = np.roll(np.frombuffer(body, "<u2").reshape(nrow, ncol), shift, axis=1)
    with gzip.open(dst, "wb", compresslevel=1) as f:
        f.write(header.encode("ascii") + b"\x03" + words.astype("<u2").tobytes())
    return dst


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def radolan_dir(shared_data) -> Path:
    return shared_data / "radolan" / "bin"


@pytest.fixture(scope="module")
def rw(radolan_dir):
    return open_source("radolan", {"path": str(radolan_dir), "product": "RW"})


@pytest.fixture(scope="module")
def hourly(radolan_dir, tmp_path_factory) -> Path:
    """Six hourly RW files (15:50-20:50) from the real one, the rain moving east by 2 km an hour."""
    folder = tmp_path_factory.mktemp("radolan_series")
    end = datetime(2014, 8, 10, 20, 50)
    for k in range(6):
        t = end - timedelta(hours=5 - k)
        _write_radolan(radolan_dir / RW, folder / f"raa01-rw_10000-{t:%y%m%d%H%M}-dwd---bin.gz", t, shift=2 * k)
    return folder


def _count_reads(monkeypatch) -> list[str]:
    import wradlib.io.radolan as wrl

    original = wrl.read_radolan_composite
    calls: list[str] = []

    def counting(f, *args, **kwargs):
        calls.append(Path(getattr(f, "name", f)).name)
        return original(f, *args, **kwargs)

    monkeypatch.setattr(wrl, "read_radolan_composite", counting)
    return calls


# ----------------------------------------------------------------------------- tests


def test_radolan_opens_through_the_catalog_and_by_name_lazily(shared_data, radolan_dir, rw, monkeypatch):
    calls = _count_reads(monkeypatch)
    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    ds = open_catalog("radar").open("radolan_rw")
    assert calls == [], "opening reads headers only"
    assert ds.sizes == {"time": 2, "y": 900, "x": 900}
    assert ds["precipitation"].chunks[0] == (1, 1)  # one file per frame
    assert [str(t)[:16] for t in ds["time"].values] == ["2014-08-03T09:50", "2014-08-10T20:50"]  # from the headers
    assert ds.attrs["time_step"] == "1h" and ds.attrs["n_missing_steps"] == 178  # the week between is a gap
    assert ds.attrs["n_other_product_files"] == 3 and ds.attrs["reader"] == "wradlib"
    frame = ds["precipitation"].isel(time=1).values
    assert calls == [RW], "computing one time step reads that file only"
    np.testing.assert_array_equal(frame, rw["precipitation"].isel(time=1).values)  # catalog == adapter by name
    validate_cube(ds, check_values=False)


def test_radolan_grid_mapping_and_corners_match_dwd(radolan_dir, rw):
    crs = pyproj.CRS.from_cf(rw["crs"].attrs)
    assert cube_crs(rw) == crs
    cf = rw["crs"].attrs
    assert cf["grid_mapping_name"] == "polar_stereographic"
    assert cf["standard_parallel"] == 60.0 and cf["straight_vertical_longitude_from_pole"] == 10.0
    assert cf["semi_major_axis"] == cf["semi_minor_axis"] == 6370040.0  # DWD's sphere
    assert crs.axis_info[0].unit_name == "metre" and rw["x"].attrs["units"] == "m"
    # the outer pixel edges, through the cube's own CRS, are DWD's published corners (4 decimals)
    x, y = rw["x"].values, rw["y"].values
    assert np.allclose(np.diff(x), 1000.0) and np.allclose(np.diff(y), -1000.0)
    edges = {"LL": (x[0] - 500, y[-1] - 500), "LR": (x[-1] + 500, y[-1] - 500),
             "UR": (x[-1] + 500, y[0] + 500), "UL": (x[0] - 500, y[0] + 500)}
    to_ll = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for corner, (lon, lat) in CORNERS_900.items():
        got = to_ll.transform(*edges[corner])
        assert got == pytest.approx((lon, lat), abs=1.5e-4), corner
    assert (x[0] - 500, y[-1] - 500) == pytest.approx(_dwd_xy(*CORNERS_900["LL"]), abs=15.0)  # DWD's formula
    ex = open_source("radolan", {"path": str(radolan_dir / EX)})
    assert ex.sizes == {"time": 1, "y": 1500, "x": 1400}
    got = to_ll.transform(ex["x"].values[0] - 500, ex["y"].values[-1] - 500)
    assert got == pytest.approx(CORNER_EX_LL, abs=1.5e-4)
    # nowhere near the South Pole: every pixel lies in central Europe
    assert 46.9 < float(rw["lat"].min()) and float(rw["lat"].max()) < 55.1
    assert 2.0 < float(rw["lon"].min()) and float(rw["lon"].max()) < 15.8


def test_radolan_lat_lon_match_dwd_formula_and_a_city(rw):
    from wradlib.georef import get_radolan_grid

    # DWD's inverse formula (wradlib's "trig" mode: no pyproj), pixel centres, rows flipped north up
    trig = get_radolan_grid(900, 900, wgs84=True, crs="trig", mode="center")[::-1]
    np.testing.assert_allclose(rw["lon"].values, trig[..., 0], atol=2e-5)
    np.testing.assert_allclose(rw["lat"].values, trig[..., 1], atol=2e-5)
    # Berlin lies in the pixel DWD's formula puts it in, and that pixel's lat/lon is Berlin's to within a pixel
    bx, by = _dwd_xy(*BERLIN)
    x, y = rw["x"].values, rw["y"].values
    col = int(np.floor((bx - (x[0] - 500)) / 1000))
    row = int(np.floor(((y[0] + 500) - by) / 1000))
    assert abs(x[col] - bx) <= 500 and abs(y[row] - by) <= 500
    assert rw["lat"].values[row, col] == pytest.approx(BERLIN[1], abs=0.01)
    assert rw["lon"].values[row, col] == pytest.approx(BERLIN[0], abs=0.01)
    # and pyproj on the cube's CRS agrees with DWD's formula to a metre
    fwd = pyproj.Transformer.from_crs("EPSG:4326", cube_crs(rw), always_xy=True)
    assert fwd.transform(*BERLIN) == pytest.approx((bx, by), abs=1.0)


def test_radolan_values_units_dry_and_no_data(radolan_dir, rw):
    var = rw["precipitation"]
    assert var.attrs["units"] == "mm h-1" and var.attrs["standard_name"] == "lwe_precipitation_rate"
    assert var.attrs["accumulation_minutes"] == 60.0
    got = var.isel(time=1).values
    expected = _raw(radolan_dir / RW)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    assert (got == 0).mean() > 0.3 and 0.15 < np.isnan(got).mean() < 0.3 and np.nanmax(got) > 10
    # a daily sum (SF, INT 1440 min) is divided by its 24 hours
    sf = open_source("radolan", {"path": str(radolan_dir / SF)})
    assert sf["precipitation"].attrs["accumulation_minutes"] == 1440.0
    np.testing.assert_allclose(sf["precipitation"].isel(time=0).values, _raw(radolan_dir / SF), rtol=1e-6,
                               equal_nan=True)
    # secondary data (bit 13) are values unless asked otherwise
    words = np.frombuffer(_header_and_body(radolan_dir / RW)[1], "<u2").reshape(900, 900)[::-1]
    secondary = ((words & 0x1000) != 0) & ~np.isnan(expected)
    assert secondary.sum() > 1000 and np.isfinite(got[secondary]).all()
    strict = open_source("radolan", {"path": str(radolan_dir / RW), "secondary": "nan"})
    assert np.isnan(strict["precipitation"].isel(time=0).values[secondary]).all()


def test_radolan_reflectivity_in_dbz_or_rain_rate(radolan_dir):
    rx = open_source("radolan", {"path": str(radolan_dir / RX)})
    assert list(rx.data_vars) == ["reflectivity", "crs"] and rx["reflectivity"].attrs["units"] == "dBZ"
    dbz = rx["reflectivity"].isel(time=0).values
    np.testing.assert_allclose(dbz, _raw(radolan_dir / RX), equal_nan=True)
    rate = open_source("radolan", {"path": str(radolan_dir / RX), "reflectivity_to_rain_rate": True})
    r = rate["precipitation"].isel(time=0).values
    assert rate["precipitation"].attrs["units"] == "mm h-1"
    np.testing.assert_array_equal(np.isnan(r), np.isnan(dbz))
    assert (r[dbz == -32.5] == 0).all() and (r == 0).mean() > 0.3  # DWD's lowest class is dry
    wet = dbz > 20
    np.testing.assert_allclose(r[wet], (10 ** (dbz[wet] / 10) / 200) ** (1 / 1.6), rtol=1e-5)


def test_radolan_series_ingests_forecasts_and_maps(hourly, tmp_path):
    import matplotlib.pyplot as plt

    import geostp.plot as gplot
    from geostp.store import open_cube

    cube = open_source("radolan", {"path": str(hourly / "*---bin.gz"), "region": SMALL})
    assert cube.sizes["time"] == 6 and cube.attrs["time_step"] == "1h" and cube.attrs["n_gaps"] == 0
    # 1 x 2 degrees at 1 km (111 x 145 km), the window widened by the box's tilt on the grid
    assert 110 <= cube.sizes["y"] <= 130 and 140 <= cube.sizes["x"] <= 165
    # the window is the smallest that holds every pixel whose centre is in the box
    def inside(ds):
        return ((ds["lon"] >= 9.5) & (ds["lon"] <= 11.5) & (ds["lat"] >= 49.0) & (ds["lat"] <= 50.0)).values

    whole = open_source("radolan", {"path": str(hourly / RW)})
    m = inside(cube)
    assert m.sum() == inside(whole).sum() and m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
    store = geostp.ingest(cube, tmp_path / "rw.zarr", progress=False)
    back = open_cube(store)
    np.testing.assert_array_equal(back["precipitation"].values, cube["precipitation"].values)
    assert pyproj.CRS.from_cf(back["crs"].attrs) == cube_crs(cube)

    fc = geostp.forecast(back, model="optical_flow", steps=2, progress=False)
    assert fc.sizes["lead_time"] == 2 and fc.shape[1:] == (cube.sizes["y"], cube.sizes["x"])
    assert list(fc["lead_time"].values.astype("timedelta64[m]").astype(int)) == [60, 120]
    assert pd.Timestamp(fc["forecast_reference_time"].values) == pd.Timestamp("2014-08-10 20:50")
    np.testing.assert_array_equal(fc["lat"].values, cube["lat"].values)
    # the rain keeps moving east: the +1 h forecast is nearer the last frame moved 2 px than the last frame itself
    last = np.nan_to_num(back["precipitation"].values[-1])
    ahead = np.nan_to_num(fc.values[0])
    inner = (slice(10, -10), slice(10, -10))
    moved = np.roll(last, 2, axis=1)
    assert np.mean((ahead - moved)[inner] ** 2) < np.mean((ahead - last)[inner] ** 2)

    ax = gplot.plot_map(back, time=back["time"].values[-1], natural_earth=False)
    ax.figure.savefig(tmp_path / "rw.png")
    assert (tmp_path / "rw.png").stat().st_size > 5_000
    plt.close(ax.figure)


def test_bad_radolan_input_names_the_file_the_product_and_what_was_expected(radolan_dir, tmp_path):
    good = radolan_dir / RW
    cut = tmp_path / RW
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{RW} is a truncated or damaged gzip file .*RW header's BY field says "
                                        r"1620134.*pass on_error='gap'"):
        open_source("radolan", {"path": str(cut)})
    lazy = open_source("radolan", {"path": str(cut), "check_files": False})  # the header alone still reads
    with pytest.raises(DataError, match=rf"{RW}: the RADOLAN RW data \(precipitation\) could not be read "
                                        r"\(EOFError.*expected 1620000 bytes of data after the 134-byte header"):
        lazy["precipitation"].load()
    plain = tmp_path / "raa01-rw_10000-1408102050-dwd---bin"
    plain.write_bytes(gzip.open(good).read()[:1_000_000])
    with pytest.raises(DataError, match=r"dwd---bin holds 1000000 bytes; the RW header's BY field says 1620134"):
        open_source("radolan", {"path": str(plain)})
    wrong = tmp_path / "raa01-rw_10000-1408102051-dwd---bin"
    wrong.write_text("this is not a radar file")
    with pytest.raises(DataError, match=r"dwd---bin has no readable RADOLAN header .*expected a DWD RADOLAN binary"):
        open_source("radolan", {"path": str(wrong)})
    with pytest.raises(GeostpError):
        open_source("radolan", {"path": str(tmp_path / "nothing-*---bin")})
    # under on_error='gap' the cut file is left out and listed
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write_radolan(good, mixed / "raa01-rw_10000-1408101950-dwd---bin.gz", datetime(2014, 8, 10, 19, 50))
    (mixed / RW).write_bytes(cut.read_bytes())
    gap = open_source("radolan", {"path": str(mixed), "on_error": "gap"})
    assert gap.sizes["time"] == 1 and gap.attrs["n_skipped_files"] == 1 and RW in gap.attrs["skipped_files"]


def test_radolan_products_and_regions_are_checked(radolan_dir, hourly):
    with pytest.raises(ConfigError, match=r"holds RADOLAN products EX, RW, RX, SF; pass product=\.\.\. to choose"):
        open_source("radolan", {"path": str(radolan_dir)})
    with pytest.raises(DataError, match="none of the files .* holds RADOLAN product RY; they hold EX, RW, RX, SF"):
        open_source("radolan", {"path": str(radolan_dir), "product": "ry"})
    with pytest.raises(ConfigError, match=r"region .* holds no pixel of the RADOLAN RW grid"):
        open_source("radolan", {"path": str(radolan_dir / RW), "region": {"lon": [-80, -70], "lat": [40, 45]}})
    with pytest.raises(ConfigError, match="secondary='drop'"):
        open_source("radolan", {"path": str(radolan_dir / RW), "secondary": "drop"})
    with pytest.raises(DataError, match=r"both carry time 2014-08-10 20:50"):
        open_source("radolan", {"path": [str(radolan_dir / RW), str(hourly / RW)]})
    # a region in the grid's own metres: the pixels whose centres lie in it
    box = {"x": [0, 99_999], "y": [-4_200_000, -4_150_001]}
    one = open_source("radolan", {"path": str(radolan_dir / RW_EARLY), "region": box})
    assert one.sizes == {"time": 1, "y": 50, "x": 100}
    x, y = one["x"].values, one["y"].values
    assert x[0] == pytest.approx(37.83, abs=0.01) and x[-1] <= 99_999  # centres at -522962.17 m + k km
    assert y[0] <= -4_150_001 and y[-1] >= -4_200_000


# ----------------------------------------------------------------------------- products without a shared sample


def _radolan_bytes(product: str, when: datetime, shape: tuple[int, int], exponent: int, minutes: int,
                   body: bytes) -> bytes:
    """A RADOLAN binary composite written from DWD's format description: the ASCII header (product, time, radar id
    10000, month and year, BY total size, VS, SW, PR precision, INT minutes, GP rows x columns, MS sites), byte
    0x03, then the packed values (row 0 the southernmost)."""
    sites = "<boo,ros,emd,hnr>"

    def header(total: int) -> str:
        return (f"{product}{when:%d%H%M}10000{when:%m%y}BY{total:7d}VS 3SW   2.13.1PR E{exponent:+03d}"
                f"INT{minutes:4d}GP{shape[0]:4d}x{shape[1]:4d}MS{len(sites):3d}{sites}")

    total = len(header(0)) + 1 + len(body)
    return header(total).encode("ascii") + b"\x03" + body


def _words(shape: tuple[int, int], k: int) -> np.ndarray:
    """16-bit RADOLAN words (row 0 south): a rain cell moving east, dry around it, a no-data and a clutter patch."""
    rows, cols = np.mgrid[0: shape[0], 0: shape[1]]
    amount = 400 * np.exp(-(((cols - 300 - 3 * k) / 25.0) ** 2 + ((rows - 450) / 20.0) ** 2))  # 0.01 mm
    words = np.where(amount >= 1, np.round(amount), 0).astype("<u2")
    words[:50, :] = 0x2000  # bit 14: no data (the southern rows)
    words[600:610, 600:610] |= 0x8000  # bit 16: clutter
    return words


@pytest.mark.parametrize(("product", "shape"), [("RY", (900, 900)), ("YW", (1100, 900))])
def test_five_minute_radolan_amounts_open_as_rates_over_their_interval(product, shape, tmp_path):
    """RY (900 x 900) and YW (the 1100 x 900 grid): 0.01 mm per 5 minutes becomes mm/h (x 12), series of files."""
    end = datetime(2014, 8, 10, 20, 50)
    words = {}
    for k in range(6):
        t = end - timedelta(minutes=5 * (5 - k))
        words[t] = _words(shape, k)
        data = _radolan_bytes(product, t, shape, -2, 5, words[t].tobytes())
        name = f"raa01-{product.lower()}_10000-{t:%y%m%d%H%M}-dwd---bin"
        if k % 2:  # plain and gzip files side by side
            (tmp_path / name).write_bytes(data)
        else:
            with gzip.open(tmp_path / f"{name}.gz", "wb", compresslevel=1) as f:
                f.write(data)
    ds = open_source("radolan", {"path": str(tmp_path)})
    var = ds["precipitation"]
    assert ds.sizes == {"time": 6, "y": shape[0], "x": shape[1]} and ds.attrs["radolan_product"] == product
    assert ds.attrs["time_step"] == "5min" and ds.attrs["n_gaps"] == 0
    assert var.attrs["units"] == "mm h-1" and var.attrs["standard_name"] == "lwe_precipitation_rate"
    assert var.attrs["accumulation_minutes"] == 5.0 and "x 12" in var.attrs["comment"]
    for k, (t, w) in enumerate(words.items()):
        assert pd.Timestamp(ds["time"].values[k]) == pd.Timestamp(t)  # the header's time: the interval's end
        expected = ((w & 0x0FFF) * 0.01 * 12.0).astype(float)
        expected[(w & 0x2000) != 0] = np.nan
        expected[(w & 0x8000) != 0] = np.nan
        got = var.isel(time=k).values
        np.testing.assert_allclose(got, expected[::-1], rtol=1e-6, equal_nan=True)  # north up
    assert np.nanmax(got) == pytest.approx(48.0) and (got == 0).mean() > 0.5 and np.isnan(got[-50:]).all()
    # the grid: DWD's, 1 km, its lower-left edge where DWD's description puts it
    origin = {(900, 900): (-523462.2, -4658644.7), (1100, 900): (-443462.2, -4758644.7)}[shape]
    x, y = ds["x"].values, ds["y"].values
    assert np.allclose(np.diff(x), 1000.0) and np.allclose(np.diff(y), -1000.0)
    assert (x[0] - 500, y[-1] - 500) == pytest.approx(origin, abs=1.0)
    bx, by = _dwd_xy(*BERLIN)
    col, row = int(np.argmin(np.abs(x - bx))), int(np.argmin(np.abs(y - by)))
    assert ds["lat"].values[row, col] == pytest.approx(BERLIN[1], abs=0.01)
    assert ds["lon"].values[row, col] == pytest.approx(BERLIN[0], abs=0.01)
    # a file cut short is refused when the series is opened, named
    cut = tmp_path / f"raa01-{product.lower()}_10000-1408102030-dwd---bin"
    cut.write_bytes(cut.read_bytes()[:-900])
    with pytest.raises(DataError, match=rf"{cut.name} holds \d+ bytes; the {product} header's BY field says"):
        open_source("radolan", {"path": str(tmp_path)})


def test_radolan_reflectivity_through_the_catalog_is_a_rate_with_its_interval_and_zr(shared_data, radolan_dir,
                                                                                       monkeypatch):
    """RX and EX (RVP6 classes: dBZ = value / 2 - 32.5) through their catalog entries: rain rates by a recorded
    Z-R relation (the files give none: Marshall-Palmer), 'no echo' exactly 0, over a 5-minute interval."""
    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    catalog = open_catalog("radar")
    for name, filename, shape in (("radolan_rx", RX, (900, 900)), ("radolan_ex", EX, (1500, 1400))):
        ds = catalog.open(name)
        var = ds["precipitation"]
        assert ds.sizes == {"time": 1, "y": shape[0], "x": shape[1]}
        assert var.attrs["units"] == "mm h-1" and var.attrs["interval_minutes"] == 5.0
        assert (var.attrs["zr_a"], var.attrs["zr_b"]) == (200.0, 1.6)
        assert var.attrs["zr_origin"] == "Marshall-Palmer default" and var.attrs["no_echo_dbz"] == -32.5
        assert var.attrs["source"].startswith("radar (Deutscher Wetterdienst)")
        dbz = _raw(radolan_dir / filename)
        got = var.isel(time=0).values
        expected = (10 ** (dbz / 10) / 200.0) ** (1 / 1.6)
        expected[dbz == -32.5] = 0.0
        np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)
        assert (got == 0).mean() > 0.3 and np.isnan(got).any() and np.nanmax(got) > 10
        validate_cube(ds, source=name, sample_frames=1)
    # the relation is recorded in dBZ too, and a user's relation replaces it
    rx = open_source("radolan", {"path": str(radolan_dir / RX)})["reflectivity"]
    assert (rx.attrs["zr_a"], rx.attrs["zr_b"], rx.attrs["no_echo_dbz"]) == (200.0, 1.6, -32.5)
    mine = open_source("radolan", {"path": str(radolan_dir / RX), "reflectivity_to_rain_rate": True,
                                   "zr_a": 256.0, "zr_b": 1.42})["precipitation"]
    assert (mine.attrs["zr_a"], mine.attrs["zr_b"], mine.attrs["zr_origin"]) == (256.0, 1.42, "user")
    dbz = _raw(radolan_dir / RX)
    wet = dbz > 20
    np.testing.assert_allclose(mine.isel(time=0).values[wet], (10 ** (dbz[wet] / 10) / 256.0) ** (1 / 1.42),
                               rtol=1e-5)
    with pytest.raises(ConfigError, match="give both coefficients"):
        open_source("radolan", {"path": str(radolan_dir / RX), "reflectivity_to_rain_rate": True, "zr_b": 1.4})
