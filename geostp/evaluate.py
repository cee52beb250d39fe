"""The one evaluation pipeline: forecast with several models from the same cases and score them per lead time.

:func:`score_cases` is what both :func:`evaluate` (reference times on a cube) and a recipe's evaluation
section (windows of a split, also of multi-sequence cubes) run: the frames the cases touch are read once,
every contender forecasts them, and :func:`geostp.metrics.verify` scores each against the observations.

A case whose data cannot be scored (a radar outage: no data at all, only NaN, in its newest input frame, so no
forecast can start from it, or in one of the frames it is verified against) is left out of every model's scores,
with one warning naming each such reference time and why; the scores' ``attrs`` record them
(``skipped_reference_times``, ``skipped_reasons``) and ``cases`` counts the cases scored.  Only if no case can be
scored is it an error (:class:`~geostp.errors.CubeValueError`).  Values a variable cannot take (an undecoded fill
value, an infinity) in any frame read are refused as before: they are a decoding problem, not an outage.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.cube import as_cube, check_value_range, reference_time_values
from geostp.errors import ConfigError, CubeError, CubeValueError
from geostp.forecast import ForecastOptions, check_steps
from geostp.metrics import verify
from geostp.options import option_group

__all__ = ["evaluate", "format_table", "score_cases", "Verification"]


@dataclass(frozen=True)
class Verification:
    """What to score: passed to :func:`geostp.metrics.verify`."""

    metrics: tuple[str, ...] = ("mse", "mae")
    thresholds: tuple[float, ...] = ()
    scales: tuple[int, ...] = ()
    data_range: float = 1.0

    def __post_init__(self) -> None:  # checked and normalised as verify does (a ConfigError naming the field)
        from geostp.metrics import check_verification

        metrics, thresholds, scales, data_range = check_verification(self.metrics, self.thresholds, self.scales,
                                                                     self.data_range)
        object.__setattr__(self, "metrics", tuple(metrics))
        object.__setattr__(self, "thresholds", tuple(thresholds))
        object.__setattr__(self, "scales", tuple(scales))
        object.__setattr__(self, "data_range", data_range)


def score_cases(cube: xr.Dataset, contenders: Mapping[str, Any], cases: np.ndarray, *, steps: int,
                verification: Verification, tile: int | None = None, overlap: int = 32, transfer: bool = False,
                device: str = "auto", progress: bool = False, variable: str | None = None,
                options: ForecastOptions | None = None) -> xr.Dataset:
    """Every contender (name -> :class:`~geostp.forecast.FittedForecaster`) forecasts every case; one Dataset of scores.

    ``cases`` is a structured array of window starts (fields ``time`` and, for multi-sequence cubes,
    ``sequence``) whose first ``T_in`` frames are inputs, ``T_in`` the largest of the contenders'.
    ``variable`` scores that variable only (default: every variable the contenders forecast).
    ``options`` (a :class:`~geostp.forecast.ForecastOptions`) stands for ``tile``, ``overlap``, ``transfer``,
    ``device`` and ``progress``.
    """
    opts = option_group(score_cases, options, ForecastOptions, "options", tile=tile, overlap=overlap,
                        transfer=transfer, device=device, progress=progress)
    t_in = max(int(f.model.input_steps) for f in contenders.values())
    cube, cases = _load_cases(cube, cases, t_in + steps)
    inputs = list(dict.fromkeys(v for f in contenders.values() for v in f.variables))
    targets = [variable] if variable is not None else inputs
    skipped = _unusable_cases(cube, cases, t_in, steps, inputs, targets)
    if skipped:
        listed = "; ".join(f"{label}: {why}" for label, why in skipped.values())
        if len(skipped) == cases.size:
            raise CubeValueError(f"no reference time can be scored, each lacks data: {listed}; expected at least one "
                                 "whose newest input frame and verifying frames hold data (not only NaN)")
        warnings.warn(f"{len(skipped)} of {cases.size} reference times cannot be scored and are left out of every "
                      f"model's scores: {listed}; the scores are over the other {cases.size - len(skipped)}",
                      UserWarning, stacklevel=3)
        cases = np.delete(cases, sorted(skipped))
    results = []
    for name, model in contenders.items():
        try:
            fc, obs = _forecast_cases(model, cube, cases, t_in, steps, opts)
        except (ConfigError, CubeError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
        if variable is not None and "variable" in fc.dims:
            fc, obs = fc.sel(variable=variable), obs.sel(variable=variable)
        scores = verify(fc, obs, metrics=verification.metrics, thresholds=verification.thresholds,
                        scales=verification.scales, data_range=verification.data_range)
        results.append(scores.expand_dims(model=[name]))
    out = xr.concat(results, dim="model")
    out.attrs["cases"] = int(cases.size)
    out.attrs["skipped_reference_times"] = [label for label, _ in skipped.values()]
    out.attrs["skipped_reasons"] = [why for _, why in skipped.values()]
    return out


def _time_label(t: Any) -> str:
    return str(pd.Timestamp(t)) if np.issubdtype(np.asarray(t).dtype, np.datetime64) else str(t)


def _unusable_cases(cube: xr.Dataset, cases: np.ndarray, t_in: int, steps: int, inputs: Sequence[str],
                    targets: Sequence[str]) -> dict[int, tuple[str, str]]:
    """The cases that cannot be scored: case index -> (its reference time, why).

    A case is unusable when a variable of ``inputs`` holds no data (only NaN) in its newest input frame (the
    forecast refuses to start from an outage), or a variable of ``targets`` holds none in a frame it is verified
    against (that lead would be scored on fewer cases than the others).  ``cube`` and ``cases`` are those of
    :func:`_load_cases` (each case's frames consecutive).
    """
    has_data: dict[str, np.ndarray] = {}  # variable -> frame has data, [time] or [sequence, time]
    for v in dict.fromkeys([*inputs, *targets]):
        if v not in cube.data_vars or "time" not in cube[v].dims:
            continue
        da = cube[v]
        lead = [d for d in ("sequence", "time") if d in da.dims]
        has_data[v] = np.isfinite(da).any([d for d in da.dims if d not in lead]).transpose(*lead).values
        if "sequence" in cube.dims and "sequence" not in lead:  # a variable shared by every sequence
            has_data[v] = np.broadcast_to(has_data[v], (cube.sizes["sequence"], has_data[v].size))
    times = cube["time"].values
    seq = cube["sequence"].values if "sequence" in cube.coords else None
    out: dict[int, tuple[str, str]] = {}
    for k, case in enumerate(cases):
        ref = int(case["time"]) + t_in - 1
        s = int(case["sequence"]) if "sequence" in cube.dims else None  # a one-sequence cube's cases may say 0

        def empty(v: str, frames: range, s=s) -> list[int]:
            ok = has_data[v] if s is None else has_data[v][s]
            return [i for i in frames if i < ok.shape[-1] and not ok[i]]

        reasons = [f"no data (only NaN) in {v!r} at the reference time" for v in inputs
                   if v in has_data and empty(v, range(ref, ref + 1))]
        for v in targets:
            if v in has_data and (gone := empty(v, range(ref + 1, ref + 1 + steps))):
                reasons.append(f"no data (only NaN) in {v!r} to verify against at "
                               + ", ".join(_time_label(times[i]) for i in gone))
        if reasons:
            label = _time_label(times[ref])
            if s is not None:
                label += f" (sequence {seq[s] if seq is not None else s})"
            out[k] = (label, "; ".join(reasons))
    return out


def _reference_time_cases(ds: xr.Dataset, reference_times: Sequence[Any], t_in: int, steps: int) -> np.ndarray:
    """Cases (window starts) whose newest input is each reference time."""
    index = pd.Index(ds["time"].values)
    starts = []
    for ref in _as_times(ds, reference_times):
        if ref not in index:
            raise ConfigError(f"reference time {ref} is not in the data's time axis")
        start = index.get_loc(ref) - t_in + 1
        if start < 0:
            raise ConfigError(f"the models need {t_in} input frames up to {ref}; the data has only {start + t_in}")
        after = len(index) - 1 - index.get_loc(ref)
        if after < steps:
            raise ConfigError(f"reference time {_time_label(ref)}: steps={steps} lead times are verified against "
                              f"the frames after it, and the data hold only {after} (they end at "
                              f"{_time_label(index[-1])}); expected reference times at least {steps} frames before "
                              "the end of the data")
        starts.append(start)
    cases = np.zeros(len(starts), dtype=[("time", int)])
    cases["time"] = starts
    return cases


def _as_times(ds: xr.Dataset, reference_times: Any) -> np.ndarray:
    """``reference_times`` as values of ``ds``'s time axis (strings and timestamps converted), at least one-dimensional;
    a ConfigError names the argument and a value that is not a time of the axis
    (:func:`geostp.cube.reference_time_values`)."""
    return reference_time_values(ds["time"].values, reference_times)


def _load_cases(cube: xr.Dataset, cases: np.ndarray, length: int) -> tuple[xr.Dataset, np.ndarray]:
    """Only the frames (and sequences) the cases touch, read once for every model; cases re-indexed to them."""
    frames = np.unique((cases["time"][:, None] + np.arange(length)[None, :]).ravel())
    sub = cube.isel(time=frames)
    cases = cases.copy()
    cases["time"] = np.searchsorted(frames, cases["time"])
    if "sequence" in cube.dims:
        seqs = np.unique(cases["sequence"])
        sub = sub.isel(sequence=seqs)
        cases["sequence"] = np.searchsorted(seqs, cases["sequence"])
    sub = sub.load()
    for v in sub.data_vars:  # the observations are checked as the inputs are: a fill value is no score
        if {"time", "y", "x"} <= set(sub[v].dims):
            check_value_range(sub[v].transpose("time", ...).values, sub[v], source=cube.encoding.get("source"),
                              times=sub["time"].values, where=" (a frame the evaluation reads)")
    return sub, cases


def _observations(fc: xr.DataArray, cube: xr.Dataset, variables: list[str]) -> xr.DataArray:
    """The observed values at the forecast's valid times, shaped like the forecast."""
    from geostp.metrics import align_observations

    if "variable" not in fc.dims:
        return align_observations(fc, cube[variables[0]]).load()
    parts = [align_observations(fc.sel(variable=v), cube[v]) for v in variables]
    return xr.concat(parts, dim="variable").assign_coords(variable=variables).transpose(*fc.dims).load()


def _forecast_cases(fitted: Any, cube: xr.Dataset, cases: np.ndarray, t_in: int, steps: int,
                    options: ForecastOptions) -> tuple[xr.DataArray, xr.DataArray]:
    """Forecasts at every case and the matching observations, stacked along ``time`` (or ``case``)."""
    times = cube["time"].values
    variables = list(fitted.variables)
    if "sequence" not in cube.dims:
        refs = times[cases["time"] + t_in - 1]
        fc = fitted.predict(cube, steps, reference_times=list(refs), options=options)
        return fc, _observations(fc, cube, variables)
    fcs, obss = [], []
    for s, ti in zip(cases["sequence"], cases["time"], strict=True):
        sub = cube.isel(sequence=int(s))
        ref = times[int(ti) + t_in - 1]
        fc = fitted.predict(sub, steps, reference_times=[ref], options=options)
        obs = _observations(fc, sub, variables)
        fcs.append(fc.isel(time=0, drop=True).drop_vars(["valid_time", "forecast_reference_time"], errors="ignore"))
        obss.append(obs.isel(time=0, drop=True).drop_vars(["valid_time", "forecast_reference_time"],
                                                          errors="ignore"))
    return xr.concat(fcs, dim="case"), xr.concat(obss, dim="case").load()


# long: its docstring is the reference of every argument of the public geostp.evaluate; the body is short steps
def evaluate(
    ds: xr.Dataset,
    models: Sequence[Any] | Mapping[str, Any],
    *,
    steps: int,
    reference_times: Sequence[Any],
    variable: str | None = None,
    metrics: Sequence[str] = ("mse", "mae"),
    thresholds: Sequence[float] = (),
    scales: Sequence[int] = (),
    data_range: float = 1.0,
    device: str = "auto",
    tile: int | None = None,
    overlap: int = 32,
    transfer: bool = False,
    progress: bool = True,
    print_table: bool = True,
    options: ForecastOptions | None = None,
) -> xr.Dataset:
    """Forecast with every model from the same reference times and score them per lead time.

    Parameters
    ----------
    ds
        The cube holding both the inputs and the observations to verify against.
    models
        Names (baselines, or models fitted on ``ds`` via :func:`geostp.forecast`),
        checkpoint paths or :class:`~geostp.forecast.FittedForecaster` objects (one, or a list); a
        mapping gives them display names.
    steps, reference_times
        Lead times and initial times (the same for every model).
    variable
        The variable to verify (default: the first forecast variable).
    metrics, thresholds, scales, data_range
        Passed to :func:`geostp.metrics.verify`: each one value or a list, checked before any model is fitted or
        run (:func:`geostp.metrics.check_verification`; a ConfigError names a bad one).
    tile, overlap
        Forecast in overlapping tiles of ``tile`` pixels (:meth:`geostp.forecast.FittedForecaster.predict`),
        e.g. the patch size a model was trained on.
    transfer
        Let trained models run on a grid or time step other than their training
        data's (:meth:`geostp.forecast.FittedForecaster.predict`).
    options
        A :class:`~geostp.forecast.ForecastOptions` in place of ``device``, ``tile``, ``overlap``,
        ``transfer`` and ``progress`` (a keyword set besides it to another value is a ConfigError).

    Returns
    -------
    xarray.Dataset
        One variable per score with dims ``model, lead_time``.
    """
    from geostp.api import resolve_forecaster

    opts = option_group(evaluate, options, ForecastOptions, "options", device=device, tile=tile, overlap=overlap,
                        transfer=transfer, progress=progress)
    # every argument checked before any model is fitted or run
    ds = as_cube(ds, argument="ds")
    steps = check_steps(steps)
    verification = Verification(metrics=metrics, thresholds=thresholds, scales=scales, data_range=data_range)
    refs = _as_times(ds, reference_times)
    if isinstance(models, (str, os.PathLike)) or not isinstance(models, (Mapping, Sequence)):
        models = [models]  # one model, not a list of letters
    if not isinstance(models, Mapping):
        models = {(m if isinstance(m, str) else getattr(m, "name", f"model{i}")): m for i, m in enumerate(models)}
    if not models:
        raise ConfigError("evaluate needs at least one model")
    # the shipped weights' lead gate is calibrated on the history before the first reference time only
    first = refs.min() if refs.size else None
    contenders = {label: resolve_forecaster(ds, model, history_end=first, options=opts)
                  for label, model in models.items()}
    variable = variable or next(iter(contenders.values())).variables[0]
    missing = [k for k, f in contenders.items() if variable not in f.variables]
    if missing:
        raise ConfigError(f"variable {variable!r} is not forecast by {missing}")
    if refs.size == 0:
        raise ConfigError("reference_times is empty; expected one or more times of the data's time axis")
    t_in = max(int(f.model.input_steps) for f in contenders.values())
    cases = _reference_time_cases(ds, reference_times, t_in, steps)
    out = score_cases(ds, contenders, cases, steps=steps, verification=verification, options=opts,
                      variable=variable)
    skipped = set(out.attrs["skipped_reference_times"])  # an outage: left out, with a warning (score_cases)
    out.attrs["reference_times"] = [label for label in (_time_label(t) for t in refs)
                                    if label not in skipped]
    if print_table:
        print(format_table(out))
    return out


def format_table(scores: xr.Dataset) -> str:
    """A plain-text table: one row per model and score, one column per lead time."""
    leads = scores["lead_time"].values
    if np.issubdtype(leads.dtype, np.timedelta64):
        heads = [f"{int(v / np.timedelta64(1, 'm'))} min" for v in leads]
    else:
        heads = [str(v) for v in leads]
    # each column at least as wide as its header and two spaces apart, so the headers never run together
    name_w = max(len("model"), *(len(str(m)) for m in scores["model"].values)) + 2
    score_w = max(len("score"), *(len(str(k)) for k in scores.data_vars)) + 2
    widths = [max(10, len(h) + 2) for h in heads]
    head = "".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True))
    lines = [f"{'model':<{name_w}}{'score':<{score_w}}" + head]
    for var in scores.data_vars:
        for m in scores["model"].values:
            vals = scores[var].sel(model=m).values
            row = "".join(f"{v:>{w}.4g}" for v, w in zip(vals, widths, strict=True))
            lines.append(f"{str(m):<{name_w}}{var:<{score_w}}" + row)
    return "\n".join(lines)
