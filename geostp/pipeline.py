"""The one training pipeline: what ``geostp.fit`` and a recipe's ``training`` section both run.

``train_forecaster(cubes, job)`` does, in order: splits, statistics, the
training samples (windows of the cube, or, for an advection-aware model, a
Lagrangian corpus of one or several cubes), the model (with its sampling
marks placed on this run's length), the trainer, the best checkpoint back,
and a :class:`~geostp.forecast.FittedForecaster`.  Callers differ only in the
:class:`TrainingJob` they build (defaults, where checkpoints go, resume) and
in what they do with the result (the model store, ``model.pt`` and
``history.json``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geostp._version import __version__
from geostp.cube import is_precipitation, validate_cube
from geostp.errors import ConfigError

__all__ = ["TrainingJob", "TrainingOutcome", "train_forecaster", "pooled_statistics", "advection_default",
           "STAGES"]

#: The stages a ConfigError from :func:`train_forecaster` may be tagged with (``exc.stage``).
STAGES = ("transforms", "train_windows", "validation_windows")


@dataclass(frozen=True)
class TrainingJob:
    """Everything a training run needs besides the data.

    Attributes
    ----------
    model, model_args
        A registered model name and its constructor arguments (shape arguments included).
    variables
        The channels.
    settings
        :class:`geostp.train.trainer.TrainSettings`.
    batch_size, workers
        Loader settings (workers: only for store-backed Eulerian windows).
    patch_size
        Square patches; ``None`` trains whole domains (Eulerian only).
    window
        Eulerian: a :class:`~geostp.stream.WindowSpec` to use as is (recipes); ``None`` derives one.
    splits
        Eulerian: ``{"train": Split | None, "validation": Split | None}``; ``None``: the last
        ``validation_fraction`` of the time axis validates when it holds a window.
    validation_fraction
        See ``splits``; also how much of each corpus cube validates an advection-aware model.
    transforms
        Passed to :func:`geostp.stream.compute_statistics`.
    advection
        Train advection-aware (:class:`geostp.models.lagrangian.Lagrangian` around ``model``).
    base
        Advection-aware: what the learned change is added to, ``"extrapolation"`` (the newest frame) or
        ``"sprog"`` (S-PROG's forecast in the moving frame).
    loss
        Advection-aware: ``"weighted"`` (rain-weighted, the default) or ``"mse"``.
    probability_matching
        Advection-aware: match each forecast lead's distribution to the newest observation.
    batches_per_epoch, window_stride
        Advection-aware: batches drawn per epoch; every ``window_stride``-th window of each cube is used.
    motion_dir
        Where motion fields are cached (default: beside the model store).
    store
        Eulerian: read windows from this zarr store (worker processes) rather than from the cube object.
    checkpoint_dir, resume
        Where the trainer writes ``last.pt``/``best.pt`` (``None``: a temporary folder) and whether it resumes.
    init
        A :class:`~geostp.forecast.FittedForecaster` to start from (fine-tuning): its model, configuration and
        normaliser are kept; ``model`` and ``model_args`` are then ignored.
    lead_gate
        Advection-aware: after training, scale the learned change lead by lead by the factor held-out windows
        support (:meth:`geostp.models.lagrangian.Lagrangian.calibrate_lead_gate`); needs validation windows
        (``validation_fraction``), without them the change is kept whole and the metadata says so.
    time_the_budget
        Under a time budget alone, time a few iterations first to place recurrent models' sampling marks.
    metadata
        Extra facts stored with the model (a recipe, ...).
    """

    model: str
    model_args: dict[str, Any]
    variables: list[str]
    settings: Any
    batch_size: int = 8
    workers: int = 0
    patch_size: int | None = 64
    window: Any = None
    splits: dict[str, Any] | None = None
    validation_fraction: float = 0.15
    transforms: Any = "auto"
    advection: bool = False
    base: str = "extrapolation"
    loss: str = "weighted"
    probability_matching: bool = False
    batches_per_epoch: int = 50
    window_stride: int = 1
    motion_dir: Path | None = None
    store: str | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    lead_gate: bool = True
    time_the_budget: bool = False
    init: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingOutcome:
    """The fitted forecaster, the trainer's result and what was decided on the way."""

    fitted: Any
    result: Any
    checkpoint: Path | None
    schedule: dict[str, Any] | None = None


def advection_default(cube: xr.Dataset, variables: Sequence[str]) -> bool:
    """Advection-aware training is the default for one precipitation variable (rain moves; its change is learned)."""
    return len(variables) == 1 and is_precipitation(cube[variables[0]])


def pooled_statistics(cubes: Sequence[xr.Dataset], variable: str, *, transforms: Any = "auto") -> Any:
    """One normaliser over several cubes: their moments pooled by pixel count."""
    from geostp.stream import Normalizer, compute_statistics

    parts = [compute_statistics(c, [variable], transforms=transforms) for c in cubes]
    if len(parts) == 1:
        return parts[0]
    n = np.array([p.extra[variable]["count"] for p in parts], float)
    m = np.array([p.mean[variable] for p in parts])
    s = np.array([p.std[variable] for p in parts])
    mean = float((n * m).sum() / n.sum())
    var = float((n * (s ** 2 + (m - mean) ** 2)).sum() / n.sum())
    extra = {"count": int(n.sum()), "min": float(min(p.extra[variable]["min"] for p in parts)),
             "max": float(max(p.extra[variable]["max"] for p in parts))}
    first = parts[0]
    return Normalizer([variable], {variable: first.transforms[variable]}, {variable: mean},
                      {variable: var ** 0.5 if var > 0 else 1.0}, fill_value=first.fill_value,
                      extra={variable: extra})


def _identity(cube: xr.Dataset, variable: str) -> str:
    from geostp.forecast import data_fingerprint

    return data_fingerprint(cube, [variable])


def _split_time(cube: xr.Dataset, fraction: float, length: int) -> tuple[xr.Dataset, xr.Dataset | None]:
    nt = cube.sizes["time"]
    n_val = int(round(fraction * nt))
    if n_val < length or nt - n_val < length:
        return cube, None
    return cube.isel(time=slice(0, nt - n_val)), cube.isel(time=slice(nt - n_val, nt))


class _Stage:
    """Tags a ConfigError raised inside with the pipeline stage (``exc.stage``), so that a caller can name its own
    setting for it (a recipe key) without reading the message."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, ConfigError) and not getattr(exc, "stage", None):
            exc.stage = self.name  # type: ignore[attr-defined]
        return False


def _build(name: str, args: dict[str, Any]):
    import geostp.models as registry

    return registry.get(name, **args)


def _place_marks(job: TrainingJob, args: dict[str, Any], net: Any, iterations_per_epoch: int,
                 loader: Any, resumed: dict[str, Any] | None = None,
                 ) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """Recurrent models: the papers' sampling marks at their fractions of this run's length (a resumed run's: the
    length its checkpoint planned, never timed again)."""
    from geostp.models.schedules import SCHEDULE_MARK_ARGS, fit_schedule_marks, takes_schedule_marks

    inner_args = args.get("model_config", args) if job.advection else args
    target = net.inner if job.advection else net
    if not takes_schedule_marks(target, inner_args):
        return args, net, None
    s = job.settings
    planned = s.planned_iterations(iterations_per_epoch)
    if resumed and (resumed.get("sampling_schedule") or {}).get("planned_iterations"):
        planned = int(resumed["sampling_schedule"]["planned_iterations"])
    elif job.time_the_budget and s.max_iterations is None and s.max_minutes:
        # one batch to time the iterations on: drawn only here, where it is needed
        planned = min(planned, _iterations_in_minutes(net, next(iter(loader)), s.max_minutes, s.device))
    scaled = fit_schedule_marks(target, inner_args, planned)
    if scaled is None:
        return args, net, None
    args = {**args, "model_config": scaled} if job.advection else scaled
    return args, _build(job.model if not job.advection else "lagrangian", args), {
        "planned_iterations": planned, **{k: scaled[k] for k in SCHEDULE_MARK_ARGS}}


def _eulerian_data(cube: xr.Dataset, job: TrainingJob, net: Any):
    from geostp.stream import (
        CubeDataset,
        RainFilter,
        WindowSpec,
        compute_statistics,
        make_loader,
        split_cube,
    )

    info = validate_cube(cube, check_values=False)
    spec = job.window
    if spec is None:
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        m = int(net.spatial_multiple)
        if job.patch_size is not None:
            side = min(job.patch_size, ny, nx) // m * m
            if side < m:
                raise ConfigError(f"the grid ({ny} x {nx}) is too small for model {job.model!r}, which needs "
                                  f"multiples of {m} pixels")
            patch: int | None = side
        else:
            if ny % m or nx % m:
                raise ConfigError(f"whole-domain training needs a grid that is a multiple of {m}; got {ny} x {nx} "
                                  "(use patch_size)")
            patch = None
        var0 = job.variables[0]
        rain = RainFilter(variable=var0) if is_precipitation(cube[var0]) and patch is not None else None
        spec = WindowSpec(input_steps=net.input_steps, output_steps=net.output_steps, patch_size=patch,
                          random_patches=4 if patch is not None else 0, rain=rain)
    splits = job.splits
    if splits is None:
        n_val = int(round(job.validation_fraction * info.sizes["time"]))
        if n_val >= spec.length and info.sizes["time"] - n_val >= spec.length:
            splits = split_cube(cube, train=1 - job.validation_fraction, validation=job.validation_fraction)
        else:
            splits = {"train": None, "validation": None}
    with _Stage("transforms"):
        normalizer = compute_statistics(cube, job.variables, split=splits.get("train"), transforms=job.transforms)
    source: Any = job.store if job.store is not None else cube
    with _Stage("train_windows"):
        train_set = CubeDataset(source, job.variables, spec,
                                split=splits.get("train"), normalizer=normalizer, batch_size=job.batch_size,
                                shuffle=True, seed=job.settings.seed)
        if len(train_set) == 0:
            raise ConfigError(f"no training sample: {info.sizes['time']} frames with {len(info.gaps)} gap(s) hold "
                              f"no run of {spec.length} consecutive frames{' with rain' if spec.rain else ''} in "
                              "the training split")
    val_loader = None
    if splits.get("validation") is not None:
        with _Stage("validation_windows"):
            val_set = CubeDataset(source, job.variables, spec, split=splits["validation"], normalizer=normalizer,
                                  batch_size=job.batch_size, shuffle=False, seed=job.settings.seed)
        val_loader = make_loader(val_set, job.workers) if len(val_set) else None
    return make_loader(train_set, job.workers), val_loader, normalizer, {"window": spec.to_dict()}


def _corpus_data(cubes: Sequence[xr.Dataset], job: TrainingJob, net: Any, progress: bool):
    from geostp.advection import MotionCache
    from geostp.forecast import model_store_dir
    from geostp.stream.lagrangian import LagrangianCorpus

    var = job.variables[0]
    length = net.input_steps + net.output_steps
    parts = [_split_time(c, job.validation_fraction, length) for c in cubes]
    train_cubes = [t for t, _ in parts]
    val_cubes = [v for _, v in parts if v is not None]
    if job.init is not None:  # the weights belong to the normaliser they were trained with
        normalizer = job.init.normalizer.renamed({job.init.variables[0]: var})
    else:
        normalizer = pooled_statistics(train_cubes, var, transforms=job.transforms)
    cache = MotionCache.shared(job.motion_dir if job.motion_dir is not None else model_store_dir().parent / "motion")
    computed_before = cache.computed
    common = {"input_steps": net.input_steps, "output_steps": net.output_steps, "normalizer": normalizer,
              "motion_cache": cache, "patch_size": job.patch_size or 64, "batch_size": job.batch_size,
              "base": net.base, "base_levels": net.base_levels, "progress": progress}
    train = LagrangianCorpus(train_cubes, var, identities=[_identity(c, var) for c in train_cubes],
                             batches_per_epoch=job.batches_per_epoch, seed=job.settings.seed,
                             stride=job.window_stride, **common)
    val = None
    if val_cubes:
        n_val = max(2, job.batches_per_epoch // 5)
        try:
            val = LagrangianCorpus(val_cubes, var, identities=[_identity(c, var) for c in val_cubes],
                                   batches_per_epoch=n_val, seed=10_000 + job.settings.seed, augment=False, **common)
        except ConfigError:
            val = None  # validation parts too short for a window: train without
    info = {"corpus": {"cubes": len(cubes), "train_windows": train.n_windows,
                       "validation_windows": val.n_windows if val is not None else 0,
                       "motion_fields_computed": cache.computed - computed_before, "base": net.base}}
    return train, val, normalizer, info


def _decoder(normalizer: Any, variable: str) -> dict[str, Any]:
    t = normalizer.transforms[variable].to_dict()
    return {**t, "mean": float(normalizer.mean[variable]), "std": float(normalizer.std[variable])}


def _resume_point(job: TrainingJob) -> dict[str, Any] | None:
    """The metadata of the ``last.pt`` a resuming job goes on from (None: it starts afresh).

    A job that names its fit (``metadata['fit_key']``, :func:`geostp.fit.fit`) refuses a checkpoint of another fit
    (other data, model or settings) instead of continuing it with this one's data.
    """
    if not job.resume or job.checkpoint_dir is None or not (Path(job.checkpoint_dir) / "last.pt").exists():
        return None
    from geostp.train.checkpoint import load_checkpoint

    last = Path(job.checkpoint_dir) / "last.pt"
    metadata = load_checkpoint(last).get("metadata") or {}
    key = job.metadata.get("fit_key")
    if key is not None and metadata.get("fit_key") != key:
        raise ConfigError(f"checkpoint_dir {job.checkpoint_dir}: {last.name} there is the checkpoint of another fit "
                          "(other data, model or settings); expected this fit's own checkpoint or none: give an "
                          f"empty folder, or remove {last} to start this fit afresh")
    return metadata


def train_forecaster(cubes: xr.Dataset | Sequence[xr.Dataset], job: TrainingJob, *,
                     progress: bool = True) -> TrainingOutcome:
    """Train ``job.model`` on one cube (or, advection-aware, a corpus of cubes); see the module docstring."""
    from geostp.forecast import FittedForecaster, cube_schema, load_forecaster
    from geostp.train.trainer import Trainer, seed_everything

    cubes = [cubes] if isinstance(cubes, xr.Dataset) else list(cubes)
    if not cubes:
        raise ConfigError("training needs at least one cube")
    if len(cubes) > 1 and not job.advection:
        raise ConfigError("training on several cubes is done advection-aware (advection=True); an Eulerian model "
                          "trains on one cube")
    if job.advection and len(job.variables) != 1:
        raise ConfigError(f"advection-aware training forecasts one rain variable; got {job.variables}")
    args = dict(job.model_args)
    if job.advection:
        shape = {k: args.pop(k) for k in ("input_steps", "output_steps", "channels") if k in args}
        args = {"model": job.model, "model_config": args, "loss": job.loss, "base": job.base, **shape}
        if job.loss == "weighted":
            args["decoder"] = {"kind": "none", "mean": 0.0, "std": 1.0}  # replaced once the statistics are known
    resumed = _resume_point(job)
    name = "lagrangian" if job.advection else job.model
    if job.init is not None:  # fine-tuning: the model as it is, its own normaliser
        name, args = job.init.model.name, job.init.model.config
    seed_everything(job.settings.seed)  # before anything random: the initial weights depend on the seed alone
    net = _build(name, args)
    if not net.trainable:
        raise ConfigError(f"model {name!r} has nothing to train")
    if job.advection:
        from geostp.stream.lagrangian import harmonise

        cubes = harmonise(cubes, job.variables[0])  # units, pixel size and step must agree (or a clear error)
        train_loader, val_loader, normalizer, info = _corpus_data(cubes, job, net, progress)
        if job.init is not None:
            net.load_state_dict(job.init.model.state_dict())
        elif job.loss == "weighted":
            args["decoder"] = _decoder(normalizer, job.variables[0])
            seed_everything(job.settings.seed)  # the same weights whether the motion came from the cache or not
            net = _build(name, args)
    else:
        train_loader, val_loader, normalizer, info = _eulerian_data(cubes[0], job, net)
    args, net, schedule = _place_marks(job, args, net, len(train_loader), train_loader, resumed)
    schema = cube_schema(cubes[0], job.variables)
    if len(cubes) > 1:
        # A corpus mixes grids: the schema keeps variables, units and step, not the first cube's grid. A model
        # fitted on one cube still refuses another grid unless transfer=True.
        schema["any_grid"] = True
    metadata = {**job.metadata, "variables": job.variables, "normalizer": normalizer.to_dict(), "schema": schema,
                "fill_value": normalizer.fill_value, "geostp_version": __version__, "sampling_schedule": schedule,
                "probability_matching": bool(job.probability_matching), **info}
    settings = job.settings if progress else job.settings.model_copy(update={"progress": False})
    with tempfile.TemporaryDirectory(prefix="geostp-train-") as tmp:
        ckdir = Path(job.checkpoint_dir) if job.checkpoint_dir is not None else Path(tmp)
        trainer = Trainer(net, settings, checkpoint_dir=ckdir, metadata=metadata)
        result = trainer.fit(train_loader, val_loader, resume=job.resume)
        from geostp.train.ddp import is_main_process

        if not is_main_process():
            return TrainingOutcome(None, result, result.checkpoint, schedule)
        best = ckdir / "best.pt"
        chosen = best if best.exists() else ckdir / "last.pt"
        if chosen.exists():
            net = load_forecaster(chosen).model
    if job.advection:
        metadata["lead_gate"] = _calibrate(net, val_loader, job)
    history = [h["loss"] for h in result.history[-10:]]
    fitted = FittedForecaster(
        model=net.cpu().eval(), variables=list(job.variables), normalizer=normalizer, schema=schema,
        metadata={**metadata, "fitted": True, "stopped": result.stopped, "iterations": result.iteration,
                  "epochs": result.epochs, "from_checkpoint": chosen.name,
                  "skipped_iterations": result.skipped_iterations,
                  # Deprecated (one release): "steps" and "skipped_steps" repeat "iterations" and
                  # "skipped_iterations" for readers written before optimiser iterations got their own name.
                  "steps": result.iteration, "skipped_steps": result.skipped_iterations,
                  "final_loss": float(np.mean(history)) if history else None},
        fill_value=normalizer.fill_value,
    )
    return TrainingOutcome(fitted, result, chosen, schedule)


#: Held-out batches the lead gate is calibrated on (at most; passes over the validation windows with fresh patches).
GATE_BATCHES = 60


def _calibrate(net: Any, val: Any, job: TrainingJob) -> dict[str, Any]:
    """Calibrate an advection-aware model's lead gate on the validation windows, or say why not."""
    if not job.lead_gate:
        net.set_lead_gate(None)
        return {"calibrated": False, "why": "lead_gate=False"}
    if val is None and job.init is not None and net.lead_gate is not None:
        return {"calibrated": False, "why": "no validation windows: the initial model's lead gate is kept"}
    if val is None:
        net.set_lead_gate(None)
        return {"calibrated": False, "why": "no validation windows (each cube's held-out part is shorter than a "
                                            "window): the learned change is kept whole"}

    def batches():
        n = 0
        for epoch in range(1000, 1000 + GATE_BATCHES):
            val.set_epoch(epoch)
            for batch in val:
                yield batch
                n += 1
                if n >= GATE_BATCHES:
                    return

    report = net.cpu().calibrate_lead_gate(batches())
    return {"calibrated": True, "validation_windows": int(val.n_windows), **report}


def with_settings(job: TrainingJob, **changes: Any) -> TrainingJob:
    """A copy of ``job`` with fields changed."""
    return replace(job, **changes)


def _iterations_in_minutes(net, batch: dict[str, Any], minutes: float, device: str) -> int:
    """About how many optimiser iterations of ``net`` on batches like ``batch`` fit in ``minutes`` (timed on a
    copy)."""
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
    # The first iterations are slow (kernel selection, caches, page faults; far slower on a busy machine):
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
