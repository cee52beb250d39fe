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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from geostp._version import __version__
from geostp.cube import as_cube, validate_cube, variable_names
from geostp.errors import ConfigError, writable_folder
from geostp.forecast import (
    FittedForecaster,
    cube_schema,
    data_fingerprint,
    load_forecaster,
    model_store_dir,
)
from geostp.options import settings_from_arguments

__all__ = ["fit", "QUICK_MODEL_ARGS"]

#: Deprecated (one release): the models' own ``quick_config()`` is what ``fit`` uses.
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



# Over 80 lines: a third is its parameter docstring; the body maps arguments onto a TrainingJob.
def fit(
    ds: xr.Dataset | Sequence[xr.Dataset],
    model: str,
    *,
    variables: Sequence[str] | None = None,
    model_args: dict[str, Any] | None = None,
    input_steps: int | None = None,
    output_steps: int | None = None,
    patch_size: int | None = 64,
    batch_size: int = 8,
    max_minutes: float | None = 2.0,
    max_iterations: int | None = None,
    epochs: int = 50,
    lr: float = 1e-3,
    validation_fraction: float = 0.15,
    seed: int = 0,
    advection: bool | str | None = None,
    loss: str = "weighted",
    probability_matching: bool = False,
    window_stride: int = 1,
    lead_gate: bool = True,
    init: FittedForecaster | None = None,
    use_store: bool = True,
    device: str = "auto",
    progress: bool = True,
    log_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    max_steps: int | None = None,
) -> FittedForecaster:
    """Fit ``model`` (a registered name) on ``ds``; baselines are returned at once.

    Parameters
    ----------
    ds
        A cube; the last ``validation_fraction`` of its time axis validates.  Advection-aware
        training also takes a list of cubes (a corpus; :func:`geostp.stream.lagrangian.harmonise`
        makes them agree on pixel size and step).
    model
        A registered model name.
    variables
        Channels (default: every data variable).
    model_args
        Constructor arguments; default :data:`QUICK_MODEL_ARGS` for the model.
    input_steps, output_steps
        Default: the model's own (``model_args``), else 6 and 6 (30 min in, 30 min out at 5 min);
        advection-aware: 4 and 6.
    patch_size
        Square training patches (rounded down to what the model needs and to the grid);
        ``None`` trains on the whole domain (Eulerian only).
    batch_size, max_minutes, max_iterations, epochs, lr, seed
        Training budget and settings (:class:`geostp.train.trainer.TrainSettings`); ``max_iterations``
        counts optimiser iterations.
    advection
        Learn the change of rain in the frame that moves with it (:mod:`geostp.models.lagrangian`):
        an untrained model is then the extrapolation nowcast.  ``None``: on for one precipitation
        variable, off otherwise.  ``"sprog"``: learn the change from S-PROG's forecast in the moving
        frame instead of from the newest frame (an untrained model is then the S-PROG nowcast);
        ``"extrapolation"`` is the same as ``True``.
    loss, probability_matching
        Advection-aware: ``"weighted"`` (rain-weighted, ``min(1 + R, 24)``) or ``"mse"``; match each
        lead's distribution to the newest observation.
    window_stride
        Advection-aware: use every ``window_stride``-th window of each cube (the motion and the
        carried windows are prepared once per window, which dominates the start on a large corpus).
    lead_gate
        Advection-aware: after training, scale the learned change of each lead by the factor in [0, 1] that the
        validation windows support (0 where the change did not help there: that lead is then the base's
        forecast).  The factors and the validation errors with and without them are in ``metadata["lead_gate"]``.
        Without validation windows the change is kept whole, except when fine-tuning (``init``): the initial
        model's factors are kept.
    init
        Fine-tune this fitted advection-aware model (e.g. :func:`geostp.pretrained.load_pretrained`) instead of
        training a new one: its configuration and normaliser are kept.
    use_store
        Load an identical earlier fit from the model store, and store this one, unless it was cut short:
        fewer than ``MIN_CACHED_ITERATIONS`` optimiser iterations, or under 90 % of ``max_iterations`` (a warning
        says so).
    log_dir
        Write TensorBoard event files of the training here (losses, validation MSE per lead time, forecast
        maps each epoch: :mod:`geostp.train.tensorboard`; needs the ``tensorboard`` extra).  Where the logs go
        is not part of the model store's key: a fit loaded from the store trains, and logs, nothing.
    checkpoint_dir
        Make the fit resumable: the trainer keeps its checkpoints here (``last.pt`` every 50 iterations and at the
        end, ``best.pt``), and the same call with the same folder goes on from ``last.pt`` (one of another fit is
        refused); a finished fit called again trains no further.  ``None`` (the default): a temporary folder,
        removed afterwards, so a fit that is killed starts again from nothing.
    max_steps
        Deprecated name of ``max_iterations`` (``steps`` are lead times); removed in the next release.
    """
    from geostp import models as registry
    from geostp.pipeline import TrainingJob, advection_default, train_forecaster, with_settings
    from geostp.train.trainer import TrainSettings

    if max_steps is not None:
        import warnings

        if max_iterations is not None:
            raise ConfigError("fit: max_steps is the deprecated name of max_iterations; give only max_iterations")
        warnings.warn("geostp.fit(max_steps=...) is deprecated and will be removed in the next release; use "
                      "max_iterations (optimiser iterations: 'steps' are lead times)", DeprecationWarning, stacklevel=2)
        max_iterations = max_steps
    # before any data is read: a bad argument is refused at once
    checked = _checked_arguments(locals(), {"max_iterations": "max_steps"} if max_steps is not None else None)
    cubes = _cubes(ds)
    first = cubes[0]
    info = validate_cube(first, check_values=False)
    variables = variable_names(variables, argument="fit: variables") or list(info.variables)
    unknown = [v for v in variables if v not in info.variables]
    if unknown:
        raise ConfigError(f"fit: variables={variables!r}: variable(s) {unknown} are not in the cube; expected "
                          f"names of its variables, {list(info.variables)}")
    cls = registry.model_class(model)
    if not cls.trainable:
        args = dict(model_args or {})
        args.setdefault("input_steps", input_steps or args.get("input_steps") or 6)
        args.setdefault("output_steps", output_steps or args["input_steps"])
        args.setdefault("channels", len(variables))
        return FittedForecaster(model=registry.get(model, **args), variables=variables, normalizer=None,
                                schema=cube_schema(first, variables, info), metadata={"fitted": False})
    base = "extrapolation"
    if init is not None:
        if not init.model.needs_motion:
            raise ConfigError("fit(init=...) fine-tunes an advection-aware model; got "
                              f"{init.name!r}")
        advection, model_args = True, {**init.model.config}
        base = init.model.base
    if isinstance(advection, str):
        from geostp.models.lagrangian import BASES

        if advection not in BASES:
            raise ConfigError(f"advection must be True, False, None or one of {list(BASES)}, got {advection!r}")
        base, advection = advection, True
    if advection is None:
        advection = advection_default(first, variables)
    args = cls.quick_config() if model_args is None else dict(model_args)
    args.setdefault("input_steps", input_steps or (4 if advection else 6))
    args.setdefault("output_steps", output_steps or (6 if advection else args["input_steps"]))
    args.setdefault("channels", len(variables))
    # OneCycle is sized to an iteration count known in advance. Under a time budget alone that count is
    # unknown, and a schedule sized to the epoch budget would stop while still warming up (at lr/25):
    # then the learning rate is constant.
    schedule = "constant" if (max_minutes is not None and max_iterations is None) else "onecycle"
    # Advection-aware models train in fp32: on an AMX CPU (Xeon, torch 2.13) bf16 autocast was slower for them
    # (1.87 s against 1.54 s per step, batch 8 of 64 x 64) and gave non-finite weight gradients in ~1 step in 10.
    settings = TrainSettings(**checked.model_dump(include=set(_SETTING_ARGUMENTS)), schedule=schedule,
                             checkpoint_every=50, bf16=not advection)
    job = TrainingJob(model=model, model_args=args, variables=variables, settings=settings, batch_size=batch_size,
                      patch_size=patch_size, validation_fraction=validation_fraction, advection=advection, base=base,
                      loss=loss, probability_matching=probability_matching, window_stride=window_stride,
                      lead_gate=lead_gate, workers=2 if (len(cubes) == 1 and first.encoding.get("source")) else 0,
                      time_the_budget=True, init=init)
    key = _store_key(job, [data_fingerprint(c, variables) for c in cubes])
    stored = model_store_dir() / f"{model}-{key}.pt"
    if use_store and stored.exists():
        cached = load_forecaster(stored)
        cached.metadata["from_store"] = True
        return cached
    # where this fit will write, refused (a WriteError naming it) before anything trains
    if checkpoint_dir is not None:
        writable_folder(checkpoint_dir, "checkpoint folder (checkpoint_dir)")
    if log_dir is not None:
        writable_folder(log_dir, "TensorBoard log folder (log_dir)")
    if use_store:
        writable_folder(stored.parent, "model store (GEOSTP_MODEL_STORE; or fit with use_store=False)")
    if checkpoint_dir is not None:  # resumable: the trainer goes on from its last.pt there (this fit's, by key)
        job = with_settings(job, checkpoint_dir=Path(checkpoint_dir), resume=True, metadata={"fit_key": key})
    outcome = train_forecaster(cubes, job, progress=progress)
    fitted = outcome.fitted
    if use_store:
        _store_if_complete(fitted, stored, settings)
    return fitted


#: fit's arguments that are training settings (:class:`~geostp.train.settings.TrainSettings`), under their names.
_SETTING_ARGUMENTS = ("epochs", "max_minutes", "max_iterations", "lr", "seed", "device", "progress", "log_dir")


class FitArguments(BaseModel):
    """What :func:`fit` accepts for its arguments other than the training settings
    (:class:`~geostp.train.settings.TrainSettings`): checked before anything is read or trained."""

    model_config = ConfigDict(extra="forbid")

    input_steps: int | None = Field(None, ge=1)
    output_steps: int | None = Field(None, ge=1)
    patch_size: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    validation_fraction: float = Field(0.15, ge=0, lt=1)
    window_stride: int = Field(1, ge=1)
    probability_matching: bool = False
    lead_gate: bool = True
    use_store: bool = True


def _checked_arguments(arguments: dict[str, Any], names: dict[str, str] | None = None) -> Any:
    """fit's arguments checked (:class:`FitArguments`, then the training settings, each refused as a ConfigError
    naming the argument, the value and what is expected); returns the settings, without schedule and precision."""
    from geostp.train.settings import TrainSettings

    settings_from_arguments(FitArguments, "fit", {k: arguments[k] for k in FitArguments.model_fields})
    given = {k: arguments[k] for k in _SETTING_ARGUMENTS}
    return settings_from_arguments(TrainSettings, "fit", given, names=names)


def _cubes(ds: Any) -> list[xr.Dataset]:
    """fit's ``ds`` as a list of cubes: one cube (a Dataset, or a DataArray of one variable) or a list of them."""
    if isinstance(ds, (xr.Dataset, xr.DataArray)):
        return [as_cube(ds, argument="ds")]
    if not isinstance(ds, (list, tuple)):
        as_cube(ds, argument="ds")  # a CubeError naming ds and what it is
    cubes = [as_cube(c, argument=f"ds[{i}]") for i, c in enumerate(ds)]
    if not cubes:
        raise ConfigError("fit: ds=[]: fit needs a cube (or a list of cubes); expected at least one cube")
    return cubes


def _store_key(job: Any, fingerprints: list[str]) -> str:
    """The model store's key for a fit: every setting of the job, the data and the package version."""
    settings = job.settings.model_dump(exclude={"progress", "device", "log_dir"})  # not what is learned
    # the budget under its name before the rename to max_iterations: the fits already in a store keep their keys
    settings["max_steps"] = settings.pop("max_iterations")
    parts = {
        "model": job.model, "args": job.model_args, "variables": job.variables, "patch": job.patch_size,
        "advection": job.advection, "base": job.base, "loss": job.loss,
        "probability_matching": job.probability_matching, "stride": job.window_stride, "settings": settings,
        **({} if job.lead_gate else {"lead_gate": False}),
        "batch_size": job.batch_size, "validation_fraction": job.validation_fraction, "data": fingerprints,
        "init": None if job.init is None else str(job.init.checkpoint), "version": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


#: Under a time budget, a fit that took fewer optimiser iterations than this is not cached.
MIN_CACHED_ITERATIONS = 200
#: Deprecated name of :data:`MIN_CACHED_ITERATIONS` (``steps`` are lead times); removed in the next release.
MIN_CACHED_STEPS = MIN_CACHED_ITERATIONS


def _store_if_complete(fitted: FittedForecaster, path: Path, settings: Any) -> None:
    """Cache ``fitted`` in the model store unless it was cut far short (said in a warning)."""
    import warnings

    done = int(fitted.metadata.get("iterations") or 0)
    budget = settings.max_iterations
    wanted = budget if budget is not None else MIN_CACHED_ITERATIONS
    if done < min(wanted, MIN_CACHED_ITERATIONS) or (budget is not None and done < 0.9 * budget):
        warnings.warn(f"the {fitted.name} fit ran {done} optimiser iterations before its budget ended ({wanted} "
                      "wanted; the machine may be busy): it is used for this call but not cached in the model "
                      "store", stacklevel=3)
        fitted.metadata["cached"] = False
        return
    fitted.save(path)
    fitted.metadata["cached"] = True
