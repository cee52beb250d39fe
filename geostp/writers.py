"""Writing files: the one atomic write and the one CF forecast encoding.

Atomic writes
    Every file geostp writes for others to read (forecasts, checkpoints,
    resolved recipes, scores, maps, the runner's grid record) goes to a
    temporary name in the same folder (``.<name>.tmp-<token>``), is flushed to
    disk (fsync, the whole tree for a zarr store), then renamed onto its final
    name (``os.replace``) and the folder is fsynced: a reader sees the complete
    file or the previous one, never a half-written one.  If the writer raises,
    the temporary is removed and the previous file is left as it was; an
    ``OSError`` (a read-only folder, a file where a folder belongs, a full
    disk) becomes a :class:`~geostp.errors.WriteError` naming the path.
    :func:`atomic_path` is the context manager (it yields the temporary path
    for writers such as ``to_netcdf``); :func:`atomic_write_text` and
    :func:`atomic_write_bytes` wrap it.  The zarr store's own swap
    (:mod:`geostp.store`) is the only other rename in the package.

Only its own files
    geostp replaces or appends to a file under a fixed name (a run's
    ``recipe.yaml``, ``scores.json``, ``history.json``, a checkpoint, the
    runner's log, lock and grid record, a map, a forecast file) only if it can
    recognise the file as one it wrote (:func:`check_own_file`, with a
    recogniser for each kind: a header, a marker, the structure it writes).
    Anything else there (a user's file of that name, a symbolic link, a
    folder) is refused with a :class:`~geostp.errors.WriteError` naming the
    file and what was expected, before anything is written.  No file, or an
    empty one, is fine to create.

Forecast files
    :func:`forecast_dataset` gives a forecast its global attributes
    (``Conventions``, ``title``, ``source``, ``history``, ``geostp_version``,
    ``forecast_reference_time``, and any provenance passed in ``attrs``) and its
    encoding (``lead_time`` as int32 minutes; data variables of two dimensions
    or more compressed with zlib level 1 in netCDF, zarr's default compressor in
    zarr); :func:`write_forecast` writes one file and :func:`write_forecasts`
    several formats at once (all or none).  ``geostp demo``, nowcast recipes and
    the operational runner all write through them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geostp._version import __version__
from geostp.cube import FORECAST_TIME_ATTRS
from geostp.errors import ConfigError, WriteError, writing

__all__ = [
    "TMP_MARK",
    "temp_path",
    "is_temp_name",
    "atomic_path",
    "atomic_paths",
    "atomic_write_text",
    "atomic_write_bytes",
    "remove_path",
    "redacted",
    "check_own_file",
    "RECOGNISE_BYTES",
    "head_bytes",
    "is_json_object_with",
    "is_geostp_forecast",
    "is_geostp_forecast_store",
    "forecast_there",
    "forecasts_present",
    "foreign_forecast",
    "FORMATS",
    "SUFFIXES",
    "CONVENTIONS",
    "forecast_dataset",
    "forecast_encoding",
    "write_forecast",
    "write_forecasts",
]

#: Marks a temporary name: ``.<final name>.tmp-<token>``.
TMP_MARK = ".tmp-"
Format = Literal["netcdf", "zarr"]
FORMATS: tuple[str, ...] = ("netcdf", "zarr")
SUFFIXES: dict[str, str] = {"netcdf": ".nc", "zarr": ".zarr"}
CONVENTIONS = "CF-1.8"


# ----------------------------------------------------------------------------- atomic files


def temp_path(path: str | os.PathLike[str], token: str | None = None) -> Path:
    """The temporary name :func:`atomic_path` writes ``path`` under: hidden, in the same folder."""
    path = Path(path)
    hidden = path.name if path.name.startswith(".") else "." + path.name
    return path.with_name(f"{hidden}{TMP_MARK}{token or uuid.uuid4().hex[:8]}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is a temporary of :func:`atomic_path` (a leftover if no writer is running)."""
    return name.startswith(".") and TMP_MARK in name


def redacted(value: Any, replacements: Mapping[str, str]) -> Any:
    """``value`` with each key of ``replacements`` replaced by its value in every string inside it (dicts, lists and
    tuples walked; keys kept): provenance written into a file (attributes, metadata) with what an environment
    variable held (a secret in a path) put back as its ``${VAR}`` reference.  The longest texts are replaced first."""
    if not replacements:
        return value
    if isinstance(value, str):
        for text in sorted(replacements, key=len, reverse=True):
            if text:
                value = value.replace(text, replacements[text])
        return value
    if isinstance(value, Mapping):
        return {k: redacted(v, replacements) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redacted(v, replacements) for v in value)
    return value


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, ignoring one that is already gone."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            _fsync(p)
    _fsync(path)


@contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike[str]], *, keep_existing: bool = False,
                 before_commit: Callable[[], None] | None = None) -> Iterator[list[Path]]:
    """Temporary paths for ``paths``, renamed onto them together once the block succeeds.

    The block writes each temporary (a file or a folder); on success every one
    is fsynced, ``before_commit`` is called, each is renamed onto its final
    name and the folders are fsynced.  If the block (or anything before the
    renames) raises, every temporary is removed and the finals are untouched.
    With ``keep_existing`` a final that exists at commit time (other than an
    empty file) is kept and its temporary discarded (the forecast of a
    reference time never changes).
    """
    finals = [Path(p) for p in paths]
    token = uuid.uuid4().hex[:8]
    tmps = [temp_path(p, token) for p in finals]
    for p in finals:
        with writing(p, "file"):
            p.parent.mkdir(parents=True, exist_ok=True)
    try:
        with writing(finals[0], "file") if len(finals) == 1 else writing(finals[0].parent, "files in"):
            yield tmps
            for tmp in tmps:
                if tmp.exists():
                    _fsync_tree(tmp)
            if before_commit is not None:
                before_commit()
            for tmp, final in zip(tmps, finals, strict=True):
                if not tmp.exists():
                    raise FileNotFoundError(f"the writer of {final} wrote nothing to {tmp}")
                if keep_existing and final.exists() and not (final.is_file() and final.stat().st_size == 0):
                    remove_path(tmp)
                    continue
                os.replace(tmp, final)
            for folder in dict.fromkeys(p.parent for p in finals):
                _fsync(folder)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                remove_path(tmp)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_existing: bool = False,
                before_commit: Callable[[], None] | None = None) -> Iterator[Path]:
    """A temporary path for ``path`` (write to it in the block): renamed onto ``path`` only if the block succeeds.

    Examples
    --------
    >>> with atomic_path(folder / "scores.nc") as tmp:  # doctest: +SKIP
    ...     scores.to_netcdf(tmp)
    """
    with atomic_paths([path], keep_existing=keep_existing, before_commit=before_commit) as (tmp,):
        yield tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- only its own files

#: The most bytes a recogniser reads of an existing file (a header, a first line, a small JSON document).
RECOGNISE_BYTES = 1 << 20


def head_bytes(path: Path, limit: int = RECOGNISE_BYTES) -> bytes:
    """The first ``limit`` bytes of a regular file (read without following a link)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def is_json_object_with(path: Path, keys: Sequence[str]) -> bool:
    """Whether ``path`` holds one JSON object (of at most :data:`RECOGNISE_BYTES`) that has every key of ``keys``."""
    data = head_bytes(path, RECOGNISE_BYTES + 1)
    if len(data) > RECOGNISE_BYTES:
        return False
    doc = json.loads(data)
    return isinstance(doc, dict) and all(k in doc for k in keys)


def check_own_file(path: str | os.PathLike[str], is_own: Callable[[Path], bool], *, what: str, expected: str,
                   action: str = "replace", hint: str = "", folder: bool = False) -> Path:
    """Refuse to ``action`` (replace, append to) ``path`` unless geostp can recognise it as its own; returns it.

    No file there (or a part of the path missing), or an empty regular file, is fine: geostp creates it.  A
    regular file for which ``is_own(path)`` is true is fine (an exception in ``is_own`` counts as false: a file
    it cannot parse is not geostp's).  Anything else (a file geostp did not write, a symbolic link, a folder, a
    FIFO) is a :class:`~geostp.errors.WriteError` naming the file, ``what`` geostp would write there and what it
    ``expected`` to find, plus ``hint`` (what to do); the file is left as it is.  With ``folder`` (a zarr store)
    a folder (not a link) for which ``is_own(path)`` is true is fine too.
    """
    path = Path(path)
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return path  # nothing there: the writer creates it (or reports a file in the way of its folder)
    except OSError:
        return path  # a folder that cannot be looked into: the writer reports it (a WriteError naming it)
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return path
    if stat.S_ISREG(st.st_mode) or (folder and stat.S_ISDIR(st.st_mode)):
        try:
            own = bool(is_own(path))
        except Exception:  # unreadable, not the format: not a file geostp wrote
            own = False
        if own:
            return path
    if stat.S_ISREG(st.st_mode):
        found = f"a file of {st.st_size} bytes that geostp did not write"
    elif stat.S_ISLNK(st.st_mode):
        found = f"a symbolic link (to {os.readlink(path)})"
    elif stat.S_ISDIR(st.st_mode):
        found = "a folder that geostp did not write" if folder else "a folder"
    else:
        found = "not a regular file"
    raise WriteError(f"refusing to {action} {path}: it is {found}; expected {expected} (the {what} geostp "
                     f"writes there) or no file at all. geostp will {action} only a file it wrote, and left "
                     f"this one as it is{'; ' + hint if hint else ''}")


def is_geostp_forecast(path: Path) -> bool:
    """Whether ``path`` is a netCDF file geostp wrote (:func:`forecast_dataset`'s ``geostp_version`` attribute)."""
    if head_bytes(path, 4)[:3] not in (b"CDF", b"\x89HD"):
        return False
    with xr.open_dataset(path, decode_times=False, decode_cf=False) as ds:
        return "geostp_version" in ds.attrs


def is_geostp_forecast_store(path: Path) -> bool:
    """Whether ``path`` is a zarr forecast store geostp wrote (its root attributes have ``geostp_version``)."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):  # zarr format 3, then 2
        meta = path / name
        if meta.is_file() and not meta.is_symlink():
            data = head_bytes(meta, RECOGNISE_BYTES + 1)
            attrs = json.loads(data) if len(data) <= RECOGNISE_BYTES else {}
            attrs = attrs.get(key) if key and isinstance(attrs, dict) else attrs
            return isinstance(attrs, dict) and "geostp_version" in attrs
    return False


#: What a forecast's final name may hold, by format (besides nothing at all).
FORECAST_EXPECTED = {"netcdf": "a netCDF forecast written by geostp (global attribute geostp_version)",
                     "zarr": "a zarr forecast store written by geostp (root attribute geostp_version)"}


def forecast_there(path: str | os.PathLike[str], format: str | None = None) -> bool:
    """Whether a forecast geostp wrote is at ``path`` (kept by a run that never rewrites a forecast).

    False where nothing (or an empty file) is there: the forecast is to be written.  Anything else under that
    name (a user's file, a link, a folder geostp did not write) is never taken for geostp's forecast: a
    :class:`~geostp.errors.WriteError` naming the file and what was expected; the file is left as it is.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    check_own_file(path, is_geostp_forecast if fmt == "netcdf" else is_geostp_forecast_store,
                   what="forecast file" if fmt == "netcdf" else "forecast store", expected=FORECAST_EXPECTED[fmt],
                   hint="move it away or write the forecast elsewhere", folder=fmt == "zarr")
    try:
        st = path.lstat()
    except OSError:
        return False
    return not (stat.S_ISREG(st.st_mode) and st.st_size == 0)


def forecasts_present(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether every path holds a forecast geostp wrote (a file of that name it did not write is not one)."""
    try:
        return all(forecast_there(p) for p in paths)
    except WriteError:
        return False


def foreign_forecast(paths: Sequence[str | os.PathLike[str]]) -> str | None:
    """Why one of a forecast's final names holds something geostp did not write (the WriteError's message),
    or None where each holds geostp's forecast or nothing."""
    try:
        for p in paths:
            forecast_there(p)
    except WriteError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- forecast files


def _attr_value(v: Any) -> Any:
    return v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)


#: How the times of a forecast file are stored: CF "since" units a double holds exactly for whole seconds
#: (netCDF's classic types only: the CF checkers refuse int64 under CF-1.8).
TIME_ENCODING = {"units": "seconds since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian", "dtype": "float64"}
#: The file's grid chunks are at most this many points along y and x (one lead time, one reference time each).
MAX_SPATIAL_CHUNK = 1024


def _as_dataset(data: xr.DataArray | xr.Dataset) -> tuple[xr.Dataset, str]:
    """The forecast as a Dataset (one variable per channel) and the model's name from its attributes."""
    if isinstance(data, xr.Dataset):
        ds = data.copy()
        model = next((str(ds[v].attrs["model"]) for v in ds.data_vars if "model" in ds[v].attrs),
                     str(ds.attrs.get("model", "")))
        return ds, model
    if "variable" in data.dims:
        return data.to_dataset(dim="variable").copy(), str(data.attrs.get("model", ""))
    return data.to_dataset(name=data.name or "forecast").copy(), str(data.attrs.get("model", ""))


def _cf_times(ds: xr.Dataset) -> xr.Dataset:
    """The CF layout of a forecast's times: with several reference times the leading dimension is named
    ``forecast_reference_time`` (in memory it is ``time``, which CF tools would take for the valid time) and
    comes after ``lead_time`` (CF puts dimensions that are not T, Z, Y or X first); ``lead_time`` is the
    ``forecast_period``, ``valid_time`` (``standard_name: time``) reference + lead."""
    if "time" in ds.dims and "forecast_reference_time" in ds.coords and ds["forecast_reference_time"].dims == ("time",):
        ds = ds.drop_vars("forecast_reference_time").rename({"time": "forecast_reference_time"})
        # CF 2.4: dimensions other than T, Z, Y, X (lead_time) go to their left
        ds = ds.transpose("lead_time", "forecast_reference_time", ...)
    for name, cf in FORECAST_TIME_ATTRS.items():
        if name in ds.variables:
            ds[name].attrs = {**{k: v for k, v in ds[name].attrs.items() if k not in ("units", "calendar")}, **cf}
    for name in ds.coords:  # the grid mapping variable: CF checkers ask for a long_name on every variable
        if "grid_mapping_name" in ds[name].attrs:
            ds[name].attrs.setdefault("long_name", "coordinate reference system")
    return ds


def _reference_label(ds: xr.Dataset) -> str:
    """The reference time (ISO 8601), or ``first/last`` (an ISO interval) for several."""
    if "forecast_reference_time" not in ds.coords or ds["forecast_reference_time"].size == 0:
        return ""
    refs = [pd.Timestamp(t).isoformat() for t in np.atleast_1d(ds["forecast_reference_time"].values)]
    return refs[0] if len(refs) == 1 else f"{refs[0]}/{refs[-1]}"


def forecast_dataset(data: xr.DataArray | xr.Dataset, *, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """A forecast as the Dataset geostp writes: CF times, the global attributes and the one encoding.

    ``data`` is what :func:`geostp.forecast` returns (a DataArray, with a
    ``variable`` dimension for several variables, ``time`` first for several
    reference times) or a Dataset of it.  The model's name is read from its
    ``model`` attribute, the reference time from its ``forecast_reference_time``
    coordinate; ``attrs`` add provenance (the input files, the recipe; values
    that are not str/int/float become JSON).  The times follow CF
    (:data:`CONVENTIONS`): ``lead_time`` is the ``forecast_period``,
    ``forecast_reference_time`` the ``forecast_reference_time`` (the leading
    dimension for several reference times, renamed from ``time``), and
    ``valid_time`` (``standard_name: time``) their sum.
    """
    ds, model = _as_dataset(data)
    extra = dict(attrs or {})
    model = str(extra.pop("model", model)) or "unknown"
    ds = _cf_times(ds)
    ref = _reference_label(ds)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ds.attrs = {
        "Conventions": CONVENTIONS,
        "title": f"geostp nowcast from {ref}" if ref else "geostp nowcast",
        "source": f"geostp {__version__}, model {model}",
        "history": f"{now} written by geostp {__version__}",
        "geostp_version": __version__,
        "geostp_model": model,
        "forecast_reference_time": ref,
        **{k: _attr_value(v) for k, v in extra.items()},
    }
    for name in ds.variables:  # the encoding is ours, not whatever the inputs were read with
        ds[name].encoding = {}
    return ds


def _lead_encoding(lead: xr.DataArray) -> dict[str, Any]:
    """int32 minutes where every lead time is whole minutes (radar steps), else int32 or double seconds."""
    seconds = lead.values.astype("timedelta64[ns]").astype(np.int64) / 1e9
    if np.all(seconds % 60 == 0):
        return {"units": "minutes", "dtype": "int32"}
    return {"units": "seconds", "dtype": "int32" if np.all(seconds % 1 == 0) else "float64"}


def _chunks(var: xr.DataArray) -> tuple[int, ...]:
    """One lead time (and reference time, variable) per chunk, the grid in tiles of at most MAX_SPATIAL_CHUNK."""
    return tuple(min(n, MAX_SPATIAL_CHUNK) if d in ("y", "x") else 1 for d, n in zip(var.dims, var.shape, strict=True))


def forecast_encoding(ds: xr.Dataset, format: Format = "netcdf") -> dict[str, dict[str, Any]]:
    """Per-variable encoding of a forecast file, the same for every writer: times as CF numbers (``lead_time``
    in minutes, the others in seconds since 1970 as doubles), no fill value on coordinates; data variables of
    2+ dims chunked one map per lead time (and reference time; the grid in tiles of at most
    :data:`MAX_SPATIAL_CHUNK`), compressed with zlib level 1 and shuffle in netCDF and with zarr's default
    compressor in zarr."""
    if format not in FORMATS:
        raise ConfigError(f"format={format!r}; expected one of {list(FORMATS)}")
    enc: dict[str, dict[str, Any]] = {}
    for name in ds.variables:
        var = ds[name]
        if name in ds.coords or var.ndim < 2:
            enc[str(name)] = {"_FillValue": None}
        elif format == "netcdf":
            enc[str(name)] = {"zlib": True, "complevel": 1, "shuffle": True, "chunksizes": _chunks(var)}
        else:  # dask-backed data keeps its own chunks: zarr refuses chunks that straddle dask's
            enc[str(name)] = {"chunks": _chunks(var)} if var.chunks is None else {}
        if "grid_mapping_name" in var.attrs and np.issubdtype(var.dtype, np.integer):
            enc[str(name)]["dtype"] = "int32"  # a scalar made in numpy is int64, which CF-1.8 has no type for
        if np.issubdtype(var.dtype, np.timedelta64):
            enc[str(name)].update(_lead_encoding(var))
        elif np.issubdtype(var.dtype, np.datetime64):
            enc[str(name)].update(TIME_ENCODING)
    return enc


def _write_one(ds: xr.Dataset, tmp: Path, format: str) -> None:
    if format == "netcdf":
        ds.to_netcdf(tmp, encoding=forecast_encoding(ds, "netcdf"), engine="netcdf4")
    else:
        ds.to_zarr(tmp, mode="w-", consolidated=True, encoding=forecast_encoding(ds, "zarr"))


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        format = next((f for f, s in SUFFIXES.items() if path.suffix == s), None)
        if format is None:
            raise ConfigError(f"cannot tell the format of {path.name} from its suffix; give format= "
                              f"(one of {list(FORMATS)})")
    if format not in FORMATS:
        raise ConfigError(f"format={format!r}; expected one of {list(FORMATS)}")
    return format


def write_forecasts(data: xr.DataArray | xr.Dataset, targets: Sequence[tuple[str | None, str | os.PathLike[str]]], *,
                    attrs: Mapping[str, Any] | None = None, keep_existing: bool = False,
                    before_commit: Callable[[], None] | None = None) -> list[Path]:
    """Write one forecast in several ``(format, path)`` at once, atomically: all appear, or none.

    A final that exists is replaced only if it is a forecast geostp wrote (:func:`forecast_there`; with
    ``keep_existing`` it is kept instead): any other file there is a :class:`~geostp.errors.WriteError` naming
    it and what was expected, raised before anything is written (the file is left as it is).
    """
    targets = [(_format_of(Path(p), f), Path(p)) for f, p in targets]
    there = {p for fmt, p in targets if forecast_there(p, fmt)}  # a file geostp did not write: refused here
    todo = [(fmt, p) for fmt, p in targets if not (keep_existing and p in there)]
    if todo:
        ds = forecast_dataset(data, attrs=attrs)
        with atomic_paths([p for _, p in todo], keep_existing=keep_existing, before_commit=before_commit) as tmps:
            for (fmt, _), tmp in zip(todo, tmps, strict=True):
                _write_one(ds, tmp, fmt)
    return [p for _, p in targets]


def write_forecast(data: xr.DataArray | xr.Dataset, path: str | os.PathLike[str], *,
                   format: Format | None = None, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write a forecast as CF netCDF or zarr (``format`` defaults to the suffix: ``.nc`` or ``.zarr``), atomically."""
    (out,) = write_forecasts(data, [(format, path)], attrs=attrs)
    return out
