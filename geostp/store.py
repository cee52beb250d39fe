"""The zarr store: cubes written into chunked zarr stores, atomically, and opened lazily.

Below the stream (which reads windows from stores) and above the cube (whose
conventions every store holds); moved here from ``geostp.data.ingest``, which
stays an alias for one release.

Chunking policy
---------------
Training reads windows of ``T_in + T_out`` consecutive frames (typically 20)
over spatial patches (typically 64-256 pixels).  A store is therefore chunked
``time_chunk`` frames deep (default 20, one window) and ``spatial_chunk``
pixels wide (default 256, clipped to the grid): a random window then touches
at most two time chunks per tile, each chunk is a few MB (20 x 256 x 256
float32 = 5.2 MB before compression), large enough for zstd to compress well
and for a read to amortise its latency, and small enough that a DataLoader
worker can cut many samples from one read.  A ``sequence`` dim (video clips)
is chunked one sequence at a time.

Atomicity
---------
A store is written into a sibling folder named ``<target>.partial-<token>``;
only after every chunk is written is a completion marker put into the root
attributes and the folder renamed onto its final name (a single ``rename``).
A reader therefore sees either no store or a complete one, and
:func:`open_cube` refuses a folder that lacks the marker.  Re-running an
interrupted ingest removes the stale partial folder and starts again.

Overwriting replaces only a store that ingest wrote (a folder whose root
``zarr.json`` carries the marker and holds nothing but zarr's own entries):
anything else, a folder of other files or a link, is refused with a
:class:`~geostp.errors.StoreError` and left untouched.  The old store is moved
aside (``<target>.old-<token>``) before the new one is renamed into place and
removed after; one that a killed run left is removed by the next ingest of
the same target.

Verification
------------
Before the marker is set, ingest records every file of the store's arrays (metadata and chunks) in
``geostp_manifest.json`` at its root: size and BLAKE2b digest, and the chunks it did not write because they held
only NaN (a partial outage), so that every chunk of every array is accounted for.  :func:`open_cube` checks
cheaply that each recorded file is still there with its size (a deleted chunk would otherwise read back as NaN:
zarr treats an absent chunk as empty) and that no chunk is missing from the manifest; :func:`verify_store`
(``geostp info --verify``) reads every file and compares its digest (a chunk overwritten in place).  Either names
the store and the chunk in a :class:`CorruptStoreError`.  The manifest is untrusted input (:mod:`geostp.manifest`,
which gives its format): an entry outside the store or naming anything but a regular file, a malformed, emptied
or absurdly large manifest, one without an entry for a chunk, is a :class:`StoreError` before any file it names
is read.  A store without one (written before geostp kept one, or by another tool) opens with an
:class:`~geostp.manifest.UnverifiedStoreWarning` saying what cannot be checked; where its root metadata says
ingest wrote one (deleted since), ``open_cube(path, verify="full")``, :func:`verify_store` and ``geostp info
--verify`` refuse it with a :class:`StoreError`.

A chunk changed in place with its size passes the check on open and fails only when it is decoded, so every read
of a store's chunks goes through :func:`reading_store` (the dask arrays of :func:`open_cube` read through
:class:`StoreChunkReader`, dask's ``getitem``; the stream's zarr reader reads inside it): a read or decode failure
is a :class:`StoreError` naming the store, the variable and the chunk(s) read, a :class:`CorruptStoreError` where
the manifest shows which one changed, wherever geostp computes from the store.

No data
-------
:func:`ingest` refuses a variable that holds only NaN over the whole cube (an outage over the whole period) with a
:class:`CubeValueError`, as :func:`~geostp.cube.validate_cube` refuses one whose sampled frames hold only NaN.  zarr
writes no chunk that holds only the fill value, so the check is free: such a variable has no chunk file.

Direct reads
------------
:func:`open_cube` marks each data variable's encoding with the identity of the
dask array it read from the store (:data:`STORE_ARRAY_KEY`).
:func:`unmodified_store_path` tells a reader (the stream's zarr reader) whether a
cube's variables are still exactly those arrays, so that it may read the zarr
chunks itself instead of going through dask: anything computed, selected or
rechunked since is a different dask array, and is read through xarray.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as dask_array
import numpy as np
import xarray as xr

from geostp.checks import as_path, count
from geostp.cluster import dask_client
from geostp.cube import CubeInfo, check_value_range, validate_cube
from geostp.errors import (
    CorruptStoreError,
    CubeError,
    CubeValueError,
    GeostpError,
    StoreError,
    writing,
)
from geostp.manifest import (
    MANIFEST_ATTR,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    StoreVerification,
    UnverifiedStoreWarning,
    file_problem,
    manifest_entries,
    unverified_note,
    verify_store,
    write_manifest,
)

__all__ = ["ingest", "open_cube", "store_info", "verify_store", "StoreVerification", "default_chunks",
           "unmodified_store_path", "foreign_content", "reading_store", "StoreChunkReader", "COMPLETE_ATTR",
           "STORE_ARRAY_KEY", "MANIFEST_NAME", "UnverifiedStoreWarning"]

COMPLETE_ATTR = "geostp_complete"
PARTIAL_INFIX = ".partial-"
#: The infix of an old store moved aside by an overwrite (``<target>.old-<token>``), removed once the new one is in
#: place; one left by a killed run is removed by the next ingest of the same target.
OLD_INFIX = ".old-"
_TOKEN = re.compile(r"[0-9a-f]{8}")
#: Encoding key of a variable opened by :func:`open_cube`: the name of the dask array read from the store.
STORE_ARRAY_KEY = "geostp_store_array"


def default_chunks(sizes: Mapping[str, int], *, time_chunk: int = 20, spatial_chunk: int = 256) -> dict[str, int]:
    """The chunk sizes of the policy above for a cube of the given sizes."""
    chunks = {
        "time": max(1, min(time_chunk, sizes["time"])),
        "y": max(1, min(spatial_chunk, sizes["y"])),
        "x": max(1, min(spatial_chunk, sizes["x"])),
    }
    if "sequence" in sizes:
        chunks["sequence"] = 1
    return chunks


def _encoding(ds: xr.Dataset, variables: list[str], chunks: dict[str, int]) -> dict[str, dict[str, Any]]:
    from zarr.codecs import BloscCodec

    enc: dict[str, dict[str, Any]] = {}
    for v in variables:
        shape = tuple(chunks[d] for d in ds[v].dims)
        # Blosc+zstd with byte shuffle: fast to decode (the loader's hot path) and
        # compact on fields that are mostly zero or NaN, as radar rain is.
        enc[v] = {
            "chunks": shape,
            "compressors": (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),),
        }
        if np.issubdtype(ds[v].dtype, np.floating):
            enc[v]["_FillValue"] = np.nan
    return enc


def _siblings(target: Path, infix: str) -> list[Path]:
    """geostp's own ``<target><infix><token>`` folders beside ``target`` (matched by name, not by a glob pattern:
    the target's name may hold glob characters)."""
    if not target.parent.is_dir():
        return []
    prefix = target.name + infix
    return sorted(p for p in target.parent.iterdir()
                  if p.name.startswith(prefix) and _TOKEN.fullmatch(p.name[len(prefix):])
                  and p.is_dir() and not p.is_symlink())


def _stale_partials(target: Path) -> list[Path]:
    return _siblings(target, PARTIAL_INFIX)


def _root_attributes(path: Path) -> dict[str, Any] | None:
    """The root attributes of a zarr v3 group at ``path`` (None if it holds none, or they cannot be read)."""
    meta = path / "zarr.json"
    if meta.is_symlink() or not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "group" or not isinstance(doc.get("attributes"), dict):
        return None
    return doc["attributes"]


def foreign_content(path: Path) -> str | None:
    """Why ``path`` is not a store :func:`ingest` wrote (so that it must not be replaced or removed); None if it is.

    A geostp store is a real folder (not a link) whose root ``zarr.json`` carries the completion marker and whose
    entries are zarr's own and the manifest: the root metadata, :data:`MANIFEST_NAME`, and one folder per array
    holding its ``zarr.json`` and chunks (``c``; a chunk tree itself is not walked).
    """
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_dir():
        return "it is not a folder"
    attrs = _root_attributes(path)
    if attrs is None:
        return "it is not a zarr store (no readable zarr.json group metadata at its root)"
    if attrs.get(COMPLETE_ATTR) is not True:
        return f"its zarr metadata lacks geostp's '{COMPLETE_ATTR}' marker (a store not written by geostp.ingest)"
    for entry in path.iterdir():
        if entry.name == "zarr.json" or (entry.name == MANIFEST_NAME and entry.is_file() and not entry.is_symlink()):
            continue
        if entry.is_symlink() or not entry.is_dir():
            return f"it holds {entry.name}, which is not part of a zarr store"
        others = [e.name for e in entry.iterdir() if e.name not in ("zarr.json", "c")]
        if others:  # an array's folder holds its metadata and its chunks ('c'), nothing else
            return f"it holds {entry.name}/{others[0]}, which is not part of a zarr store"
    return None


def _remove_store(path: Path) -> None:
    """Remove a store geostp wrote, its root ``zarr.json`` last: a removal cut short leaves a folder that is still
    recognisably geostp's (marker and name), which the next ingest removes."""
    for entry in path.iterdir():
        if entry.name != "zarr.json":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (path / "zarr.json").unlink(missing_ok=True)
    path.rmdir()


def _remove_stale(target: Path) -> None:
    """Remove what an interrupted ingest of ``target`` left: its partial folders, and the old copies an overwrite
    moved aside (only those that are still recognisably geostp stores, or emptied ones)."""
    for stale in _stale_partials(target):
        shutil.rmtree(stale, ignore_errors=True)
    for old in _siblings(target, OLD_INFIX):
        if _root_attributes(old) is not None and foreign_content(old) is None:
            _remove_store(old)
        elif not any(old.iterdir()):
            old.rmdir()


def _check_overwrite(target: Path, overwrite: bool) -> None:
    """Refuse to write onto anything but a store geostp wrote (and onto that without ``overwrite``)."""
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise StoreError(f"{target} already exists; pass overwrite=True (or --overwrite) to replace it")
    problem = foreign_content(target)
    if problem is not None:
        raise StoreError(f"refusing to overwrite {target}: {problem}; overwrite replaces only a cube store that "
                         "geostp.ingest wrote (a zarr store with the geostp marker); expected such a store, or "
                         "a path that does not exist yet")


# Over 80 lines: half is the docstring; the body is the write in the order the module docstring gives (checks,
# partial folder, metadata, value-checked blocks, manifest, marker, rename), each step where the reader expects it.
def ingest(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    time_chunk: int = 20,
    spatial_chunk: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    source: str | None = None,
    client: Any = None,
) -> Path:
    """Write a cube into a chunked zarr (v3) store, atomically, with a progress bar.

    The cube is written ``time_chunk`` frames at a time, so memory use stays at
    one block of frames whatever the size of the cube, and a lazily built cube
    (from an adapter or the synthetic generator) is never loaded whole.

    Parameters
    ----------
    ds
        A valid cube (see :func:`geostp.cube.validate_cube`), numpy- or dask-backed.
    path
        The store to create (a folder, conventionally ending in ``.zarr``).
    time_chunk, spatial_chunk
        The chunking policy (module docstring).
    overwrite
        Replace an existing store that :func:`ingest` wrote (a :class:`StoreError` for anything else: a folder
        of other files, a link, a zarr store without geostp's marker); without it, any existing path is an error.
        Old copies an overwrite cut short left beside the target (``<name>.old-<token>``) are removed.
    progress
        Show a tqdm progress bar over blocks of frames.
    source
        A name for error messages.
    client
        Write on a ``dask.distributed`` cluster: a ``Client``, a scheduler
        address (``tcp://host:8786``) or ``"local:N"`` (see
        :func:`geostp.cluster.dask_client`).  The workers compute and write
        the chunks themselves, so ``path`` must be on storage they all reach.
        By default a client that is already active is used (``dask.compute``
        goes to it), else dask's local threads.

    Returns
    -------
    Path
        The path of the complete store.

    Raises
    ------
    CubeValueError
        If a value cannot be right (an infinity, an undecoded fill value: the variable and the frame are named),
        or if a variable holds only NaN over the whole cube (a radar outage over the whole period: no data to
        train on, forecast from or score against).  Nothing is left under ``path``.
    StoreError, WriteError
        If ``path`` exists and may not be replaced, or cannot be written.
    """
    from tqdm.auto import tqdm

    target = as_path(path, "ingest: path", expected="the zarr store to write (a folder path)")
    time_chunk, spatial_chunk = count(time_chunk, "ingest: time_chunk"), count(spatial_chunk, "ingest: spatial_chunk")
    info = validate_cube(ds, source=source, check_values=False)
    _check_overwrite(target, overwrite)
    with writing(target, "store"):  # a read-only folder, a file where a folder belongs: a WriteError naming it
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)  # left by an interrupted run: restart cleanly

    variables = list(info.variables)
    chunks = default_chunks(info.sizes, time_chunk=time_chunk, spatial_chunk=spatial_chunk)
    ds = _prepared(ds, info, chunks)
    tmp = target.with_name(target.name + PARTIAL_INFIX + uuid.uuid4().hex[:8])
    try:
        # Metadata, coordinates and empty arrays first; then the data block by block.
        with writing(target, "store"):
            ds.to_zarr(tmp, mode="w-", compute=False, zarr_format=3, consolidated=False,
                       encoding=_encoding(ds, variables, chunks))
        starts = range(0, info.sizes["time"], chunks["time"])
        bar = tqdm(total=len(starts), desc=f"ingest {target.name}", unit="block", disable=not progress,
                   postfix={"frames": info.sizes["time"]})
        data_only = _value_checked(ds[variables].drop_vars([c for c in ds[variables].coords if c not in info.dims]),
                                   source or str(target))
        with bar:
            _write_blocks(data_only, tmp, info.dims, starts, chunks["time"], bar, client)
        _refuse_no_data(tmp, ds, variables, source or str(target))
        import zarr

        with writing(target, "store"):
            write_manifest(tmp)
            root = zarr.open_group(tmp, mode="r+", zarr_format=3)
            root.attrs.update({MANIFEST_ATTR: MANIFEST_FORMAT, COMPLETE_ATTR: True})
            _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _prepared(ds: xr.Dataset, info: CubeInfo, chunks: dict[str, int]) -> xr.Dataset:
    """The cube chunked as it will be written, small variables loaded, old encodings and the marker dropped."""
    ds = ds.transpose(*info.dims, ...)
    ds = ds.chunk({d: chunks[d] for d in info.dims})
    # Everything without a time dim (lat/lon, grid mapping) is small: write it with the metadata.
    for name in list(ds.variables):
        if "time" not in ds[name].dims and name not in ds.dims:
            ds[name] = ds[name].load()
    for v in ds.variables:
        ds[v].encoding.pop("chunks", None)
        ds[v].encoding.pop("preferred_chunks", None)
        ds[v].encoding.pop("compressors", None)
        ds[v].encoding.pop(STORE_ARRAY_KEY, None)
    ds.attrs = {**ds.attrs, "geostp_time_chunk": chunks["time"], "geostp_spatial_chunk": chunks["y"]}
    ds.attrs.pop(COMPLETE_ATTR, None)
    ds.attrs.pop(MANIFEST_ATTR, None)
    return ds


def _value_checked(data: xr.Dataset, source: str) -> xr.Dataset:
    """``data`` whose chunks are checked as they are written (:func:`geostp.cube.check_value_range`): a value its
    variable cannot hold (an infinity, an undecoded fill value) stops the ingest with a CubeValueError naming the
    source, the variable and the frame, and nothing is left under the store's name."""
    out = data.copy()
    for name in data.data_vars:
        arr = data[name].data
        if isinstance(arr, dask_array.Array) and arr.dtype.kind in "fiu":
            label = xr.DataArray(0, name=name, attrs=dict(data[name].attrs))  # what the check needs: name, attrs
            checked = arr.map_blocks(_checked_block, label=label, source=source, times=data["time"].values,
                                     axis=data[name].dims.index("time"), dtype=arr.dtype)
            out[name] = data[name].copy(data=checked)
    return out


def _checked_block(block: np.ndarray, *, label: xr.DataArray, source: str, times: np.ndarray, axis: int,
                   block_info: Any = None) -> np.ndarray:
    if block_info is not None and 0 in block_info:
        start, stop = block_info[0]["array-location"][axis]
        times = times[start:stop]
    check_value_range(np.moveaxis(block, axis, 0), label, source=source, times=times)
    return block


def _refuse_no_data(tmp: Path, ds: xr.Dataset, variables: Sequence[str], source: str) -> None:
    """Refuse a floating-point variable that holds only NaN over the whole cube (module docstring, "No data"):
    zarr wrote no chunk of it, as a chunk that holds only the fill value is not written."""
    for v in variables:
        if not np.issubdtype(ds[v].dtype, np.floating):
            continue
        folder = tmp / v / "c"
        if folder.is_dir() and any(f.is_file() for f in folder.rglob("*")):
            continue
        raise CubeValueError(
            f"{source}: variable {v!r} holds only NaN in all its {ds.sizes['time']} frames (a radar outage over the "
            "whole period, or a source whose values could not be decoded?); nothing was written; expected data in "
            "at least some frames: ingest a period that has data (frames missing in part of it are fine, as NaN)")


def _write_blocks(data: xr.Dataset, tmp: Path, dims: Sequence[str], starts: range, step: int, bar: Any,
                  client: Any) -> None:
    """Write the data variables into the store's empty arrays, ``step`` frames from each of ``starts``."""

    def write(start: int, compute: bool = True) -> Any:
        block = data.isel(time=slice(start, start + step))
        return block.to_zarr(tmp, region={d: (slice(start, start + step) if d == "time" else slice(None))
                                          for d in dims},
                             zarr_format=3, consolidated=False, compute=compute,
                             write_empty_chunks=False)  # a chunk of NaN only is not written: _refuse_no_data

    with dask_client(client) as active:
        if active is None:
            for start in starts:  # dask's local threads, one block of frames at a time
                write(start)
                bar.update(1)
            return
        # On a distributed client the workers read (or generate) and write the chunks
        # themselves: nothing but task states comes back.  As many blocks are in flight
        # as the cluster has threads, so every worker is busy even on a small grid.
        import dask

        width = max(1, sum(active.nthreads().values()))
        for i in range(0, len(starts), width):
            group = starts[i: i + width]
            dask.compute(*[write(start, compute=False) for start in group])
            bar.update(len(group))


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished store onto its name (the old one, if any, moved aside first and removed)."""
    if target.exists() or target.is_symlink():  # overwrite: move the old one aside, then swap in the new one
        _check_overwrite(target, True)  # checked again: it may have changed while the new one was written
        trash = target.with_name(target.name + OLD_INFIX + uuid.uuid4().hex[:8])
        os.replace(target, trash)
        os.replace(tmp, target)
        _remove_store(trash)
    else:
        os.replace(tmp, target)


def open_cube(path: str | os.PathLike[str], *, validate: bool = True, chunks: Any = None,
              verify: str = "sizes") -> xr.Dataset:
    """Open a store written by :func:`ingest` lazily (dask-backed, nothing read but metadata).

    ``verify`` checks the store against its manifest (module docstring): ``"sizes"`` (the default: every
    recorded file is there with its size, one ``stat`` each), ``"full"`` (every digest too, reading every
    chunk: :func:`verify_store`; a store whose manifest ingest wrote but is missing is then an error, not a
    warning) or ``"none"``.

    Raises
    ------
    StoreError
        If the path does not exist, is not a zarr store, is an incomplete
        (interrupted) write, or has lost or changed a file its manifest lists.
    """
    if verify not in ("sizes", "full", "none"):
        raise StoreError(f"open_cube verify={verify!r}; expected 'sizes', 'full' or 'none'")
    p = as_path(path, "open_cube: path", expected="a zarr store written by geostp.ingest")
    if PARTIAL_INFIX in p.name:
        raise StoreError(f"{p} is an unfinished ingest (a '{PARTIAL_INFIX}' folder); re-run the ingest")
    if not p.exists():
        partial = _stale_partials(p)
        hint = f" (an interrupted ingest left {partial[0].name}; re-run the ingest)" if partial else ""
        raise StoreError(f"no cube store at {p}{hint}")
    import zarr

    try:
        root = zarr.open_group(p, mode="r")
    except Exception as exc:
        raise StoreError(f"{p} is not a zarr store ({type(exc).__name__}: {exc})") from None
    if not root.attrs.get(COMPLETE_ATTR, False):
        raise StoreError(
            f"{p} is not a complete geostp cube: it lacks the '{COMPLETE_ATTR}' marker that ingest "
            "writes last (an interrupted write, or a store not made by geostp.ingest); re-run the ingest"
        )
    import warnings

    if verify != "none" and not (check := verify_store(p, full=verify == "full")).manifest:
        warnings.warn(unverified_note(p, check.expected), UnverifiedStoreWarning, stacklevel=2)
    try:
        with warnings.catch_warnings():  # zarr lists the root and names every file that is not its own
            warnings.filterwarnings("ignore", message=f".*{re.escape(MANIFEST_NAME)}.*")
            # Lazy backend arrays (the index coordinates are read here), made dask arrays below that read their
            # chunks through StoreChunkReader.
            ds = xr.open_dataset(p, engine="zarr", consolidated=False, chunks=None, cache=False)
    except Exception as exc:
        if verify != "full":
            verify_store(p, full=True, require_manifest=False)  # a damaged coordinate chunk: name it (a CorruptStoreError)
        raise StoreError(f"{p} could not be opened as a dataset ({type(exc).__name__}: {exc})") from None
    ds = _read_through_guard(ds, p, chunks)
    if validate:
        try:
            validate_cube(ds, source=str(p), check_values=False)
        except CubeError as exc:
            raise StoreError(str(exc)) from None
    ds.encoding.setdefault("source", str(p))
    for name in ds.data_vars:
        data = ds[name].data
        if isinstance(data, dask_array.Array):
            ds[name].encoding[STORE_ARRAY_KEY] = data.name
    return ds


def _read_through_guard(ds: xr.Dataset, path: Path, chunks: Any) -> xr.Dataset:
    """``ds`` (lazily opened, not dask-backed) with every array but the index coordinates as a dask array chunked
    as the store is (or as ``chunks`` says), reading its chunks through a :class:`StoreChunkReader`."""
    from dask.base import tokenize

    try:
        stamp = (path / "zarr.json").stat().st_mtime_ns
    except OSError:
        stamp = None
    token = tokenize(str(path.resolve()), stamp, chunks)
    data, coords = {}, {}
    for name, var in ds.variables.items():
        if name in ds.dims or var.ndim == 0:
            continue  # index coordinates are in memory; scalars (the grid mapping) hold no chunk worth guarding
        want: Any = dict(var.encoding.get("preferred_chunks", {}))
        if isinstance(chunks, Mapping):
            want.update({d: c for d, c in chunks.items() if d in var.dims})
        elif chunks is not None:
            want = chunks  # "auto", a number: dask's own rules
        guarded = var.chunk(want, from_array_kwargs={"name": f"open_cube-{name}-{token}",
                                                     "getitem": StoreChunkReader(str(path), str(name))})
        (data if name in ds.data_vars else coords)[name] = guarded
    return ds.assign_coords(coords).assign(data)


class StoreChunkReader:
    """dask's ``getitem`` for an array of a store that :func:`open_cube` opened: it reads a block as dask's own
    getter does, inside :func:`reading_store`, so a chunk that cannot be read or decoded is a :class:`StoreError`
    naming the store, the variable and the chunk (module docstring, "Reading").  Picklable: it holds two names."""

    def __init__(self, path: str, variable: str) -> None:
        self.path = path
        self.variable = variable

    def __call__(self, a: Any, b: Any, asarray: bool = True, lock: Any = None) -> Any:
        from dask.array.core import getter

        with reading_store(self.path, self.variable, b):
            return getter(a, b, asarray=asarray, lock=lock)


@contextmanager
def reading_store(path: str | os.PathLike[str], variable: str, selection: Any = None) -> Iterator[None]:
    """Run a block that reads ``selection`` (a tuple of slices; None: anything) of ``variable`` from the store at
    ``path``: an exception raised in it (other than a :class:`~geostp.errors.GeostpError` or a ``MemoryError``)
    becomes a :class:`StoreError` naming the store, the variable and the chunk(s) the selection spans, and what
    to do; a :class:`CorruptStoreError` naming the chunk where the manifest shows which one changed."""
    try:
        yield
    except (GeostpError, MemoryError, RecursionError):
        raise
    except Exception as exc:
        raise _read_failure(Path(path), variable, selection, exc) from exc


def _read_failure(root: Path, variable: str, selection: Any, exc: Exception) -> StoreError:
    """The error for a read of ``selection`` of ``variable`` in the store ``root`` that raised ``exc``."""
    spanned = _chunk_files(root, variable, selection)
    what = f"{type(exc).__name__}: {exc}"
    todo = (f"run `geostp info --verify {root}` to check every chunk, then ingest the store again or restore it "
            "from a copy")
    try:
        manifest = manifest_entries(root)
    except StoreError as bad:
        return CorruptStoreError(f"store {root}: variable {variable!r} could not be read ({what}), and {bad}")
    if manifest is None:
        present = [rel for rel in spanned if (root / rel).is_file()] or spanned
        return CorruptStoreError(
            f"store {root} is damaged or unreadable: variable {variable!r}, chunk {_listed(present)} could not be "
            f"read ({what}); the store has no {MANIFEST_NAME} (written before geostp kept one), so which chunk "
            f"changed cannot be checked; expected chunks that decode; ingest the store again")
    damaged = [(rel, why) for rel in spanned if (why := file_problem(root, rel, manifest.get(rel), full=True))]
    if damaged:
        rel, why = damaged[0]
        more = f" (and {len(damaged) - 1} more damaged chunk(s) in the same read)" if len(damaged) > 1 else ""
        return CorruptStoreError(
            f"store {root} is damaged: variable {variable!r}, chunk {rel} {why}{more}; reading it failed ({what}); "
            f"expected every chunk unchanged since ingest; {todo}")
    return StoreError(
        f"store {root}: variable {variable!r}, chunk {_listed(spanned)} could not be read ({what}), although "
        f"{'it matches' if len(spanned) == 1 else 'they match'} the manifest (a file system or permission problem, "
        f"or a zarr/numcodecs version that cannot decode it?); expected readable chunks; {todo}")


def _listed(rels: Sequence[str]) -> str:
    return ", ".join(rels[:3]) + (f" (and {len(rels) - 3} more)" if len(rels) > 3 else "") if rels else "(unknown)"


def _chunk_files(root: Path, variable: str, selection: Any) -> list[str]:
    """The chunk files (relative to ``root``) that ``selection`` of ``variable`` spans, present or not (from the
    array's metadata); every chunk file of the variable on disk where the selection or the metadata cannot say."""
    try:
        meta = json.loads((root / variable / "zarr.json").read_text(encoding="utf-8"))
        shape = [int(n) for n in meta["shape"]]
        chunk = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        encoding = meta.get("chunk_key_encoding") or {}
        default = encoding.get("name", "default") == "default"
        sep = str((encoding.get("configuration") or {}).get("separator", "/" if default else "."))
        sel = selection if isinstance(selection, tuple) else (slice(None),) * len(shape)
        if len(sel) != len(shape) or not all(isinstance(s, slice) for s in sel):
            raise ValueError("not a box")
        spans = []
        for s, n, c in zip(sel, shape, chunk, strict=True):
            start, stop, _ = s.indices(n)
            spans.append(range(start // c, (stop - 1) // c + 1) if stop > start else range(0))
        prefix = f"{variable}/" + ("c" + sep if default else "")
        return [prefix + sep.join(map(str, idx)) for idx in itertools.product(*spans)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        folder = root / variable
        return sorted(f.relative_to(root).as_posix() for f in folder.rglob("*")
                      if f.is_file() and f.name != "zarr.json") if folder.is_dir() else []


def unmodified_store_path(cube: xr.Dataset, variables: Sequence[str]) -> str | None:
    """The store ``cube`` was opened from by :func:`open_cube`, if ``variables`` are still exactly what it read.

    ``None`` when the cube did not come from :func:`open_cube`, or when any of ``variables`` was
    computed, selected, rechunked, loaded or rescaled since (it is then a different array, or
    carries no mark): such a cube must be read through xarray, not from the store's chunks.
    """
    path = cube.encoding.get("source")
    if path is None:
        return None
    for name in variables:
        var = cube[name].variable
        mark = var.encoding.get(STORE_ARRAY_KEY)
        if mark is None or not isinstance(var.data, dask_array.Array) or var.data.name != mark:
            return None
        if any(k in var.encoding for k in ("scale_factor", "add_offset")):
            return None
    return str(path)


def store_info(path: str | os.PathLike[str]) -> CubeInfo:
    """Validate and describe a store without reading its data (its files are checked against the manifest's
    sizes, :func:`open_cube`)."""
    return validate_cube(open_cube(path, validate=False), source=str(path), check_values=False)
