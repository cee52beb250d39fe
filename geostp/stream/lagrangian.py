"""Training samples in the frame that moves with the rain, from one or several cubes (a corpus).

For every window of consecutive frames (``input_steps`` + ``output_steps``)
of every cube, the motion is estimated once from the newest inputs
(:class:`geostp.advection.MotionCache`, on disk beside the model store), the
inputs are carried forward and the targets backward into the frame of the
newest input (:func:`geostp.advection.to_lagrangian`), and the window is kept
in memory in model units (float16).  Each epoch then cuts random patches from
these windows, preferring rainy ones (importance sampling by rain fraction,
as DGMR does), and flips and turns them by multiples of 90 degrees: valid
once the motion is removed.

Cubes of a corpus must agree on units, pixel size and time step;
:func:`harmonise` resamples them to a common pixel size and time step (by
whole factors) or refuses with an error that names the cube.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from geostp.advection import MOTION_FRAMES, MotionCache
from geostp.cube import validate_cube
from geostp.errors import ConfigError

__all__ = ["LagrangianCorpus", "harmonise", "pixel_size", "corpus_windows"]


def pixel_size(cube: xr.Dataset) -> float | None:
    """The grid spacing in the cube's x units (metres for projected grids), or None when unknown."""
    if cube.sizes.get("x", 0) < 2 or "x" not in cube.coords:
        return None
    dx = np.abs(np.diff(np.asarray(cube["x"].values, np.float64)))
    dy = np.abs(np.diff(np.asarray(cube["y"].values, np.float64))) if cube.sizes.get("y", 0) > 1 else dx
    return float(np.median(np.concatenate([dx, dy])))


def _label(cube: xr.Dataset, i: int) -> str:
    src = cube.attrs.get("source_name") or cube.encoding.get("source")
    return f"cube {i}" + (f" ({src})" if src else "")


def harmonise(
    cubes: Sequence[xr.Dataset],
    variable: str,
    *,
    pixel: float | None = None,
    step: Any = None,
) -> list[xr.Dataset]:
    """Cubes that agree on units, pixel size and time step, resampled by whole factors where asked.

    Parameters
    ----------
    cubes
        The corpus; each must hold ``variable``.
    variable
        The variable trained on.
    pixel
        Common pixel size (the grid's units, metres on projected grids): a
        finer cube is averaged over whole ``k x k`` blocks (NaN-aware); a cube
        that would need a fractional factor or a finer grid is refused.
        ``None``: all cubes must already agree.
    step
        Common time step (``"5min"``, a Timedelta): a finer cube keeps every
        ``k``-th frame. ``None``: all cubes must already agree.

    Raises
    ------
    ConfigError
        Naming the cube and what differs.
    """
    if not cubes:
        raise ConfigError("a training corpus needs at least one cube")
    out: list[xr.Dataset] = []
    units = None
    want_step = pd.Timedelta(step) if step is not None else None
    for i, cube in enumerate(cubes):
        label = _label(cube, i)
        if variable not in cube.data_vars:
            raise ConfigError(f"{label}: has no variable {variable!r} (it has {sorted(map(str, cube.data_vars))})")
        u = str(cube[variable].attrs.get("units"))
        if units is None:
            units = u
        elif u != units:
            raise ConfigError(f"{label}: variable {variable!r} is in {u!r}, the corpus's first cube in {units!r}; "
                              "convert it first")
        info = validate_cube(cube, source=label, check_values=False)
        if not isinstance(info.step, np.timedelta64):
            raise ConfigError(f"{label}: a corpus needs a datetime time axis with a regular step")
        got = pd.Timedelta(info.step)
        if want_step is None:
            want_step = got
        if got != want_step:
            k = want_step / got
            if step is None or k < 1 or abs(k - round(k)) > 1e-9:
                raise ConfigError(f"{label}: time step {got} differs from the corpus's {want_step}"
                                  + ("" if step is None else " and is not a whole fraction of it")
                                  + "; pass step= to resample, or resample the cube first")
            cube = cube.isel(time=slice(None, None, int(round(k))))
        px = pixel_size(cube)
        ref = pixel if pixel is not None else (pixel_size(out[0]) if out else px)
        # Grids within 1 % of each other count as the same pixel size (FMI's 999.65 m is "1 km").
        if px is not None and ref is not None and abs(px - ref) > 0.01 * ref:
            k = ref / px
            if pixel is None or k < 1 or abs(k - round(k)) > 0.01 * k:
                raise ConfigError(f"{label}: pixel size {px:g} differs from the corpus's {ref:g}"
                                  + ("" if pixel is None else " and is not a whole fraction of it")
                                  + "; pass pixel= to resample, or coarsen the cube first")
            k = int(round(k))
            cube = cube.coarsen(y=k, x=k, boundary="trim").mean(keep_attrs=True)  # NaN-aware: skipna for floats
        out.append(cube)
    return out


def corpus_windows(cube: xr.Dataset, length: int, stride: int = 1) -> np.ndarray:
    """Start indices of the windows of ``length`` consecutive frames (no gap inside) of ``cube``."""
    times = cube["time"].values
    if times.size < length:
        return np.zeros(0, int)
    info = validate_cube(cube, check_values=False)
    starts = np.arange(0, times.size - length + 1, stride)
    if info.step is None:
        return starts
    span = times[starts + length - 1] - times[starts]
    return starts[span == (length - 1) * info.step]


@dataclass
class _Windows:
    inputs: np.ndarray  # [N, T_in, H, W] float16, model units, NaN = no data
    targets: np.ndarray  # [N, T_out, H, W]
    rain: np.ndarray  # [N, H, W] bool: rain in the newest input (for patch sampling)
    source: int
    base: np.ndarray | None = None  # [N, T_out, H, W] float16, model units: S-PROG in the moving frame


class LagrangianCorpus:
    """Batches of Lagrangian training samples from several cubes (see the module docstring).

    Iterating yields ``{"x", "y", "mask_y"}`` batches like
    :class:`~geostp.stream.CubeDataset`'s, so the same trainer runs on it.

    Parameters
    ----------
    cubes
        Cubes that agree on units, pixel size and step (:func:`harmonise`).
    variable
        The rain-rate variable.
    input_steps, output_steps
        The window.
    normalizer
        Turns mm/h into model units (:func:`geostp.stream.compute_statistics`).
    identities
        One JSON-able identity per cube (a data fingerprint): the motion cache's key.
    motion_cache
        Where motion fields live (:class:`~geostp.advection.MotionCache`).
    patch_size, batch_size, batches_per_epoch
        Patches per sample; samples per batch; batches in one epoch.
    stride
        Every ``stride``-th window of each cube.
    rain_threshold
        mm/h above which a pixel counts as rain for the patch sampling.
    augment
        Random flips and 90-degree turns.
    seed
        The sampling is a function of ``(seed, epoch)``.
    base
        ``"extrapolation"``, or ``"sprog"``: each sample's ``x`` also carries S-PROG's forecast in the moving
        frame after the inputs (:class:`~geostp.models.lagrangian.Lagrangian`'s ``base``), computed once per
        window and cached with the motion.
    base_levels
        S-PROG's cascade levels.
    progress
        A progress bar while the windows are prepared.
    """

    def __init__(
        self,
        cubes: Sequence[xr.Dataset],
        variable: str,
        *,
        input_steps: int,
        output_steps: int,
        normalizer: Any,
        identities: Sequence[Any],
        motion_cache: MotionCache,
        patch_size: int = 64,
        batch_size: int = 8,
        batches_per_epoch: int = 50,
        stride: int = 1,
        rain_threshold: float = 0.1,
        augment: bool = True,
        seed: int = 0,
        base: str = "extrapolation",
        base_levels: int = 8,
        progress: bool = True,
    ) -> None:
        if base not in ("extrapolation", "sprog"):
            raise ConfigError(f"base must be 'extrapolation' or 'sprog', got {base!r}")
        if input_steps < MOTION_FRAMES:
            raise ConfigError(f"advection-aware training needs input_steps >= {MOTION_FRAMES} (the motion is "
                              f"estimated from the {MOTION_FRAMES} newest frames), got {input_steps}")
        if len(identities) != len(cubes):
            raise ConfigError("one identity per cube is needed for the motion cache")
        self.variable = variable
        self.input_steps, self.output_steps = int(input_steps), int(output_steps)
        self.normalizer = normalizer
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.batches = int(batches_per_epoch)
        self.augment = augment
        self.seed = int(seed)
        self.rain_threshold = float(rain_threshold)
        self.base, self.base_levels = base, int(base_levels)
        self._epoch = 0
        self._start_batch = 0
        self.windows: list[_Windows] = []
        self.motion_cache = motion_cache
        self._prepare(cubes, identities, stride, progress)
        if not self.windows:
            raise ConfigError(f"no training window: no cube of the corpus holds {self.input_steps + self.output_steps} "
                              f"consecutive frames of at least {self.patch_size} x {self.patch_size} pixels")
        self.n_windows = sum(w.inputs.shape[0] for w in self.windows)

    # ----------------------------------------------------------------- preparation
    def _prepare(self, cubes: Sequence[xr.Dataset], identities: Sequence[Any], stride: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        length = self.input_steps + self.output_steps
        jobs = []
        for i, cube in enumerate(cubes):
            if min(cube.sizes["y"], cube.sizes["x"]) < self.patch_size:
                continue
            jobs += [(i, int(s)) for s in corpus_windows(cube, length, stride)]
        per_cube: dict[int, list[tuple[np.ndarray, ...]]] = {}
        loaded: dict[int, np.ndarray] = {}
        what = "motion + Lagrangian windows" + (" + S-PROG" if self.base == "sprog" else "")
        for i, start in tqdm(jobs, desc=what, disable=not progress, unit="window"):
            if i not in loaded:
                loaded = {i: np.asarray(cubes[i][self.variable].transpose("time", "y", "x").values, np.float32)}
            frames = loaded[i][start:start + length]
            if not np.isfinite(frames[self.input_steps - 1]).any():
                continue  # a radar outage at t0: nothing to learn from
            t0 = cubes[i]["time"].values[start + self.input_steps - 1]
            lag_in, lag_out = self.motion_cache.lagrangian(identities[i], t0, frames, self.input_steps)
            enc = self.normalizer.encode_variable
            item = (
                np.asarray(enc(self.variable, lag_in), np.float16),
                np.asarray(enc(self.variable, lag_out), np.float16),
                np.nan_to_num(frames[self.input_steps - 1], nan=0.0) >= self.rain_threshold,
            )
            if self.base == "sprog":
                b = self.motion_cache.sprog_base(identities[i], t0, frames[:self.input_steps], self.output_steps,
                                                 levels=self.base_levels)
                item += (np.asarray(enc(self.variable, b), np.float16),)
            per_cube.setdefault(i, []).append(item)
        for i, items in per_cube.items():
            self.windows.append(_Windows(np.stack([it[0] for it in items]), np.stack([it[1] for it in items]),
                                         np.stack([it[2] for it in items]), i,
                                         np.stack([it[3] for it in items]) if self.base == "sprog" else None))

    # ----------------------------------------------------------------- the trainer's interface
    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self._epoch = int(epoch)
        self._start_batch = int(start_batch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self._epoch])
        start, self._start_batch = self._start_batch, 0
        for i in range(self.batches):
            batch = self._batch(rng)  # skipped batches are drawn too: resuming mid-epoch agrees
            if i >= start:
                yield batch

    # ----------------------------------------------------------------- sampling
    def _pick(self, rng: np.random.Generator) -> tuple[_Windows, int, int, int]:
        p = self.patch_size
        sizes = np.array([w.inputs.shape[0] for w in self.windows], float)
        for _ in range(20):  # rejection sampling: rainy patches are likelier, dry ones still appear
            w = self.windows[rng.choice(len(self.windows), p=sizes / sizes.sum())]
            n = int(rng.integers(w.inputs.shape[0]))
            ny, nx = w.rain.shape[1:]
            y0, x0 = int(rng.integers(ny - p + 1)), int(rng.integers(nx - p + 1))
            frac = float(w.rain[n, y0:y0 + p, x0:x0 + p].mean())
            if rng.random() < min(1.0, 0.05 + 4.0 * frac):
                break
        return w, n, y0, x0

    def _batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        p = self.patch_size
        fill = np.float32(self.normalizer.encode_variable(self.variable, np.zeros(1, np.float32))[0])
        xs, ys = [], []
        for _ in range(self.batch_size):
            w, n, y0, x0 = self._pick(rng)
            x = w.inputs[n, :, y0:y0 + p, x0:x0 + p].astype(np.float32)
            if w.base is not None:  # the S-PROG base travels after the inputs (and turns with them)
                x = np.concatenate([x, w.base[n, :, y0:y0 + p, x0:x0 + p].astype(np.float32)])
            y = w.targets[n, :, y0:y0 + p, x0:x0 + p].astype(np.float32)
            if self.augment:
                k = int(rng.integers(4))
                x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
                if rng.random() < 0.5:
                    x, y = x[:, :, ::-1], y[:, :, ::-1]
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        x = np.stack(xs)[:, :, None]
        y = np.stack(ys)[:, :, None]
        mask = np.isfinite(y)
        x = np.where(np.isfinite(x), x, fill)
        y = np.where(mask, y, fill)
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(y), "mask_y": torch.from_numpy(mask)}
