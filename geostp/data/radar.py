"""The radar adapter: a series of composite files read by a pysteps importer, as a lazy, georeferenced cube.

pysteps maintains readers for the common radar composite formats
(``pysteps.io.get_method(name, "importer")``: ``mch_gif``, ``knmi_hdf5``,
``odim_hdf5``, ``bom_rf3``, ``fmi_pgm``, ``mrms_grib``, ...).  This adapter
does not read any format itself: it finds the files (pysteps' archive
conventions or a glob pattern), takes the times from the file names, checks
each file's header cheaply, reads the grid from the importer's metadata of
the first file (the one frame read at open time), and hands every other
frame to dask, which calls the importer when (and only when) that time step
is computed.

Conventions of the cube (every format, see ``docs/adapters.md``):

- rows run north to south: row 0 is the northernmost, ``y`` decreases down
  the rows and ``x`` increases along them; both are projection coordinates
  of pixel centres in metres (on a latitude-longitude grid such as MRMS's,
  ``x`` is longitude and ``y`` latitude, in degrees, with a CF
  ``latitude_longitude`` grid mapping); ``lat``/``lon`` are 2-D; the CRS is
  the CF grid mapping variable ``crs``; ``region=`` reads only a box of the
  grid (in lat/lon or in the grid's own units);
- rain rate is ``precipitation`` in ``mm h-1`` (``lwe_precipitation_rate``);
  accumulations are divided by their period; reflectivity stays
  ``reflectivity`` in dBZ unless ``reflectivity_to_rain_rate=True`` (then
  Z = a R^b with the importer's own relation where it reports one, FMI's
  a=223, b=1.53 for instance, else Marshall-Palmer a=200, b=1.6; ``zr_a``/
  ``zr_b`` override it); the relation is recorded in the variable's attrs
  either way (``zr_a``, ``zr_b``, ``zr_origin``);
- no-data (outside radar range) is NaN, distinct from 0 (no rain); a
  format's "no echo" class (FMI's -32 dBZ, :data:`NO_ECHO_DBZ`) is 0 mm/h;
- the variable's ``long_name`` and ``source`` say what measured it (radar, or
  satellite for NWC SAF's CRR: :data:`IMPORTER_PLATFORMS`) and who made it
  (the importer's ``institution``);
- the time axis holds the frames found; missing frames are gaps that
  :func:`geostp.cube.find_gaps` reports, ``attrs['time_step']`` is the nominal
  interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geostp.checks import as_path
from geostp.conventions import (
    GRID_MAPPING,
    RAIN_RATE_ATTRS,
    ZR,
    check_on_error,
    choose_zr,
    crs_attrs,
    dbz_to_rain_rate,
    finish_cube,
    geographic_coords,
    glob_paths,
    glob_problem,
    parse_step,
    projected_coords,
    region_window,
    times_from_names,  # re-exported: it lived here before geostp.conventions
    zr_attrs,
)
from geostp.data.feed_support import FeedSupport, serves_file_feed
from geostp.errors import ConfigError, DataError, UnknownNameError

__all__ = ["open_radar", "importer_names", "find_radar_files", "times_from_names", "check_file", "NO_ECHO_DBZ",
           "IMPORTER_PLATFORMS"]

#: What each pysteps importer reads, for the cheap header check at open time.
IMPORTER_FORMATS = {
    "mch_gif": "gif",
    "knmi_hdf5": "hdf5",
    "odim_hdf5": "hdf5",
    "opera_hdf5": "hdf5",
    "dwd_hdf5": "hdf5",
    "mch_hdf5": "hdf5",
    "bom_rf3": "netcdf",
    "saf_crri": "netcdf",
    "fmi_pgm": "pgm",
    "fmi_geotiff": "tiff",
    "mrms_grib": "grib",
}

_MAGIC = {
    "hdf5": (b"\x89HDF\r\n\x1a\n",),
    "netcdf": (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n"),
    "gif": (b"GIF87a", b"GIF89a"),
    "pgm": (b"P5", b"P2"),
    "tiff": (b"II*\x00", b"MM\x00*"),
    "grib": (b"GRIB",),
}
_FORMAT_NAMES = {"hdf5": "HDF5", "netcdf": "netCDF", "gif": "GIF", "pgm": "PGM", "tiff": "TIFF", "grib": "GRIB"}

#: The reflectivity each importer gives a "no echo" pixel (its format's lowest class, or ODIM's ``undetect`` as
#: pysteps fills it): at or below it a pixel is dry, 0 mm/h, when reflectivity is converted to rain rate.
NO_ECHO_DBZ = {
    "fmi_pgm": -32.0,  # PGM value 0: dBZ = value / 2 - 32
    "fmi_geotiff": -32.0,
    "knmi_hdf5": -32.0,  # DBZH pixel 0: dBZ = value / 2 - 32
    "odim_hdf5": -30.0,  # pysteps sets DBZH 'undetect' to -30 dBZ
    "opera_hdf5": -30.0,
    "dwd_hdf5": -32.5,  # pysteps sets DBZH 'undetect' to -32.5 dBZ
    "dwd_radolan": -32.5,  # RVP6 class 0
}

#: What measured the data each importer reads, where it is not a radar (an importer may also report
#: ``platform`` in its metadata): the variable's ``long_name`` and ``source`` say so.
IMPORTER_PLATFORMS = {"saf_crri": "satellite"}


# ----------------------------------------------------------------------------- pysteps access


@contextlib.contextmanager
def _quiet():
    """pysteps prints where it found its configuration file on first import; keep stdout clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _pysteps_io():
    with _quiet():
        import pysteps.io
        import pysteps.io.interface
    return pysteps.io


def importer_names() -> list[str]:
    """The names of the importers pysteps offers (plugins included)."""
    return sorted(_pysteps_io().interface._importer_methods)


def _get_importer(name: str) -> Callable[..., Any]:
    pio = _pysteps_io()
    if not isinstance(name, str) or name.lower() not in pio.interface._importer_methods:
        raise UnknownNameError(f"unknown radar importer {name!r}; pysteps' importers are: "
                               f"{', '.join(importer_names())}")
    return pio.get_method(name.lower(), "importer")


# ----------------------------------------------------------------------------- finding files and times


def _time_argument(value: Any, argument: str) -> datetime | None:
    """A ``start``/``end`` argument as a datetime (None stays None); what is not a time is a ConfigError naming it."""
    if value is None:
        return None
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        t, problem = None, str(exc)
    else:
        problem = "NaT"
    if t is None or pd.isna(t):
        raise ConfigError(f"{argument}={value!r:.80} is not a time ({problem}); expected an ISO 8601 time such as "
                          "'2024-07-01T12:00'")
    return t.to_pydatetime()


def find_radar_files(
    *,
    root: str | os.PathLike[str] | None = None,
    path_fmt: str = "",
    fn_pattern: str | None = None,
    fn_ext: str | None = None,
    start: Any = None,
    end: Any = None,
    timestep: Any = None,
    pattern: str | Sequence[str] | None = None,
) -> tuple[list[Path], list[datetime], pd.Timedelta | None]:
    """Files and their times: pysteps' archive convention (``root``, ``start``..``end``) or a glob ``pattern``.

    Returns the existing files (missing time steps are simply absent), their
    times from the file names, and the nominal step when it was given.
    """
    step = parse_step(timestep, what="timestep") if timestep is not None else None
    t0, t1 = _time_argument(start, "start"), _time_argument(end, "end")
    if t0 is not None and t1 is not None and t0 > t1:
        raise ConfigError(f"empty time range: start {t0} is after end {t1}; expected start <= end")
    if fn_pattern is None:
        raise ConfigError("fn_pattern is required: the file-name pattern with strftime codes (pysteps' "
                          "convention, e.g. 'RAD_NL25_RAP_5min_%Y%m%d%H%M') that carries each file's time")
    if (root is None) == (pattern is None):
        raise ConfigError("give either root (with path_fmt, start, end and timestep: pysteps' archive layout) "
                          "or pattern (a glob of files), not both or neither")
    if root is not None:
        root = as_path(root, "root", expected="the root folder of a radar archive")
        if not root.is_dir():
            raise DataError(f"radar directory {root} does not exist; expected the root of the archive "
                            f"(files under {root}/{path_fmt or '.'}/{fn_pattern}.{fn_ext})")
        if t0 is None or t1 is None or step is None:
            raise ConfigError("with root=, start, end and timestep are required (pysteps' find_by_date walks "
                              "from start to end by timestep); or use pattern= to take every file found")
        if fn_ext is None:
            raise ConfigError("with root=, fn_ext (the file extension, e.g. 'h5') is required")
        n = int((pd.Timestamp(t1) - pd.Timestamp(t0)) // step) + 1
        with _quiet():
            from pysteps.io.archive import find_by_date

            try:
                names, stamps = find_by_date(t0, str(root), path_fmt, fn_pattern, fn_ext,
                                             step.total_seconds() / 60.0, num_next_files=n - 1, silent=True)
            except OSError:
                names, stamps = [None], [t0]
        found = [(Path(f), t) for f, t in zip(names, stamps, strict=True) if f is not None]
        if not found:
            raise DataError(f"no radar file in {root} between {t0} and {t1} (looked for "
                            f"{path_fmt or '.'}/{fn_pattern}.{fn_ext} every {step}); expected at least one")
        return [f for f, _ in found], [t for _, t in found], step

    patterns = [pattern] if isinstance(pattern, (str, os.PathLike)) else \
        list(pattern) if isinstance(pattern, Sequence) and not isinstance(pattern, bytes) else [pattern]
    for pat in patterns:
        as_path(pat, "pattern", expected="a glob of radar files, or a list of them")
    files: list[Path] = []
    for pat in patterns:
        pat = os.fspath(pat)
        hits = [p for p in glob_paths(pat) if p.is_file()]  # a folder named 'runs [v2]' is taken literally
        if not hits:
            raise DataError(f"radar file pattern {pat} matched no file ({glob_problem(pat)}); expected at least one")
        files.extend(hits)
    times = times_from_names(files, fn_pattern, fn_ext)
    pairs = sorted(zip(times, files, strict=True))
    if t0 is not None or t1 is not None:
        pairs = [(t, f) for t, f in pairs if (t0 is None or t >= t0) and (t1 is None or t <= t1)]
        if not pairs:
            raise DataError(f"none of the {len(files)} files matched by {pattern} lies between {t0} and {t1}")
    return [f for _, f in pairs], [t for t, _ in pairs], step


# ----------------------------------------------------------------------------- cheap file checks


#: Bytes of a file's start kept for the header checks (a PGM header with FMI's comment lines is under 1 kB).
_HEAD_BYTES = 1 << 16


def _content(path: Path, gzipped: bool) -> tuple[bytes, bytes, int, bool] | str:
    """The start, the last bytes and the size of a file's content, decompressed when it is gzip (and whether it was);
    or what is wrong.

    A gzip file is decompressed as a stream (a radar frame is a few MB: milliseconds), nothing kept but its start
    and end: that finds a file cut short (no end-of-stream marker) or damaged (its CRC-32 or recorded size differ).
    """
    with open(path, "rb") as f:
        magic = f.read(2)
        if magic != b"\x1f\x8b":
            if gzipped:
                return f"is not gzip-compressed (starts with {magic!r}); expected a .gz file (importer_kwargs gzipped)"
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            head = f.read(_HEAD_BYTES)
            f.seek(max(0, size - 4))
            return head, f.read(4), size, False
    import gzip
    import zlib

    head, tail, size = b"", b"", 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 16):
                if len(head) < _HEAD_BYTES:
                    head += chunk[: _HEAD_BYTES - len(head)]
                tail = (tail + chunk)[-4:]
                size += len(chunk)
    except EOFError:
        return f"is a truncated gzip file (it ends after {size} decompressed bytes, before gzip's end-of-stream marker)"
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError: a CRC or length mismatch, bad data
        return f"is a damaged gzip file ({exc})"
    return head, tail, size, True


def _pgm_size(head: bytes) -> tuple[int, str] | str:
    """The size a binary PGM must have by its header (magic, width, height, maxval; '#' comments allowed)."""
    tokens: list[bytes] = []
    i = 2  # after P5
    while len(tokens) < 3:
        while i < len(head) and head[i:i + 1].isspace():
            i += 1
        if head[i:i + 1] == b"#":  # a comment runs to the end of its line
            j = head.find(b"\n", i)
            if j < 0:
                return "has a PGM header that does not end"
            i = j + 1
            continue
        j = i
        while j < len(head) and head[j:j + 1].isdigit():
            j += 1
        if j == i:
            return f"has a PGM header without its width, height and maximum value (found {head[i:i + 12]!r})"
        tokens.append(head[i:j])
        i = j
    width, height, maxval = (int(t) for t in tokens)
    if not (width > 0 and height > 0 and 0 < maxval < 65536):
        return f"has a PGM header of {width} x {height} pixels with maximum value {maxval}; expected positive sizes"
    depth = 1 if maxval < 256 else 2
    return i + 1 + width * height * depth, f"{width} x {height} pixels of {depth} byte(s) after a {i + 1}-byte header"


def check_file(path: Path, fmt: str | None, *, gzipped: bool = False) -> str | None:
    """What is wrong with a file, cheaply; None if it looks sound.

    No frame is decoded: the size, the magic bytes of the format, its end marker (GIF trailer, GRIB '7777'),
    the size a binary PGM's header asks for, HDF5's end-of-file address; a gzip-compressed file (by its magic
    bytes) is checked whole as a gzip stream and its content as the format.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot be read ({exc})"
    if size == 0:
        return "is empty (0 bytes)"
    if fmt is None:
        return None
    try:
        content = _content(path, gzipped)
    except OSError as exc:
        return f"cannot be read ({exc})"
    if isinstance(content, str):
        return content
    head, tail, size, compressed = content
    inside = " (decompressed)" if compressed else ""
    if not any(head.startswith(m) for m in _MAGIC[fmt]):
        return (f"is not a {_FORMAT_NAMES[fmt]} file{inside} (starts with {head[:8]!r}; expected "
                f"{' or '.join(repr(m) for m in _MAGIC[fmt])})")
    if head.startswith(b"\x89HDF") and not compressed:
        import h5py

        try:  # the HDF5 library compares the file's size with the end-of-file address in its superblock
            h5py.File(path, "r").close()
        except OSError as exc:
            return f"is a damaged HDF5 file ({exc})"
    elif fmt == "gif" and tail[-1:] != b"\x3b":
        return f"is a truncated GIF{inside} ({size} bytes, no GIF trailer byte 0x3B at the end)"
    elif fmt == "grib" and tail != b"7777":
        return f"is a truncated GRIB file{inside} ({size} bytes, no '7777' end marker)"
    elif fmt == "pgm" and head.startswith(b"P5"):
        expected = _pgm_size(head)
        if isinstance(expected, str):
            return expected
        want, layout = expected
        if size != want:
            return (f"holds {size} bytes{inside}; its PGM header asks for {want} ({layout}): the frame is "
                    f"{'cut short' if size < want else 'longer than its header says'}")
    return None


# ----------------------------------------------------------------------------- grid and units


@dataclass(frozen=True)
class _Grid:
    crs: Any
    x: np.ndarray  # pixel centres, metres (degrees of longitude on a lat/lon grid), increasing
    y: np.ndarray  # pixel centres, metres (degrees of latitude), decreasing (row 0 = north)
    flip_rows: bool  # the importer's row 0 is the southernmost (yorigin 'lower')
    shape: tuple[int, int]  # the whole frame the importer returns
    extent: tuple[float, float, float, float]  # x1, y1, x2, y2 in the importer's units
    geographic: bool = False  # a latitude-longitude grid (MRMS)
    # the region read, in north-up rows and columns of the whole frame
    rows: slice = dataclasses.field(default_factory=lambda: slice(None))
    cols: slice = dataclasses.field(default_factory=lambda: slice(None))

    @property
    def window_shape(self) -> tuple[int, int]:
        return len(self.y[self.rows]), len(self.x[self.cols])


#: Spellings of degrees in an importer's ``cartesian_unit`` (a latitude-longitude grid).
_DEGREE_UNITS = ("degrees", "degree", "deg")


def _metre_crs(projection: str, unit: str, p: Path):
    """The importer's proj string as a CRS whose coordinates are metres (KNMI writes a km-sized ellipsoid).

    A latitude-longitude grid (``cartesian_unit`` degrees, MRMS) keeps its geographic CRS and degrees.
    """
    import pyproj

    try:
        crs = pyproj.CRS.from_proj4(projection) if projection.strip().startswith("+") else pyproj.CRS(projection)
    except pyproj.exceptions.CRSError as exc:
        raise DataError(f"{p}: the importer's projection {projection!r} is not a CRS pyproj accepts "
                        f"({exc})") from None
    if unit in _DEGREE_UNITS:
        if not crs.is_geographic:
            raise DataError(f"{p}: the importer reports cartesian_unit {unit!r} but a projected CRS "
                            f"({projection!r}); expected a latitude-longitude CRS with degrees")
        return crs, 1.0
    if crs.is_geographic:
        raise DataError(f"{p}: the importer reports a latitude-longitude CRS ({projection!r}) but cartesian_unit "
                        f"{unit!r}; expected 'degrees'")
    if unit == "m":
        return crs, 1.0
    if unit != "km":
        raise DataError(f"{p}: the importer reports cartesian_unit {unit!r}; expected 'm', 'km' or 'degrees'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "lose projection information": not for these proj strings
        params = dict(crs.to_dict())
    if "a" in params and float(params["a"]) < 1e5:  # an ellipsoid in km: coordinates come out in km
        for k in ("a", "b", "x_0", "y_0"):
            if k in params:
                params[k] = float(params[k]) * 1000.0
    elif params.get("units") == "km":
        params["units"] = "m"
    return pyproj.CRS.from_dict(params), 1000.0


def _centres(lo: float, hi: float, n: int, size: float, what: str, p: Path) -> np.ndarray:
    """Pixel centres from the extent the importer reports: its edges, or (BoM's importer) its first/last centres."""
    span = hi - lo
    if np.isclose(span, n * size, rtol=0, atol=0.01 * size):
        return lo + (np.arange(n) + 0.5) * size
    if np.isclose(span, (n - 1) * size, rtol=0, atol=0.01 * size):
        return lo + np.arange(n) * size
    raise DataError(f"{p}: the importer's {what} extent {lo}..{hi} does not fit {n} pixels of {size}; "
                    "expected the edges (or the first and last centres) of the grid")


def _grid(meta: dict[str, Any], shape: tuple[int, int], p: Path) -> _Grid:
    missing = [k for k in ("projection", "x1", "y1", "x2", "y2", "xpixelsize", "ypixelsize", "yorigin")
               if meta.get(k) is None]
    if missing:
        raise DataError(f"{p}: the importer's metadata lacks {', '.join(missing)}; the grid cannot be placed")
    crs, scale = _metre_crs(str(meta["projection"]), str(meta.get("cartesian_unit", "m")).strip().lower(), p)
    ny, nx = shape
    x1, x2 = sorted((float(meta["x1"]) * scale, float(meta["x2"]) * scale))
    y1, y2 = sorted((float(meta["y1"]) * scale, float(meta["y2"]) * scale))
    dx, dy = abs(float(meta["xpixelsize"])) * scale, abs(float(meta["ypixelsize"])) * scale
    # odim's extent comes from corner lat/lon round trips: keep millimetres (1e-7 degree: 1 cm), drop the noise
    digits = 7 if crs.is_geographic else 3
    x = np.round(_centres(x1, x2, nx, dx, "x", p), digits)
    y = np.round(_centres(y1, y2, ny, dy, "y", p), digits)[::-1]  # north to south
    origin = str(meta["yorigin"]).lower()
    if origin not in ("upper", "lower"):
        raise DataError(f"{p}: the importer reports yorigin {meta['yorigin']!r}; expected 'upper' or 'lower'")
    extent = tuple(float(meta[k]) for k in ("x1", "y1", "x2", "y2"))
    return _Grid(crs, x, y, origin == "lower", shape, extent, geographic=crs.is_geographic)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Conversion:
    name: str
    factor: float | None  # multiply (rates, accumulations); None: Z-R from dBZ or keep dBZ
    zr: ZR | None  # convert dBZ to mm/h with it
    unit: str
    attrs: dict[str, Any]


def _platform(name: str, meta: dict[str, Any]) -> str:
    """What measured the data: the importer's own word for it, else what geostp knows of the importer, else radar."""
    reported = meta.get("platform")
    return str(reported).strip() if isinstance(reported, str) and reported.strip() else \
        IMPORTER_PLATFORMS.get(name, "radar")


def _source_attrs(name: str, meta: dict[str, Any]) -> tuple[str, dict[str, str]]:
    platform = _platform(name, meta)
    institution = str(meta.get("institution") or "").strip()
    by = f" ({institution})" if institution else ""
    return platform, {"source": f"{platform}{by}, read by pysteps importer {name}"}


def _conversion(meta: dict[str, Any], p: Path, name: str, reflectivity_to_rain_rate: bool, zr_a: float | None,
                zr_b: float | None, no_echo_dbz: float | None) -> _Conversion:
    unit = str(meta.get("unit", "")).strip()
    platform, source = _source_attrs(name, meta)
    if unit in ("mm/h", "mm h-1"):
        return _Conversion("precipitation", 1.0, None, unit,
                           {**RAIN_RATE_ATTRS, "long_name": f"{platform} rain rate", **source})
    if unit == "mm":
        acc = meta.get("accutime")
        if acc is None or float(acc) <= 0:
            raise ConfigError(f"{p}: the importer returns accumulations (mm) but no accumulation time; pass "
                              "importer_kwargs={'accutime': MINUTES}")
        acc = float(acc)
        return _Conversion("precipitation", 60.0 / acc, None, unit, {
            **RAIN_RATE_ATTRS, "long_name": f"{platform} rain rate from {acc:g}-min accumulation", **source,
            "accumulation_minutes": acc,
            "comment": f"converted from mm per {acc:g} min to mm h-1 (x {60.0 / acc:g}); "
                       "time labels the end of the accumulation period"})
    if unit == "dBZ":
        zr = choose_zr(zr_a, zr_b, reported=(meta.get("zr_a"), meta.get("zr_b")), reader=name,
                       no_echo_dbz=no_echo_dbz if no_echo_dbz is not None else NO_ECHO_DBZ.get(name))
        if reflectivity_to_rain_rate:
            return _Conversion("precipitation", None, zr, unit, {
                **RAIN_RATE_ATTRS, "long_name": f"{platform} rain rate from reflectivity", **source,
                **zr_attrs(zr, converted=True)})
        return _Conversion("reflectivity", None, None, unit, {
            "standard_name": "equivalent_reflectivity_factor", "units": "dBZ",
            "long_name": f"{platform} reflectivity", **source, **zr_attrs(zr, converted=False)})
    raise DataError(f"{p}: the importer returns unit {unit!r}; expected 'mm/h', 'mm' or 'dBZ'")


def _convert(values: np.ndarray, conv: _Conversion) -> np.ndarray:
    if conv.factor is not None:
        return values * conv.factor
    if conv.zr is not None:
        return dbz_to_rain_rate(values, conv.zr)
    return values


# ----------------------------------------------------------------------------- reading frames


def _import(importer: Callable[..., Any], name: str, p: Path, kwargs: dict[str, Any]):
    from geostp.data._locks import hdf5_reading_direct

    # netCDF4 and the HDF5 library are not thread-safe and dask reads frames in threads: serialise
    # those reads with geostp's file lock and xarray's (the GIF and PGM readers need none).
    direct = IMPORTER_FORMATS.get(name, "hdf5") in ("hdf5", "netcdf", "grib")
    lock = hdf5_reading_direct() if direct else contextlib.nullcontext()
    try:
        with lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmin of an all-NaN frame inside pysteps
            out = importer(str(p), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"importer {name!r} rejected its arguments {kwargs} ({exc}); set importer_kwargs as "
                          "pysteps documents them for this importer") from None
    except Exception as exc:  # every reader raises its own kinds
        raise DataError(f"{p} could not be read by the {name} importer ({type(exc).__name__}: {exc}); expected "
                        f"a file in the format {name} reads") from None
    values, _, meta = out
    values = np.ma.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    # kept in the importer's float type here (MRMS: 3500 x 7000 float32); the region read becomes float64
    return np.asarray(np.ma.filled(values, np.nan)), meta


def _read_frames(paths: np.ndarray, importer: Callable[..., Any], name: str, kwargs: dict[str, Any],
                 grid: _Grid, conv: _Conversion, on_error: str, block_info=None) -> np.ndarray:
    start, stop = block_info[None]["array-location"][0]
    out = np.full((stop - start, *grid.window_shape), np.nan, np.float32)
    for k, i in enumerate(range(start, stop)):
        p = Path(paths[i])
        try:
            values, meta = _import(importer, name, p, kwargs)
            problem = None
            if values.shape != grid.shape:
                problem = f"has a {values.shape} grid; expected {grid.shape} like the first file of the series"
            elif tuple(float(meta.get(c, np.nan)) for c in ("x1", "y1", "x2", "y2")) != grid.extent:
                problem = "covers a different extent than the first file of the series"
            elif str(meta.get("unit", "")).strip() != conv.unit:
                problem = f"holds unit {meta.get('unit')!r}; expected {conv.unit!r} like the first file"
            if problem:
                raise DataError(f"{p} {problem}")
        except DataError as exc:
            if on_error == "gap":
                warnings.warn(f"{exc}; frame left as NaN (on_error='gap')", stacklevel=2)
                continue
            raise
        if grid.flip_rows:
            values = values[::-1]
        out[k] = _convert(values[grid.rows, grid.cols].astype(np.float64), conv)
    return out


# ----------------------------------------------------------------------------- the adapter


@serves_file_feed(FeedSupport(files_arg="pattern", time_pattern_arg="fn_pattern", step_arg="timestep",
                             extension_arg="fn_ext", archive_args=("root", "path_fmt", "start", "end")))
# Over 80 lines: a long parameter docstring and the archive-or-pattern file discovery of pysteps' importers.
def open_radar(
    importer: str,
    *,
    root: str | os.PathLike[str] | None = None,
    path_fmt: str = "",
    fn_pattern: str | None = None,
    fn_ext: str | None = None,
    start: Any = None,
    end: Any = None,
    timestep: Any = None,
    pattern: str | Sequence[str] | None = None,
    importer_kwargs: dict[str, Any] | None = None,
    region: dict[str, Any] | None = None,
    reflectivity_to_rain_rate: bool = False,
    zr_a: float | None = None,
    zr_b: float | None = None,
    no_echo_dbz: float | None = None,
    on_error: str = "raise",
    check_files: bool = True,
    time_chunk: int = 1,
) -> xr.Dataset:
    """Open a series of radar composite files as a lazy cube, through a pysteps importer.

    Parameters
    ----------
    importer
        A pysteps importer name (``mch_gif``, ``knmi_hdf5``, ``odim_hdf5``,
        ``bom_rf3``, ``fmi_pgm``, ``mrms_grib``, ...).
    root, path_fmt, fn_pattern, fn_ext, start, end, timestep
        pysteps' archive convention (as in its ``pystepsrc`` data sources):
        files ``root/<start:path_fmt>/<fn_pattern>.<fn_ext>`` looked up every
        ``timestep`` (minutes, or a string like ``'5min'``) from ``start`` to
        ``end`` with ``pysteps.io.archive.find_by_date``.
    pattern
        Instead of ``root``: a glob of files (``**`` allowed); ``fn_pattern``
        and ``fn_ext`` then read each file's time from its name, and
        ``start``/``end`` optionally narrow the range.
    importer_kwargs
        Keyword arguments of the importer (e.g. ``{'product': 'AQC', 'unit':
        'mm', 'accutime': 5}`` for ``mch_gif``; ``{'window_size': 1}`` for
        ``mrms_grib``, whose default averages blocks of 4 x 4 pixels).
    region
        Read only a box of the grid: ``{'lon': [W, E], 'lat': [S, N]}`` in
        degrees, or ``{'x': [low, high], 'y': [low, high]}`` in the grid's own
        units (metres; degrees on a latitude-longitude grid); an axis left out
        is not cut.  The smallest window of whole pixels whose centres cover
        the box (:func:`geostp.conventions.region_window`).  Each frame is
        still decoded whole by the importer, but only the window is kept.
    reflectivity_to_rain_rate, zr_a, zr_b
        Convert reflectivity (dBZ) to rain rate with Z = a R^b; otherwise dBZ
        is kept.  Default: the relation the importer reports for its data
        (``fmi_pgm``: a=223, b=1.53; ``mch_gif``: a=316, b=1.5), else
        Marshall-Palmer (a=200, b=1.6); give both ``zr_a`` and ``zr_b`` to
        override it.  The variable's attrs record the relation and where it
        came from (``zr_a``, ``zr_b``, ``zr_origin``), in dBZ too.
    no_echo_dbz
        Reflectivity at or below which a pixel is "no echo" and becomes 0
        mm/h when converted; default the importer's own no-echo class
        (:data:`NO_ECHO_DBZ`: -32 dBZ for FMI), none for other importers.
    on_error
        A file that fails the header check at open time (empty, wrong magic
        bytes, a truncated HDF5 or GIF) or that the importer cannot read:
        ``'raise'`` (default) stops with a :class:`DataError` naming it;
        ``'gap'`` leaves it out of the time axis (listed in
        ``attrs['skipped_files']``). A frame that fails only when computed
        becomes NaN with a warning under ``'gap'``.
    check_files
        Check each file's header at open time (cheap: no frame is decoded).
    time_chunk
        Frames (files) per dask chunk; 1 reads exactly the time steps asked for.

    Returns
    -------
    xarray.Dataset
        ``precipitation`` (mm h-1) or ``reflectivity`` (dBZ), dims ``time, y, x``,
        lazily read; see the module docstring for the conventions.

    Notes
    -----
    Opening reads the header of every file (``check_files``) and *one* frame,
    through the importer, for the grid and units; frames are read when computed.
    """
    check_on_error(on_error)
    name = str(importer).lower()
    importer_fn = _get_importer(name)
    kwargs = dict(importer_kwargs or {})
    if name == "mrms_grib" and kwargs.get("extent") is not None:
        # pysteps reports the extent asked for, not the pixels it kept: the grid would be off by up to a pixel
        raise ConfigError("importer_kwargs 'extent' of mrms_grib places the grid by the extent asked for rather "
                          "than by the pixels kept; use region={'lon': [W, E], 'lat': [S, N]} instead")
    files, times, step = find_radar_files(root=root, path_fmt=path_fmt, fn_pattern=fn_pattern, fn_ext=fn_ext,
                                          start=start, end=end, timestep=timestep, pattern=pattern)
    source = str(root if root is not None else pattern)

    dup = [files[i] for i in range(1, len(times)) if times[i] == times[i - 1]]
    if dup:
        i = files.index(dup[0])
        raise DataError(f"{files[i - 1].name} and {files[i].name} both carry time {times[i]}; expected one "
                        "file per time (narrow the pattern)")

    skipped: list[str] = []
    good = np.ones(len(files), bool)
    if check_files:
        fmt = IMPORTER_FORMATS.get(name)
        for i, p in enumerate(files):
            problem = check_file(p, fmt, gzipped=bool(kwargs.get("gzipped", False)))
            if problem is None:
                continue
            if on_error == "raise":
                kind = _FORMAT_NAMES.get(fmt or "", "radar")
                raise DataError(f"{p} {problem}; expected a whole {kind} file for importer {name}; it is frame "
                                f"{i + 1} of {len(files)} of {source} (pass on_error='gap' to leave it out as a gap)")
            good[i] = False
            skipped.append(f"{p.name}: {problem}")

    template = None
    for i in np.nonzero(good)[0]:  # the one frame read at open time: grid and units
        try:
            values, meta = _import(importer_fn, name, files[i], kwargs)
            template = (files[i], values.shape, meta)
            break
        except DataError as exc:
            if on_error == "raise":
                raise DataError(f"{exc} (frame {i + 1} of {len(files)} of {source}; pass on_error='gap' to "
                                "leave it out)") from None
            good[i] = False
            skipped.append(f"{files[i].name}: {exc}")
    if template is None:
        raise DataError(f"none of the {len(files)} files of {source} could be read: {skipped[0]}")
    first, shape, meta = template
    grid = _grid(meta, shape, first)
    if region is not None:
        rows, cols = region_window(region, grid.x, grid.y, grid.crs, source=f"the grid of {first}")
        grid = dataclasses.replace(grid, rows=rows, cols=cols)
    conv = _conversion(meta, first, name, reflectivity_to_rain_rate, zr_a, zr_b, no_echo_dbz)

    files = [f for f, g in zip(files, good, strict=True) if g]
    times = [t for t, g in zip(times, good, strict=True) if g]
    paths = np.array([str(f) for f in files], dtype=object)
    n = len(paths)
    ny, nx = grid.window_shape
    chunks = (tuple(min(time_chunk, n - i) for i in range(0, n, time_chunk)), (ny,), (nx,))
    data = da.map_blocks(_read_frames, paths, importer_fn, name, kwargs, grid, conv, on_error,
                         chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))

    x, y = grid.x[grid.cols], grid.y[grid.rows]
    coords = geographic_coords(x, y) if grid.geographic else projected_coords(x, y, grid.crs)
    coords["time"] = ("time", np.array(times, dtype="datetime64[ns]"), {"standard_name": "time"})
    attrs = {**conv.attrs, "grid_mapping": GRID_MAPPING}
    ds = xr.Dataset(
        {conv.name: (("time", "y", "x"), data, attrs), GRID_MAPPING: ((), np.int32(0), crs_attrs(grid.crs))},
        coords=coords,
        attrs={
            "title": f"{_platform(name, meta)} composite read by pysteps importer {name}",
            "institution": str(meta.get("institution", "")),
            "source": source,
            "Conventions": "CF-1.8",
            "geostp_adapter": "radar",
            "importer": name,
            "importer_kwargs": repr(kwargs),
            "region": repr(region) if region is not None else "",
            "region_window": (f"rows {grid.rows.start}:{grid.rows.stop}, columns {grid.cols.start}:{grid.cols.stop} "
                              f"of {shape[0]} x {shape[1]}") if region is not None else "",
            "time_source": "file names (fn_pattern)",
            "skipped_files": "; ".join(skipped),
            "n_skipped_files": len(skipped),
            "corrupt_file_check": ("header of every file at open time (size, magic bytes, HDF5 end of file, "
                                   "GIF trailer); importer errors at read time name the file")
            if check_files else "importer errors at read time name the file",
        },
    )
    return finish_cube(ds, step=step, source=source)

