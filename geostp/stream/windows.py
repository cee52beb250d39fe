"""Where samples can be cut from a cube: windows in time, patches in space, splits, and the rain rule.

A *sample* is ``input_steps + output_steps`` consecutive frames of one
sequence (the window) over one spatial crop (the patch).  This module finds
every valid sample position of a cube without reading its data (only the
coordinates), and, when a rain filter is asked for, computes the per-patch
rain statistics chunk by chunk with dask.

Rules
-----
Windows
    A window starts at frame ``t`` and covers frames ``t .. t + L - 1`` with
    ``L = input_steps + output_steps``.  All ``L`` frames must be consecutive
    at the cube's time step (no gap, see :func:`geostp.cube.find_gaps`) and
    lie inside the split.  Within each run of consecutive frames ``[a, b)``
    windows start at ``a, a + stride, a + 2 stride, ...`` while they end by
    ``b``; a window never spans a gap, a split boundary or two sequences.
Patches
    Offsets ``(y0, x0)`` lie on a lattice of step ``patch_stride`` from the
    top-left corner, with ``y0 + patch_height <= ny``: the full grid in grid
    mode, or ``random_patches`` draws (with replacement, new each epoch) per
    window in random mode.  Pixels beyond the last lattice patch (less than a
    stride at the right and bottom edges) are not covered by grid mode.
    ``patch_size=None`` samples the whole domain (``y0 = x0 = 0``).
Rain rule (:class:`RainFilter`)
    The *rain fraction* of a sample is the number of pixels of its **input**
    frames (``input_steps x patch_height x patch_width``, NaN counting as dry)
    whose value of ``variable`` exceeds ``threshold`` (strictly, in the
    variable's own units, e.g. mm/h) divided by that pixel count.  A sample
    is kept if its rain fraction is at least ``min_fraction``; otherwise it
    is kept with probability ``keep_dry``, drawn anew each epoch from
    ``(seed, epoch)``.  The counts come from a dask reduction (exceedances
    summed over cells of ``gcd(patch size, patch stride)`` pixels per
    frame), so the cube is read chunk by chunk, never whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.cube import find_gaps, time_step
from geostp.errors import ConfigError, CubeError, UnknownNameError

__all__ = [
    "RainFilter",
    "WindowSpec",
    "Split",
    "split_cube",
    "SAMPLE_DTYPE",
    "window_index",
    "temporal_windows",
    "patch_offsets",
    "cube_variables",
    "rain_table",
    "RainTable",
    "sample_source",
    "SampleSource",
]

#: The fields of a sample index: sequence index (0 for cubes without a ``sequence``
#: dim), index of the window's first frame, patch offsets, and the rain fraction
#: of the sample's input frames (NaN when no rain filter is set).
SAMPLE_DTYPE = np.dtype([("sequence", "i8"), ("time", "i8"), ("y0", "i8"), ("x0", "i8"), ("rain", "f4")])

_MAX_RAIN_TABLE_BYTES = 768 * 2**20


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        out = (int(value), int(value))
    else:
        try:
            out = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except TypeError:
            raise ConfigError(f"{name}={value!r} is not an integer or a (height, width) pair") from None
        if len(out) != 2:
            raise ConfigError(f"{name}={value!r} has {len(out)} values; expected one integer or (height, width)")
    if min(out) < 1:
        raise ConfigError(f"{name}={value!r} must be positive")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class RainFilter:
    """Keep samples with rain in their input frames (the rule in the module docstring).

    Parameters
    ----------
    threshold
        A pixel is rainy if its value exceeds this, in the variable's units (mm/h for rain rate).
    min_fraction
        Keep a sample if at least this fraction (0..1) of its input pixels is rainy.
    keep_dry
        Probability (0..1) of keeping a sample that fails the rule, drawn per epoch.
    variable
        The variable the rule looks at; default the first of the dataset's variables.
    """

    threshold: float = 0.1
    min_fraction: float = 0.05
    keep_dry: float = 0.02
    variable: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_fraction <= 1.0:
            raise ConfigError(f"RainFilter.min_fraction={self.min_fraction} is outside [0, 1]; expected a fraction of pixels")
        if not 0.0 <= self.keep_dry <= 1.0:
            raise ConfigError(f"RainFilter.keep_dry={self.keep_dry} is outside [0, 1]; expected a probability")
        if not math.isfinite(self.threshold):
            raise ConfigError(f"RainFilter.threshold={self.threshold} is not a finite number")


@dataclass(frozen=True)
class WindowSpec:
    """How samples are cut: a window of frames in time and a patch in space.

    Parameters
    ----------
    input_steps, output_steps
        Frames given to the model (``T_in``) and frames it must predict (``T_out``).
    stride
        Frames between the starts of successive windows within a run of consecutive frames.
    patch_size
        ``(height, width)`` or one integer for square patches; ``None`` for whole-domain samples.
    patch_stride
        Step of the patch-offset lattice, pixels; default ``patch_size`` (non-overlapping
        grid) in grid mode and ``max(1, patch_size // 8)`` in random mode.
    random_patches
        ``0``: every lattice patch of every window (grid mode).  ``k > 0``: ``k``
        random lattice patches per window, drawn anew each epoch (random mode).
    rain
        An optional :class:`RainFilter`.
    """

    input_steps: int
    output_steps: int
    stride: int = 1
    patch_size: int | tuple[int, int] | None = None
    patch_stride: int | tuple[int, int] | None = None
    random_patches: int = 0
    rain: RainFilter | None = None

    def __post_init__(self) -> None:
        for name in ("input_steps", "output_steps", "stride"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"WindowSpec.{name}={value!r}; expected a positive integer")
        if not isinstance(self.random_patches, (int, np.integer)) or self.random_patches < 0:
            raise ConfigError(f"WindowSpec.random_patches={self.random_patches!r}; expected 0 (grid) or a positive count")
        if self.patch_size is None:
            if self.random_patches:
                raise ConfigError("WindowSpec.random_patches needs a patch_size; whole-domain samples have one position")
        else:
            _pair(self.patch_size, "WindowSpec.patch_size")
        if self.patch_stride is not None:
            _pair(self.patch_stride, "WindowSpec.patch_stride")
        if isinstance(self.rain, Mapping):  # from_dict / YAML
            object.__setattr__(self, "rain", RainFilter(**self.rain))

    @property
    def length(self) -> int:
        """Frames per window, ``input_steps + output_steps``."""
        return self.input_steps + self.output_steps

    def patch_shape(self, ny: int, nx: int) -> tuple[int, int]:
        """``(height, width)`` of a sample on a grid of ``ny x nx`` pixels."""
        return (ny, nx) if self.patch_size is None else _pair(self.patch_size, "patch_size")

    def lattice_step(self, ny: int, nx: int) -> tuple[int, int]:
        """Step of the patch-offset lattice on a grid of ``ny x nx`` pixels."""
        if self.patch_size is None:
            return (ny, nx)
        if self.patch_stride is not None:
            return _pair(self.patch_stride, "patch_stride")
        ph, pw = _pair(self.patch_size, "patch_size")
        if self.random_patches:
            return (max(1, ph // 8), max(1, pw // 8))
        return (ph, pw)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``WindowSpec.from_dict`` reverses it)."""
        d = asdict(self)
        for k in ("patch_size", "patch_stride"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowSpec:
        d = dict(d)
        for k in ("patch_size", "patch_stride"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        if d.get("rain") is not None:
            d["rain"] = RainFilter(**d["rain"])
        return cls(**d)


# ----------------------------------------------------------------------------- splits


def _as_time_value(value: Any, times: np.ndarray, where: str) -> Any:
    if value is None:
        return None
    if np.issubdtype(times.dtype, np.datetime64):
        try:
            return np.datetime64(pd.Timestamp(value).to_datetime64(), "ns")
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: {value!r} is not a date/time; expected something like '2024-07-01T12:00'") from None
    try:
        return int(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {value!r} is not a frame index; the cube's time axis is integer") from None


@dataclass(frozen=True)
class Split:
    """A named part of a cube: half-open time ranges and/or a set of sequences.

    Parameters
    ----------
    name
        ``"train"``, ``"validation"``, ``"test"`` or any name (used in messages).
    time
        Half-open ranges ``[start, end)`` of time-coordinate values (dates as
        strings or ``datetime64``; frame numbers for integer time axes).
        ``None`` as a bound is open.  No ranges means all times.
    sequences
        Indices (positions) along the ``sequence`` dim; ``None`` means all.

    A window belongs to a split only if all its frames do, so no window of
    one split shares a frame with a window of another split whose ranges
    do not overlap.
    """

    name: str
    time: tuple[tuple[Any, Any], ...] = ()
    sequences: tuple[int, ...] | None = None

    def time_mask(self, cube: xr.Dataset) -> np.ndarray:
        """Boolean mask over the cube's time axis: True for frames inside the split."""
        times = np.asarray(cube["time"].values)
        if np.issubdtype(times.dtype, np.datetime64):
            times = times.astype("datetime64[ns]")
        if not self.time:
            return np.ones(times.shape, bool)
        mask = np.zeros(times.shape, bool)
        for start, end in self.time:
            lo = _as_time_value(start, times, f"split {self.name!r}")
            hi = _as_time_value(end, times, f"split {self.name!r}")
            m = np.ones(times.shape, bool)
            if lo is not None:
                m &= times >= lo
            if hi is not None:
                m &= times < hi
            mask |= m
        return mask

    def sequence_indices(self, cube: xr.Dataset) -> np.ndarray:
        """Indices along ``sequence`` inside the split (``[0]`` for cubes without the dim)."""
        if "sequence" not in cube.dims:
            if self.sequences is not None:
                raise ConfigError(f"split {self.name!r} selects sequences {list(self.sequences)[:5]}... but the cube "
                                  "has no 'sequence' dim; split it by time ranges instead")
            return np.zeros(1, np.int64)
        n = cube.sizes["sequence"]
        if self.sequences is None:
            return np.arange(n, dtype=np.int64)
        idx = np.unique(np.asarray(self.sequences, dtype=np.int64))
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ConfigError(f"split {self.name!r} names sequence indices {bad[:5].tolist()} outside the cube's "
                              f"0..{n - 1}; expected positions along 'sequence'")
        return idx

    def to_dict(self) -> dict[str, Any]:
        def fmt(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, np.datetime64):
                return str(pd.Timestamp(v).isoformat())
            return v if isinstance(v, str) else int(v)

        return {"name": self.name, "time": [[fmt(a), fmt(b)] for a, b in self.time],
                "sequences": None if self.sequences is None else [int(s) for s in self.sequences]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Split:
        seq = d.get("sequences")
        return cls(name=d["name"], time=tuple(tuple(r) for r in d.get("time", ())),
                   sequences=None if seq is None else tuple(int(s) for s in seq))


def _ranges(value: Any, name: str) -> tuple[tuple[Any, Any], ...]:
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (tuple, list)):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in value):
        return tuple(tuple(r) for r in value)
    raise ConfigError(f"split {name!r}: {value!r} is not a (start, end) time range or a list of them")


# Over 80 lines: a third is its parameter docstring.
def split_cube(
    cube: xr.Dataset,
    *,
    train: Any = None,
    validation: Any = None,
    test: Any = None,
    by: str | None = None,
    **others: Any,
) -> dict[str, Split]:
    """Define non-overlapping train / validation / test splits of a cube.

    Each split is given as one of

    - a **fraction** (``0.8``): consecutive parts of the time axis (or of the
      ``sequence`` axis, the default ``by`` for cubes that have one), taken in
      the order the splits are named;
    - **time ranges**: ``(start, end)`` or a list of them, half-open, in
      time-coordinate values (``by="time"``);
    - **sequence indices**: a list/array of integers (``by="sequence"``).

    Parameters
    ----------
    cube
        The cube (only its coordinates are read).
    train, validation, test, **others
        The splits; ``None`` leaves a split out.
    by
        ``"time"`` or ``"sequence"``; default ``"sequence"`` for cubes with a
        ``sequence`` dim, else ``"time"``.

    Returns
    -------
    dict
        Split name to :class:`Split`, in the order given.

    Raises
    ------
    ConfigError
        If splits overlap, a split selects nothing, or fractions exceed 1.
    """
    given = {k: v for k, v in {"train": train, "validation": validation, "test": test, **others}.items()
             if v is not None}
    if not given:
        raise ConfigError("split_cube needs at least one split (train=..., validation=..., test=...)")
    has_seq = "sequence" in cube.dims
    by = by or ("sequence" if has_seq else "time")
    if by not in ("time", "sequence"):
        raise ConfigError(f"split_cube(by={by!r}); expected 'time' or 'sequence'")
    if by == "sequence" and not has_seq:
        raise ConfigError("split_cube(by='sequence') but the cube has no 'sequence' dim; use by='time'")
    fractions = {k: v for k, v in given.items() if isinstance(v, (float, np.floating))}
    splits: dict[str, Split] = {}
    if fractions:
        if len(fractions) != len(given):
            raise ConfigError("split_cube: give every split as a fraction, or none; got a mix "
                              f"({ {k: type(v).__name__ for k, v in given.items()} })")
        total = sum(fractions.values())
        if any(f <= 0 for f in fractions.values()) or total > 1 + 1e-9:
            raise ConfigError(f"split fractions {fractions} must be positive and sum to at most 1 (sum {total:.3f})")
        n = cube.sizes["sequence"] if by == "sequence" else cube.sizes["time"]
        times = np.asarray(cube["time"].values)
        edges = np.rint(np.cumsum([0.0, *fractions.values()]) * n).astype(int)
        for (name, _), lo, hi in zip(fractions.items(), edges[:-1], edges[1:], strict=True):
            if hi <= lo:
                raise ConfigError(f"split {name!r} ({fractions[name]:.3g} of {n} {by} steps) is empty; "
                                  "expected a larger fraction or a longer cube")
            if by == "sequence":
                splits[name] = Split(name, sequences=tuple(range(lo, hi)))
            else:
                end = None if hi >= n else times[hi]
                splits[name] = Split(name, time=((times[lo], end),))
    else:
        for name, value in given.items():
            if by == "sequence":
                seq = np.atleast_1d(np.asarray(value))
                if not np.issubdtype(seq.dtype, np.integer):
                    raise ConfigError(f"split {name!r}: by='sequence' needs integer sequence indices, got {value!r}")
                splits[name] = Split(name, sequences=tuple(int(s) for s in seq))
            else:
                splits[name] = Split(name, time=_ranges(value, name))
    _check_disjoint(cube, splits)
    return splits


def _check_disjoint(cube: xr.Dataset, splits: Mapping[str, Split]) -> None:
    names = list(splits)
    masks = {}
    for name in names:
        sp = splits[name]
        tm = sp.time_mask(cube)
        seq = sp.sequence_indices(cube)
        if not tm.any() or seq.size == 0:
            raise ConfigError(f"split {name!r} selects no frames of the cube ({_describe_split(sp)}; the cube "
                              f"spans {_span(cube)}); expected ranges that overlap the cube")
        ns = cube.sizes.get("sequence", 1)
        sm = np.zeros(ns, bool)
        sm[seq] = True
        masks[name] = (sm, tm)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = np.outer(masks[a][0] & masks[b][0], masks[a][1] & masks[b][1])
            if both.any():
                s, t = np.argwhere(both)[0]
                where = f"time {_fmt(cube['time'].values[t])}" + (f", sequence {s}" if "sequence" in cube.dims else "")
                raise ConfigError(f"splits {a!r} and {b!r} overlap (both hold {where}); expected disjoint splits")


def _fmt(v: Any) -> str:
    return str(pd.Timestamp(v)) if isinstance(v, np.datetime64) else str(v)


def _span(cube: xr.Dataset) -> str:
    t = cube["time"].values
    return f"time {_fmt(t[0])} .. {_fmt(t[-1])}" if t.size else "no time"


def _describe_split(split: Split) -> str:
    parts = []
    if split.time:
        parts.append("time " + ", ".join(f"[{a}, {b})" for a, b in split.time))
    if split.sequences is not None:
        parts.append(f"{len(split.sequences)} sequence(s)")
    return "; ".join(parts) or "everything"


# ----------------------------------------------------------------------------- index


def cube_variables(cube: xr.Dataset, variables: Sequence[str] | str | None) -> tuple[str, ...]:
    """The data variables to use, in channel order; all ``(…time, y, x)`` variables if ``None``."""
    if isinstance(variables, str):
        variables = [variables]
    available = [v for v in cube.data_vars if {"time", "y", "x"} <= set(cube[v].dims)]
    if variables is None:
        if not available:
            raise CubeError(f"the cube has no data variable with dims (time, y, x); it has {list(cube.data_vars)}")
        return tuple(available)
    variables = list(variables)
    if not variables:
        raise ConfigError("variables=[] selects no channel; expected at least one variable name")
    for v in variables:
        if v not in available:
            raise UnknownNameError(f"unknown variable {v!r}: the cube has {available}; choose one of them")
    if len(set(variables)) != len(variables):
        raise ConfigError(f"variables {variables} name a variable twice; expected each channel once")
    return tuple(variables)


@dataclass(frozen=True)
class _TimeAxis:
    """Window starts of one split (shared by all sequences)."""

    starts: np.ndarray          # valid window start indices
    longest_run: int
    n_frames_in_split: int
    n_gaps: int


def _time_axis(cube: xr.Dataset, spec: WindowSpec, split: Split | None) -> _TimeAxis:
    times = np.asarray(cube["time"].values)
    nt = times.size
    in_split = split.time_mask(cube) if split is not None else np.ones(nt, bool)
    if nt >= 2:
        step = time_step(cube)
        gaps = find_gaps(cube, step)  # also refuses unsorted or irregular axes
        if np.issubdtype(times.dtype, np.datetime64):
            diffs = np.diff(times.astype("datetime64[ns]"))
            consecutive = diffs == np.timedelta64(step, "ns")
        else:
            consecutive = np.diff(times) == step
    else:
        gaps, consecutive = [], np.zeros(0, bool)
    link = in_split[:-1] & in_split[1:] & consecutive  # frame i and i+1 in one run
    starts_flag = in_split & np.concatenate([[True], ~link])
    run_id = np.cumsum(starts_flag) - 1  # meaningful only where in_split
    idx = np.arange(nt)
    run_first = np.flatnonzero(starts_flag)
    n_runs = run_first.size
    if n_runs == 0:
        return _TimeAxis(np.zeros(0, np.int64), 0, 0, len(gaps))
    run_len = np.bincount(run_id[in_split], minlength=n_runs)
    first = run_first[run_id]
    end = first + run_len[run_id]
    L = spec.length
    ok = in_split & ((idx - first) % spec.stride == 0) & (idx + L <= end)
    return _TimeAxis(idx[ok].astype(np.int64), int(run_len.max()), int(in_split.sum()), len(gaps))


def temporal_windows(cube: xr.Dataset, spec: WindowSpec, *, split: Split | None = None) -> np.ndarray:
    """``(sequence, time)`` of every valid window (structured array with those two int64 fields).

    Raises
    ------
    ConfigError
        If the split selects no frame, or the window is longer than every run
        of consecutive frames in it.
    """
    axis = _time_axis(cube, spec, split)
    where = f" in split {split.name!r}" if split is not None else ""
    if axis.n_frames_in_split == 0:
        raise ConfigError(f"split {split.name if split else '?'!r} selects no frames of the cube "
                          f"({_describe_split(split) if split else ''}; the cube spans {_span(cube)}); "
                          "expected a split that overlaps the cube")
    if axis.starts.size == 0:
        raise ConfigError(
            f"window of input_steps + output_steps = {spec.length} frames does not fit{where}: the longest run of "
            f"consecutive frames is {axis.longest_run} (the cube has {cube.sizes['time']} frames and "
            f"{axis.n_gaps} gap(s)); expected input_steps + output_steps <= {axis.longest_run}")
    seqs = split.sequence_indices(cube) if split is not None else (
        np.arange(cube.sizes["sequence"]) if "sequence" in cube.dims else np.zeros(1, np.int64))
    if seqs.size == 0:
        raise ConfigError(f"split {split.name!r} selects no sequence; expected at least one")  # type: ignore[union-attr]
    out = np.empty(seqs.size * axis.starts.size, dtype=[("sequence", "i8"), ("time", "i8")])
    out["sequence"] = np.repeat(seqs, axis.starts.size)
    out["time"] = np.tile(axis.starts, seqs.size)
    return out


def patch_offsets(ny: int, nx: int, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray]:
    """The lattice of patch offsets ``(ys, xs)`` (1-D each) on a ``ny x nx`` grid.

    Raises
    ------
    ConfigError
        If the patch is larger than the grid.
    """
    ph, pw = spec.patch_shape(ny, nx)
    if ph > ny or pw > nx:
        raise ConfigError(f"patch_size {ph}x{pw} (height x width) is larger than the grid {ny}x{nx}; expected a "
                          "patch that fits, or patch_size=None for whole-domain samples")
    sy, sx = spec.lattice_step(ny, nx)
    return np.arange(0, ny - ph + 1, sy, dtype=np.int64), np.arange(0, nx - pw + 1, sx, dtype=np.int64)


# ----------------------------------------------------------------------------- rain statistics


@dataclass
class RainTable:
    """Cumulative exceedance counts for exact per-sample rain fractions.

    ``table[s, t, i, j]`` is the number of pixels above the threshold in frames
    ``< t`` of sequence ``s`` and cells ``< i`` (rows) and ``< j`` (columns),
    cells being ``cell[0] x cell[1]`` pixels; any box of whole cells and frames
    sums from 8 entries.
    """

    table: np.ndarray
    cell: tuple[int, int]
    threshold: float
    variable: str

    def fraction(self, samples: np.ndarray, input_steps: int, patch: tuple[int, int]) -> np.ndarray:
        """Rain fraction of the input frames of each ``(sequence, time, y0, x0)`` sample."""
        gy, gx = self.cell
        ph, pw = patch
        s = samples["sequence"] if "sequence" in (samples.dtype.names or ()) else np.zeros(len(samples), np.int64)
        if self.table.shape[0] == 1:
            s = np.zeros(len(samples), np.int64)
        t0, t1 = samples["time"], samples["time"] + input_steps
        i0, i1 = samples["y0"] // gy, (samples["y0"] + ph) // gy
        j0, j1 = samples["x0"] // gx, (samples["x0"] + pw) // gx
        c = self.table
        total = (c[s, t1, i1, j1] - c[s, t1, i0, j1] - c[s, t1, i1, j0] + c[s, t1, i0, j0]
                 - c[s, t0, i1, j1] + c[s, t0, i0, j1] + c[s, t0, i1, j0] - c[s, t0, i0, j0])
        return (total / float(input_steps * ph * pw)).astype(np.float32)


_RAIN_CACHE: dict[tuple, RainTable] = {}


def rain_table(cube: xr.Dataset, variable: str, threshold: float, cell: tuple[int, int]) -> RainTable:
    """Exceedance counts of ``variable > threshold`` per frame and cell, computed lazily with dask.

    The reduction runs chunk by chunk (only the small count table is held);
    results are cached per (data, variable, threshold, cell) in this process.
    """
    import dask
    from dask.base import tokenize

    arr = cube[variable]
    key = (tokenize(arr.data), variable, float(threshold), cell)
    hit = _RAIN_CACHE.get(key)
    if hit is not None:
        return hit
    dims = ("sequence", "time", "y", "x") if "sequence" in arr.dims else ("time", "y", "x")
    arr = arr.transpose(*dims)
    gy, gx = cell
    ny, nx = arr.sizes["y"], arr.sizes["x"]
    nc = (ny // gy) * (nx // gx) * arr.sizes["time"] * arr.sizes.get("sequence", 1)
    if nc * 4 > _MAX_RAIN_TABLE_BYTES:
        raise ConfigError(
            f"the rain filter needs exceedance counts on cells of {gy}x{gx} pixels (gcd of patch size and patch "
            f"stride), {nc * 4 / 2**20:.0f} MB for this cube; expected at most {_MAX_RAIN_TABLE_BYTES // 2**20} MB: "
            "use a patch_stride that shares a larger divisor with patch_size")
    counts = (arr > threshold).astype(np.int32).coarsen(y=gy, x=gx, boundary="trim").sum()
    if arr.chunks is not None:
        with dask.config.set(scheduler="threads"):
            values = counts.data.compute() if hasattr(counts.data, "compute") else np.asarray(counts.data)
    else:
        values = np.asarray(counts.values)
    values = np.asarray(values)
    if values.ndim == 3:
        values = values[None]
    total = int(values.sum(dtype=np.int64))
    dtype = np.int32 if total < 2**31 - 1 else np.int64
    table = np.zeros((values.shape[0], values.shape[1] + 1, values.shape[2] + 1, values.shape[3] + 1), dtype)
    table[:, 1:, 1:, 1:] = values.cumsum(axis=1, dtype=dtype).cumsum(axis=2, dtype=dtype).cumsum(axis=3, dtype=dtype)
    out = RainTable(table, cell, float(threshold), variable)
    if len(_RAIN_CACHE) >= 8:
        _RAIN_CACHE.pop(next(iter(_RAIN_CACHE)))
    _RAIN_CACHE[key] = out
    return out


def _rain_cell(spec: WindowSpec, ny: int, nx: int) -> tuple[int, int]:
    ph, pw = spec.patch_shape(ny, nx)
    sy, sx = spec.lattice_step(ny, nx)
    return math.gcd(ph, sy), math.gcd(pw, sx)


# ----------------------------------------------------------------------------- sample index


@dataclass
class SampleSource:
    """Everything needed to list an epoch's samples, computed once per dataset.

    Built by :func:`sample_source`; :meth:`epoch_samples` is a pure function
    of ``(seed, epoch)``.
    """

    spec: WindowSpec
    windows: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    patch: tuple[int, int]
    rain: RainTable | None = None
    grid_rain: np.ndarray | None = field(default=None, repr=False)

    def epoch_samples(self, seed: int = 0, epoch: int = 0) -> np.ndarray:
        spec = self.spec
        nw = len(self.windows)
        if spec.random_patches:
            k = spec.random_patches
            rng = np.random.default_rng([int(seed), int(epoch), 11])
            out = np.empty(nw * k, SAMPLE_DTYPE)
            out["sequence"] = np.repeat(self.windows["sequence"], k)
            out["time"] = np.repeat(self.windows["time"], k)
            out["y0"] = self.ys[rng.integers(0, self.ys.size, nw * k)]
            out["x0"] = self.xs[rng.integers(0, self.xs.size, nw * k)]
            out["rain"] = (self.rain.fraction(out, spec.input_steps, self.patch) if self.rain is not None else np.nan)
        else:
            npatch = self.ys.size * self.xs.size
            out = np.empty(nw * npatch, SAMPLE_DTYPE)
            out["sequence"] = np.repeat(self.windows["sequence"], npatch)
            out["time"] = np.repeat(self.windows["time"], npatch)
            yy, xx = np.meshgrid(self.ys, self.xs, indexing="ij")
            out["y0"] = np.tile(yy.ravel(), nw)
            out["x0"] = np.tile(xx.ravel(), nw)
            if self.rain is not None:
                if self.grid_rain is None:
                    self.grid_rain = self.rain.fraction(out, spec.input_steps, self.patch)
                out["rain"] = self.grid_rain
            else:
                out["rain"] = np.nan
        if spec.rain is not None:
            rng = np.random.default_rng([int(seed), int(epoch), 23])
            lucky = rng.random(len(out)) < spec.rain.keep_dry
            out = out[(out["rain"] >= spec.rain.min_fraction) | lucky]
        return out


def sample_source(cube: xr.Dataset, spec: WindowSpec, *, split: Split | None = None,
                  variables: Sequence[str] | None = None) -> SampleSource:
    """Prepare the sample positions of ``cube`` under ``spec`` (see the module docstring)."""
    variables = cube_variables(cube, variables)
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    ys, xs = patch_offsets(ny, nx, spec)
    windows = temporal_windows(cube, spec, split=split)
    patch = spec.patch_shape(ny, nx)
    rain = None
    if spec.rain is not None:
        var = spec.rain.variable or variables[0]
        if var not in cube.data_vars:
            raise UnknownNameError(f"RainFilter.variable {var!r} is not in the cube; it has {list(cube.data_vars)}")
        rain = rain_table(cube, var, spec.rain.threshold, _rain_cell(spec, ny, nx))
    return SampleSource(spec, windows, ys, xs, patch, rain)


def window_index(
    cube: xr.Dataset,
    spec: WindowSpec,
    *,
    split: Split | None = None,
    variables: Sequence[str] | None = None,
    seed: int = 0,
    epoch: int = 0,
) -> np.ndarray:
    """Every sample position of a cube (for one epoch, when patches are random or filtered).

    Parameters
    ----------
    cube
        The cube; only coordinates are read, plus a chunked dask pass over
        the rain variable when ``spec.rain`` is set.
    spec
        Window length, strides, patches and rain filter.
    split
        Restrict to the frames/sequences of a :class:`Split`.
    variables
        The dataset's variables (the rain filter's default variable is the first).
    seed, epoch
        Random patches and the ``keep_dry`` draws are functions of these.

    Returns
    -------
    numpy.ndarray
        Structured array of :data:`SAMPLE_DTYPE`: ``sequence`` (0 without a
        sequence dim), ``time`` (index of the window's first frame),
        ``y0``, ``x0`` (patch offsets, pixels) and ``rain`` (rain fraction of
        the input frames, NaN without a filter), in sequence/time/y/x order.
    """
    return sample_source(cube, spec, split=split, variables=variables).epoch_samples(seed, epoch)
