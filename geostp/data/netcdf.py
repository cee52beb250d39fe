"""The generic adapter for CF netCDF files and zarr stores.

``open_netcdf`` opens one CF file (or zarr store) with a time dim, or a series
of files holding one or a few time steps each (as radar archives do), as a
lazy cube: the time of every file is read from its contents at open time (a
header read of the time variable only), the data of a time step when it is
computed.  The grid comes from the file's own CF grid mapping and projection
coordinates; the conventions every adapter follows (north-up rows, x/y in
metres at pixel centres, 2-D lat/lon, rain in mm/h, time steps, file
resolution) live in :mod:`geostp.conventions`; their names stay importable
from here for one release.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import (  # re-exported: these names were importable from here before
    AMOUNT_METRE_UNITS,
    AMOUNT_NAMES,
    AMOUNT_UNITS,
    GRID_MAPPING,
    KM_UNITS,
    ON_ERROR_CHOICES,
    RAIN_RATE_ATTRS,
    RATE_PER_HOUR_UNITS,
    RATE_PER_SECOND_UNITS,
    check_on_error,
    crs_attrs,
    finish_cube,
    format_step,
    glob_problem,
    is_zarr_store,
    lonlat_grid,
    parse_step,
    projected_coords,
    resolve_files,
)
from geostp.data._locks import hdf5_reading
from geostp.data.feed_support import FeedSupport, serves_file_feed
from geostp.errors import ConfigError, DataError

__all__ = [
    "open_netcdf",
    "GRID_MAPPING",
    "RAIN_RATE_ATTRS",
    "crs_attrs",
    "projected_coords",
    "lonlat_grid",
    "format_step",
    "parse_step",
    "resolve_files",
    "glob_problem",
    "check_on_error",
    "finish_cube",
    "ON_ERROR_CHOICES",
]

# ----------------------------------------------------------------------------- the generic CF adapter


@dataclass
class _Layout:
    """Where things are in the source files and what to do with them."""

    variables: list[str]
    ydim: str
    xdim: str
    time_name: str | None
    flip_y: bool
    flip_x: bool


# Over 80 lines: more than half is the numpydoc parameter list.
@serves_file_feed(FeedSupport(files_arg="path", step_arg="time_step", archive_args=("start", "end")))
def open_netcdf(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    variable: str | Sequence[str] | None = None,
    *,
    time: str | None = None,
    start: Any = None,
    end: Any = None,
    time_step: Any = None,
    accumulation_minutes: float | None = None,
    accumulation_start: str | None = None,
    to_rain_rate: bool = True,
    engine: str | None = None,
    on_error: str = "raise",
    duplicates: str = "raise",
    time_chunk: int = 1,
) -> xr.Dataset:
    """Open a CF netCDF file, a series of files, or a zarr store as a lazy cube.

    Parameters
    ----------
    path
        A file or zarr store with a time dim; or a glob pattern, a folder, or a
        list of files that each hold one (or a few) time steps of the same grid.
    variable
        The data variable(s) to keep; default every variable with the two
        spatial dims.
    time
        The time variable: default the ``time`` dim coordinate, else the
        variable whose ``standard_name`` is ``time`` (BoM's ``valid_time``).
    start, end
        Keep only times in ``[start, end]``.
    time_step
        The nominal interval (minutes or a string like ``'10min'``); default the
        most common difference of the times found.
    accumulation_minutes, accumulation_start
        For precipitation *amounts* (units ``mm``/``kg m-2``): the accumulation
        period in minutes, or the name of the variable holding the start of the
        accumulation period (whose time is subtracted from ``time``). CF time
        bounds are used when neither is given.
    to_rain_rate
        Convert amounts (and per-second rates) to ``lwe_precipitation_rate``
        in ``mm h-1``.
    engine
        The xarray engine (default: xarray's choice).
    on_error
        ``'raise'`` (default): a file that cannot be opened is a
        :class:`DataError` naming it; ``'gap'``: it is left out (a gap in the
        time axis, recorded in ``attrs['skipped_files']``), and a frame that
        fails when read later becomes NaN with a warning.
    duplicates
        Two files with the same time: ``'raise'`` (default) or ``'first'``.
    time_chunk
        Frames per dask chunk of a multi-file series.

    Returns
    -------
    xarray.Dataset
        A cube: dims ``time, y, x`` with rows north to south (``y``
        decreasing), ``x``/``y`` in metres at pixel centres (degrees for
        latitude-longitude grids), the grid mapping ``crs``, 2-D ``lat``/``lon``
        and ``attrs['time_step']``.
    """
    check_on_error(on_error)
    if duplicates not in ("raise", "first"):
        raise ConfigError(f"duplicates={duplicates!r}; expected 'raise' or 'first'")
    files = resolve_files(path, what="netCDF file", suffixes=(".nc", ".nc4", ".netcdf", ".cdf", ".h5"))
    step = parse_step(time_step) if time_step is not None else None
    t0 = pd.Timestamp(start) if start is not None else None
    t1 = pd.Timestamp(end) if end is not None else None
    if t0 is not None and t1 is not None and t0 > t1:
        raise ConfigError(f"empty time range: start {t0} is after end {t1}")
    source = str(path) if isinstance(path, (str, os.PathLike)) else f"{files[0]} (+{len(files) - 1} files)"

    if len(files) == 1:
        ds = _open_dataset(files[0], engine, chunks={})
        layout = _layout(ds, variable, time, files[0])
        if layout.time_name is None:
            raise DataError(f"{files[0]}: no time coordinate found (no 'time' dim and no variable with "
                            "standard_name 'time'); pass time=NAME")
        ds = _time_as_dim(ds, layout)
        minutes = _accumulation(ds, layout, accumulation_minutes, accumulation_start, files[0])
        if t0 is not None or t1 is not None:
            ds = ds.sel(time=slice(t0, t1))
        if ds.sizes["time"] == 0:
            raise DataError(f"{files[0]} holds no time step between {t0} and {t1}")
        cube = _standardise(ds, layout, minutes, to_rain_rate, files[0])
        cube.attrs["source_files"] = 1
        return finish_cube(cube, step=step, source=source)
    return _open_series(files, variable, time, t0, t1, step, accumulation_minutes, accumulation_start,
                        to_rain_rate, engine, on_error, duplicates, time_chunk, source)


def _open_dataset(p: Path, engine: str | None, chunks: Any) -> xr.Dataset:
    cut = classic_size_problem(p) if p.is_file() else None
    if cut:
        raise DataError(f"{p} {cut}; expected a whole netCDF file")
    kw: dict[str, Any] = {"chunks": chunks}
    if engine is not None:
        kw["engine"] = engine
    elif is_zarr_store(p):
        kw["engine"] = "zarr"
    try:
        with warnings.catch_warnings():
            # stores without consolidated metadata (as geostp.ingest writes them) open fine without it
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
            return xr.open_dataset(p, **kw)
    except Exception as exc:  # netCDF4, h5netcdf, zarr and xarray raise many kinds
        raise DataError(f"{p} could not be opened as a netCDF file or zarr store ({type(exc).__name__}: {exc}); "
                        "expected a CF netCDF (or HDF5-based netCDF-4) file or a zarr store") from None


def _axis_of(ds: xr.Dataset, dim: str) -> str | None:
    """'x', 'y' or None for a dim, from its coordinate's CF attributes (or its name)."""
    if dim in ds.coords:
        a = ds[dim].attrs
        sn = str(a.get("standard_name", "")).lower()
        axis = str(a.get("axis", "")).upper()
        if sn in ("projection_x_coordinate", "longitude", "grid_longitude") or axis == "X":
            return "x"
        if sn in ("projection_y_coordinate", "latitude", "grid_latitude") or axis == "Y":
            return "y"
    name = dim.lower()
    if name in ("x", "lon", "longitude", "easting"):
        return "x"
    if name in ("y", "lat", "latitude", "northing"):
        return "y"
    return None


def _layout(ds: xr.Dataset, variable: str | Sequence[str] | None, time: str | None, p: Path) -> _Layout:
    candidates = {}
    for v in ds.data_vars:
        axes = {_axis_of(ds, d) for d in ds[v].dims}
        if {"x", "y"} <= axes:
            candidates[v] = ds[v].dims
    if variable is None:
        variables = list(candidates)
        if not variables:
            raise DataError(f"{p}: no variable on a y/x grid; found "
                            f"{ {v: ds[v].dims for v in ds.data_vars} }; expected a variable with projection "
                            "coordinates (standard_name projection_x/y_coordinate) or lat/lon dims")
    else:
        variables = [variable] if isinstance(variable, str) else list(variable)
        for v in variables:
            if v not in ds.data_vars:
                raise DataError(f"{p}: no variable {v!r}; the file has {', '.join(map(str, ds.data_vars))}")
            if v not in candidates:
                raise DataError(f"{p}: variable {v!r} has dims {ds[v].dims}, none recognised as y and x; "
                                "expected dims with projection_x/y_coordinate (or lat/lon) coordinates")
    dims = ds[variables[0]].dims
    ydim = next(d for d in dims if _axis_of(ds, d) == "y")
    xdim = next(d for d in dims if _axis_of(ds, d) == "x")
    for v in variables[1:]:
        if set(ds[v].dims) != set(dims):
            raise DataError(f"{p}: variables {variables[0]!r} {dims} and {v!r} {ds[v].dims} have different dims")
    time_name = time
    if time_name is None:
        if "time" in ds.dims or "time" in ds.variables:
            time_name = "time"
        else:
            named = [n for n in ds.variables if str(ds[n].attrs.get("standard_name", "")).lower() == "time"]
            time_name = named[0] if named else None
    elif time_name not in ds.variables:
        raise DataError(f"{p}: no time variable {time_name!r}; the file has {', '.join(map(str, ds.variables))}")
    time_dims = set(ds[time_name].dims) if time_name is not None and time_name in ds.variables else set()
    for v in variables:  # a level, an ensemble member, a band: the cube has no place for it
        extra = {d: int(ds.sizes[d]) for d in ds[v].dims if d not in (ydim, xdim) and d not in time_dims}
        if extra:
            shown = ", ".join(f"{d!r} (length {n})" for d, n in extra.items())
            raise DataError(f"{p}: variable {v!r} has dims {ds[v].dims}: {shown} is not its time "
                            f"({time_name or 'none found'!r}), y ({ydim!r}) or x ({xdim!r}); expected dims (time, y, "
                            "x), or (y, x) with a scalar time: select one level first (xarray: ds.isel(level=0)) and "
                            "write that")
    y = np.asarray(ds[ydim].values, float) if ydim in ds.coords else None
    x = np.asarray(ds[xdim].values, float) if xdim in ds.coords else None
    flip_y = bool(y is not None and y.size > 1 and y[-1] > y[0])
    flip_x = bool(x is not None and x.size > 1 and x[-1] < x[0])
    return _Layout(variables, ydim, xdim, time_name, flip_y, flip_x)


def _time_as_dim(ds: xr.Dataset, layout: _Layout) -> xr.Dataset:
    """Make the time variable the ``time`` dim coordinate (a scalar time becomes a dim of length 1)."""
    name = layout.time_name
    assert name is not None
    tv = ds[name]
    if tv.ndim == 0:
        ds = ds.drop_vars(name)
        ds = ds.expand_dims(time=[tv.values])
        ds = ds.assign_coords(time=ds["time"])
    elif name != "time":
        ds = ds.swap_dims({tv.dims[0]: name}).rename({name: "time"})
    elif "time" not in ds.dims:
        raise DataError(f"time variable 'time' has dims {tv.dims}; expected a 1-D or scalar time")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise DataError(f"time variable {name!r} was not decoded as dates (dtype {ds['time'].dtype}); "
                        "expected CF units such as 'seconds since 1970-01-01'")
    return ds


def _period_minutes(ds: xr.Dataset, layout: _Layout, accumulation_start: str | None, p: Path) -> np.ndarray | None:
    """Accumulation periods in minutes per time step, from a start-time variable or CF time bounds."""
    end = ds["time"].values.astype("datetime64[ns]")
    if accumulation_start is not None:
        if accumulation_start not in ds.variables:
            raise DataError(f"{p}: no variable {accumulation_start!r} (the start of the accumulation period)")
        begin = np.broadcast_to(ds[accumulation_start].values.astype("datetime64[ns]"), end.shape)
    else:
        bounds = ds["time"].attrs.get("bounds")
        if not bounds or bounds not in ds.variables:
            return None
        begin = ds[bounds].values.astype("datetime64[ns]")[..., 0]
    return (end - begin) / np.timedelta64(1, "m")


def _accumulation(ds: xr.Dataset, layout: _Layout, minutes: float | None, start_var: str | None,
                  p: Path) -> float | None:
    if minutes is not None:
        return float(minutes)
    periods = _period_minutes(ds, layout, start_var, p)
    if periods is None or periods.size == 0:
        return None
    if not np.allclose(periods, periods.flat[0]) or periods.flat[0] <= 0:
        raise DataError(f"{p}: accumulation periods differ or are not positive ({np.unique(periods)} min); "
                        "expected one period for the whole series")
    return float(periods.flat[0])


# Over 80 lines: the CF unit cases (rates, accumulations, reflectivity) side by side, kept together to compare.
def _standardise(ds: xr.Dataset, layout: _Layout, minutes: float | None, to_rain_rate: bool, p: Path) -> xr.Dataset:
    """Rename to ``time, y, x``, put rows north to south, x/y in metres, CF grid mapping ``crs``, rain in mm/h."""
    import pyproj

    ydim, xdim = layout.ydim, layout.xdim
    if layout.flip_y:
        ds = ds.isel({ydim: slice(None, None, -1)})
    if layout.flip_x:
        ds = ds.isel({xdim: slice(None, None, -1)})
    first = ds[layout.variables[0]]
    gm_name = first.attrs.get("grid_mapping") or first.encoding.get("grid_mapping")
    crs = None
    if gm_name:
        if gm_name not in ds.variables:
            raise DataError(f"{p}: variable {layout.variables[0]!r} names grid_mapping {gm_name!r}, which the "
                            "file does not hold")
        try:
            crs = pyproj.CRS.from_cf(dict(ds[gm_name].attrs))
        except Exception as exc:
            raise DataError(f"{p}: grid mapping {gm_name!r} is not a CRS pyproj can read ({exc})") from None

    def coord(dim: str) -> tuple[np.ndarray, str]:
        if dim not in ds.coords:
            raise DataError(f"{p}: dim {dim!r} has no coordinate values; expected projection coordinates")
        values = np.asarray(ds[dim].values, float)
        units = str(ds[dim].attrs.get("units", "m")).strip().lower()
        if units in KM_UNITS:
            return values * 1000.0, "m"
        return values, units

    x, xunits = coord(xdim)
    y, yunits = coord(ydim)
    geographic = _axis_of(ds, xdim) == "x" and str(ds[xdim].attrs.get("standard_name", "")).lower() == "longitude" \
        or xunits.startswith("degree")
    if crs is None and geographic:
        crs = pyproj.CRS.from_epsg(4326)

    data_vars: dict[str, Any] = {}
    for v in layout.variables:
        arr = ds[v].transpose("time", ydim, xdim)
        attrs = {k: val for k, val in arr.attrs.items()
                 if k not in ("grid_mapping", "coordinates", "_FillValue", "missing_value", "scale_factor",
                              "add_offset", "valid_min", "valid_max", "valid_range")}
        data = arr.data
        units = str(attrs.get("units", "")).strip()
        sname = str(attrs.get("standard_name", "")).strip()
        is_rate = units.lower() in RATE_PER_HOUR_UNITS | RATE_PER_SECOND_UNITS
        in_metres = units.lower() in AMOUNT_METRE_UNITS
        if to_rain_rate and not is_rate and sname in AMOUNT_NAMES and not in_metres \
                and units.lower() not in AMOUNT_UNITS:
            raise DataError(f"{p}: variable {v!r} is a precipitation amount ({sname}) in units {units!r}, which "
                            "geostp cannot convert; expected mm, kg m-2 or m (or to_rain_rate=False to keep it "
                            "as it is)")
        if to_rain_rate and not is_rate and (units.lower() in AMOUNT_UNITS or sname in AMOUNT_NAMES):
            if minutes is None:
                raise ConfigError(
                    f"{p}: variable {v!r} is a precipitation amount ({units or sname}) but the accumulation "
                    "period is unknown; pass accumulation_minutes=N or accumulation_start=NAME "
                    "(or to_rain_rate=False to keep amounts)")
            factor = 60.0 / minutes * (1000.0 if in_metres else 1.0)
            data = data * np.float32(factor)
            attrs.update(RAIN_RATE_ATTRS)
            attrs["long_name"] = f"rain rate from {minutes:g}-min accumulation"
            attrs["comment"] = (f"converted from {units or 'mm'} per {minutes:g} min to mm h-1 "
                                f"(x {factor:g}); time labels the end of the accumulation period")
            attrs["accumulation_minutes"] = float(minutes)
        elif to_rain_rate and units.lower() in RATE_PER_SECOND_UNITS:
            data = data * np.float32(3600.0)
            attrs.update(RAIN_RATE_ATTRS)
            attrs["comment"] = f"converted from {units} to mm h-1 (x 3600)"
        elif units.lower() in RATE_PER_HOUR_UNITS:
            attrs["units"] = "mm h-1"
            attrs.setdefault("standard_name", RAIN_RATE_ATTRS["standard_name"])
        if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
            data = data.astype(np.float32)
        if crs is not None:
            attrs["grid_mapping"] = GRID_MAPPING
        data_vars[v] = (("time", "y", "x"), data, attrs)

    if geographic:
        coords: dict[str, Any] = {
            "y": ("y", y, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        }
        lon, lat = np.meshgrid(x, y)
        coords["lat"] = (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north"})
        coords["lon"] = (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east"})
    else:
        if xunits != "m" or yunits != "m":
            raise DataError(f"{p}: projection coordinates in units {xunits!r}/{yunits!r}; expected m or km")
        coords = projected_coords(x, y, crs)
    coords["time"] = ("time", ds["time"].values.astype("datetime64[ns]"), {"standard_name": "time"})
    if crs is not None:
        data_vars[GRID_MAPPING] = ((), np.int32(0), crs_attrs(crs))
    attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float))}
    attrs["Conventions"] = "CF-1.8"
    attrs["geostp_adapter"] = "netcdf"
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# ----------------------------------------------------------------------------- the classic format's size


#: Bytes per value of the classic format's types (CDF-1/2: 1-6; CDF-5 adds 7-11).
_CDF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}


class _CdfHeader:
    """A reader of a classic netCDF header (CDF-1, CDF-2 and CDF-5, as Unidata's format specification gives it)."""

    def __init__(self, data: bytes, version: int):
        self.data, self.pos = data, 4
        self.big = version == 5  # CDF-5: 64-bit counts, lengths and dim ids
        self.offset_bytes = 4 if version == 1 else 8

    def _int(self, n: int) -> int:
        if self.pos + n > len(self.data):
            raise EOFError
        value = int.from_bytes(self.data[self.pos:self.pos + n], "big")
        self.pos += n
        return value

    def count(self) -> int:
        return self._int(8 if self.big else 4)

    def skip_name(self) -> None:
        n = self.count()
        self.pos += (n + 3) // 4 * 4

    def skip_attributes(self) -> None:
        self._int(4)  # NC_ATTRIBUTE (12) or ABSENT (0)
        for _ in range(self.count()):
            self.skip_name()
            size = _CDF_TYPE_SIZES.get(self._int(4))
            if size is None:
                raise ValueError("unknown attribute type")
            n = self.count()
            self.pos += (n * size + 3) // 4 * 4


def classic_size_problem(p: Path) -> str | None:
    """What is wrong with a classic netCDF file's size, cheaply; None if it is whole (or not a classic file).

    The header gives every variable's shape, type and offset: a file shorter than where its last value ends is
    cut short.  netCDF-C itself reads the missing part as fill values, silently; HDF5-based netCDF-4 files are
    checked by the HDF5 library when they are opened.
    """
    with open(p, "rb") as f:
        head = f.read(4)
        if head[:3] != b"CDF" or head[3] not in (1, 2, 5):
            return None
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        data = f.read(1 << 20)  # a header is a few kB; 1 MB holds any that is not absurd
    h = _CdfHeader(data, head[3])
    try:
        numrecs = h.count()
        if numrecs == (1 << (64 if h.big else 32)) - 1:  # STREAMING: the number of records is not recorded
            return None
        h._int(4)  # NC_DIMENSION (10) or ABSENT (0)
        lengths = []
        for _ in range(h.count()):
            h.skip_name()
            lengths.append(h.count())
        h.skip_attributes()
        h._int(4)  # NC_VARIABLE (11) or ABSENT (0)
        ends, records = [], []
        for _ in range(h.count()):
            h.skip_name()
            dims = [h.count() for _ in range(h.count())]
            h.skip_attributes()
            value = _CDF_TYPE_SIZES.get(h._int(4))
            vsize = h.count() if h.big else h._int(4)
            begin = h._int(h.offset_bytes)
            if value is None or any(d >= len(lengths) for d in dims):
                return "has a classic netCDF header that does not parse (an unknown type or dimension)"
            shape = [lengths[d] for d in dims]
            if dims and shape[0] == 0:  # the record (unlimited) dimension: one slab per record
                records.append((begin, int(np.prod(shape[1:], dtype=np.int64)) * value, vsize))
            else:
                ends.append(begin + int(np.prod(shape, dtype=np.int64)) * value)
    except (EOFError, ValueError):
        return "has a classic netCDF header that is cut short or does not parse"
    if records and numrecs:
        recsize = records[0][1] if len(records) == 1 else sum(r[2] for r in records)
        ends.extend(begin + (numrecs - 1) * recsize + one for begin, one, _ in records)
    want = max(ends, default=0)
    if size < want:
        return (f"holds {size} bytes; its classic netCDF header places data up to byte {want}: the file is cut "
                "short")
    return None


# ----------------------------------------------------------------------------- series of files


def _file_times(p: Path, time_name: str, start_name: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The times (and accumulation starts) in one file, reading nothing but those variables."""
    import netCDF4

    def decode(var) -> np.ndarray:
        units = getattr(var, "units", None)
        if units is None:
            raise DataError(f"{p}: time variable {var.name!r} has no units; expected e.g. 'seconds since 1970-01-01'")
        values = np.atleast_1d(np.asarray(var[...]))
        return _decode_times(values, units, getattr(var, "calendar", "standard"))

    with netCDF4.Dataset(p) as nc:
        if time_name not in nc.variables:
            raise DataError(f"{p}: no time variable {time_name!r}; expected the same layout as the first file")
        times = decode(nc.variables[time_name])
        starts = None
        if start_name is not None:
            if start_name not in nc.variables:
                raise DataError(f"{p}: no variable {start_name!r} (the start of the accumulation period)")
            starts = decode(nc.variables[start_name])
    return times, starts


@functools.lru_cache(maxsize=64)
def _time_origin(units: str, calendar: str) -> tuple[np.datetime64, np.timedelta64] | None:
    """Origin and unit of a CF time unit string (decoded once per series: files share their units)."""
    zero, one = xr.coding.times.decode_cf_datetime(np.array([0, 1]), units, calendar)
    zero, one = np.datetime64(zero, "ns"), np.datetime64(one, "ns")
    return zero, one - zero


def _decode_times(values: np.ndarray, units: str, calendar: str) -> np.ndarray:
    if calendar.lower() in ("standard", "gregorian", "proleptic_gregorian") and np.issubdtype(values.dtype, np.integer):
        origin, unit = _time_origin(units, calendar)
        return origin + values.astype(np.int64) * unit
    return np.asarray(xr.coding.times.decode_cf_datetime(values, units, calendar)).astype("datetime64[ns]")


def _read_series_block(paths: np.ndarray, index: np.ndarray, variable: str, ydim: str, xdim: str,
                       time_dim: str | None, shape: tuple[int, int], engine: str | None, on_error: str,
                       block_info=None) -> np.ndarray:
    loc = block_info[None]["array-location"][0]
    out = np.full((loc[1] - loc[0], *shape), np.nan, np.float32)
    for k, i in enumerate(range(loc[0], loc[1])):
        p = Path(paths[i])
        try:
            kw = {"engine": engine} if engine else {}
            # the whole open-read-close under geostp's file lock: netCDF-C is not thread-safe
            with hdf5_reading(), xr.open_dataset(p, **kw) as ds:
                arr = ds[variable]
                if time_dim is not None and time_dim in arr.dims:
                    arr = arr.isel({time_dim: int(index[i])})
                frame = np.asarray(arr.transpose(ydim, xdim).values, np.float32)
        except Exception as exc:
            if on_error == "gap":
                warnings.warn(f"{p}: could not be read ({type(exc).__name__}: {exc}); frame left as NaN",
                              stacklevel=2)
                continue
            raise DataError(f"{p}: could not read variable {variable!r} ({type(exc).__name__}: {exc}); "
                            "expected the layout of the other files of the series") from None
        if frame.shape != shape:
            if on_error == "gap":
                warnings.warn(f"{p}: grid {frame.shape} differs from {shape}; frame left as NaN", stacklevel=2)
                continue
            raise DataError(f"{p}: variable {variable!r} has grid {frame.shape}; expected {shape} like the "
                            "other files of the series")
        out[k] = frame
    return out


# Over 80 lines: building one lazy dask array from many files, step by step; splitting it hid the chunk logic.
def _open_series(files: list[Path], variable, time, t0, t1, step, accumulation_minutes, accumulation_start,
                 to_rain_rate, engine, on_error, duplicates, time_chunk, source) -> xr.Dataset:
    skipped: list[str] = []

    def problem(p: Path, exc: Exception) -> None:
        if on_error == "raise":
            raise exc
        skipped.append(f"{p.name}: {exc}")

    template = None
    for p in files:  # the first readable file is the template of the grid (its header only)
        try:
            template = _open_dataset(p, engine, chunks={})
            break
        except DataError as exc:
            problem(p, exc)
    if template is None:
        raise DataError(f"none of the {len(files)} files of {source} could be opened: {skipped[0]}")
    layout = _layout(template, variable, time, files[0])
    if layout.time_name is None:
        raise DataError(f"{files[0]}: no time variable found (no 'time' and no variable with standard_name "
                        "'time'); pass time=NAME")
    time_dim = template[layout.time_name].dims[0] if template[layout.time_name].ndim else None

    entries: list[tuple[np.datetime64, str, int]] = []
    periods: set[float] = set()
    for p in files:
        try:
            cut = classic_size_problem(p) if p.is_file() else None
            if cut:
                raise DataError(f"{p} {cut}; expected a whole netCDF file like the others of the series")
            times, starts = _file_times(p, layout.time_name, accumulation_start)
        except DataError as exc:
            problem(p, exc)
            continue
        except Exception as exc:  # a truncated or foreign file: netCDF4 raises OSError and others
            problem(p, DataError(f"{p} could not be opened as netCDF ({type(exc).__name__}: {exc}); expected a "
                                 "netCDF file like the others of the series"))
            continue
        if starts is not None:
            periods.update(np.round((times - starts) / np.timedelta64(1, "m"), 6).tolist())
        entries.extend((t, str(p), j) for j, t in enumerate(times))
    if not entries:
        raise DataError(f"no readable file in {source}: {skipped[0] if skipped else '(none)'}")
    entries.sort(key=lambda e: (e[0], e[1]))
    if t0 is not None or t1 is not None:
        lo = np.datetime64(t0) if t0 is not None else None
        hi = np.datetime64(t1) if t1 is not None else None
        entries = [e for e in entries if (lo is None or e[0] >= lo) and (hi is None or e[0] <= hi)]
        if not entries:
            raise DataError(f"no time step of {source} lies between {t0} and {t1}")
    kept: list[tuple[np.datetime64, str, int]] = []
    n_dup = 0
    for e in entries:
        if kept and kept[-1][0] == e[0]:
            if duplicates == "raise":
                raise DataError(f"{e[1]} and {kept[-1][1]} both hold time {pd.Timestamp(e[0])}; expected one "
                                "file per time (pass duplicates='first' to keep the first)")
            n_dup += 1
            continue
        kept.append(e)

    minutes = accumulation_minutes
    if minutes is None and accumulation_start is not None:
        if len(periods) != 1 or min(periods) <= 0:
            raise DataError(f"{source}: accumulation periods {sorted(periods)} min differ between files or are "
                            "not positive; expected one period")
        minutes = periods.pop()
    elif minutes is None:
        minutes = _accumulation(_time_as_dim(template, layout), layout, None, None, files[0])

    ny, nx = template.sizes[layout.ydim], template.sizes[layout.xdim]
    paths = np.array([e[1] for e in kept], dtype=object)
    index = np.array([e[2] for e in kept], dtype=np.int64)
    n = len(kept)
    chunks = (tuple(min(time_chunk, n - i) for i in range(0, n, time_chunk)), (ny,), (nx,))
    data_vars = {}
    for v in layout.variables:
        data = da.map_blocks(_read_series_block, paths, index, v, layout.ydim, layout.xdim, time_dim, (ny, nx),
                             engine, on_error, chunks=chunks, dtype=np.float32,
                             meta=np.empty((0, 0, 0), np.float32))
        data_vars[v] = (("time", layout.ydim, layout.xdim), data, dict(template[v].attrs),
                        dict(template[v].encoding))
    times = np.array([e[0] for e in kept], dtype="datetime64[ns]")
    raw = xr.Dataset({v: xr.Variable(dims, d, attrs, encoding) for v, (dims, d, attrs, encoding) in data_vars.items()},
                     coords={"time": times, layout.ydim: template[layout.ydim], layout.xdim: template[layout.xdim]},
                     attrs=dict(template.attrs))
    gm = template[layout.variables[0]].attrs.get("grid_mapping") or template[layout.variables[0]].encoding.get(
        "grid_mapping")
    if gm and gm in template.variables:
        raw[gm] = template[gm].load()
    cube = _standardise(raw, layout, minutes, to_rain_rate, files[0])
    cube.attrs["source_files"] = len(files)
    cube.attrs["skipped_files"] = "; ".join(skipped)
    cube.attrs["n_skipped_files"] = len(skipped)
    cube.attrs["n_duplicate_times"] = n_dup
    cube.attrs["corrupt_file_check"] = "each file's header and time variable are read at open time"
    return finish_cube(cube, step=step, source=source)

