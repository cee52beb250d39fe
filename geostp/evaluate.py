"""Compare several models and baselines on the same initial times: one Dataset, one printed table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.errors import ConfigError
from geostp.metrics import align_observations, verify

__all__ = ["evaluate", "format_table"]


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
) -> xr.Dataset:
    """Forecast with every model from the same reference times and score them per lead time.

    Parameters
    ----------
    ds
        The cube holding both the inputs and the observations to verify against.
    models
        Names (baselines, or models fitted on ``ds`` via :func:`geostp.forecast`),
        checkpoint paths or :class:`~geostp.forecast.FittedForecaster` objects; a
        mapping gives them display names.
    steps, reference_times
        Lead times and initial times (the same for every model).
    variable
        The variable to verify (default: the first forecast variable).
    metrics, thresholds, scales, data_range
        Passed to :func:`geostp.metrics.verify`.
    tile, overlap
        Forecast in overlapping tiles of ``tile`` pixels (:meth:`geostp.forecast.FittedForecaster.predict`),
        e.g. the patch size a model was trained on.
    transfer
        Let trained models run on a grid or time step other than their training
        data's (:meth:`geostp.forecast.FittedForecaster.predict`).

    Returns
    -------
    xarray.Dataset
        One variable per score with dims ``model, lead_time``.
    """
    from geostp.forecast import forecast

    if not isinstance(models, Mapping):
        models = {(m if isinstance(m, str) else getattr(m, "name", f"model{i}")): m for i, m in enumerate(models)}
    if not models:
        raise ConfigError("evaluate needs at least one model")
    results = []
    for label, model in models.items():
        fc = forecast(ds, model, steps, reference_times=list(reference_times), device=device, tile=tile, overlap=overlap,
                      transfer=transfer, progress=progress)
        if "variable" in fc.dims:
            var = variable or str(fc["variable"].values[0])
            fc = fc.sel(variable=var)
        else:
            var = variable or str(fc.name)
        obs = align_observations(fc, ds[var]).load()  # only the valid times: the size of the forecast
        scores = verify(fc, obs, metrics=metrics, thresholds=thresholds, scales=scales, data_range=data_range)
        results.append(scores.expand_dims(model=[label]))
    out = xr.concat(results, dim="model")
    out.attrs["reference_times"] = [str(pd.Timestamp(t)) if np.issubdtype(np.asarray(t).dtype, np.datetime64)
                                    else str(t) for t in np.atleast_1d(reference_times)]
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
    name_w = max(len(str(m)) for m in scores["model"].values) + 2
    score_w = max(len(str(k)) for k in scores.data_vars) + 2
    lines = [f"{'model':<{name_w}}{'score':<{score_w}}" + "".join(f"{h:>10}" for h in heads)]
    for var in scores.data_vars:
        for m in scores["model"].values:
            vals = scores[var].sel(model=m).values
            lines.append(f"{str(m):<{name_w}}{var:<{score_w}}" + "".join(f"{v:>10.4g}" for v in vals))
    return "\n".join(lines)
