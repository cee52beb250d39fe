"""Fit a registered model on a cube's own history, with a budget, and cache it in the model store.

This is what ``geostp.forecast(ds, model="tau")`` does when ``model`` is a
name: windows of the cube (a time split for validation), normalisation from
the training part, the plain training loop with a time budget, and a
checkpoint in the local model store keyed by the data and every setting, so
that the same call on the same data loads it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geostp.cube import is_precipitation, validate_cube
from geostp.errors import ConfigError
from geostp.forecast import (
    FittedForecaster,
    cube_schema,
    data_fingerprint,
    load_forecaster,
    model_store_dir,
)

__all__ = ["fit", "QUICK_MODEL_ARGS"]

#: Small configurations used when ``fit`` gets no ``model_args``: they learn
#: something within minutes on a laptop CPU.  The papers' configurations are
#: the models' own defaults (``geostp.models.get("tau")``); pass them through
#: ``model_args`` (or a recipe) for real training on a GPU.
QUICK_MODEL_ARGS: dict[str, dict[str, Any]] = {
    "tau": {"spatial_hidden_channels": 16, "temporal_hidden_channels": 64, "spatial_blocks": 2,
            "temporal_blocks": 2},
    "predrnn_v2": {"hidden_channels": 32, "num_layers": 2, "patch_size": 4},
    "predrnn": {"hidden_channels": 32, "num_layers": 2, "patch_size": 4},
}



def fit(
    ds: xr.Dataset,
    model: str,
    *,
    variables: Sequence[str] | None = None,
    model_args: dict[str, Any] | None = None,
    input_steps: int | None = None,
    output_steps: int | None = None,
    patch_size: int | None = 64,
    batch_size: int = 8,
    max_minutes: float | None = 2.0,
    max_steps: int | None = None,
    epochs: int = 50,
    lr: float = 1e-3,
    validation_fraction: float = 0.15,
    seed: int = 0,
    use_store: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> FittedForecaster:
    """Fit ``model`` (a registered name) on ``ds``; baselines are returned at once.

    Parameters
    ----------
    ds
        A cube; the last ``validation_fraction`` of its time axis validates.
    model
        A registered model name.
    variables
        Channels (default: every data variable).
    model_args
        Constructor arguments; default :data:`QUICK_MODEL_ARGS` for the model.
    input_steps, output_steps
        Default: the model's own (``model_args``), else 6 and 6 (30 min in, 30 min out at 5 min).
    patch_size
        Square training patches (rounded down to what the model needs and to the grid);
        ``None`` trains on the whole domain.
    batch_size, max_minutes, max_steps, epochs, lr, seed
        Training budget and settings (:class:`geostp.train.trainer.TrainSettings`).
    use_store
        Load an identical earlier fit from the model store, and store this one.
    """
    import geostp.models as registry
    from geostp._version import __version__
    from geostp.stream import (
        CubeDataset,
        RainFilter,
        WindowSpec,
        compute_statistics,
        make_loader,
        split_cube,
    )
    from geostp.train.schedules import SCHEDULE_MARK_ARGS, fit_schedule_marks, takes_schedule_marks
    from geostp.train.trainer import Trainer, TrainSettings

    info = validate_cube(ds, check_values=False)
    variables = list(variables) if variables is not None else list(info.variables)
    unknown = [v for v in variables if v not in info.variables]
    if unknown:
        raise ConfigError(f"variable(s) {unknown} are not in the cube; it has {list(info.variables)}")
    args = dict(QUICK_MODEL_ARGS.get(model.lower(), {}) if model_args is None else model_args)
    args.setdefault("input_steps", input_steps or 6)
    args.setdefault("output_steps", output_steps or args["input_steps"])
    args.setdefault("channels", len(variables))
    net = registry.get(model, **args)
    schema = cube_schema(ds, variables, info)
    if not getattr(net, "trainable", True):
        return FittedForecaster(model=net, variables=variables, normalizer=None, schema=schema,
                                metadata={"fitted": False})

    ny, nx = ds.sizes["y"], ds.sizes["x"]
    m = int(net.spatial_multiple)
    if patch_size is not None:
        side = min(patch_size, ny, nx) // m * m
        if side < m:
            raise ConfigError(f"the grid ({ny} x {nx}) is too small for model {model!r}, which needs "
                              f"multiples of {m} pixels")
        patch: int | None = side
    else:
        if ny % m or nx % m:
            raise ConfigError(f"whole-domain training needs a grid that is a multiple of {m}; got {ny} x {nx} "
                              "(use patch_size)")
        patch = None
    rain = RainFilter(variable=variables[0]) if is_precipitation(ds[variables[0]]) and patch is not None else None
    spec = WindowSpec(input_steps=net.input_steps, output_steps=net.output_steps, patch_size=patch,
                      random_patches=4 if patch is not None else 0, rain=rain)
    # OneCycle is sized to a step count known in advance. Under a time budget alone that count is
    # unknown, and a schedule sized to the epoch budget would stop while still warming up (at lr/25):
    # then the learning rate is constant.
    schedule = "constant" if (max_minutes is not None and max_steps is None) else "onecycle"
    settings = TrainSettings(epochs=epochs, max_minutes=max_minutes, max_steps=max_steps, lr=lr, seed=seed,
                             schedule=schedule, device=device, progress=progress, checkpoint_every=50)

    key_parts = {
        "model": net.name, "config": net.config, "variables": variables, "spec": spec.to_dict(),
        "settings": settings.model_dump(exclude={"progress", "device"}), "batch_size": batch_size,
        "validation_fraction": validation_fraction, "data": data_fingerprint(ds, variables, info),
        "version": __version__,
    }
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
    stored = model_store_dir() / f"{net.name}-{key}.pt"
    if use_store and stored.exists():
        cached = load_forecaster(stored)
        cached.metadata["from_store"] = True
        return cached

    n_val = int(round(validation_fraction * info.sizes["time"]))
    if n_val >= spec.length and info.sizes["time"] - n_val >= spec.length:
        splits = split_cube(ds, train=1 - validation_fraction, validation=validation_fraction)
    else:
        splits = {"train": None, "validation": None}
    normalizer = compute_statistics(ds, variables, split=splits["train"])
    train_set = CubeDataset(ds, variables, spec, split=splits["train"], normalizer=normalizer,
                            batch_size=batch_size, shuffle=True, seed=seed)
    if len(train_set) == 0:
        raise ConfigError(
            f"no training sample: {info.sizes['time']} frames with {len(info.gaps)} gap(s) hold no run of "
            f"{spec.length} consecutive frames{' with rain' if rain else ''}"
        )
    schedule_info = None
    if takes_schedule_marks(net, args):
        # The papers' scheduled-sampling marks belong to a 125k-step run: keep their fractions of this one.
        planned = settings.planned_steps(len(train_set))
        if max_steps is None and max_minutes:  # a time budget: as many as fit in it, timed
            planned = min(planned, _steps_in_minutes(net, next(iter(train_set)), max_minutes, device))
        args = fit_schedule_marks(net, args, planned)
        net = registry.get(model, **args)
        schedule_info = {"planned_steps": planned, **{k: args[k] for k in SCHEDULE_MARK_ARGS}}
    # Worker processes pay off when batches are read from a store; in-memory cubes stream in-process.
    workers = 2 if ds.encoding.get("source") else 0
    val_loader = None
    if splits["validation"] is not None:
        val_set = CubeDataset(ds, variables, spec, split=splits["validation"], normalizer=normalizer,
                              batch_size=batch_size, shuffle=False, seed=seed)
        val_loader = make_loader(val_set, workers) if len(val_set) else None
    metadata = {"variables": variables, "normalizer": normalizer.to_dict(), "schema": schema,
                "fill_value": normalizer.fill_value, "window": spec.to_dict(), "geostp_version": __version__,
                "sampling_schedule": schedule_info}
    with tempfile.TemporaryDirectory(prefix="geostp-fit-") as tmp:
        trainer = Trainer(net, settings, checkpoint_dir=tmp, metadata=metadata)
        result = trainer.fit(make_loader(train_set, workers), val_loader, resume=False)
        best = Path(tmp) / "best.pt"
        if best.exists():
            net = load_forecaster(best).model
    fitted = FittedForecaster(
        model=net.cpu().eval(), variables=variables, normalizer=normalizer, schema=schema,
        metadata={"fitted": True, "window": spec.to_dict(), "stopped": result.stopped,
                  "steps": result.iteration, "epochs": result.epochs, "sampling_schedule": schedule_info,
                  "final_loss": float(np.mean([h["loss"] for h in result.history[-10:]]))},
        fill_value=normalizer.fill_value,
    )
    if use_store:
        fitted.save(stored)
    return fitted


def _steps_in_minutes(net, batch: dict[str, Any], minutes: float, device: str) -> int:
    """About how many optimiser steps of ``net`` on batches like ``batch`` fit in ``minutes`` (timed on a copy)."""
    import copy
    import time

    import torch

    from geostp.models.base import bf16_autocast
    from geostp.train.trainer import pick_device

    dev = pick_device(device)
    probe = copy.deepcopy(net).to(dev).train()
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    x, y = batch["x"].to(dev), batch["y"].to(dev)
    mask = batch["mask_y"].to(dev) if batch.get("mask_y") is not None else None
    times: list[float] = []
    # The first steps are slow (kernel selection, caches, page faults; far slower on a busy machine):
    # time up to 6, the fastest after the first counts; stop early once 15 % of the budget is spent.
    while len(times) < 6 and (len(times) < 2 or sum(times) < minutes * 9):
        start = time.perf_counter()
        with bf16_autocast(dev):
            loss, _ = probe.training_loss(x, y, iteration=0, mask=mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return max(1, int(minutes * 60 / min(times[1:])))
