"""Fit, load and roll out forecasters on cubes; forecasts come back as labelled DataArrays.

``geostp.forecast(ds, model="tau", steps=12)`` is the whole pipeline in one
call.  ``model`` may be

- a registered name: baselines run at once; a learned model is fitted on
  ``ds``'s own history within a time budget (with a progress bar) and cached
  in a local model store keyed by the data and the settings, so the next call
  with the same data and settings loads it instantly;
- the path of a checkpoint written by geostp;
- a :class:`FittedForecaster` (what :func:`fit` returns).

The output follows the cube conventions: dims ``lead_time, y, x`` (``time``
first for several reference times), ``valid_time`` and
``forecast_reference_time`` coordinates, the input's x/y/lat/lon, grid
mapping and units, and attrs naming the model and its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.checks import as_path, check_fits, memory_bytes
from geostp.checks import format_bytes as _size
from geostp.cube import (
    CubeInfo,
    as_cube,
    check_value_range,
    forecast_to_dataarray,
    is_precipitation,
    reference_time_values,
    validate_cube,
)
from geostp.errors import CheckpointError, ConfigError, CubeError, CubeValueError
from geostp.options import option_group

if TYPE_CHECKING:
    import torch

__all__ = [
    "FittedForecaster",
    "ForecastOptions",
    "cube_schema",
    "check_schema",
    "check_forecast_size",
    "load_forecaster",
    "model_store_dir",
]


# ----------------------------------------------------------------------------- schema


def check_steps(steps: Any) -> int:
    """``steps`` as an int, or a ConfigError: forecasts have at least one lead time."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}; expected the number of lead times")
    return int(steps)


#: Copies of a forecast that exist at once while it is made (the model's output, its decoded values, the masked
#: and clipped result): what :func:`check_forecast_size` counts.
FORECAST_COPIES = 3


# memory_bytes and _size are geostp.checks' (shared with the size checks of the adapters and checkpoints)


def check_forecast_size(steps: int, *, forecasts: int, channels: int, ny: int, nx: int) -> None:
    """Refuse a forecast that cannot fit in this machine's memory, saying how much it would need.

    A forecast of ``steps`` lead times of ``channels`` float32 fields on an ``ny`` x ``nx`` grid, from
    ``forecasts`` reference times, is held whole (:data:`FORECAST_COPIES` times while it is made).
    """
    one = 4 * steps * forecasts * channels * ny * nx
    need, have = one * FORECAST_COPIES, memory_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"steps={steps} cannot fit: {forecasts} forecast(s) of {steps} lead times x {channels} variable(s) x "
            f"{ny} x {nx} pixels are {_size(one)} of float32, about {_size(need)} while they are made, more than "
            f"this machine's {_size(have)} of memory; expected a number of lead times that fits (fewer steps, "
            "fewer reference times per call, or a smaller grid)")


# ----------------------------------------------------------------------------- how a forecast runs


@dataclass(frozen=True)
class ForecastOptions:
    """How a forecast runs: what :func:`geostp.forecast`, :func:`geostp.evaluate` and
    :meth:`FittedForecaster.predict` take as ``options=`` instead of the same five keywords.

    Attributes
    ----------
    device
        ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a ``torch.device``
        is kept as its name).
    tile, overlap
        Forecast large grids in tiles of ``tile`` pixels that overlap by ``overlap``, blended (learned
        models; baselines run on the whole grid); ``tile=None`` runs the whole grid at once.
    transfer
        Apply a trained model to a grid or time step other than its training data's.
    progress
        Progress bars while fitting and forecasting.
    """

    device: str = "auto"
    tile: int | None = None
    overlap: int = 32
    transfer: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        device = self.device if isinstance(self.device, str) else str(self.device)  # a torch.device
        if not re.fullmatch(r"[a-z]+(:[0-9]+)?", device):
            raise ConfigError(f"ForecastOptions device={self.device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        object.__setattr__(self, "device", device)
        if self.tile is not None:
            if isinstance(self.tile, bool) or not isinstance(self.tile, (int, np.integer)) or self.tile < 1:
                raise ConfigError(f"ForecastOptions tile={self.tile!r}; expected None or an integer >= 1 (pixels)")
            object.__setattr__(self, "tile", int(self.tile))
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, np.integer)) or self.overlap < 0:
            raise ConfigError(f"ForecastOptions overlap={self.overlap!r}; expected an integer >= 0 (pixels)")
        object.__setattr__(self, "overlap", int(self.overlap))
        for name in ("transfer", "progress"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"ForecastOptions {name}={value!r}; expected True or False")
            object.__setattr__(self, name, bool(value))


def cube_schema(cube: xr.Dataset, variables: Sequence[str], info: CubeInfo | None = None) -> dict[str, Any]:
    """What a model trained on ``cube`` assumes about its data: variables, units, grid, CRS and step."""
    info = info or validate_cube(cube, check_values=False)
    step = info.step
    return {
        "variables": list(variables),
        "units": {v: str(cube[v].attrs.get("units")) for v in variables},
        "shape": [int(cube.sizes["y"]), int(cube.sizes["x"])],
        "y": [float(cube.y.values[0]), float(cube.y.values[-1])],
        "x": [float(cube.x.values[0]), float(cube.x.values[-1])],
        "crs_wkt": info.crs_wkt,
        "time_step_seconds": (float(step / np.timedelta64(1, "s")) if isinstance(step, np.timedelta64)
                              else (float(step) if step is not None else None)),
    }


def check_schema(expected: dict[str, Any], cube: xr.Dataset, *, source: str = "the checkpoint",
                 same_grid: bool = True, same_step: bool = True, info: CubeInfo | None = None) -> None:
    """Refuse a cube whose variables, grid or time step differ from what a model was trained on.

    ``same_grid=False`` / ``same_step=False`` leave the grid (shape, extent, CRS) / the time
    step unchecked; variables and units are always checked.
    """
    missing = [v for v in expected["variables"] if v not in cube.data_vars]
    if missing:
        raise CheckpointError(
            f"{source} was trained on variables {expected['variables']}; the data lacks {missing} "
            f"(it has {sorted(map(str, cube.data_vars))})"
        )
    got = cube_schema(cube, expected["variables"], info)
    for v in expected["variables"]:
        if got["units"][v] != expected["units"][v]:
            raise CheckpointError(f"variable {v!r} has units {got['units'][v]!r}; {source} was trained on "
                                  f"{expected['units'][v]!r}")
    if same_step and expected.get("time_step_seconds") and got["time_step_seconds"] and \
            abs(got["time_step_seconds"] - expected["time_step_seconds"]) > 1e-6:
        raise CheckpointError(
            f"the data's time step is {got['time_step_seconds']:g} s; {source} was trained on a step of "
            f"{expected['time_step_seconds']:g} s (transfer=True applies it anyway)"
        )
    if same_grid and not expected.get("any_grid"):  # a model trained on a corpus of grids runs on any grid
        for key in ("shape", "y", "x"):
            if not np.allclose(got[key], expected[key]):
                raise CheckpointError(f"the data's grid ({key} = {got[key]}) differs from the grid {source} "
                                      f"was trained on ({key} = {expected[key]}; transfer=True applies it anyway)")
        if (expected.get("crs_wkt") or None) != (got.get("crs_wkt") or None):
            import pyproj

            a, b = expected.get("crs_wkt"), got.get("crs_wkt")
            if b is None:
                raise CheckpointError(f"the data has no CRS (no grid-mapping variable), and {source} was trained on "
                                      "data with one; expected the data's grid mapping (a variable taken from a "
                                      "cube, ds['precipitation'], leaves it behind: pass ds[['precipitation']]), "
                                      "or transfer=True to apply it anyway")
            if a is None or not pyproj.CRS.from_wkt(a).equals(pyproj.CRS.from_wkt(b)):
                raise CheckpointError(f"the data's CRS differs from the CRS {source} was trained on "
                                      "(transfer=True applies it anyway)")


# ----------------------------------------------------------------------------- the fitted object


@dataclass
class FittedForecaster:
    """A model with what it needs to forecast on labelled data.

    Attributes
    ----------
    model
        A :class:`geostp.models.base.Forecaster`.
    variables
        The cube variables that are the model's channels, in order.
    normalizer
        Turns physical values into model space and back (``encode``/``decode``
        and ``to_dict``); ``None`` for models that work on physical values.
    schema
        :func:`cube_schema` of the training data (``None``: any grid).
    checkpoint
        Where it was loaded from or saved to.
    metadata
        Anything else worth keeping (training settings, history summary, recipe).
    """

    model: Any
    variables: list[str]
    normalizer: Any = None
    schema: dict[str, Any] | None = None
    checkpoint: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    fill_value: float = 0.0

    @property
    def name(self) -> str:
        return self.model.name

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a checkpoint (atomic, weights-only loadable) that :func:`load_forecaster` reads.

        An existing file at ``path`` is replaced only if it is a geostp checkpoint (saving a model again, a
        training run written over its own ``model.pt``); any other file is refused with a
        :class:`~geostp.errors.WriteError` naming it, and left as it is, unless ``overwrite=True``.
        """
        from geostp._version import __version__
        from geostp.train.checkpoint import save_checkpoint

        path = as_path(path, "FittedForecaster.save: path", expected="the checkpoint file (.pt) to write")
        meta = {
            **self.metadata,
            "variables": self.variables,
            "normalizer": self.normalizer.to_dict() if self.normalizer is not None else None,
            "schema": self.schema,
            "fill_value": self.fill_value,
            "geostp_version": __version__,
        }
        payload = {"model_name": self.name, "model_config": self.model.config,
                   "state_dict": self.model.state_dict(), "metadata": meta}
        self.checkpoint = save_checkpoint(path, payload, overwrite=overwrite)
        return self.checkpoint

    # -------------------------------------------------------------- inference
    def _encode(self, values: np.ndarray) -> np.ndarray:
        return values if self.normalizer is None else np.asarray(self.normalizer.encode(values, variables=self.variables))

    def _decode(self, values: np.ndarray) -> np.ndarray:
        return values if self.normalizer is None else np.asarray(self.normalizer.decode(values, variables=self.variables))

    def output_bounds(self) -> tuple[list[float], list[float]] | None:
        """Per-variable ``(low, high)`` in model units: the range of the training data, or ``None`` if unknown.

        Learned models' frames are clamped to it as they are produced (and
        before they are fed back): see :meth:`geostp.models.base.Forecaster.predict`.
        """
        norm = self.normalizer
        if norm is None:
            return None
        low, high = [], []
        for v in self.variables:
            lo, hi = norm.extra.get(v, {}).get("min"), norm.extra.get(v, {}).get("max")
            if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
                return None
            low.append((float(lo) - norm.mean[v]) / norm.std[v])
            high.append((float(hi) - norm.mean[v]) / norm.std[v])
        return low, high

    # Over 80 lines: its docstring explains transfer; the body validates, then loops over reference times.
    def predict(
        self,
        cube: xr.Dataset,
        steps: int,
        *,
        reference_times: Sequence[Any] | None = None,
        device: str | torch.device = "auto",
        tile: int | None = None,
        overlap: int = 32,
        transfer: bool = False,
        progress: bool = False,
        options: ForecastOptions | None = None,
    ) -> xr.DataArray:
        """Forecast ``steps`` frames after each reference time (default: the last time of ``cube``).

        The data must have the variables and units the model was trained on
        and, unless ``transfer``, the same grid, CRS and time step: an
        operational feed whose grid or step changed is more often a fault
        than a wish.

        ``transfer=True`` applies the model to another grid or time step on
        purpose.  The models are convolutional and run on any grid, but what
        they learned is motion in *pixels per step*: keep the new data's pixel
        size / time step near the training data's (coarsen or resample it)
        for the model to see the speeds it knows.  The output's ``transfer``
        attribute records the training grid and step.

        ``options`` (a :class:`ForecastOptions`) stands for ``device``, ``tile``, ``overlap``,
        ``transfer`` and ``progress``; a keyword set besides it to another value is a ConfigError.
        """
        from geostp.train.trainer import pick_device

        opts = option_group(FittedForecaster.predict, options, ForecastOptions, "options", device=device, tile=tile,
                            overlap=overlap, transfer=transfer, progress=progress)
        tile, overlap, transfer = opts.tile, opts.overlap, opts.transfer
        steps = check_steps(steps)
        cube = as_cube(cube, argument="cube", name=self.variables[0])
        info = validate_cube(cube, check_values=False)
        if info.has_sequence:
            raise ConfigError("forecast on a cube with a 'sequence' dim: select one sequence first "
                              "(cube.isel(sequence=i))")
        if self.schema is not None:
            check_schema(self.schema, cube, source=f"model {self.name!r}", same_grid=not transfer,
                         same_step=not transfer, info=info)
        else:
            missing = [v for v in self.variables if v not in cube.data_vars]
            if missing:
                raise ConfigError(f"the data lacks variable(s) {missing}; it has {list(cube.data_vars)}")
        refs, positions = self._input_positions(cube, reference_times, info.step)
        check_forecast_size(steps, forecasts=len(positions), channels=len(self.variables), ny=cube.sizes["y"],
                            nx=cube.sizes["x"])
        several = reference_times is not None
        step = info.step
        dev = pick_device(opts.device)
        model = self.model.to(dev)
        outputs = []
        from tqdm.auto import tqdm

        bounds = self.output_bounds()
        for start, end in tqdm(positions, disable=not opts.progress or len(positions) < 2, desc="forecast"):
            window = cube[self.variables].isel(time=slice(start, end + 1))
            raw = np.stack([_checked_input(window, v, cube.encoding.get("source")) for v in self.variables],
                           axis=1)  # [T, C, H, W]
            nodata = ~np.isfinite(raw[-1])  # [C, H, W]: no data in the newest frame
            ref = _fmt_ref(cube["time"].values[end])
            if model.needs_motion:
                out = self._run_lagrangian(model, raw, steps, dev, tile=tile, overlap=overlap, bounds=bounds,
                                           ref=ref)
            else:
                x = self._encode(raw).astype(np.float32)
                x = np.where(np.isfinite(x), x, np.float32(self.fill_value))
                pred = self._run(model, x, steps, dev, tile=tile, overlap=overlap, bounds=bounds)
                out = self._decode(pred)
                self._check_output(np.where(nodata[None], 0.0, out), ref)  # the model saw finite inputs only
            out = np.where(nodata[None], np.nan, out)
            for i, v in enumerate(self.variables):
                if is_precipitation(cube[v]):
                    out[:, i] = np.where(np.isnan(out[:, i]), np.nan, np.clip(out[:, i], 0, None))
            outputs.append(out.astype(np.float32))
        values = np.stack(outputs) if several else outputs[0]
        attrs = self._output_attrs()
        if transfer and self.schema is not None:
            attrs["transfer"] = (f"applied outside its training data: trained on a {self.schema['shape'][0]} x "
                                 f"{self.schema['shape'][1]} grid with a step of "
                                 f"{self.schema.get('time_step_seconds')} s")
        return forecast_to_dataarray(values, cube, reference_time=refs if several else refs[0],
                                     variables=self.variables, step=step, attrs=attrs)

    def _input_positions(self, cube: xr.Dataset, reference_times: Sequence[Any] | None,
                         step: Any) -> tuple[list[Any], list[tuple[int, int]]]:
        """The reference times and, for each, the (first, last) index of its input frames (consecutive ones)."""
        t_in = int(self.model.input_steps)
        times = cube["time"].values
        refs = [times[-1]] if reference_times is None else list(reference_time_values(times, reference_times))
        index = pd.Index(times)
        positions = []
        for ref in refs:
            if ref not in index:
                raise ConfigError(f"reference time {pd.Timestamp(ref) if step is not None else ref} is not in "
                                  "the data's time axis")
            end = index.get_loc(ref)
            start = end - t_in + 1
            if start < 0:
                raise ConfigError(
                    f"model {self.name!r} needs {t_in} input frames up to {ref}, but the data has only "
                    f"{end + 1} (T_in = {t_in})"
                )
            span = times[end] - times[start]
            if step is not None and span != (t_in - 1) * step:
                raise CubeError(
                    f"the {t_in} input frames before {ref} span a gap in time ({times[start]} .. {times[end]}); "
                    "a forecast needs consecutive frames"
                )
            positions.append((start, end))
        return refs, positions

    def _output_attrs(self) -> dict[str, Any]:
        """The forecast's attrs: the model, its checkpoint and config, the package, and what advection did."""
        from geostp._version import __version__

        attrs = {"model": self.name, "checkpoint": str(self.checkpoint) if self.checkpoint else "",
                 "model_config": json.dumps(self.model.config), "geostp_version": __version__}
        if self.model.needs_motion:
            from geostp.advection import motion_description

            attrs["advection"] = ("advection-aware: the inputs were carried into the frame of the newest observation "
                                  "(the reference time), the model forecast the change there from "
                                  + ("S-PROG's forecast in that frame (pysteps, "
                                     f"{self.model.base_levels} cascade levels)" if self.model.base == "sprog"
                                     else "the newest frame")
                                  + f", and each lead was advected forward; motion: {motion_description()}")
            attrs["probability_matching"] = ("each lead matched to the newest observation's distribution (CDF)"
                                             if self.metadata.get("probability_matching") else "none")
            gate = getattr(self.model, "lead_gate", None)
            attrs["lead_gate"] = json.dumps(gate) if gate is not None else "none (the whole learned change)"
            cal = self.metadata.get("history_calibration")
            if cal:
                attrs["history_calibration"] = (
                    f"lead gate set on the newest {cal['windows']} whole windows of the data up to "
                    f"{cal['history_end']} (least error in mm/h per lead; it was {json.dumps(cal['lead_gate_before'])})"
                    if cal.get("calibrated") else f"not done: {cal.get('why')}")
        return attrs

    def _check_output(self, values: np.ndarray, ref: str) -> None:
        """Refuse a forecast ``[steps, ...]`` that holds NaN or infinity although the model's inputs were finite:
        its weights cannot be right (a training run that diverged, absurd or damaged weights), and an all-NaN
        forecast would otherwise pass for an outage."""
        bad = ~np.isfinite(values)
        if not bad.any():
            return
        lead = int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]) + 1
        source = f"checkpoint {self.checkpoint}" if self.checkpoint else "weights in memory, no checkpoint"
        raise CheckpointError(
            f"model {self.name!r} ({source}) forecast non-finite values (NaN or inf) at {int(bad.sum())} of "
            f"{bad.size} values, first at lead {lead}, from finite inputs at reference time {ref}; expected a finite "
            "forecast: its weights cannot be right (a training run that diverged, absurd or damaged weights), so "
            "train it again or use another checkpoint")

    def _run_lagrangian(self, model, raw: np.ndarray, steps: int, device: torch.device, *, tile: int | None,
                        overlap: int, bounds: tuple[list[float], list[float]] | None, ref: str = "") -> np.ndarray:
        """An advection-aware model's forecast ``[steps, 1, H, W]`` in physical units from ``raw`` ``[T, 1, H, W]``.

        Motion from the newest frames, inputs carried into the newest frame, the
        model's change added there, each lead advected forward along the same
        motion (what the extrapolation baseline does with the newest frame).
        """
        from geostp.advection import (
            advect,
            displacements,
            estimate_motion,
            lagrangian_sprog,
            probability_match,
            to_lagrangian,
        )

        if raw.shape[1] != 1:
            raise ConfigError(f"model {self.name!r} is advection-aware and forecasts one rain variable; "
                              f"it was given {raw.shape[1]}")
        frames = raw[:, 0]
        velocity = estimate_motion(frames)
        lagrangian, _ = to_lagrangian(frames, None, velocity)
        x = self._encode(lagrangian[:, None]).astype(np.float32)
        zero = np.float32(self._encode(np.zeros((1, 1, 1, 1), np.float32)).reshape(-1)[0])
        x = np.where(np.isfinite(x), x, zero)
        if model.base == "sprog":  # the base the change is learned from travels after the inputs
            base = lagrangian_sprog(frames, velocity, steps, levels=model.base_levels)
            x = np.concatenate([x, self._encode(base[:, None]).astype(np.float32)])
        pred = self._decode(self._run(model, x, steps, device, tile=tile, overlap=overlap, bounds=bounds))[:, 0]
        self._check_output(pred, ref)  # before the advection, which would turn NaN into the outside value
        newest = np.nan_to_num(frames[-1], nan=0.0)
        outside = float(newest.min())
        out = np.nan_to_num(advect(pred, displacements(velocity, steps), outside), nan=outside)
        if self.metadata.get("probability_matching"):
            out = np.stack([probability_match(f, newest) for f in out])
        return out[:, None]

    def _run(self, model, x: np.ndarray, steps: int, device: torch.device, *, tile: int | None,
             overlap: int, bounds: tuple[list[float], list[float]] | None = None) -> np.ndarray:
        """Model output ``[steps, C, H, W]`` for one window, padded (and tiled) as the model needs."""
        t, c, h, w = x.shape
        m = model.spatial_multiple
        # Baselines run whole: their cost is small, and optical flow needs the whole field for its motion.
        if tile is None or (h <= tile and w <= tile) or not model.trainable:
            return _padded_predict(model, x, steps, m, device, bounds)
        if tile % m or tile <= 2 * overlap:
            raise ConfigError(f"tile={tile} must be a multiple of {m} and larger than 2 x overlap={overlap}")
        # Overlapping tiles blended with weights that fall to ~0 at tile edges (no seams).
        out = np.zeros((steps, c, h, w), np.float64)
        weight = np.zeros((h, w), np.float64)
        ramp = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1).astype(np.float64)
        ramp = np.minimum(ramp / max(overlap, 1), 1.0)
        win = np.outer(ramp, ramp)
        stride = tile - overlap
        ys = sorted({*range(0, max(h - tile, 0) + 1, stride), max(h - tile, 0)})
        xs = sorted({*range(0, max(w - tile, 0) + 1, stride), max(w - tile, 0)})
        corners = [(y0, x0) for y0 in ys for x0 in xs]
        # Every tile has the same shape: run them in batches (one forward pass per TILE_BATCH tiles).
        for b0 in range(0, len(corners), TILE_BATCH):
            group = corners[b0:b0 + TILE_BATCH]
            parts = np.stack([x[:, :, y0:y0 + tile, x0:x0 + tile] for y0, x0 in group])
            preds = _padded_predict(model, parts, steps, m, device, bounds)
            for (y0, x0), pred in zip(group, preds, strict=True):
                wy, wx = pred.shape[-2:]
                out[..., y0:y0 + wy, x0:x0 + wx] += pred * win[:wy, :wx]
                weight[y0:y0 + wy, x0:x0 + wx] += win[:wy, :wx]
        return (out / weight).astype(np.float32)


def _checked_input(window: xr.Dataset, variable: str, source: str | None) -> np.ndarray:
    """One variable's input frames ``[T, H, W]`` as float32, refused (:class:`CubeValueError`) where they hold
    values the variable cannot take, or no data at all in the newest frame (the forecast would be all NaN)."""
    values = np.asarray(window[variable].transpose("time", "y", "x").values)
    times = window["time"].values
    ref = _fmt_ref(times[-1])
    check_value_range(values, window[variable], source=source, times=times,
                      where=f", an input of the forecast from {ref}")
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values[-1]).any():
        where = f"{source}: " if source else ""
        raise CubeValueError(
            f"{where}variable {variable!r} holds no data (only NaN) at the reference time {ref}, so the forecast "
            "from it would be all NaN (a radar outage?); expected data in the newest input frame: forecast from a "
            "reference time with data")
    return values


def _fmt_ref(t: Any) -> str:
    return str(pd.Timestamp(t)) if isinstance(t, np.datetime64) else str(t)


#: Tiles per forward pass when a forecast runs in tiles.
TILE_BATCH = 16


def _padded_predict(model, x: np.ndarray, steps: int, multiple: int, device: torch.device,
                    bounds: tuple[list[float], list[float]] | None = None) -> np.ndarray:
    """The model's forecast of one window ``[T, C, H, W]`` or a batch of them ``[B, T, C, H, W]``."""
    import torch

    batched = x.ndim == 5
    xb = x if batched else x[None]
    b, t, c, h, w = xb.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    xt = torch.from_numpy(np.ascontiguousarray(xb)).to(device)
    if ph or pw:
        # replicate the border: no artificial edge for convolutions to react to
        xt = torch.nn.functional.pad(xt.flatten(1, 2), (0, pw, 0, ph), mode="replicate").unflatten(1, (t, c))
    if hasattr(model, "predict"):
        pred = model.predict(xt, steps, bounds=bounds) if bounds is not None else model.predict(xt, steps)
    else:
        with torch.inference_mode():
            pred = model(xt, steps)
    out = pred[:, :, :, :h, :w].float().cpu().numpy()
    return out if batched else out[0]


# ----------------------------------------------------------------------------- loading


def _check_rebuild(path: Path, name: str, config: dict[str, Any], state_dict: Any) -> None:
    """Refuse, before any weight is allocated, a checkpoint whose ``model_config`` asks for a model that cannot fit
    in memory, or whose weights have other shapes than that model's: the model is first built on torch's
    ``meta`` device (shapes without memory), and its parameters and buffers counted."""
    import torch

    import geostp.models as models

    try:
        with torch.device("meta"):
            shadow = models.get(name, **config)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from its model_config ({exc}); expected the "
                              "constructor arguments the model records") from None
    except (NotImplementedError, RuntimeError):
        return  # an operation the meta device lacks: the real build below tells
    need = sum(t.numel() * t.element_size() for t in [*shadow.parameters(), *shadow.buffers()])
    n = sum(t.numel() for t in shadow.parameters())
    check_fits(need, f"checkpoint {path}: model {name!r} as its model_config asks ({n:,} parameters)",
               expected="the model_config of the model the checkpoint's weights belong to (a damaged or hand-made "
                        "checkpoint?)", error=CheckpointError)
    if isinstance(state_dict, dict):
        for key, t in shadow.state_dict().items():
            held = state_dict.get(key)
            if isinstance(held, torch.Tensor) and tuple(held.shape) != tuple(t.shape):
                raise CheckpointError(f"{path}: weights do not fit model {name!r}: {key} has shape "
                                      f"{tuple(held.shape)} in the checkpoint but {tuple(t.shape)} in the model its "
                                      "model_config describes; expected the model_config the weights were saved with")


def load_forecaster(path: str | os.PathLike[str], *, device: str = "cpu") -> FittedForecaster:
    """Read a checkpoint written by :meth:`FittedForecaster.save` or by the trainer.

    A ``model_config`` that asks for a model too large for this machine's memory, or for another model than the
    weights, is a :class:`~geostp.errors.CheckpointError` naming the checkpoint (and the size), raised before the
    model is built.
    """
    import geostp.models as models
    from geostp.train.checkpoint import check_finite_weights, load_checkpoint

    path = as_path(path, "load_forecaster: path", expected="a checkpoint file (.pt) written by geostp")
    ck = load_checkpoint(path, map_location=device)
    name = ck.get("model_name")
    if not name or not isinstance(name, str):
        raise CheckpointError(f"{path} names no model (model_name={name!r}); expected a registered model's name")
    _check_rebuild(path, name, ck.get("model_config", {}), ck.get("state_dict"))
    try:
        model = models.get(name, **ck.get("model_config", {}))
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from its model_config ({exc}); expected the "
                              "constructor arguments the model records") from None
    check_finite_weights(ck.get("state_dict"), path)
    try:
        model.load_state_dict(ck["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} ({str(exc)[:300]})") from None
    meta = ck.get("metadata") or {}
    if "variables" not in meta:
        raise CheckpointError(f"{path} does not record the variables the model was trained on")
    variables = meta["variables"]
    if not isinstance(variables, list) or not variables or not all(isinstance(v, str) for v in variables):
        raise CheckpointError(f"{path}: metadata 'variables' is {variables!r}; expected a list of variable names")
    try:
        fill_value = float(meta.get("fill_value", 0.0))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: metadata 'fill_value' is {meta.get('fill_value')!r}; expected a number") \
            from None
    schema = meta.get("schema")
    if schema is not None and not (isinstance(schema, dict) and isinstance(schema.get("variables"), list)):
        raise CheckpointError(f"{path}: metadata 'schema' is {schema!r:.200}; expected the mapping of variables, "
                              "units and grid that geostp records")
    normalizer = None
    if meta.get("normalizer"):
        from geostp.stream import Normalizer

        try:
            normalizer = Normalizer.from_dict(meta["normalizer"])
        except (ConfigError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: its normaliser cannot be read (a damaged checkpoint?): {exc}") from None
        missing = [v for v in variables if v not in normalizer.variables]
        if missing:
            raise CheckpointError(f"{path}: its normaliser has no statistics for {missing}; expected statistics "
                                  f"for every variable the model forecasts ({variables})")
    model.eval()
    return FittedForecaster(model=model, variables=list(variables), normalizer=normalizer,
                            schema=schema, checkpoint=Path(path), metadata=meta, fill_value=fill_value)


def model_store_dir() -> Path:
    """The local model store: ``$GEOSTP_MODEL_STORE``, else ``~/.cache/geostp/models``."""
    env = os.environ.get("GEOSTP_MODEL_STORE")
    return Path(env) if env else Path.home() / ".cache" / "geostp" / "models"


def data_fingerprint(cube: xr.Dataset, variables: Sequence[str], info: CubeInfo | None = None) -> str:
    """A cheap key for a cube: schema, time axis and the bytes of a few sampled frames."""
    h = hashlib.sha256()
    h.update(json.dumps(cube_schema(cube, variables, info), sort_keys=True).encode())
    times = cube["time"].values
    h.update(np.ascontiguousarray(times).tobytes())
    nt = cube.sizes["time"]
    for i in sorted({0, nt // 3, (2 * nt) // 3, nt - 1}):
        for v in variables:
            h.update(np.ascontiguousarray(np.asarray(cube[v].isel(time=i).values, np.float32)).tobytes())
    return h.hexdigest()[:20]
