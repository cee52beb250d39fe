"""Crowd flows in the TaxiBJ/DeepST HDF5 layout (TaxiBJ, BikeNYC, TaxiNYC) as a lazy cube with ``inflow``/``outflow``.

The layout (Zhang et al., 2017, DeepST/ST-ResNet): each file holds ``data``
``(T, 2, H, W)`` (channel 0 inflow, channel 1 outflow) and ``date`` ``(T,)``
as bytes ``YYYYMMDDSS``, ``SS`` the slot of the day.  TaxiBJ's 30-minute files
number their slots 01-48 and BikeNYC's hourly ones 01-24 (one-based); the
TaxiNYC files number hours 00-23 (zero-based).  Several (yearly) files become
one cube with a real time coordinate.

Policies, recorded in the cube's attrs:

- *Duplicated slots* (the same time more than once): copies that are equal
  are collapsed to one; copies that differ are resolved by ``duplicates``:
  ``'raise'`` (default: a :class:`DataError` naming the file, the slot and
  how many there are), ``'first'``, ``'last'``, or ``'sum'`` (add the copies:
  right when a slot was split over two processing chunks, as in TaxiNYC,
  where one copy of a quarter's first day holds only the trips that began in
  the previous quarter).
- *Missing slots* are gaps: the time axis holds the slots present, sorted;
  :func:`geostp.cube.find_gaps` reports the gaps, ``attrs['time_step']`` is
  the slot length, ``attrs['n_missing_steps']`` counts the missing slots.

The grid has no CRS: ``x``/``y`` are cell indices (row 0 as stored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import finish_cube, resolve_files
from geostp.errors import ConfigError, DataError

__all__ = ["open_taxibj", "DUPLICATE_POLICIES"]

DUPLICATE_POLICIES = ("raise", "first", "last", "sum")


def _read_index(p: Path) -> tuple[list[str], tuple[int, ...], int]:
    """The ``date`` strings, the shape of ``data`` and its HDF5 chunk length in time (no flow values read)."""
    import h5py

    with open(p, "rb") as f:
        head = f.read(8)
    if head != b"\x89HDF\r\n\x1a\n":
        raise DataError(f"{p} is not an HDF5 file (starts with {head!r}); expected the TaxiBJ layout: "
                        "an HDF5 file with datasets 'data' (T, 2, H, W) and 'date' (T,)")
    try:
        with h5py.File(p, "r") as h:
            missing = [k for k in ("data", "date") if k not in h]
            if missing:
                raise DataError(f"{p} has no dataset {' or '.join(map(repr, missing))} (it has "
                                f"{', '.join(map(repr, h.keys())) or 'nothing'}); expected the TaxiBJ layout "
                                "'data' (T, 2, H, W) and 'date' (T,) bytes YYYYMMDDSS")
            shape = h["data"].shape
            rows_per_chunk = int(h["data"].chunks[0]) if h["data"].chunks else 1
            raw = h["date"][...]
    except OSError as exc:
        raise DataError(f"{p} could not be read as HDF5 ({exc}); it may be truncated") from None
    if len(shape) != 4 or shape[1] != 2:
        raise DataError(f"{p}: 'data' has shape {shape}; expected (T, 2, H, W) with channels inflow, outflow")
    if raw.shape != (shape[0],):
        raise DataError(f"{p}: 'date' has shape {raw.shape} but 'data' has {shape[0]} time slots; expected one "
                        "date per slot")
    dates = [d.decode("ascii", "replace") if isinstance(d, bytes) else str(d) for d in raw.tolist()]
    return dates, tuple(int(s) for s in shape), rows_per_chunk


def _slots(p: Path, dates: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Day (datetime64[D]) and raw slot number of each date string; errors name the file and the string."""
    text = np.array([s.strip() for s in dates], dtype="U16")
    ok = (np.char.str_len(text) == 10) & np.char.isdigit(text)
    if not ok.all():
        i = int(np.nonzero(~ok)[0][0])
        raise DataError(f"{p}: date #{i} is {str(text[i])!r}; expected 10 digits YYYYMMDDSS (SS the slot of the day)")
    days = pd.to_datetime(pd.Series(text).str[:8], format="%Y%m%d", errors="coerce")
    if days.isna().any():
        i = int(np.nonzero(days.isna().to_numpy())[0][0])
        raise DataError(f"{p}: date #{i} {str(text[i])!r} is not a valid day; expected YYYYMMDDSS")
    slots = np.array([int(s[8:]) for s in text.tolist()], np.int64)
    return days.to_numpy().astype("datetime64[D]"), slots


# Over 80 lines: a long parameter docstring and the TaxiBJ file quirks (slots, duplicates, gaps) handled in order.
def open_taxibj(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    duplicates: str = "raise",
    slots_per_day: int | None = None,
    first_slot: int | None = None,
    variables: Sequence[str] = ("inflow", "outflow"),
    long_names: Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
    time_chunk: int | None = None,
    dtype: str = "float32",
) -> xr.Dataset:
    """Open crowd-flow files in the TaxiBJ layout as one lazy cube.

    Parameters
    ----------
    paths
        A file, a glob pattern, or a list of them (e.g. one file per year).
    duplicates
        What to do with differing copies of a slot: ``'raise'``, ``'first'``,
        ``'last'`` or ``'sum'`` (module docstring). Equal copies always
        collapse to one.
    slots_per_day
        48 (30 min, TaxiBJ) or 24 (hourly); default: 48 if a slot number above
        24 occurs, else 24.
    first_slot
        How slots are numbered: 1 (TaxiBJ, 01-48) or 0 (TaxiNYC, 00-23);
        default: 0 if a slot 00 occurs, else 1.
    variables, long_names
        Names (and long names) of channels 0 and 1.
    start, end
        Keep only times in ``[start, end]``.
    time_chunk
        Slots per dask chunk (default one week).
    dtype
        The cube's dtype (counts up to 2^24 are exact in float32).

    Returns
    -------
    xarray.Dataset
        ``inflow`` and ``outflow`` (counts per slot, units ``1``) with dims
        ``time, y, x``; integer cell indices as ``y``/``x``; attrs recording
        the slot convention and the duplicate and missing-slot counts.

    Notes
    -----
    Opening reads the ``date`` arrays, and the flow values of duplicated slots
    only (to tell equal copies from differing ones); everything else is read
    when computed.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicates={duplicates!r} is not a policy; expected one of "
                          f"{', '.join(DUPLICATE_POLICIES)}")
    if len(variables) != 2:
        raise ConfigError(f"variables={list(variables)!r}; expected two names, for channels 0 and 1")
    files = resolve_files(paths, what="crowd-flow file", suffixes=(".h5", ".hdf5"), argument="paths")
    index = []
    grid: tuple[int, int] | None = None
    storage_rows = 1
    for p in files:
        dates, shape, rows_per_chunk = _read_index(p)
        storage_rows = max(storage_rows, rows_per_chunk)
        if grid is None:
            grid = shape[2:]
        elif shape[2:] != grid:
            raise DataError(f"{p}: grid {shape[2:]} differs from {grid} of {files[0]}; expected one grid")
        days, slots = _slots(p, dates)
        index.append((p, days, slots))
    assert grid is not None
    all_slots = np.concatenate([s for _, _, s in index])
    if all_slots.size == 0:
        raise DataError(f"{', '.join(map(str, files))} hold no time slot")
    if first_slot is None:
        first_slot = 0 if (all_slots == 0).any() else 1
    if first_slot not in (0, 1):
        raise ConfigError(f"first_slot={first_slot!r}; expected 0 (slots 00..) or 1 (slots 01..)")
    if slots_per_day is None:
        slots_per_day = 48 if (all_slots - first_slot).max() >= 24 else 24
    if slots_per_day <= 0 or 86400 % slots_per_day:
        raise ConfigError(f"slots_per_day={slots_per_day}; expected a divisor of a day such as 24 or 48")
    step = pd.Timedelta(days=1) / slots_per_day

    file_idx, rows, times = [], [], []
    for k, (p, days, slots) in enumerate(index):
        zero_based = slots - first_slot
        bad = np.nonzero((zero_based < 0) | (zero_based >= slots_per_day))[0]
        if bad.size:
            raise DataError(f"{p}: slot {slots[bad[0]]:02d} (date #{bad[0]}) is outside "
                            f"{first_slot:02d}..{first_slot + slots_per_day - 1:02d}; expected {slots_per_day} "
                            f"slots a day numbered from {first_slot:02d} (set slots_per_day / first_slot)")
        file_idx.append(np.full(days.size, k))
        rows.append(np.arange(days.size))
        times.append(days.astype("datetime64[ns]") + zero_based * step.to_timedelta64())
    file_idx_a, rows_a, times_a = np.concatenate(file_idx), np.concatenate(rows), np.concatenate(times)

    if start is not None or end is not None:
        keep = np.ones(times_a.size, bool)
        if start is not None:
            keep &= times_a >= np.datetime64(pd.Timestamp(start))
        if end is not None:
            keep &= times_a <= np.datetime64(pd.Timestamp(end))
        if not keep.any():
            raise DataError(f"no slot of {', '.join(p.name for p in files)} lies between {start} and {end}")
        file_idx_a, rows_a, times_a = file_idx_a[keep], rows_a[keep], times_a[keep]

    order = np.lexsort((rows_a, file_idx_a, times_a))  # by time, then file, then row: "first" is file order
    file_idx_a, rows_a, times_a = file_idx_a[order], rows_a[order], times_a[order]
    unique_times, first_pos, counts = np.unique(times_a, return_index=True, return_counts=True)
    dst = np.repeat(np.arange(unique_times.size), counts)  # output slot of every source row

    stats = {"n_duplicate_slots": int((counts > 1).sum()), "n_duplicate_slots_equal": 0,
             "n_duplicate_slots_differing": 0}
    keep_rows = np.ones(times_a.size, bool)
    dup_slots = np.nonzero(counts > 1)[0]
    dup_pos = np.concatenate([np.arange(first_pos[u], first_pos[u] + counts[u]) for u in dup_slots]) \
        if dup_slots.size else np.zeros(0, int)
    dup_values = dict(zip(dup_pos.tolist(), _read_rows([files[f] for f in file_idx_a[dup_pos]], rows_a[dup_pos]),
                          strict=True))
    for u in dup_slots:
        pos = np.arange(first_pos[u], first_pos[u] + counts[u])
        copies = [dup_values[int(i)] for i in pos]
        if all(np.array_equal(copies[0], c, equal_nan=True) for c in copies[1:]):
            stats["n_duplicate_slots_equal"] += 1
            keep_rows[pos[1:]] = False
            continue
        stats["n_duplicate_slots_differing"] += 1
        if duplicates == "raise":
            n_diff = int((counts > 1).sum())
            raise DataError(
                f"{files[file_idx_a[pos[0]]]}: slot {pd.Timestamp(unique_times[u])} occurs {counts[u]} times with "
                f"different values (one of {n_diff} duplicated slots in {', '.join(p.name for p in files)}); "
                "choose duplicates='first', 'last' or 'sum'")
        if duplicates == "first":
            keep_rows[pos[1:]] = False
        elif duplicates == "last":
            keep_rows[pos[:-1]] = False
        # 'sum': keep every copy; the reader adds rows that share an output slot
    file_idx_a, rows_a, dst = file_idx_a[keep_rows], rows_a[keep_rows], dst[keep_rows]

    n = unique_times.size
    # Default: a week, or more when the files are stored in HDF5 chunks that are longer in time (TaxiNYC's
    # hold 1014 slots by 2 x 2 cells): a dask chunk then decompresses each storage chunk about once.
    chunk = int(time_chunk or max(7 * slots_per_day, storage_rows))
    chunks = (tuple(min(chunk, n - i) for i in range(0, n, chunk)), (2,), (grid[0],), (grid[1],))
    data = da.map_blocks(_read_block, [str(f) for f in files], file_idx_a, rows_a, dst, np.dtype(dtype),
                         chunks=chunks, dtype=np.dtype(dtype), meta=np.empty((0, 0, 0, 0), np.dtype(dtype)))
    names = list(long_names) if long_names is not None else [
        "inflow: flow into the cell during the slot", "outflow: flow out of the cell during the slot"]
    data_vars = {
        v: (("time", "y", "x"), data[:, c], {"long_name": names[c], "units": "1",
                                             "comment": f"channel {c} of 'data' in the TaxiBJ layout; count per slot"})
        for c, v in enumerate(variables)
    }
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", unique_times.astype("datetime64[ns]"), {"standard_name": "time",
                                                                     "comment": "start of the slot"}),
            "y": ("y", np.arange(grid[0]), {"long_name": "grid row index (as stored; no CRS)", "units": "1"}),
            "x": ("x", np.arange(grid[1]), {"long_name": "grid column index (no CRS)", "units": "1"}),
        },
        attrs={
            "title": "crowd flows (TaxiBJ layout)",
            "source": ", ".join(str(f) for f in files),
            "geostp_adapter": "taxibj",
            "slots_per_day": int(slots_per_day),
            "first_slot": int(first_slot),
            "duplicate_policy": duplicates,
            **stats,
            "n_duplicate_rows_dropped": int((~keep_rows).sum()),
            "n_source_rows": int(times_a.size),
        },
    )
    return finish_cube(ds, step=step, source=ds.attrs["source"])


def _read_rows(paths: Sequence[Path], rows: np.ndarray) -> list[np.ndarray]:
    """Whole slots (2, H, W) at ``rows`` of ``paths`` (pairwise), one file opening per file."""
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    by_file: dict[Path, list[int]] = {}
    for k, p in enumerate(paths):
        by_file.setdefault(p, []).append(k)
    for p, ks in by_file.items():
        wanted = rows[ks]
        block = _rows_of(p, wanted, slice(None), slice(None), np.dtype("float64"))
        for k, values in zip(ks, block, strict=True):
            out[k] = values
    return out


def _rows_of(path: str | Path, wanted: np.ndarray, ys: slice, xs: slice, dtype: np.dtype) -> np.ndarray:
    """``data[wanted, :, ys, xs]`` for any (unsorted, repeated) rows, reading a contiguous range when it is dense."""
    import h5py

    uniq = np.unique(wanted)
    with h5py.File(path, "r", rdcc_nbytes=64 * 2**20) as h:
        if uniq[-1] - uniq[0] + 1 <= 4 * uniq.size:  # dense: one contiguous read is faster than fancy indexing
            block = np.asarray(h["data"][int(uniq[0]): int(uniq[-1]) + 1, :, ys, xs], dtype)
            return block[wanted - uniq[0]]
        block = np.asarray(h["data"][uniq, :, ys, xs], dtype)
    return block[np.searchsorted(uniq, wanted)]


def _read_block(paths: list[str], file_idx: np.ndarray, rows: np.ndarray, dst: np.ndarray, dtype: np.dtype,
                block_info=None) -> np.ndarray:
    (t0, t1), _, (y0, y1), (x0, x1) = block_info[None]["array-location"]
    out = np.zeros((t1 - t0, 2, y1 - y0, x1 - x0), dtype)
    lo, hi = np.searchsorted(dst, [t0, t1])  # dst is sorted: the rows of this block are contiguous here
    sel = np.arange(lo, hi)
    for f in np.unique(file_idx[sel]):
        pick = sel[file_idx[sel] == f]
        values = _rows_of(paths[f], rows[pick], slice(y0, y1), slice(x0, x1), dtype)
        np.add.at(out, dst[pick] - t0, values)
    return out
