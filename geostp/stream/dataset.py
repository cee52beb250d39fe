"""A torch IterableDataset that streams windows x patches out of a chunked cube, in deterministic batches.

How an epoch is laid out
------------------------
1. The epoch's samples (:meth:`SampleSource.epoch_samples`, a function of
   ``(seed, epoch)``) are grouped into *read blocks*: chunk-aligned boxes of
   the store (a few time chunks x the whole grid, or a tile of chunks on big
   grids; several sequences for clip collections), sized to about
   ``block_megabytes``.  A block is read, decoded and encoded (transform and
   standardisation) once, and every sample whose origin lies in it is cut
   from it; NaN becomes the fill value, with a mask, once per batch.
2. Shuffling (``shuffle=True``) permutes the blocks, then mixes the samples of
   each run of ``shuffle_blocks`` consecutive blocks, so a batch holds samples
   from several places and times while a worker keeps only a few blocks in
   memory.  All randomness comes from ``numpy.random.default_rng([seed, epoch,
   ...])``.
3. The sample list is cut into batches of ``batch_size`` (the last one may be
   short; ``drop_last`` drops the remainder so every rank gets the same
   number of full batches), then into ``world_size x streams`` contiguous
   streams of whole batches whose lengths differ by at most one.  Rank ``r``
   owns streams ``r*streams .. (r+1)*streams - 1`` and serves them
   round-robin; every sample appears in exactly one batch of one rank.
4. DataLoader worker ``w`` of ``W`` yields the rank's batches ``w, w + W, w +
   2W, ...``; the DataLoader's in-order round robin hands them back in the
   rank's order, which is therefore the same for any number of workers.  When
   ``W`` divides ``streams`` (default 2: 1 or 2 workers), each
   worker serves whole streams and so reads each block once; otherwise the
   order is still the same but workers may decode some blocks twice.
5. ``set_epoch(epoch, start_batch=k)`` (before iterating) makes the next
   iteration yield the rank's batches ``k, k+1, ...`` of that epoch, exactly
   those an uninterrupted epoch yields from its ``k``-th batch on.  The epoch
   lives in shared memory, so persistent workers see it too.

Reading
-------
When the dataset is given a store path, or a cube opened with
:func:`geostp.store.open_cube` and not modified since, workers read the
zarr arrays directly with zarr-python (the cube serves only as the index);
otherwise they read through xarray/dask with dask's synchronous scheduler
(dask's threaded scheduler hangs in forked workers).  Workers write each
batch into a shared-memory block that they reuse once the training loop has
dropped the batch (:mod:`geostp.stream._shm`).
Either way a chunk that cannot be decoded is a StoreError naming it
(:func:`geostp.store.reading_store`), with its own message from a worker too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from geostp.errors import ConfigError, GeostpError
from geostp.options import option_group
from geostp.store import open_cube, reading_store, unmodified_store_path
from geostp.stream._shm import Releaser, SlotAllocator, alloc_batch, slot_table
from geostp.stream.normalize import Normalizer
from geostp.stream.options import LoaderOptions
from geostp.stream.windows import (
    SampleSource,
    Split,
    WindowSpec,
    cube_variables,
    sample_source,
)
from geostp.train.ddp import rank_and_size

__all__ = ["CubeDataset", "CubeLoader", "make_loader", "worker_init"]

_CANONICAL = ("sequence", "time", "y", "x")


# ----------------------------------------------------------------------------- readers


class _BufferPool:
    """Reuses the large block buffers of a worker: fresh pages cost more than the copy (page faults)."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.free: list[np.ndarray] = []

    def take(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        n = math.prod(shape)
        dtype = np.dtype(dtype)
        for i, buf in enumerate(self.free):
            if buf.dtype == dtype and buf.size >= n:
                return self.free.pop(i)[:n].reshape(shape)
        return np.empty(n, dtype).reshape(shape)

    def give(self, arr: np.ndarray | None) -> None:
        if arr is None:
            return
        base = arr.base if isinstance(arr.base, np.ndarray) else arr
        self.free.append(base.reshape(-1))
        if len(self.free) > self.keep:
            self.free.sort(key=lambda b: b.size)
            self.free.pop(0)


def _region_shape(box: tuple[slice, ...], n_channels: int) -> tuple[int, int, int, int, int]:
    s, t, y, x = (b.stop - b.start for b in box)
    return (s, t, n_channels, y, x)


class _ZarrReader:
    """Reads boxes of the store's arrays straight with zarr-python (re-opened in each process)."""

    def __init__(self, path: str, variables: Sequence[str], has_sequence: bool) -> None:
        self.path = path
        self.variables = tuple(variables)
        self.has_sequence = has_sequence
        self._arrays: list[Any] | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None, "_pid": None}

    def arrays(self) -> list[Any]:
        if self._arrays is None or self._pid != os.getpid():
            import zarr

            group = zarr.open_group(self.path, mode="r")
            self._arrays = [group[v] for v in self.variables]
            self._pid = os.getpid()
        return self._arrays

    def chunks(self) -> dict[str, int]:
        a = self.arrays()[0]
        dims = _CANONICAL if self.has_sequence else _CANONICAL[1:]
        return dict(zip(dims, a.chunks, strict=True))

    def read(self, box: tuple[slice, slice, slice, slice], pool: _BufferPool) -> np.ndarray:
        """The box as float32 ``[S, T, C, Y, X]``, decoded straight into a pooled buffer."""
        from zarr.core.buffer import default_buffer_prototype

        out = pool.take(_region_shape(box, len(self.variables)), np.float32)
        sel = box if self.has_sequence else box[1:]
        nd = default_buffer_prototype().nd_buffer
        for c, (v, a) in enumerate(zip(self.variables, self.arrays(), strict=True)):
            target = out[:, :, c] if self.has_sequence else out[0, :, c]
            with reading_store(self.path, v, sel):  # a chunk that cannot be decoded: an error naming it
                if a.dtype == np.float32:
                    a.get_basic_selection(sel, out=nd.from_numpy_array(target))
                else:
                    target[...] = np.asarray(a[sel], dtype=np.float32)
        return out


class _XarrayReader:
    """Reads boxes through xarray (numpy- or dask-backed cubes), with dask's synchronous scheduler."""

    def __init__(self, cube: xr.Dataset, variables: Sequence[str], has_sequence: bool) -> None:
        dims = _CANONICAL if has_sequence else _CANONICAL[1:]
        self.data = [cube[v].transpose(*dims).variable for v in variables]
        self.has_sequence = has_sequence

    def chunks(self) -> dict[str, int]:
        v = self.data[0]
        dims = _CANONICAL if self.has_sequence else _CANONICAL[1:]
        if v.chunks is not None:
            return {d: int(c[0]) for d, c in zip(dims, v.chunks, strict=True)}
        sizes = dict(zip(dims, v.shape, strict=True))
        return {**sizes, "time": min(20, sizes["time"]), **({"sequence": 1} if self.has_sequence else {})}

    def read(self, box: tuple[slice, slice, slice, slice], pool: _BufferPool) -> np.ndarray:
        import dask

        out = pool.take(_region_shape(box, len(self.data)), np.float32)
        sel = box if self.has_sequence else box[1:]
        with dask.config.set(scheduler="synchronous"):
            for c, v in enumerate(self.data):
                target = out[:, :, c] if self.has_sequence else out[0, :, c]
                target[...] = v[sel].values  # a copy: encoding then works in place, never on the cube
        return out


def _zarr_matches(cube: xr.Dataset, path: str, variables: Sequence[str]) -> bool:
    """Is ``cube`` an unmodified view of the store at ``path`` (so zarr can be read directly)?"""
    import zarr

    if unmodified_store_path(cube, variables) is None:
        return False  # not opened by open_cube, or computed from the store since: not the store itself
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:
        return False
    for v in variables:
        da = cube[v]
        if v not in group:
            return False
        arr = group[v]
        dims = tuple(arr.metadata.dimension_names or ())
        if dims != tuple(da.dims) or dims not in (_CANONICAL, _CANONICAL[1:]):
            return False
        if tuple(arr.shape) != tuple(da.shape) or not np.issubdtype(arr.dtype, np.number):
            return False
    return True


# ----------------------------------------------------------------------------- the plan of an epoch


@dataclass
class _Plan:
    samples: np.ndarray       # the epoch's samples (SAMPLE_DTYPE)
    unit: np.ndarray          # read block of each sample
    boxes: np.ndarray         # [n_units, 8]: s0, s1, t0, t1, y0, y1, x0, x1
    order: np.ndarray         # sample indices in global batch order
    n_used: int               # samples in batches (after drop_last)
    local: np.ndarray         # this rank's global batch indices, in its order
    part: tuple[int, int] = (0, 1)  # shard="batches": this rank's part of each global batch

    def batch(self, b: int, batch_size: int) -> np.ndarray:
        g = int(self.local[b])
        r, R = self.part
        if R == 1:
            return self.order[g * batch_size: min((g + 1) * batch_size, self.n_used)]
        whole = self.order[g * batch_size * R: min((g + 1) * batch_size * R, self.n_used)]
        return np.array_split(whole, R)[r]


@dataclass
class _Region:
    box: np.ndarray
    data: np.ndarray          # [S, T, C, Y, X] float32, encoded; NaN where the data is missing

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


class _WorkerState:
    """What one worker holds during an epoch: its batches, decoded blocks and spare buffers."""

    def __init__(self, plan: _Plan, batches: list[np.ndarray], allocator: SlotAllocator | None) -> None:
        self.plan = plan
        self.batches = batches
        self.allocator = allocator
        # for each block, the ordinals of this worker's batches that use it
        self.uses: dict[int, list[int]] = {}
        for j, idx in enumerate(batches):
            for u in np.unique(plan.unit[idx]).tolist():
                self.uses.setdefault(u, []).append(j)
        self.cursor = dict.fromkeys(self.uses, 0)
        self.cache: dict[int, _Region] = {}
        self.pool = _BufferPool(keep=1)

    def next_use(self, u: int) -> int:
        k = self.cursor[u]
        return self.uses[u][k] if k < len(self.uses[u]) else 1 << 62

    def drop(self, u: int) -> None:
        self.pool.give(self.cache.pop(u).data)


class CubeDataset(IterableDataset):
    """Batches of ``[B, T, C, H, W]`` windows x patches streamed from a cube (module docstring).

    Parameters
    ----------
    source
        A store path (written by :func:`geostp.store.ingest`) or an
        opened cube (``xarray.Dataset``, dask- or numpy-backed).
    variables
        Channel order (recorded as ``self.variables``); default every data variable.
    spec
        Windows, patches and the rain filter (:class:`WindowSpec`).
    split
        Only windows whose every frame lies in this :class:`Split`.
    normalizer
        Encodes the values (:class:`Normalizer`); ``None`` leaves them raw.
    batch_size
        Samples per batch.
    shuffle
        Shuffle per epoch (training); ``False`` gives a fixed read-efficient order.
    seed
        Every random choice is a function of ``(seed, epoch)``.
    drop_last
        Drop the epoch's last ``n % (batch_size * world_size)`` samples so that
        every rank gets the same number of full batches (for DDP).
    rank, world_size
        Distributed position; default from ``torch.distributed`` when it is
        initialised, else ``0`` and ``1``.
    shard
        How ranks share an epoch.  ``"streams"`` (default): rank ``r`` owns
        its own contiguous streams of batches (point 3 above), so each rank
        reads only its share of the blocks and I/O scales with the ranks.
        ``"batches"``: the epoch is laid out as for one process with batches
        of ``batch_size * world_size`` and rank ``r`` takes the ``r``-th part
        of each, so ``world_size`` ranks train on exactly the global batches
        of a one-process run (the same loss curve), but every rank reads the
        blocks of every batch.
    streams
        Contiguous streams per rank (module docstring).  When it is a
        multiple of the number of workers every block is read once; each
        worker holds the blocks of ``streams / workers`` streams at a time, so
        more streams than workers cost memory.  Set it to the number of
        workers you use (default 2, this project's 2-core machines); the
        batch order depends on it, not on the number of workers.
    shuffle_blocks
        Read blocks whose samples are mixed together when shuffling.
    block_megabytes
        Target size of a read block, decoded (at least one time chunk over
        the whole grid or a tile of chunks is read).
    cache_megabytes
        Cap on the decoded blocks a worker holds (blocks needed furthest
        ahead are dropped and re-read later).  Default: no cap; a worker then
        holds about ``ceil(streams / workers) * (shuffle_blocks + 1)`` blocks
        of ``block_megabytes``.
    fill_value
        Encoded value of missing pixels; default ``normalizer.fill_value`` or 0.
    reader
        ``"auto"``, ``"zarr"`` (read the store directly) or ``"xarray"``.
    loader
        A :class:`~geostp.stream.LoaderOptions` in place of the keywords from
        ``batch_size`` to ``reader`` (a keyword set besides it to another value
        is a ConfigError); kept as ``self.loader_options``.

    Notes
    -----
    Each batch is a dict of tensors: ``x`` ``[B, T_in, C, H, W]`` and ``y``
    ``[B, T_out, C, H, W]`` (float32, encoded, ``fill_value`` where the data is
    NaN), ``mask_x``/``mask_y`` (bool, True where the data is valid),
    ``time_index`` (index in the cube's time axis of each window's **first
    input frame**; the first target frame is ``time_index + input_steps`` and
    the forecast reference time ``time_index + input_steps - 1``),
    ``sequence_index`` (0 without a sequence dim), and ``y0``, ``x0`` (patch
    offsets in pixels; the patch covers ``y0 .. y0 + H - 1``).
    """

    # Over 80 lines: argument checks and the read plan's sizing, in the order they depend on each other.
    def __init__(
        self,
        source: xr.Dataset | str | os.PathLike[str],
        variables: Sequence[str] | str | None = None,
        spec: WindowSpec | None = None,
        *,
        split: Split | None = None,
        normalizer: Normalizer | None = None,
        batch_size: int = 16,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        shard: str = "streams",
        streams: int = 2,
        shuffle_blocks: int = 2,
        block_megabytes: float = 48.0,
        cache_megabytes: float | None = None,
        fill_value: float | None = None,
        reader: str = "auto",
        loader: LoaderOptions | None = None,
    ) -> None:
        super().__init__()
        opts = option_group(CubeDataset.__init__, loader, LoaderOptions, "loader", batch_size=batch_size,
                            shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size,
                            shard=shard, streams=streams, shuffle_blocks=shuffle_blocks,
                            block_megabytes=block_megabytes, cache_megabytes=cache_megabytes, fill_value=fill_value,
                            reader=reader)
        self.loader_options = opts
        if spec is None:
            raise ConfigError("CubeDataset needs spec=WindowSpec(input_steps=..., output_steps=..., ...)")
        if isinstance(source, (str, os.PathLike)):
            path: str | None = str(Path(source))
            cube = open_cube(source)
        elif isinstance(source, xr.Dataset):
            cube = source
            path = cube.encoding.get("source")
        else:
            raise ConfigError(f"CubeDataset source is a {type(source).__name__}; expected a store path or an xarray Dataset")
        self.variables = cube_variables(cube, variables)
        self.spec = spec
        self.split = split
        self.normalizer = normalizer
        if normalizer is not None:
            normalizer._channels(self.variables)  # every channel must have statistics
        self.batch_size = int(opts.batch_size)
        self.shuffle = bool(opts.shuffle)
        self.seed = int(opts.seed)
        self.drop_last = bool(opts.drop_last)
        self.rank, self.world_size = rank_and_size(opts.rank, opts.world_size)
        self.shard = opts.shard
        self.streams = int(opts.streams)
        self.shuffle_blocks = int(opts.shuffle_blocks)
        self.fill_value = float(opts.fill_value if opts.fill_value is not None
                                else (normalizer.fill_value if normalizer is not None else 0.0))
        self.has_sequence = "sequence" in cube[self.variables[0]].dims
        self.time = cube["time"].values
        self.sizes = {d: int(cube.sizes[d]) for d in _CANONICAL if d in cube.dims}
        self.patch = spec.patch_shape(cube.sizes["y"], cube.sizes["x"])

        reader = opts.reader
        use_zarr = reader == "zarr" or (reader == "auto" and path is not None)
        if use_zarr and (path is None or not _zarr_matches(cube, path, self.variables)):
            if reader == "zarr":
                raise ConfigError("reader='zarr' needs a store path or a cube opened by geostp.store.open_cube and not modified "
                                  f"since (found source {path!r}); use reader='xarray' for derived cubes")
            use_zarr = False
        self.reader_kind = "zarr" if use_zarr else "xarray"
        self._reader: _ZarrReader | _XarrayReader = (
            _ZarrReader(path, self.variables, self.has_sequence) if use_zarr  # type: ignore[arg-type]
            else _XarrayReader(cube, self.variables, self.has_sequence))
        self._source: SampleSource = sample_source(cube, spec, split=split, variables=self.variables)
        self.block = self._block_shape(self._reader.chunks(), float(opts.block_megabytes) * 2**20)
        block_bytes = self._box_bytes(self.block)
        # By default a worker keeps a block while a later batch of its own needs it: about
        # (streams / workers) x (shuffle_blocks + 1) blocks.  A cap evicts (Belady: the block
        # needed furthest ahead) and re-reads instead.
        cache_megabytes = opts.cache_megabytes
        self.cache_bytes = None if cache_megabytes is None else int(max(cache_megabytes * 2**20, block_bytes))
        # epoch and start batch, in shared memory so that persistent workers see set_epoch
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._slots = slot_table()  # shared-memory batch blocks in flight, per worker (see _shm)
        self._allocator: tuple[int, SlotAllocator] | None = None
        self._plan_cache: tuple[int, _Plan] | None = None

    # -- geometry -------------------------------------------------------------------------------

    def _box_bytes(self, block: tuple[int, int, int, int]) -> int:
        sb, tb, yb, xb = block
        ph, pw = self.patch
        L = self.spec.length
        t = min(tb + L - 1, self.sizes["time"])
        y = min(yb + ph - 1, self.sizes["y"])
        x = min(xb + pw - 1, self.sizes["x"])
        return 4 * len(self.variables) * sb * t * y * x

    def _block_shape(self, chunks: dict[str, int], target: float) -> tuple[int, int, int, int]:
        """Origins per read block along (sequence, time, y, x): whole chunks, about ``target`` bytes decoded."""
        ny, nx, nt = self.sizes["y"], self.sizes["x"], self.sizes["time"]
        ns = self.sizes.get("sequence", 1)
        tc = max(1, chunks.get("time", nt))
        sc = max(1, chunks.get("sequence", 1))
        cy, cx = max(1, chunks.get("y", ny)), max(1, chunks.get("x", nx))
        if self._box_bytes((1, tc, ny, nx)) <= target:
            yb, xb = ny, nx
        else:
            n = 1
            while (n * cy < ny or n * cx < nx) and self._box_bytes((1, tc, (n + 1) * cy, (n + 1) * cx)) <= target:
                n += 1
            yb, xb = min(n * cy, ny), min(n * cx, nx)
        mt = 1
        while mt * tc < nt and self._box_bytes((1, (mt + 1) * tc, yb, xb)) <= target:
            mt += 1
        ms = 1
        while self.has_sequence and ms * sc < ns and self._box_bytes(((ms + 1) * sc, mt * tc, yb, xb)) <= target:
            ms += 1
        return (ms * sc, mt * tc, yb, xb)

    # -- epochs ---------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch the next iteration yields, from its batch ``start_batch`` on (resume)."""
        if epoch < 0 or start_batch < 0:
            raise ConfigError(f"set_epoch({epoch}, start_batch={start_batch}); expected non-negative numbers")
        self._state[0] = int(epoch)
        self._state[1] = int(start_batch)

    def _plan(self, epoch: int) -> _Plan:
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        plan = self._build_plan(epoch)
        self._plan_cache = (epoch, plan)
        return plan

    def _build_plan(self, epoch: int) -> _Plan:
        samples = self._source.epoch_samples(self.seed, epoch)
        n = len(samples)
        if n == 0:
            where = f" of split {self.split.name!r}" if self.split is not None else ""
            raise ConfigError(f"no sample{where} passes the rain filter {self.spec.rain} in epoch {epoch}; "
                              "expected a lower min_fraction or threshold, or a higher keep_dry")
        sb, tb, yb, xb = self.block
        ns, nt = self.sizes.get("sequence", 1), self.sizes["time"]
        dims = (ns // sb + 1, nt // tb + 1, self.sizes["y"] // yb + 1, self.sizes["x"] // xb + 1)
        key = np.ravel_multi_index((samples["sequence"] // sb, samples["time"] // tb,
                                    samples["y0"] // yb, samples["x0"] // xb), dims)
        _, unit = np.unique(key, return_inverse=True)
        unit = unit.ravel()
        n_units = int(unit.max()) + 1
        boxes = self._boxes(samples, unit, n_units)
        B, R, V = self.batch_size, self.world_size, self.streams
        rank, part = self.rank, (0, 1)
        if self.shard == "batches" and R > 1:  # one process's plan with batches of B x R, cut in R parts
            B, R, rank, part = B * R, 1, 0, (self.rank, R)
        rng = np.random.default_rng([self.seed, int(epoch), 101])
        if self.shuffle:
            unit_rank = np.empty(n_units, np.int64)
            unit_rank[rng.permutation(n_units)] = np.arange(n_units)
            order = np.lexsort((rng.random(n), unit_rank[unit]))
        else:
            unit_rank = np.arange(n_units)
            order = np.lexsort((samples["x0"], samples["y0"], samples["time"], samples["sequence"], unit))
        n_used = n - n % (B * R) if self.drop_last else n
        if part[1] > 1 and n_used % B and n_used % B < part[1]:
            n_used -= n_used % B  # a last global batch too short to give every rank a sample
        if n_used == 0:
            raise ConfigError(f"drop_last with batch_size={B} and world_size={R} leaves no sample of the {n} "
                              "in this epoch; expected fewer ranks, a smaller batch or drop_last=False")
        order = order[:n_used]
        n_batches = math.ceil(n_used / B)
        q, extra = divmod(n_batches, R * V)
        counts = np.full((R, V), q, np.int64)
        for r in range(R):  # extra batches go to the first streams of each rank
            counts[r, : extra // R + (1 if r < extra % R else 0)] += 1
        first = np.concatenate([[0], np.cumsum(counts.ravel())])  # first global batch of each stream
        if self.shuffle:
            stream_of_pos = np.searchsorted(first, np.arange(n_used) // B, side="right") - 1
            group = unit_rank[unit[order]] // self.shuffle_blocks
            order = order[np.lexsort((rng.random(n_used), group, stream_of_pos))]
        local = []
        for k in range(int(counts[rank].max(initial=0))):
            for v in range(V):
                if k < counts[rank, v]:
                    local.append(first[rank * V + v] + k)
        return _Plan(samples, unit, boxes, order, n_used, np.asarray(local, np.int64), part)

    def _boxes(self, samples: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
        by_unit = np.argsort(unit, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(unit[by_unit]) != 0])
        ph, pw = self.patch
        L = self.spec.length
        boxes = np.empty((n_units, 8), np.int64)
        for col, (field, extent) in enumerate((("sequence", 1), ("time", L), ("y0", ph), ("x0", pw))):
            vals = samples[field][by_unit]
            boxes[:, 2 * col] = np.minimum.reduceat(vals, starts)
            boxes[:, 2 * col + 1] = np.maximum.reduceat(vals, starts) + extent
        return boxes

    # -- what a rank yields ---------------------------------------------------------------------

    def batches_per_epoch(self, epoch: int | None = None) -> int:
        """Batches this rank yields in a whole epoch (default: the current one)."""
        return len(self._plan(self.epoch if epoch is None else epoch).local)

    def __len__(self) -> int:
        """Batches the next iteration yields (this rank, from the start batch on)."""
        return max(0, self.batches_per_epoch() - int(self._state[1]))

    def batch_samples(self, epoch: int | None = None) -> list[np.ndarray]:
        """The samples (:data:`SAMPLE_DTYPE` records) of each of this rank's batches of an epoch, in order."""
        plan = self._plan(self.epoch if epoch is None else epoch)
        return [plan.samples[plan.batch(b, self.batch_size)] for b in range(len(plan.local))]

    def reference_times(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Forecast reference time (time of the last input frame) of each sample of a batch."""
        idx = batch["time_index"].cpu().numpy() + self.spec.input_steps - 1
        return self.time[idx]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, start = int(self._state[0]), int(self._state[1])
        plan = self._plan(epoch)
        info = get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = np.arange(start + wid, len(plan.local), n_workers)
        return self._serve(plan, mine)

    def _serve(self, plan: _Plan, mine: np.ndarray) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        allocator = None
        if info is not None:  # one allocator per worker process, kept across epochs
            if self._allocator is None or self._allocator[0] != os.getpid():
                self._allocator = (os.getpid(), SlotAllocator(self._slots, info.id))
            allocator = self._allocator[1]
        state = _WorkerState(plan, [plan.batch(int(b), self.batch_size) for b in mine], allocator)
        for j, idx in enumerate(state.batches):
            yield self._cut(state, idx, j)

    def _cut(self, state: _WorkerState, idx: np.ndarray, j: int) -> dict[str, torch.Tensor]:
        plan = state.plan
        t_in, L = self.spec.input_steps, self.spec.length
        ph, pw = self.patch
        C, n = len(self.variables), len(idx)
        s = plan.samples[idx]
        out = alloc_batch({
            "x": ((n, t_in, C, ph, pw), torch.float32), "y": ((n, L - t_in, C, ph, pw), torch.float32),
            "mask_x": ((n, t_in, C, ph, pw), torch.bool), "mask_y": ((n, L - t_in, C, ph, pw), torch.bool),
            "time_index": ((n,), torch.int64), "sequence_index": ((n,), torch.int64),
            "y0": ((n,), torch.int64), "x0": ((n,), torch.int64),
        }, state.allocator)
        xn, yn = out["x"].numpy(), out["y"].numpy()
        units = plan.unit[idx]
        seq, tim, yy, xx = (s[f].tolist() for f in ("sequence", "time", "y0", "x0"))
        for u in np.unique(units).tolist():
            region = state.cache.get(u)
            if region is None:
                self._make_room(state)
                region = self._load(plan.boxes[u], state.pool)
                state.cache[u] = region
            s0, _, t0, _, ya, _, xa, _ = region.box.tolist()
            for b in np.flatnonzero(units == u).tolist():
                si, ti, yi, xi = seq[b] - s0, tim[b] - t0, yy[b] - ya, xx[b] - xa
                d = region.data[si, ti: ti + L, :, yi: yi + ph, xi: xi + pw]
                xn[b] = d[:t_in]
                yn[b] = d[t_in:]
            state.cursor[u] += 1
            if state.cursor[u] >= len(state.uses[u]):  # no later batch of this worker needs it
                state.drop(u)
        # mask and fill once per batch, in place (the encoding keeps finite values finite).  On one
        # thread: torch's intra-op threads made this fill 30x slower on a busy 2-core machine, and
        # in the main process (num_workers=0) they are the training loop's; only the fill runs on one.
        f = self.fill_value
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            for key in ("x", "y"):
                np.isfinite(out[key].numpy(), out=out["mask_" + key].numpy())
                out[key].nan_to_num_(nan=f, posinf=f, neginf=f)
        finally:
            if threads > 1:
                torch.set_num_threads(threads)
        for key, field in (("time_index", "time"), ("sequence_index", "sequence"), ("y0", "y0"), ("x0", "x0")):
            out[key].numpy()[:] = s[field]
        return out

    def _make_room(self, state: _WorkerState) -> None:
        """Drop the cached blocks needed furthest ahead until a new block fits under the cap."""
        if self.cache_bytes is None:
            return
        need = self._box_bytes(self.block)
        while state.cache and sum(r.nbytes for r in state.cache.values()) + need > self.cache_bytes:
            state.drop(max(state.cache, key=state.next_use))

    def _load(self, box: np.ndarray, pool: _BufferPool) -> _Region:
        s0, s1, t0, t1, y0, y1, x0, x1 = box.tolist()
        raw = self._reader.read((slice(s0, s1), slice(t0, t1), slice(y0, y1), slice(x0, x1)), pool)
        if self.normalizer is not None:
            for c, v in enumerate(self.variables):
                self.normalizer.encode_inplace(v, raw[:, :, c])
        return _Region(box, raw)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one thread per worker and dask's synchronous scheduler.

    Dask's threaded scheduler can hang in a forked worker; several decoding
    threads per worker only fight over the cores the other workers use.
    """
    import dask

    dask.config.set(scheduler="synchronous")
    torch.set_num_threads(1)
    try:
        import zarr

        zarr.config.set({"threading.max_workers": 1})
    except ImportError:  # pragma: no cover - zarr is a dependency
        pass
    try:
        from numcodecs import blosc

        blosc.use_threads = False
    except ImportError:  # pragma: no cover - numcodecs comes with zarr
        pass


class CubeLoader(DataLoader):
    """A DataLoader that tells its workers when a batch's shared-memory block may be reused.

    Iterating it is iterating a DataLoader; in addition every batch it hands
    out is tracked (a weak reference), and once nothing refers to it any more
    its worker may write a later batch into the same block instead of
    faulting in fresh memory (see :mod:`geostp.stream._shm`).
    """

    def __iter__(self) -> Iterator[Any]:
        dataset = self.dataset
        releaser = Releaser(dataset._slots) if isinstance(dataset, CubeDataset) and self.num_workers > 0 else None
        self.releaser = releaser  # the last iteration's, for diagnostics (releaser.released)
        if isinstance(dataset, CubeDataset):
            # An epoch's length depends on the epoch (random patches through the rain filter): take it
            # now, or DataLoader compares the batches of this epoch with an earlier epoch's count and warns.
            len(self)
        try:
            for batch in super().__iter__():
                if releaser is not None:
                    releaser.track(batch)
                yield batch
        except GeostpError as exc:
            message = _worker_message(exc)
            if message is None:
                raise
            raise type(exc)(message) from None


def _worker_message(exc: GeostpError) -> str | None:
    """The message of a geostp error raised in a DataLoader worker, which torch re-raises with the worker's whole
    traceback as its message ("Caught ... in DataLoader worker process N"); None for any other error."""
    text, kind = str(exc), type(exc)
    head = f"\n{kind.__module__}.{kind.__qualname__}: "
    at = text.rfind(head) if text.startswith(f"Caught {kind.__name__} ") else -1
    return (text[at + len(head):].strip() or None) if at >= 0 else None


def make_loader(
    dataset: CubeDataset,
    num_workers: int = 2,
    *,
    persistent_workers: bool = False,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    multiprocessing_context: Any = None,
    timeout: float = 0,
    loader: LoaderOptions | None = None,
) -> DataLoader:
    """A DataLoader over a :class:`CubeDataset` (which yields whole batches).

    The loader keeps the dataset's batch order for any ``num_workers`` (workers
    take every ``num_workers``-th batch and the in-order round robin restores
    the order), runs :func:`worker_init` in each worker, and lets workers reuse
    the shared memory of batches the training loop has dropped.  Call
    ``dataset.set_epoch(epoch)`` before iterating each epoch, also with
    ``persistent_workers=True``.  ``loader`` (a :class:`~geostp.stream.LoaderOptions`) stands for the
    keywords from ``num_workers`` to ``timeout`` (a keyword set besides it to another value is a
    ConfigError); its dataset fields are the dataset's business.

    Returns
    -------
    CubeLoader
        A :class:`torch.utils.data.DataLoader` subclass with ``batch_size=None``.
    """
    if not isinstance(dataset, CubeDataset):
        raise ConfigError(f"make_loader expects a CubeDataset, got {type(dataset).__name__}")
    opts = option_group(make_loader, loader, LoaderOptions, "loader", num_workers=num_workers,
                        persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, pin_memory=pin_memory,
                        multiprocessing_context=multiprocessing_context, timeout=timeout)
    kwargs: dict[str, Any] = {}
    if opts.num_workers > 0:
        kwargs.update(prefetch_factor=opts.prefetch_factor, persistent_workers=opts.persistent_workers,
                      worker_init_fn=worker_init, multiprocessing_context=opts.multiprocessing_context,
                      timeout=opts.timeout)
    return CubeLoader(dataset, batch_size=None, num_workers=opts.num_workers, pin_memory=opts.pin_memory,
                      in_order=True, **kwargs)
