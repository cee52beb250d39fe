"""Verification curves: a score against lead time, one line per model."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from geostp.errors import GeostpError
from geostp.options import option_group
from geostp.plot.style import MapStyle

__all__ = ["plot_scores"]


def _lead_axis(coord: xr.DataArray) -> tuple[np.ndarray, str]:
    values = coord.values
    if np.issubdtype(values.dtype, np.timedelta64):
        return values.astype("timedelta64[ns]").astype(np.int64) / 60e9, "lead time [min]"
    units = coord.attrs.get("units")
    return np.asarray(values, dtype=float), f"lead time [{units}]" if units else "lead time [steps]"


# Over 80 lines: a third is its parameter docstring.
def plot_scores(
    scores: xr.DataArray | xr.Dataset,
    metric: str | None = None,
    *,
    ax=None,
    title: str | None = None,
    ylabel: str | None = None,
    models: list[str] | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
    style: MapStyle | None = None,
):
    """Plot a verification score against lead time, one line per model.

    Parameters
    ----------
    scores
        A DataArray with a ``lead_time`` dim and, for several models, a
        ``model`` dim (e.g. ``scores.sel(metric="csi")``); or a Dataset whose
        data variables are metrics, or a DataArray with a ``metric`` dim, with
        the metric chosen by ``metric=``. Any other dim (a threshold, a scale)
        must be selected first.
    metric
        The metric to show, for a Dataset or a DataArray with a ``metric`` dim.
    ax
        Axes to draw into (default: a new figure).
    title, ylabel
        Replace the automatic title (the metric and any scalar coordinates
        such as the threshold) and y label (the metric and its units).
    models
        Which models to show, in this order (default: all).
    figsize
        Size of a new figure.
    style
        A :class:`~geostp.plot.MapStyle`: its ``title`` and ``figsize`` stand for those keywords (a
        house style shared with the maps; its colour and basemap fields do not apply to curves).

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    GeostpError
        For input without a ``lead_time`` dim, an unknown metric or model,
        or dims left to select.
    """
    import matplotlib.pyplot as plt

    look = option_group(plot_scores, style, MapStyle, "style", title=title, figsize=figsize)
    title, figsize = look.title, look.figsize or (6.0, 4.0)
    if isinstance(scores, xr.Dataset):
        names = list(scores.data_vars)
        if metric is None:
            if len(names) != 1:
                raise GeostpError(f"scores: the Dataset holds metrics {names}; choose one with metric=...")
            metric = str(names[0])
        if metric not in scores.data_vars:
            raise GeostpError(f"metric={metric!r} is not in scores; it holds {names}")
        da = scores[metric]
    elif isinstance(scores, xr.DataArray):
        da = scores
        if "metric" in da.dims:
            available = [str(m) for m in da["metric"].values]
            if metric is None:
                if len(available) != 1:
                    raise GeostpError(f"scores: has a 'metric' dim with {available}; choose one with metric=...")
                metric = available[0]
            if metric not in available:
                raise GeostpError(f"metric={metric!r} is not in scores; available metrics: {available}")
            da = da.sel(metric=metric)
        elif metric is not None and "metric" in da.coords and str(da["metric"].values) != metric:
            raise GeostpError(f"metric={metric!r} but scores holds metric {str(da['metric'].values)!r}")
    else:
        raise GeostpError(f"scores: expected an xarray DataArray or Dataset, got {type(scores).__name__}")
    if "lead_time" not in da.dims:
        raise GeostpError(f"scores: expected a 'lead_time' dim; dims are {tuple(da.dims)}")
    extra = [d for d in da.dims if d not in ("lead_time", "model")]
    if extra:
        raise GeostpError(f"scores: dims {extra} are left besides lead_time and model; select one value "
                          f"of each first (e.g. scores.sel({extra[0]}=...))")
    if "model" in da.dims:
        available = [str(m) for m in da["model"].values]
        chosen = models or available
        unknown = [m for m in chosen if m not in available]
        if unknown:
            raise GeostpError(f"models={unknown} are not in scores; available models: {available}")
        lines = [(m, da.sel(model=m)) for m in chosen]
    else:
        if models:
            raise GeostpError("models= was given but scores has no 'model' dim")
        label = str(da.coords["model"].values) if "model" in da.coords else (da.attrs.get("model") or da.name or "model")
        lines = [(str(label), da)]

    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    x, xlabel = _lead_axis(da["lead_time"])
    for label, line in lines:
        ax.plot(x, np.asarray(line.transpose("lead_time").values, dtype=float), marker="o", markersize=3.5,
                linewidth=1.6, label=label)
    metric_name = metric or (str(da.coords["metric"].values) if "metric" in da.coords else None) or da.name or "score"
    units = da.attrs.get("units")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or (f"{metric_name} [{units}]" if units else str(metric_name)))
    if title is None:
        scalars = [f"{k}={_fmt(v.values[()])}" for k, v in da.coords.items()
                   if v.ndim == 0 and k not in ("metric", "model")]
        title = str(metric_name) + (f" ({', '.join(scalars)})" if scalars else "") + " against lead time"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(lines) > 1 or "model" in da.dims:
        ax.legend(frameon=False)
    if len(x):
        ax.set_xlim(min(0.0, float(np.min(x))), float(np.max(x)) * 1.03)
    return ax


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
