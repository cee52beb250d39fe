"""The conventions every cube follows, beside the data model (:mod:`geostp.cube`) rather than inside an adapter.

What every adapter, the store, the nowcast feed and the plots share:

Time steps
    :func:`to_timedelta` reads an interval given as minutes (a number:
    pysteps' and the command line's convention) or as anything pandas reads
    (``'5min'``, ``'PT10M'``, a timedelta); :func:`parse_step` adds the check
    that it is positive, :func:`format_step` writes one back as the short
    string a cube's ``attrs['time_step']`` holds, and :func:`finish_cube`
    declares it on a cube and counts its gaps.
Georeferencing
    Rows run north to south, ``x``/``y`` are projection coordinates of pixel
    centres in metres (:func:`projected_coords`; degrees of longitude and
    latitude on a latitude-longitude grid, :func:`geographic_coords`),
    ``lat``/``lon`` are 2-D (:func:`lonlat_grid`), and the CRS is the CF
    grid-mapping variable :data:`GRID_MAPPING` (:func:`crs_attrs`).
    :func:`region_window` finds the rows and columns of a box (in lat/lon or
    in the grid's own units) that an adapter reads.
Units
    Rain is a rate, :data:`RAIN_RATE_ATTRS` (``lwe_precipitation_rate`` in
    ``mm h-1``); the unit spellings of amounts and rates that providers use are
    listed here for the adapters that convert them.  Reflectivity becomes a
    rate through one Z-R relation chosen by :func:`choose_zr` (the user's, else
    the one the reader reports, else Marshall-Palmer) and converted by
    :func:`dbz_to_rain_rate`, where "no echo" is exactly 0 (dry); every
    reflectivity variable records its relation (:func:`zr_attrs`).
Files
    :func:`resolve_files` turns a path, a glob pattern or a list into files
    (:func:`glob_problem` says why a pattern found none; :func:`glob_paths`
    matches a pattern with the folders that exist under their own name taken
    literally, so that a folder named ``runs [v2]`` is not read as a pattern) and
    :func:`times_from_names` reads the time in each file name by a pysteps-style
    ``fn_pattern``.  :func:`check_on_error` validates the corrupt-file policy
    every file adapter accepts.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.checks import a_type
from geostp.cube import find_gaps
from geostp.errors import ConfigError, DataError

__all__ = [
    "GRID_MAPPING",
    "RAIN_RATE_ATTRS",
    "AMOUNT_UNITS",
    "AMOUNT_NAMES",
    "RATE_PER_HOUR_UNITS",
    "RATE_PER_SECOND_UNITS",
    "KM_UNITS",
    "MARSHALL_PALMER",
    "ZR",
    "choose_zr",
    "dbz_to_rain_rate",
    "zr_attrs",
    "ON_ERROR_CHOICES",
    "to_timedelta",
    "parse_step",
    "format_step",
    "finish_cube",
    "crs_attrs",
    "lonlat_grid",
    "projected_coords",
    "geographic_coords",
    "REGION_KEYS",
    "region_window",
    "resolve_files",
    "glob_paths",
    "glob_problem",
    "is_zarr_store",
    "times_from_names",
    "check_on_error",
]

#: Name of the CF grid-mapping variable every adapter writes.
GRID_MAPPING = "crs"

#: CF attributes of a rain-rate variable.
RAIN_RATE_ATTRS = {"standard_name": "lwe_precipitation_rate", "units": "mm h-1"}

#: Units of precipitation amounts (accumulations), as CF files and providers spell them.
AMOUNT_UNITS = frozenset({"mm", "kg m-2", "kg/m2", "kg m**-2", "kg.m-2", "millimeter", "millimetre",
                          "millimeters", "millimetres"})
#: Spellings of metres, the units of some precipitation amounts (ERA5's total precipitation): 1 m = 1000 mm.
AMOUNT_METRE_UNITS = frozenset({"m", "metre", "meter", "metres", "meters"})
#: CF standard names of precipitation amounts.
AMOUNT_NAMES = frozenset({"precipitation_amount", "lwe_thickness_of_precipitation_amount",
                          "thickness_of_rainfall_amount", "rainfall_amount"})
#: Spellings of rain rates per hour and per second.
RATE_PER_HOUR_UNITS = frozenset({"mm h-1", "mm/h", "mm hr-1", "mm/hr", "mm h**-1", "kg m-2 h-1"})
RATE_PER_SECOND_UNITS = frozenset({"mm s-1", "mm/s", "kg m-2 s-1", "kg m**-2 s**-1", "kg/m2/s"})
#: Spellings of kilometres (projection coordinates some files give in km).
KM_UNITS = frozenset({"km", "kilometre", "kilometer", "kilometres", "kilometers"})

#: Marshall and Palmer's Z-R relation (Z = 200 R^1.6): the default where neither the user nor the reader gives one.
MARSHALL_PALMER = (200.0, 1.6)


@dataclass(frozen=True)
class ZR:
    """A Z-R relation Z = a R^b (Z in mm^6 m^-3, R in mm/h), where it came from, and the reflectivity of "no echo".

    ``no_echo_dbz``: reflectivity at or below it is "no echo" (the lowest class a format encodes), dry: 0 mm/h
    exactly, not the tiny rate the formula would give; None where the format has no such class.
    """

    a: float
    b: float
    origin: str  # who chose it: 'user', 'reader <name>' or 'Marshall-Palmer default'
    no_echo_dbz: float | None = None


def choose_zr(zr_a: float | None, zr_b: float | None, *, reported: tuple[Any, Any] = (None, None),
              reader: str, no_echo_dbz: float | None = None) -> ZR:
    """The Z-R relation of a reflectivity source: the user's (both ``zr_a`` and ``zr_b``), else the one the reader
    reports for its data (FMI's importer: a = 223, b = 1.53), else Marshall-Palmer (a = 200, b = 1.6)."""
    if (zr_a is None) != (zr_b is None):
        raise ConfigError(f"zr_a={zr_a!r}, zr_b={zr_b!r}: give both coefficients of Z = a R^b, or neither (then "
                          f"{reader}'s own relation, or Marshall-Palmer a=200, b=1.6, is used)")
    if zr_a is not None:
        a, b, origin = zr_a, zr_b, "user"
    elif reported[0] is not None and reported[1] is not None:
        a, b, origin = reported[0], reported[1], f"reader {reader}"
    else:
        a, b, origin = *MARSHALL_PALMER, "Marshall-Palmer default"
    try:
        a, b = float(a), float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        a = b = float("nan")
    if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
        raise ConfigError(f"Z-R coefficients a={a!r}, b={b!r} (from {origin}) are not positive numbers; expected "
                          "Z = a R^b with a, b > 0 (Marshall-Palmer: a=200, b=1.6)")
    return ZR(a, b, origin, None if no_echo_dbz is None else float(no_echo_dbz))


def dbz_to_rain_rate(dbz: np.ndarray, zr: ZR) -> np.ndarray:
    """Rain rate in mm/h from reflectivity in dBZ: R = (10^(dBZ/10) / a)^(1/b); "no echo" is 0, NaN stays NaN."""
    dbz = np.asarray(dbz, np.float64)
    rate = (10.0 ** (dbz / 10.0) / zr.a) ** (1.0 / zr.b)
    if zr.no_echo_dbz is not None:
        rate[dbz <= zr.no_echo_dbz] = 0.0
    return rate


def zr_attrs(zr: ZR, *, converted: bool) -> dict[str, Any]:
    """The attributes that record a reflectivity variable's Z-R relation (also when it stays in dBZ)."""
    attrs: dict[str, Any] = {"zr_a": zr.a, "zr_b": zr.b, "zr_origin": zr.origin}
    no_echo = ""
    if zr.no_echo_dbz is not None:
        attrs["no_echo_dbz"] = zr.no_echo_dbz
        no_echo = f"; reflectivity at or below {zr.no_echo_dbz:g} dBZ (no echo) is 0 (dry)"
    formula = f"R = (10^(dBZ/10) / {zr.a:g})^(1/{zr.b:g}) (Z = a R^b, {zr.origin})"
    attrs["comment"] = (f"converted from dBZ: {formula}{no_echo}" if converted
                        else f"reflectivity as read; rain rate would be {formula}{no_echo}")
    return attrs


#: The corrupt-file policies of the file adapters.
ON_ERROR_CHOICES = ("raise", "gap")


# ----------------------------------------------------------------------------- time steps


def to_timedelta(value: Any) -> pd.Timedelta:
    """An interval from minutes (a number) or anything :class:`pandas.Timedelta` reads ('5min', 'PT10M', a timedelta).

    The one place where "a number means minutes" is decided.  Raises :class:`TypeError` or
    :class:`ValueError` (as pandas does) for what is not an interval, a boolean included;
    callers turn those into their own message.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{value!r} is a boolean, not an interval")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return pd.Timedelta(minutes=float(value))
    return pd.Timedelta(value)


def parse_step(step: Any, *, what: str = "time step") -> pd.Timedelta:
    """A positive time step from minutes (a number, pysteps' convention) or a pandas/ISO interval string."""
    try:
        td = to_timedelta(step)
    except (ValueError, TypeError):
        td = None
    if td is None or pd.isna(td) or td <= pd.Timedelta(0):
        raise ConfigError(f"{what} {step!r} is not a positive interval; expected minutes (e.g. 5) "
                          "or an interval string (e.g. '5min', '1h', 'PT10M')")
    return td


def format_step(step: Any) -> str:
    """An interval as a short string that :class:`pandas.Timedelta` reads back ('5min', '1h', '30s')."""
    seconds = pd.Timedelta(step).total_seconds()
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}min"
    return f"{seconds:g}s"


def finish_cube(ds: xr.Dataset, *, step: pd.Timedelta | None, source: str) -> xr.Dataset:
    """Declare the nominal time step, count the missing steps and check the axis (raises on irregular times)."""
    times = ds["time"].values
    if step is None and times.size >= 2:
        diffs = np.diff(times.astype("datetime64[ns]"))
        values, counts = np.unique(diffs, return_counts=True)
        step = pd.Timedelta(values[np.argmax(counts)])
        ds.attrs["time_step_inferred"] = 1
    if step is not None:
        ds.attrs["time_step"] = format_step(step)
    gaps = find_gaps(ds, source=source)
    ds.attrs["n_missing_steps"] = int(sum(g.missing for g in gaps))
    ds.attrs["n_gaps"] = len(gaps)
    return ds


# ----------------------------------------------------------------------------- georeferencing


def crs_attrs(crs) -> dict[str, Any]:
    """CF grid-mapping attributes of a :class:`pyproj.CRS` (``CRS.to_cf()``), quietly, completed where CF asks
    for more than pyproj writes: a polar stereographic grid given by its standard parallel (KNMI, FMI, DWD's
    RADOLAN) gets its ``latitude_of_projection_origin``, the pole on that parallel's side."""
    with warnings.catch_warnings():
        # Oblique projections: pyproj notes CF has no skew-angle parameter (90 degrees for
        # Swiss LV03, so nothing is lost; the WKT written beside it keeps everything).
        warnings.filterwarnings("ignore", message=".*skew.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="pyproj")
        attrs = crs.to_cf()
    if attrs.get("grid_mapping_name") == "polar_stereographic" and "latitude_of_projection_origin" not in attrs:
        attrs["latitude_of_projection_origin"] = 90.0 if float(attrs.get("standard_parallel", 90.0)) >= 0 else -90.0
    return attrs


_LONLAT_CACHE: dict[tuple[str, bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}


def lonlat_grid(crs, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D longitude and latitude (float32, about 0.5 m) of the pixel centres ``x`` (columns) by ``y`` (rows).

    A pixel the projection puts on no place of the Earth (off a geostationary satellite's disc) is NaN in both.

    Computed a band of rows at a time, so the peak memory is the two float32 results.  The last few
    grids are remembered (copies are returned): a feed opened one file at a time, as the nowcast
    runner does, pays the projection once rather than once per file.
    """
    import pyproj

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    key = (pyproj.CRS(crs).to_wkt(), x.tobytes(), y.tobytes())
    if key in _LONLAT_CACHE:
        lon, lat = _LONLAT_CACHE[key]
        return lon.copy(), lat.copy()
    lon, lat = _lonlat_grid(crs, x, y)
    if len(_LONLAT_CACHE) >= 4:
        _LONLAT_CACHE.pop(next(iter(_LONLAT_CACHE)))
    _LONLAT_CACHE[key] = (lon, lat)
    return lon.copy(), lat.copy()


def _lonlat_grid(crs, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pyproj

    transformer = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon = np.empty((y.size, x.size), np.float32)
    lat = np.empty((y.size, x.size), np.float32)
    band = max(1, 2**16 // max(1, x.size))
    for r in range(0, y.size, band):
        yy = np.repeat(y[r: r + band], x.size)
        xx = np.tile(x, yy.size // x.size)
        lo, la = transformer.transform(xx, yy, errcheck=False)
        # a pixel that is on no place of the Earth (off a geostationary satellite's disc) comes back as inf:
        # NaN in both, so that maps, regions and validation see "no position" rather than a huge number
        off = ~(np.isfinite(lo) & np.isfinite(la))
        lo[off] = np.nan
        la[off] = np.nan
        lon[r: r + band] = np.reshape(lo, (-1, x.size))
        lat[r: r + band] = np.reshape(la, (-1, x.size))
    return lon, lat


def projected_coords(x: np.ndarray, y: np.ndarray, crs=None) -> dict[str, Any]:
    """Coordinates of a cube on a projected grid: ``x``/``y`` in metres, plus 2-D ``lat``/``lon`` when ``crs`` is given."""
    coords: dict[str, Any] = {
        "y": ("y", np.asarray(y, float), {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y",
                                          "long_name": "y of pixel centre"}),
        "x": ("x", np.asarray(x, float), {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X",
                                          "long_name": "x of pixel centre"}),
    }
    if crs is not None:
        lon, lat = lonlat_grid(crs, x, y)
        coords["lat"] = (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north"})
        coords["lon"] = (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east"})
    return coords


def geographic_coords(lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    """Coordinates of a cube on a latitude-longitude grid: ``x`` is longitude and ``y`` latitude in degrees.

    ``lat``/``lon`` are 2-D as on every other grid, as read-only broadcast views of the 1-D axes (a CONUS
    frame of 3500 x 7000 pixels would otherwise hold 200 MB of coordinates).
    """
    lon = np.asarray(lon, float)
    lat = np.asarray(lat, float)
    shape = (lat.size, lon.size)
    return {
        "y": ("y", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y",
                         "long_name": "latitude of pixel centre"}),
        "x": ("x", lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X",
                         "long_name": "longitude of pixel centre"}),
        "lat": (("y", "x"), np.broadcast_to(lat.astype(np.float32)[:, None], shape),
                {"standard_name": "latitude", "units": "degrees_north"}),
        "lon": (("y", "x"), np.broadcast_to(lon.astype(np.float32)[None, :], shape),
                {"standard_name": "longitude", "units": "degrees_east"}),
    }


#: The keys of a region: a box in latitude/longitude, or in the grid's own coordinates.
REGION_KEYS = ("lon", "lat", "x", "y")


def _region_range(region: Any, key: str) -> tuple[float, float] | None:
    value = region.get(key)
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ConfigError(f"region {key}={value!r} is not a range; expected two numbers [low, high] with low <= high")
    return lo, hi


def _inside(values: np.ndarray, bounds: tuple[float, float] | None, *, longitude: bool) -> np.ndarray:
    """Which values lie in [low, high]; longitudes compared on [-180, 180) (a box may cross the antimeridian)."""
    if bounds is None:
        return np.ones(values.shape, bool)
    lo, hi = bounds
    if not longitude:
        return (values >= lo) & (values <= hi)
    if hi - lo >= 360.0:
        return np.ones(values.shape, bool)
    v = (np.asarray(values, float) + 180.0) % 360.0 - 180.0
    lo, hi = (lo + 180.0) % 360.0 - 180.0, (hi + 180.0) % 360.0 - 180.0
    return (v >= lo) & (v <= hi) if lo <= hi else (v >= lo) | (v <= hi)


def region_window(region: Any, x: np.ndarray, y: np.ndarray, crs, *, source: str) -> tuple[slice, slice]:
    """The rows and columns of a grid that a region covers: the smallest window holding every pixel inside it.

    Parameters
    ----------
    region
        A mapping with ``lon`` and/or ``lat`` (degrees east/north: a box in latitude/longitude), or ``x``
        and/or ``y`` (the grid's own coordinates: metres on a projected grid, degrees on a
        latitude-longitude one), each ``[low, high]``; an axis left out is not cut.  A pixel is inside
        when its centre is.
    x, y
        The pixel centres of the whole grid (``x`` along the rows, ``y`` down the columns).
    crs
        The grid's CRS (a :class:`pyproj.CRS`): a box in lat/lon on a projected grid is found through
        the pixels' lat/lon.
    source
        Names the data in messages.

    Returns
    -------
    (rows, columns)
        Slices into the grid.
    """
    import pyproj

    keys = set(region) if isinstance(region, dict) else set()
    if not keys or keys - set(REGION_KEYS) or ({"lon", "lat"} & keys and {"x", "y"} & keys):
        raise ConfigError(f"region {region!r} is not a box; expected {{lon: [W, E], lat: [S, N]}} in degrees or "
                          "{x: [low, high], y: [low, high]} in the grid's own units (either key may be left out)")
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    geographic = crs is not None and pyproj.CRS(crs).is_geographic
    if {"x", "y"} & keys or geographic:
        xkey, ykey = ("x", "y") if {"x", "y"} & keys else ("lon", "lat")
        cols = _inside(x, _region_range(region, xkey), longitude=geographic)
        rows = _inside(y, _region_range(region, ykey), longitude=False)
    else:
        if crs is None:
            raise ConfigError(f"region {region!r} is in lat/lon but {source} has no CRS; give it in x/y")
        lon2d, lat2d = lonlat_grid(crs, x, y)
        inside = _inside(lon2d, _region_range(region, "lon"), longitude=True)
        inside &= _inside(lat2d, _region_range(region, "lat"), longitude=False)
        rows, cols = np.any(inside, axis=1), np.any(inside, axis=0)
    if not rows.any() or not cols.any():
        unit = "degrees" if geographic else "m"
        raise ConfigError(f"region {region!r} holds no pixel of {source} (its pixel centres span x "
                          f"{x.min():g}..{x.max():g} and y {y.min():g}..{y.max():g} {unit}); expected a box "
                          "that overlaps the grid")
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    return slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)


# ----------------------------------------------------------------------------- files


def resolve_files(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, what: str,
                  suffixes: Sequence[str] = (), argument: str = "path") -> list[Path]:
    """Files named by a path, a glob pattern (``**`` allowed) or a list of either; sorted, never empty.

    A path that exists is taken as it is, glob characters in its name included; a pattern is matched by
    :func:`glob_paths`.  A directory stands for the files in it whose name ends with one of ``suffixes``.
    Anything but a str, an ``os.PathLike`` or a list of them (``None``, a number, bytes) is a
    :class:`~geostp.errors.ConfigError` naming ``argument`` (the adapter's name for it).
    """
    expected = f"a {what}, a glob pattern or a list of them (str or pathlib.Path)"
    if isinstance(path, (str, os.PathLike)):
        items = [path]
    elif isinstance(path, Iterable) and not isinstance(path, (bytes, bytearray, dict)):
        items = list(path)
    else:
        raise ConfigError(f"{argument}={path!r:.80} is {a_type(path)}; expected {expected}")
    if not items:
        raise ConfigError(f"no {what} given: expected a file, a glob pattern or a list of files")
    bad = next((i for i in items if not isinstance(i, (str, os.PathLike))), None)
    if bad is not None:
        raise ConfigError(f"{argument}: {bad!r:.80} is {a_type(bad)}; expected {expected}")
    out: list[Path] = []
    for item in items:
        s = os.fspath(item)
        if not isinstance(s, str) or not s.strip() or "\0" in s:
            raise ConfigError(f"{argument}: {item!r:.80} is not a usable path (empty, bytes or with a NUL); expected "
                              f"{expected}")
        p = Path(s)
        if not p.exists() and glob.has_magic(s):
            found = [f for f in glob_paths(s) if f.is_file()]
            if not found:
                raise DataError(f"pattern {s} matched no {what} ({glob_problem(s)}); expected at least one file")
            out.extend(found)
        else:
            if not p.exists():
                raise DataError(f"{what} {p} does not exist")
            if p.is_dir() and suffixes and not is_zarr_store(p):
                found = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(tuple(suffixes)))
                if not found:
                    raise DataError(f"folder {p} holds no {what} (no file ending in {', '.join(suffixes)})")
                out.extend(found)
            else:
                out.append(p)
    return out


def _literal_split(pattern: str) -> tuple[Path | None, list[str]]:
    """The longest leading part of ``pattern`` that exists under its literal name, and the parts after it."""
    parts = Path(pattern).parts
    base: Path | None = None
    for i, part in enumerate(parts):
        candidate = Path(part) if base is None else base / part
        if not candidate.exists():
            return base, list(parts[i:])
        base = candidate
    return base, []


def glob_paths(pattern: str | os.PathLike[str]) -> list[Path]:
    """The paths a glob pattern (``**`` allowed) matches, sorted.

    The leading folders of the pattern that exist under their literal name are taken literally (escaped with
    :func:`glob.escape`), so a user's folder named ``runs [v2]`` or ``data*`` is that folder, not a pattern; the
    rest is matched as a pattern.  A path that exists as written is itself.
    """
    s = os.fspath(pattern)
    base, rest = _literal_split(s)
    if not rest:
        return [Path(s)] if base is not None else []
    joined = os.path.join(glob.escape(str(base)), *rest) if base is not None else os.path.join(*rest)
    return sorted(Path(p) for p in glob.glob(joined, recursive=True))


def glob_problem(pattern: str) -> str:
    """Why a glob pattern found nothing: the folder before its first wildcard is missing, or nothing in it matches."""
    base, rest = _literal_split(os.fspath(pattern))
    where = base if base is not None else Path()
    if not rest:
        return f"{where} exists but is not a file"
    if glob.has_magic(rest[0]):
        return f"nothing matches {os.path.join(*rest)} in {where}"
    return f"folder {where / rest[0]} does not exist" if len(rest) > 1 else f"{where / rest[0]} does not exist"


def is_zarr_store(p: Path) -> bool:
    """A folder that holds zarr (v2 or v3) metadata at its root."""
    return p.is_dir() and any((p / m).exists() for m in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


_CODES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}",
          "S": r"\d{2}", "j": r"\d{3}"}


def _pattern_regex(fn_pattern: str, fn_ext: str | None) -> tuple[re.Pattern[str], list[str]]:
    """A regex for pysteps' ``fn_pattern`` (strftime codes, ``?`` and ``*`` wildcards) plus ``.fn_ext``."""
    out, codes, i = [], [], 0
    while i < len(fn_pattern):
        c = fn_pattern[i]
        if c == "%" and i + 1 < len(fn_pattern):
            code = fn_pattern[i + 1]
            if code == "%":
                out.append("%")
            elif code in _CODES:
                out.append(f"({_CODES[code]})")
                codes.append(code)
            else:
                raise ConfigError(f"fn_pattern {fn_pattern!r}: time code %{code} is not supported; "
                                  f"use %{', %'.join(_CODES)}")
            i += 2
            continue
        out.append("." if c == "?" else ".*" if c == "*" else re.escape(c))
        i += 1
    if fn_ext:
        out.append(re.escape("." + fn_ext.lstrip(".")))
    return re.compile("^" + "".join(out) + "$"), codes


def times_from_names(paths: Sequence[Path], fn_pattern: str, fn_ext: str | None = None) -> list[datetime]:
    """The time encoded in each file name by ``fn_pattern`` (pysteps' convention: strftime codes, ``?`` wildcards).

    Raises
    ------
    DataError
        Naming the first file whose name does not match the pattern.
    """
    regex, codes = _pattern_regex(fn_pattern, fn_ext)
    if not {"Y", "y"} & set(codes):
        raise ConfigError(f"fn_pattern {fn_pattern!r} has no year (%Y or %y): file times cannot be read from names")
    fmt = "".join(f"%{c}" for c in codes)
    out = []
    for p in paths:
        m = regex.match(p.name)
        if m is None:
            raise DataError(f"file name {p.name} (in {p.parent}) does not match fn_pattern {fn_pattern!r}"
                            f"{' with extension ' + repr(fn_ext) if fn_ext else ''}; expected every file of the "
                            "series to follow it (narrow the glob pattern, or fix fn_pattern)")
        try:
            out.append(datetime.strptime("".join(m.groups()), fmt))
        except ValueError as exc:
            raise DataError(f"file name {p.name}: the time in it is not a valid date ({exc})") from None
    return out


def check_on_error(on_error: str) -> str:
    """Validate the corrupt-file policy argument of a file adapter."""
    if on_error not in ON_ERROR_CHOICES:
        raise ConfigError(f"on_error={on_error!r} is not a policy; expected one of {', '.join(ON_ERROR_CHOICES)} "
                          "('raise': stop with an error naming the file; 'gap': leave the frame out as a gap)")
    return on_error
