"""The RADOLAN adapter: DWD's binary composites (RW, RY, YW, RX, EX, SF and their kin) as a lazy, georeferenced cube.

DWD's RADOLAN composites come one time per file: an ASCII header (product,
time, interval, precision ``PR``, grid ``GP``, format version ``VS``, size
``BY``) and a packed array, usually gzip- or bzip2-compressed.  The file is
read by wradlib (``wradlib.io.radolan``: ``read_radolan_header``,
``parse_dwd_composite_header``, ``read_radolan_composite``), which decodes
every RADOLAN product, gzip or bzip2, and flags no-data, clutter and secondary
pixels; the grid's pixel centres come from
``wradlib.georef.get_radolan_coordinates``.  pysteps' ``dwd_radolan``
importer was not used: it
puts the grid on an ellipsoid instead of DWD's sphere, reads no compressed
file, stops with an IndexError on RX and EX, sets clutter to 0 (dry) and
returns 5-minute amounts unconverted without saying their unit.

Conventions of the cube (see ``docs/adapters.md``):

- the grid: DWD's polar stereographic projection, true scale at 60 deg N,
  central meridian 10 deg E, on a sphere of radius 6370.04 km (format
  versions below 5; WGS84 from version 5 on, as wradlib reads them); ``x``/``y``
  in metres (no false easting or northing), rows north to south, 2-D
  ``lat``/``lon``; the CF grid mapping ``crs``.  The coordinates and the
  projection are both in metres: a header in metres against a projection in
  kilometres (or the reverse) would put the grid near the South Pole;
- precipitation amounts (RW: mm per hour; RY/YW: per 5 minutes; SF: per 24
  hours) become ``precipitation`` in ``mm h-1``: the amount over the header's
  interval divided by that interval; the time labels the *end* of the
  interval, as the header's time does;
- reflectivity (RX, EX, WX: dBZ = value / 2 - 32.5) stays ``reflectivity``
  in dBZ unless ``reflectivity_to_rain_rate=True`` (Z = a R^b; the lowest
  class, -32.5 dBZ, is "no echo": 0 mm/h); RADOLAN headers give no Z-R
  relation, so Marshall-Palmer (a = 200, b = 1.6) unless ``zr_a``/``zr_b``
  say otherwise, recorded in the variable's attrs in dBZ too;
- 0 is dry; NaN is no data: RADOLAN's no-data flag (bit 14; RVP6 value 250),
  its clutter flag (bit 16; RVP6 value 249) and, with ``secondary="nan"``,
  its secondary-data flag (bit 13; kept as values by default).
"""

from __future__ import annotations

import bz2
import gzip
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import (
    GRID_MAPPING,
    RAIN_RATE_ATTRS,
    ZR,
    check_on_error,
    choose_zr,
    crs_attrs,
    dbz_to_rain_rate,
    finish_cube,
    parse_step,
    projected_coords,
    region_window,
    resolve_files,
    zr_attrs,
)
from geostp.data.feed_support import FeedSupport, serves_file_feed
from geostp.errors import ConfigError, DataError

__all__ = ["open_radolan", "radolan_crs", "read_header", "RadolanHeader", "AMOUNT_PRODUCTS", "REFLECTIVITY_PRODUCTS"]

#: Products whose values are precipitation amounts over the header's interval (mm after the PR factor).
AMOUNT_PRODUCTS = frozenset({"RW", "RY", "YW", "RZ", "RH", "RB", "RL", "RU", "EH", "EB", "EW", "EY", "EZ",
                             "SQ", "SH", "SF", "W1", "W2", "W3", "W4"})
#: Products of 8-bit RVP6 reflectivity classes: dBZ = value / 2 - 32.5; 249 clutter, 250 no data.
REFLECTIVITY_PRODUCTS = frozenset({"RX", "EX", "WX"})

#: The endings of RADOLAN binary file names DWD publishes (a folder stands for the files ending so).
FILE_SUFFIXES = ("-bin", "-bin.gz", "-bin.bz2", ".bin", ".bin.gz", ".bin.bz2")

#: DWD's sphere (RADOLAN format versions below 5), metres.
EARTH_RADIUS = 6370040.0

_RVP6_CLUTTER = 249  # 249 clutter, 250 no data; 251-255 are not data either
#: RVP6 class 0: "no echo", dry.
NO_ECHO_DBZ = -32.5


def radolan_crs(*, wgs84: bool = False):
    """DWD's RADOLAN projection in metres: polar stereographic, true scale at 60 deg N, central meridian 10 deg E.

    On DWD's sphere of radius 6370.04 km (``wgs84=False``, format versions below 5) or on the WGS84
    ellipsoid (format version 5 on), with no false easting or northing, as wradlib defines it.
    """
    import pyproj

    earth = "+ellps=WGS84" if wgs84 else f"+R={EARTH_RADIUS:.0f}"
    return pyproj.CRS.from_proj4(f"+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +x_0=0 +y_0=0 {earth} +units=m +no_defs")


# ----------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class RadolanHeader:
    """What a RADOLAN file's ASCII header says (parsed by wradlib)."""

    path: Path
    product: str
    time: datetime  # UTC, the end of the interval
    shape: tuple[int, int]  # rows, columns
    interval_seconds: int
    format_version: int
    precision: float
    header_bytes: int  # the ASCII header and its end byte (0x03)
    data_bytes: int  # the packed array that follows

    @property
    def total_bytes(self) -> int:
        """The uncompressed file's size, as the header's ``BY`` field gives it."""
        return self.header_bytes + self.data_bytes

    @property
    def quantity(self) -> str:
        return "reflectivity" if self.product in REFLECTIVITY_PRODUCTS else "precipitation"


def _wradlib_radolan():
    try:
        import wradlib.io.radolan as radolan
    except ImportError:
        raise ConfigError("the radolan adapter reads DWD's files with wradlib: pip install 'geostp[radar]' "
                          "(or pip install wradlib)") from None
    return radolan


def _open(p: Path):
    """The file, decompressed as its first bytes say (gzip, bzip2 or none), whatever its name."""
    with open(p, "rb") as f:
        magic = f.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(p, "rb")
    if magic == b"BZh":
        return bz2.open(p, "rb")
    return open(p, "rb")


_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, UnicodeDecodeError, zlib.error)


def read_header(path: str | os.PathLike[str]) -> RadolanHeader:
    """Read and parse a RADOLAN file's header (and nothing else).

    Raises
    ------
    DataError
        The file is missing, empty, not a RADOLAN binary composite, or its header is cut short.
    """
    radolan = _wradlib_radolan()
    p = Path(path)
    try:
        with _open(p) as f:
            text = radolan.read_radolan_header(f)
            if isinstance(text, dict):
                raise DataError(f"{p} is a RADOLAN ASCII file; expected the binary format (---bin)")
            attrs = radolan.parse_dwd_composite_header(text)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{p} has no readable RADOLAN header ({type(exc).__name__}: {exc}); expected a DWD "
                        "RADOLAN binary composite (an ASCII header ending in byte 0x03, then the data)") from None
    try:
        return RadolanHeader(
            path=p, product=str(attrs["producttype"]).upper(), time=attrs["datetime"],
            shape=(int(attrs["nrow"]), int(attrs["ncol"])), interval_seconds=int(attrs.get("intervalseconds", 0)),
            format_version=int(attrs.get("formatversion", 3)), precision=float(attrs.get("precision", 1.0)),
            header_bytes=len(text) + 1, data_bytes=int(attrs["datasize"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{p}: the RADOLAN header {text[:40]!r}... lacks {exc}; expected the product, time, "
                        "grid (GP) and size (BY) fields of DWD's composite format") from None


def _size_problem(h: RadolanHeader) -> str | None:
    """A file cut short, cheaply: its size (or gzip's recorded size) against the header's ``BY`` field."""
    p = h.path
    size = p.stat().st_size
    with open(p, "rb") as f:
        magic = f.read(3)
        if magic[:2] == b"\x1f\x8b":
            f.seek(max(0, size - 4))
            recorded = int.from_bytes(f.read(4), "little")  # gzip's ISIZE: the uncompressed size mod 2**32
            if recorded != h.total_bytes % 2**32:
                return (f"is a truncated or damaged gzip file (it records {recorded} uncompressed bytes; the "
                        f"{h.product} header's BY field says {h.total_bytes})")
            return None
    if magic != b"BZh" and size != h.total_bytes:
        return (f"holds {size} bytes; the {h.product} header's BY field says {h.total_bytes} "
                f"({h.header_bytes} of header and {h.data_bytes} of data): the file is cut short or padded")
    return None


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class _Series:
    """What every frame of a series shares: the first file's header, how to convert, where to cut."""

    first: RadolanHeader
    name: str  # the variable: precipitation or reflectivity
    zr: ZR | None  # reflectivity to rain rate, Z = a R^b
    secondary_nan: bool
    rows: slice  # north-up rows and columns of the region read
    cols: slice


def _read_values(h: RadolanHeader) -> tuple[np.ndarray, dict[str, Any]]:
    radolan = _wradlib_radolan()
    try:
        with _open(h.path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # wradlib's note on non-composite files; the header check names them
            arr, attrs = radolan.read_radolan_composite(f, missing=-9999)
    except _READ_ERRORS as exc:
        raise DataError(f"{h.path}: the RADOLAN {h.product} data ({h.quantity}) could not be read "
                        f"({type(exc).__name__}: {exc}); expected {h.data_bytes} bytes of data after the "
                        f"{h.header_bytes}-byte header, as its BY field says") from None
    return np.asarray(arr, np.float64), attrs


def _decode(h: RadolanHeader, series: _Series) -> np.ndarray:
    """One frame, north-up and cut to the region, in mm h-1 or dBZ; NaN where RADOLAN flags no data."""
    arr, attrs = _read_values(h)
    if arr.shape != series.first.shape:
        raise DataError(f"{h.path}: RADOLAN {h.product} holds a {arr.shape} grid; expected {series.first.shape}")
    bad = np.zeros(arr.size, bool)
    for key in ("nodatamask", "cluttermask") + (("secondary",) if series.secondary_nan else ()):
        flagged = attrs.get(key)
        if flagged is not None and np.size(flagged):
            bad[np.asarray(flagged).ravel()] = True
    if h.product in REFLECTIVITY_PRODUCTS:
        bad |= arr.ravel() >= _RVP6_CLUTTER * h.precision
        arr = arr / h.precision * 0.5 + NO_ECHO_DBZ  # RVP6 classes to dBZ
        if series.zr is not None:
            arr = dbz_to_rain_rate(arr, series.zr)  # DWD's lowest class (no echo) is 0
    else:
        arr = arr * (3600.0 / h.interval_seconds)  # mm per interval (PR applied by wradlib) to mm per hour
    arr[bad.reshape(arr.shape)] = np.nan
    return arr[::-1][series.rows, series.cols]  # RADOLAN's row 0 is the southernmost


def _check_frame(h: RadolanHeader, first: RadolanHeader) -> None:
    for what, got, want in (("product", h.product, first.product), ("grid", h.shape, first.shape),
                            ("interval", h.interval_seconds, first.interval_seconds),
                            ("format version", h.format_version, first.format_version)):
        if got != want:
            raise DataError(f"{h.path}: RADOLAN {what} {got!r}; expected {want!r} like the first file of the "
                            f"series ({first.path.name})")


def _read_frames(headers: np.ndarray, series: _Series, on_error: str, block_info=None) -> np.ndarray:
    start, stop = block_info[None]["array-location"][0]
    ny = len(range(series.first.shape[0])[series.rows])
    nx = len(range(series.first.shape[1])[series.cols])
    out = np.full((stop - start, ny, nx), np.nan, np.float32)
    for k, i in enumerate(range(start, stop)):
        h = headers[i]
        try:
            _check_frame(read_header(h.path), h)
            out[k] = _decode(h, series)
        except DataError as exc:
            if on_error == "gap":
                warnings.warn(f"{exc}; frame left as NaN (on_error='gap')", stacklevel=2)
                continue
            raise
    return out


# ----------------------------------------------------------------------------- the series


def _headers(files: Sequence[Path], product: str | None, on_error: str, check_files: bool,
             source: str) -> tuple[list[RadolanHeader], list[str], int]:
    """The headers of the series' files (of one product), those skipped, and how many of other products."""
    headers: list[RadolanHeader] = []
    skipped: list[str] = []
    for i, p in enumerate(files):
        try:
            h = read_header(p)
            problem = _size_problem(h) if check_files else None
            if problem:
                raise DataError(f"{p} {problem}")
        except DataError as exc:
            if on_error == "raise":
                raise DataError(f"{exc} (file {i + 1} of {len(files)} of {source}; pass on_error='gap' to leave it "
                                "out as a gap)") from None
            skipped.append(f"{p.name}: {exc}")
            continue
        headers.append(h)
    if not headers:
        raise DataError(f"none of the {len(files)} files of {source} could be read: {skipped[0]}")
    products = sorted({h.product for h in headers})
    if product is None:
        if len(products) > 1:
            raise ConfigError(f"{source} holds RADOLAN products {', '.join(products)}; pass product=... to choose one")
        product = products[0]
    kept = [h for h in headers if h.product == product]
    if not kept:
        raise DataError(f"none of the files of {source} holds RADOLAN product {product}; they hold "
                        f"{', '.join(products)}")
    if product not in AMOUNT_PRODUCTS | REFLECTIVITY_PRODUCTS:
        raise DataError(f"{kept[0].path}: RADOLAN product {product} is neither a precipitation amount nor a "
                        f"reflectivity; expected one of {', '.join(sorted(AMOUNT_PRODUCTS | REFLECTIVITY_PRODUCTS))}")
    return kept, skipped, len(headers) - len(kept)


def _series_headers(headers: list[RadolanHeader], start: Any, end: Any) -> list[RadolanHeader]:
    """Sorted by time, narrowed to start..end, one file per time, every file like the first."""
    t0 = pd.Timestamp(start).to_pydatetime() if start is not None else None
    t1 = pd.Timestamp(end).to_pydatetime() if end is not None else None
    if t0 is not None and t1 is not None and t0 > t1:
        raise ConfigError(f"empty time range: start {t0} is after end {t1}; expected start <= end")
    kept = sorted((h for h in headers if (t0 is None or h.time >= t0) and (t1 is None or h.time <= t1)),
                  key=lambda h: h.time)
    if not kept:
        raise DataError(f"none of the {len(headers)} RADOLAN {headers[0].product} files lies between {t0} and {t1}")
    for a, b in zip(kept, kept[1:], strict=False):
        if a.time == b.time:
            raise DataError(f"{a.path.name} and {b.path.name} both carry time {a.time}; expected one file per time")
    for h in kept[1:]:
        _check_frame(h, kept[0])
    if kept[0].product in AMOUNT_PRODUCTS and kept[0].interval_seconds <= 0:
        raise DataError(f"{kept[0].path}: RADOLAN {kept[0].product} gives no interval (INT); expected the minutes "
                        "the amount was gathered over")
    return kept


def _grid(h: RadolanHeader):
    """The CRS and the pixel centres (metres; ``y`` north to south) of a RADOLAN grid, from wradlib's definitions."""
    from wradlib.georef import get_radolan_coordinates

    crs = radolan_crs(wgs84=h.format_version >= 5)
    try:
        x, y = get_radolan_coordinates(h.shape[0], h.shape[1], crs=crs, mode="center")
    except ValueError as exc:
        raise DataError(f"{h.path}: RADOLAN {h.product} has a {h.shape[0]} x {h.shape[1]} grid that wradlib does "
                        f"not place ({exc}); expected one of DWD's composite grids (900 x 900, 1100 x 900, "
                        "1500 x 1400, 1200 x 1100, ...)") from None
    return crs, np.round(np.asarray(x, float), 3), np.round(np.asarray(y, float), 3)[::-1]


_SOURCE = "radar (Deutscher Wetterdienst), RADOLAN composite read by wradlib"


def _variable_attrs(h: RadolanHeader, zr: ZR, convert: bool) -> tuple[str, dict[str, Any]]:
    minutes = h.interval_seconds / 60.0
    if h.product in AMOUNT_PRODUCTS:
        return "precipitation", {
            **RAIN_RATE_ATTRS, "long_name": f"RADOLAN {h.product} rain rate from {minutes:g}-min accumulation",
            "source": _SOURCE, "accumulation_minutes": minutes,
            "comment": f"converted from mm per {minutes:g} min to mm h-1 (x {60.0 / minutes:g}); time labels the end "
                       "of the accumulation period"}
    if convert:
        return "precipitation", {
            **RAIN_RATE_ATTRS, "long_name": f"RADOLAN {h.product} rain rate from reflectivity", "source": _SOURCE,
            "interval_minutes": minutes, **zr_attrs(zr, converted=True)}
    attrs = zr_attrs(zr, converted=False)
    attrs["comment"] = f"dBZ = RVP6 value / 2 - 32.5; {attrs['comment']}"
    return "reflectivity", {"standard_name": "equivalent_reflectivity_factor", "units": "dBZ",
                            "long_name": f"RADOLAN {h.product} radar reflectivity", "source": _SOURCE,
                            "interval_minutes": minutes, **attrs}


def _files(path: Any) -> list[Path]:
    files = resolve_files(path, what="RADOLAN file", suffixes=FILE_SUFFIXES)
    return sorted(dict.fromkeys(files))


@serves_file_feed(FeedSupport(files_arg="path", step_arg="timestep", archive_args=("start", "end")))
# Over 80 lines: a long parameter docstring, then the open-time steps (headers, series, grid, region) in order.
def open_radolan(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    product: str | None = None,
    start: Any = None,
    end: Any = None,
    timestep: Any = None,
    region: dict[str, Any] | None = None,
    reflectivity_to_rain_rate: bool = False,
    zr_a: float | None = None,
    zr_b: float | None = None,
    secondary: str = "keep",
    on_error: str = "raise",
    check_files: bool = True,
    time_chunk: int = 1,
) -> xr.Dataset:
    """Open a series of DWD RADOLAN binary composites (one time per file) as a lazy cube, read by wradlib.

    Parameters
    ----------
    path
        A file, a glob pattern (``**`` allowed), a folder (its files ending in ``-bin``, ``-bin.gz`` or
        ``-bin.bz2``) or a list of these.  Files may be plain, gzip- or bzip2-compressed.
    product
        The RADOLAN product to read (``RW``, ``RY``, ``YW``, ``RX``, ``EX``, ``SF``, ...); files of other
        products are left out.  Needed only when the files hold several.
    start, end
        Narrow the series to these times (the header's time: the end of the accumulation interval).
    timestep
        The nominal step (minutes, or ``'5min'``, ``'1h'``); default: the most common difference.
    region
        Read only a box: ``{'lon': [W, E], 'lat': [S, N]}`` in degrees or ``{'x': [..], 'y': [..]}`` in
        metres of the RADOLAN grid (:func:`geostp.conventions.region_window`).
    reflectivity_to_rain_rate, zr_a, zr_b
        Convert RX/EX/WX reflectivity to rain rate with Z = a R^b (give both ``zr_a`` and ``zr_b``; RADOLAN
        files give no relation, so the default is Marshall-Palmer, a = 200, b = 1.6); otherwise dBZ is kept.
        DWD's lowest class (-32.5 dBZ, no echo) is 0 mm/h.  The relation is recorded in the variable's attrs
        (``zr_a``, ``zr_b``, ``zr_origin``) in dBZ too.
    secondary
        Pixels RADOLAN flags as secondary data (bit 13): ``'keep'`` their values (default) or ``'nan'``.
    on_error
        ``'raise'``: a file that is unreadable, cut short (its size, or gzip's recorded size, against the
        header's ``BY`` field) or unlike the first stops with a :class:`DataError` naming it; ``'gap'``:
        it is left out (``attrs['skipped_files']``), and a frame that fails only when computed is NaN.
    check_files
        Compare each file's size with its header at open time (cheap).
    time_chunk
        Frames (files) per dask chunk.

    Returns
    -------
    xarray.Dataset
        ``precipitation`` (mm h-1) or ``reflectivity`` (dBZ), dims ``time, y, x``, read lazily; see the
        module docstring.  Opening reads every file's header and nothing else.
    """
    check_on_error(on_error)
    if secondary not in ("keep", "nan"):
        raise ConfigError(f"secondary={secondary!r}; expected 'keep' (the values) or 'nan'")
    step = parse_step(timestep, what="timestep") if timestep is not None else None
    files = _files(path)
    source = str(path) if isinstance(path, (str, os.PathLike)) else f"{len(files)} RADOLAN files"
    wanted = str(product).strip().upper() if product is not None else None
    headers, skipped, n_other = _headers(files, wanted, on_error, check_files, source)
    headers = _series_headers(headers, start, end)
    first = headers[0]
    crs, x, y = _grid(first)
    rows, cols = slice(None), slice(None)
    if region is not None:
        rows, cols = region_window(region, x, y, crs, source=f"the RADOLAN {first.product} grid")
    zr = choose_zr(zr_a, zr_b, reader="wradlib", no_echo_dbz=NO_ECHO_DBZ)
    convert = reflectivity_to_rain_rate and first.product in REFLECTIVITY_PRODUCTS
    name, attrs = _variable_attrs(first, zr, convert)
    series = _Series(first, name, zr if convert else None, secondary == "nan", rows, cols)

    n = len(headers)
    ny, nx = len(y[rows]), len(x[cols])
    chunks = (tuple(min(time_chunk, n - i) for i in range(0, n, time_chunk)), (ny,), (nx,))
    items = np.empty(n, dtype=object)
    items[:] = headers
    data = da.map_blocks(_read_frames, items, series, on_error, chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0), np.float32))

    coords = projected_coords(x[cols], y[rows], crs)
    coords["time"] = ("time", np.array([h.time for h in headers], dtype="datetime64[ns]"), {"standard_name": "time"})
    masked = "no data (bit 14) and clutter (bit 16)" + (" and secondary data (bit 13)" if series.secondary_nan else "")
    if first.product in REFLECTIVITY_PRODUCTS:
        masked = "no data (RVP6 250) and clutter (249)"
    ds = xr.Dataset(
        {name: (("time", "y", "x"), data, {**attrs, "grid_mapping": GRID_MAPPING, "radolan_product": first.product}),
         GRID_MAPPING: ((), np.int32(0), crs_attrs(crs))},
        coords=coords,
        attrs={
            "title": f"DWD RADOLAN {first.product} composite",
            "institution": "Deutscher Wetterdienst (DWD)",
            "source": source,
            "Conventions": "CF-1.8",
            "geostp_adapter": "radolan",
            "reader": "wradlib",
            "radolan_product": first.product,
            "radolan_format_version": first.format_version,
            "earth_model": "WGS84 ellipsoid" if first.format_version >= 5 else "sphere of radius 6370.04 km",
            "missing_as_nan": masked,
            "secondary_data": "NaN" if series.secondary_nan else "kept as values",
            "time_source": "file headers (the end of the accumulation interval)",
            "region": repr(region) if region is not None else "",
            "skipped_files": "; ".join(skipped),
            "n_skipped_files": len(skipped),
            "n_other_product_files": n_other,
        },
    )
    return finish_cube(ds, step=step, source=source)
