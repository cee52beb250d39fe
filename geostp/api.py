"""The one-call forecast: ``geostp.forecast(ds, model="tau", steps=12)``.

``model`` may be a registered name (baselines run at once; a learned model is fitted on the cube's
own history, or its cached fit is loaded from the model store), the path of a geostp checkpoint, or a
:class:`~geostp.forecast.FittedForecaster`.  This module sits above :mod:`geostp.fit` and
:mod:`geostp.forecast` (it needs both), so neither imports the other back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from geostp.cube import as_cube, reference_time_values, variable_names
from geostp.errors import ConfigError
from geostp.forecast import (
    FittedForecaster,
    ForecastOptions,
    check_forecast_size,
    check_steps,
    load_forecaster,
)
from geostp.options import option_group, settings_from_arguments

__all__ = ["forecast", "resolve_forecaster"]


class FitBudget(BaseModel):
    """What :func:`forecast` accepts for the arguments that decide whether and how long a model is fitted."""

    model_config = ConfigDict(extra="forbid")

    fit_minutes: float | None = Field(2.0, gt=0, description="minutes of fitting; None: the epoch budget")
    fine_tune_minutes: float = Field(0.0, ge=0, allow_inf_nan=False)
    pretrained: bool = True
    calibrate: bool | Literal["auto"] = "auto"
    use_store: bool = True


def _check_fit_arguments(function: str, **values: Any) -> None:
    """Refuse a bad fitting budget before anything runs (a ConfigError naming the argument)."""
    settings_from_arguments(FitBudget, function, values)


def resolve_forecaster(
    ds: xr.Dataset,
    model: str | os.PathLike[str] | FittedForecaster,
    *,
    variables: Sequence[str] | None = None,
    model_args: dict[str, Any] | None = None,
    fit_minutes: float = 2.0,
    pretrained: bool = True,
    fine_tune_minutes: float = 0.0,
    calibrate: bool | str = "auto",
    history_end: Any = None,
    use_store: bool = True,
    device: str = "auto",
    progress: bool = True,
    options: ForecastOptions | None = None,
) -> FittedForecaster:
    """``model`` as a :class:`FittedForecaster`: as given, loaded from a checkpoint, the weights geostp ships
    (:mod:`geostp.pretrained`, for a name on a cube they suit), or fitted on ``ds`` by name.

    ``calibrate`` (see :func:`forecast`) sets an advection-aware model's lead gate again on ``ds``'s history up
    to ``history_end`` (default: its last time; a forecast passes its first reference time, so that nothing
    after it is used).  ``options`` (a :class:`~geostp.forecast.ForecastOptions`) stands for ``device`` and
    ``progress``."""
    opts = option_group(resolve_forecaster, options, ForecastOptions, "options", device=device, progress=progress)
    device, progress = opts.device, opts.progress
    _check_fit_arguments("resolve_forecaster", fit_minutes=fit_minutes, fine_tune_minutes=fine_tune_minutes,
                         pretrained=pretrained, calibrate=calibrate, use_store=use_store)
    variables = variable_names(variables)
    ds = as_cube(ds, argument="ds")
    fitted, shipped = _resolve(ds, model, variables=variables, model_args=model_args, fit_minutes=fit_minutes,
                               pretrained=pretrained, fine_tune_minutes=fine_tune_minutes, use_store=use_store,
                               device=device, progress=progress)
    if calibrate is True or (calibrate == "auto" and shipped):  # auto: the shipped weights, loaded here by name
        from geostp.pretrained import calibrate_to_history

        if not hasattr(fitted.model, "calibrate_lead_gate"):
            raise ConfigError(f"calibrate=True: model {fitted.name!r} has no lead gate to calibrate (only "
                              "advection-aware models have one); expected calibrate='auto' or False for it")
        fitted, _ = calibrate_to_history(fitted, ds, before=history_end, progress=progress)
    return fitted


def _resolve(ds: xr.Dataset, model: Any, *, variables: list[str] | None, model_args: dict[str, Any] | None,
             fit_minutes: float, pretrained: bool, fine_tune_minutes: float, use_store: bool, device: str,
             progress: bool) -> tuple[FittedForecaster, bool]:
    """The forecaster, and whether it is the shipped weights loaded here by name (fine-tuned or not)."""
    import geostp.models as registry

    given = model if isinstance(model, FittedForecaster) else load_forecaster(model) \
        if isinstance(model, (str, os.PathLike)) and (Path(model).suffix == ".pt" or Path(model).is_file()) else None
    if given is not None:
        if variables is not None and variables != list(given.variables):
            raise ConfigError(f"variables={variables!r}, but model {given.name!r} forecasts {list(given.variables)}; "
                              "expected its variables (or no variables argument)")
        return given, False
    if isinstance(model, str):
        from geostp.fit import fit
        from geostp.pretrained import load_pretrained, suits_pretrained

        registry.model_class(model)  # unknown names fail here, listing the registered ones
        unknown = [v for v in variables or [] if v not in ds.data_vars]
        if unknown:
            raise ConfigError(f"variables={variables!r}: variable(s) {unknown} are not in the cube; expected names "
                              f"of its variables, {[str(v) for v in ds.data_vars if ds[v].ndim >= 3]}")
        if pretrained and model_args is None and suits_pretrained(ds, model, variables):
            names = variables if variables is not None else [str(v) for v in ds.data_vars if ds[v].ndim >= 3]
            shipped = load_pretrained(model, names[0])
            if not fine_tune_minutes:
                return shipped, True
            return fit(ds, model, variables=names, init=shipped, max_minutes=fine_tune_minutes,
                       use_store=use_store, device=device, progress=progress), True
        return fit(ds, model, variables=variables, model_args=model_args, max_minutes=fit_minutes,
                   use_store=use_store, device=device, progress=progress), False
    raise ConfigError(f"model must be a registered name, a checkpoint path or a FittedForecaster; "
                      f"got {type(model).__name__}")


# Over 80 lines: the docstring documents every argument of the one-call API; the body checks them before any work.
def forecast(
    ds: xr.Dataset | xr.DataArray,
    model: str | os.PathLike[str] | FittedForecaster = "tau",
    steps: int = 12,
    *,
    reference_times: Sequence[Any] | None = None,
    variables: Sequence[str] | None = None,
    model_args: dict[str, Any] | None = None,
    fit_minutes: float = 2.0,
    pretrained: bool = True,
    fine_tune_minutes: float = 0.0,
    calibrate: bool | str = "auto",
    use_store: bool = True,
    device: str = "auto",
    tile: int | None = None,
    overlap: int = 32,
    transfer: bool = False,
    progress: bool = True,
    options: ForecastOptions | None = None,
) -> xr.DataArray:
    """Forecast ``steps`` frames after the last time of ``ds`` (or after each of ``reference_times``).

    Parameters
    ----------
    ds
        A cube (Dataset, or a DataArray for one variable: one taken from a cube, ``ds["precipitation"]``, leaves
        the cube's grid-mapping variable behind, so the forecast has no CRS and a warning says so; pass
        ``ds[["precipitation"]]`` to keep it).
    model
        A registered model name, a checkpoint path, or a :class:`FittedForecaster`.
    steps
        Lead times to produce (any number >= 1: models roll out beyond what they were trained for).
    reference_times
        Initial times (one or a list: ISO 8601 strings, datetimes or datetime64 values, each a time of ``ds``);
        the output then has a leading ``time`` dim.
    variables
        Which variables to forecast: a name or a list of names (default: all of the cube's).
    model_args
        Constructor arguments when ``model`` is a name.
    fit_minutes
        Time budget for fitting a learned model on ``ds`` when ``model`` is a name (and no pretrained
        weights suit the cube).
    pretrained
        For ``model="tau"`` on a rain-rate cube of 1-km pixels and 5-minute steps, use the advection-aware
        TAU that geostp ships (:mod:`geostp.pretrained`) instead of fitting one on ``ds``.
    fine_tune_minutes
        Train the pretrained model further on ``ds``'s own history for this long first (0: not at all).
    calibrate
        Set an advection-aware model's lead gate (how much of its learned change each lead keeps; 0 leaves the
        S-PROG base) again on ``ds``'s own history before forecasting: its newest whole windows up to the
        (first) reference time, each lead keeping the share of the change that had the least error in mm/h
        there (:func:`geostp.pretrained.calibrate_to_history`).  ``"auto"`` (default) does so for the weights
        geostp ships (a radar they were not trained on needs it) when the history holds a whole window of
        input and target frames (16 for the shipped TAU); ``True`` also for a given advection-aware model;
        ``False`` never.  The forecast's ``history_calibration`` attribute says what was done.
    use_store
        Look up / save a model fitted on ``ds`` in the local model store.
    device
        ``auto`` (GPU when available), ``cpu`` or ``cuda``.
    tile, overlap
        Forecast large grids in tiles of ``tile`` pixels that overlap by ``overlap``, blended (learned
        models; baselines run on the whole grid).
    transfer
        Apply a trained model to a grid or time step other than its training data's
        (:meth:`FittedForecaster.predict`); otherwise such data is refused.
    progress
        Progress bars while fitting and forecasting.
    options
        A :class:`~geostp.forecast.ForecastOptions` in place of ``device``, ``tile``, ``overlap``,
        ``transfer`` and ``progress`` (a keyword set besides it to another value is a ConfigError).
    """
    opts = option_group(forecast, options, ForecastOptions, "options", device=device, tile=tile, overlap=overlap,
                        transfer=transfer, progress=progress)
    steps = check_steps(steps)
    ds = as_cube(ds, argument="ds")  # a DataArray: one variable (its grid mapping kept where it carries it)
    variables = variable_names(variables)
    _check_fit_arguments("forecast", fit_minutes=fit_minutes, fine_tune_minutes=fine_tune_minutes,
                         pretrained=pretrained, calibrate=calibrate, use_store=use_store)
    forecasts, history_end = 1, None
    if reference_times is not None and "time" in ds.coords:  # refused before any fitting, not after
        refs = reference_time_values(ds["time"].values, reference_times)
        forecasts, history_end = len(refs), min(refs)
    if {"y", "x"} <= set(ds.dims):  # refused before any fitting, not after
        names = variables if variables is not None else [v for v in ds.data_vars if ds[v].ndim >= 3]
        check_forecast_size(steps, forecasts=forecasts,
                            channels=max(1, len(names)), ny=ds.sizes["y"], nx=ds.sizes["x"])
    fitted = resolve_forecaster(ds, model, variables=variables, model_args=model_args, fit_minutes=fit_minutes,
                                pretrained=pretrained, fine_tune_minutes=fine_tune_minutes, calibrate=calibrate,
                                history_end=history_end, use_store=use_store, options=opts)
    return fitted.predict(ds, steps, reference_times=reference_times, options=opts)
