"""Verification of forecasts against observations, per lead time, on labelled DataArrays.

Every score here takes a forecast and an observation of the same shape (dims
``lead_time, y, x`` plus any others such as ``time`` or ``sequence``) and
returns one value per lead time, reducing over every other dim.  A pixel that
is NaN in either field is left out of every score (masked pixels count
nowhere).  Conventions:

- ``mse``/``mae``/``rmse``: means over valid pixels (units of the field, squared for MSE).
- ``mse_frame``/``mae_frame``: the reference benchmark's (OpenSTL) convention: the
  squared/absolute error *summed over the pixels of a frame* (all channels),
  then averaged over frames, so that numbers can be set beside published
  Moving-MNIST tables (which use intensities in [0, 1]).
- ``ssim``: Wang et al. (2004) with a 7x7 uniform window, K1=0.01, K2=0.03,
  sample covariances and ``data_range`` (1 for [0, 1] fields), averaged over the
  valid window centres of each frame, then over frames: the configuration that
  scikit-image's ``structural_similarity`` uses by default and that the
  benchmark calls.
- ``psnr``: ``10 log10(data_range^2 / MSE)`` per frame, averaged over frames.
- Categorical scores at a threshold count a pixel as an event when its value is
  ``>= threshold``: ``csi``, ``pod``, ``far``, ``hss`` from the contingency
  table summed over the reduced dims.
- ``fss``: fractions skill score (Roberts & Lean 2008) at a threshold and a
  square neighbourhood of ``scale`` pixels, over windows that lie wholly inside
  the grid (no padding, as the ``scores`` package's default); a window's
  fraction counts its valid pixels only, and the score comes from the sums of
  numerator and denominator over all frames.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from geostp.errors import ConfigError

__all__ = [
    "mse", "mae", "rmse", "mse_frame", "mae_frame", "ssim", "psnr",
    "contingency", "csi", "pod", "far", "hss", "fss",
    "align_observations", "verify", "check_verification", "CONTINUOUS", "SPATIAL_DIMS",
]

SPATIAL_DIMS = ("y", "x")


def _check(forecast: xr.DataArray, observed: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    for name, da in (("forecast", forecast), ("observed", observed)):
        if not isinstance(da, xr.DataArray):
            raise ConfigError(f"{name} must be an xarray DataArray, got {type(da).__name__}")
        missing = [d for d in ("lead_time", *SPATIAL_DIMS) if d not in da.dims]
        if missing:
            raise ConfigError(f"{name} lacks dim(s) {missing}; expected at least (lead_time, y, x), got {da.dims}")
    if forecast.sizes != observed.sizes:
        raise ConfigError(f"forecast sizes {dict(forecast.sizes)} differ from observed sizes {dict(observed.sizes)}")
    forecast, observed = xr.align(forecast, observed, join="override")
    return forecast.astype("float64"), observed.astype("float64")


def _reduce_dims(da: xr.DataArray, keep: Sequence[str] = ("lead_time",)) -> list[str]:
    return [d for d in da.dims if d not in keep]


def _valid(forecast: xr.DataArray, observed: xr.DataArray) -> xr.DataArray:
    return forecast.notnull() & observed.notnull()


def mse(forecast: xr.DataArray, observed: xr.DataArray, *, keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Mean squared error over valid pixels, per lead time."""
    f, o = _check(forecast, observed)
    return ((f - o) ** 2).mean(_reduce_dims(f, keep), skipna=True).rename("mse")


def mae(forecast: xr.DataArray, observed: xr.DataArray, *, keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Mean absolute error over valid pixels, per lead time."""
    f, o = _check(forecast, observed)
    return abs(f - o).mean(_reduce_dims(f, keep), skipna=True).rename("mae")


def rmse(forecast: xr.DataArray, observed: xr.DataArray, *, keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Root mean squared error over valid pixels, per lead time."""
    return np.sqrt(mse(forecast, observed, keep=keep)).rename("rmse")


def _frame_dims(da: xr.DataArray) -> list[str]:
    return [d for d in da.dims if d in (*SPATIAL_DIMS, "variable")]


def mse_frame(forecast: xr.DataArray, observed: xr.DataArray, *, keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Squared error summed over each frame's pixels, averaged over frames (OpenSTL's MSE)."""
    f, o = _check(forecast, observed)
    per_frame = ((f - o) ** 2).sum(_frame_dims(f), skipna=True)
    return per_frame.mean(_reduce_dims(per_frame, keep)).rename("mse_frame")


def mae_frame(forecast: xr.DataArray, observed: xr.DataArray, *, keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Absolute error summed over each frame's pixels, averaged over frames (OpenSTL's MAE)."""
    f, o = _check(forecast, observed)
    per_frame = abs(f - o).sum(_frame_dims(f), skipna=True)
    return per_frame.mean(_reduce_dims(per_frame, keep)).rename("mae_frame")


def _ssim_frame(a: np.ndarray, b: np.ndarray, data_range: float, win: int = 7) -> float:
    valid = np.isfinite(a) & np.isfinite(b)
    a = np.where(valid, a, 0.0)
    b = np.where(valid, b, 0.0)
    n = win * win
    cov_norm = n / (n - 1.0)  # sample covariance, as scikit-image's default
    ux = ndimage.uniform_filter(a, win)
    uy = ndimage.uniform_filter(b, win)
    uxx = ndimage.uniform_filter(a * a, win)
    uyy = ndimage.uniform_filter(b * b, win)
    uxy = ndimage.uniform_filter(a * b, win)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    # only windows that lie wholly inside the frame and hold no masked pixel
    pad = (win - 1) // 2
    full = ndimage.uniform_filter(valid.astype(float), win) > 1 - 1e-9
    inner = np.zeros_like(full)
    inner[pad: a.shape[0] - pad, pad: a.shape[1] - pad] = True
    use = full & inner
    return float(s[use].mean()) if use.any() else np.nan


def ssim(forecast: xr.DataArray, observed: xr.DataArray, *, data_range: float = 1.0,
         keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Structural similarity per frame (7x7 window), averaged per lead time."""
    data_range = _data_range(data_range)
    f, o = _check(forecast, observed)
    per_frame = xr.apply_ufunc(
        _ssim_frame, f, o, input_core_dims=[list(SPATIAL_DIMS)] * 2, vectorize=True,
        kwargs={"data_range": data_range},
    )
    if "variable" in per_frame.dims:
        per_frame = per_frame.mean("variable")
    return per_frame.mean(_reduce_dims(per_frame, keep), skipna=True).rename("ssim")


def psnr(forecast: xr.DataArray, observed: xr.DataArray, *, data_range: float = 1.0,
         keep: Sequence[str] = ("lead_time",)) -> xr.DataArray:
    """Peak signal-to-noise ratio per frame (dB), averaged per lead time."""
    data_range = _data_range(data_range)
    f, o = _check(forecast, observed)
    frame_mse = ((f - o) ** 2).mean(_frame_dims(f), skipna=True)
    per_frame = 10 * np.log10(data_range**2 / frame_mse.where(frame_mse > 0))
    return per_frame.mean(_reduce_dims(per_frame, keep), skipna=True).rename("psnr")


def contingency(forecast: xr.DataArray, observed: xr.DataArray, threshold: float, *,
                keep: Sequence[str] = ("lead_time",)) -> xr.Dataset:
    """Hits, misses, false alarms and correct negatives for events ``>= threshold``."""
    f, o = _check(forecast, observed)
    valid = _valid(f, o)
    fe, oe = (f >= threshold) & valid, (o >= threshold) & valid
    dims = _reduce_dims(f, keep)
    return xr.Dataset({
        "hits": (fe & oe).sum(dims),
        "misses": (~fe & oe & valid).sum(dims),
        "false_alarms": (fe & ~oe & valid).sum(dims),
        "correct_negatives": (~fe & ~oe & valid).sum(dims),
    }).astype("float64")


def csi(forecast, observed, threshold: float, *, keep=("lead_time",)) -> xr.DataArray:
    """Critical success index (threat score) ``hits / (hits + misses + false alarms)``."""
    t = contingency(forecast, observed, threshold, keep=keep)
    denom = t.hits + t.misses + t.false_alarms
    return (t.hits / denom.where(denom > 0)).rename("csi")


def pod(forecast, observed, threshold: float, *, keep=("lead_time",)) -> xr.DataArray:
    """Probability of detection ``hits / (hits + misses)``."""
    t = contingency(forecast, observed, threshold, keep=keep)
    denom = t.hits + t.misses
    return (t.hits / denom.where(denom > 0)).rename("pod")


def far(forecast, observed, threshold: float, *, keep=("lead_time",)) -> xr.DataArray:
    """False alarm ratio ``false alarms / (hits + false alarms)``."""
    t = contingency(forecast, observed, threshold, keep=keep)
    denom = t.hits + t.false_alarms
    return (t.false_alarms / denom.where(denom > 0)).rename("far")


def hss(forecast, observed, threshold: float, *, keep=("lead_time",)) -> xr.DataArray:
    """Heidke skill score from the contingency table."""
    t = contingency(forecast, observed, threshold, keep=keep)
    h, m, f, c = t.hits, t.misses, t.false_alarms, t.correct_negatives
    denom = (h + m) * (m + c) + (h + f) * (f + c)
    return (2 * (h * c - m * f) / denom.where(denom > 0)).rename("hss")


def _window_sums(field: np.ndarray, scale: int) -> np.ndarray:
    """Sums over every ``scale`` x ``scale`` window that lies wholly inside the field."""
    c = np.pad(field, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # summed-area table
    return c[scale:, scale:] - c[:-scale, scale:] - c[scale:, :-scale] + c[:-scale, :-scale]


def _fss_sums(a: np.ndarray, b: np.ndarray, threshold: float, scale: int) -> np.ndarray:
    valid = np.isfinite(a) & np.isfinite(b)
    ea = ((np.nan_to_num(a, nan=-np.inf) >= threshold) & valid).astype(float)
    eb = ((np.nan_to_num(b, nan=-np.inf) >= threshold) & valid).astype(float)
    if scale > min(a.shape):
        return np.array([np.nan, np.nan])
    # fractions of valid pixels holding an event, over windows wholly inside the grid
    n_valid = _window_sums(valid.astype(float), scale)
    use = n_valid > 0
    fa = _window_sums(ea, scale)[use] / n_valid[use]
    fb = _window_sums(eb, scale)[use] / n_valid[use]
    return np.array([np.sum((fa - fb) ** 2), np.sum(fa**2) + np.sum(fb**2)])


def fss(forecast, observed, threshold: float, scale: int, *, keep=("lead_time",)) -> xr.DataArray:
    """Fractions skill score at ``threshold`` and a ``scale`` x ``scale`` pixel neighbourhood."""
    if scale < 1:
        raise ConfigError(f"FSS scale must be a window of at least 1 pixel, got {scale}")
    f, o = _check(forecast, observed)
    sums = xr.apply_ufunc(
        _fss_sums, f, o, input_core_dims=[list(SPATIAL_DIMS)] * 2, output_core_dims=[["part"]],
        vectorize=True, kwargs={"threshold": threshold, "scale": int(scale)},
    )
    dims = [d for d in sums.dims if d not in (*keep, "part")]
    total = sums.sum(dims)
    num, den = total.isel(part=0), total.isel(part=1)
    return (1 - num / den.where(den > 0)).rename("fss")


CONTINUOUS = {"mse": mse, "mae": mae, "rmse": rmse, "mse_frame": mse_frame, "mae_frame": mae_frame}


def align_observations(forecast: xr.DataArray, observed: xr.DataArray) -> xr.DataArray:
    """The observations at the forecast's valid times, shaped like the forecast.

    ``observed`` is a cube variable with a ``time`` dim; the result has the
    forecast's dims (``lead_time``, and ``time`` for several reference times).
    Valid times missing from the observations give NaN (then ignored).
    """
    if "valid_time" not in forecast.coords:
        raise ConfigError("forecast has no 'valid_time' coordinate; expected the output of geostp.forecast")
    if "time" not in observed.dims:
        raise ConfigError(f"observations need a 'time' dim; got dims {observed.dims}")
    vt = forecast["valid_time"]
    obs = observed.reindex(time=np.unique(vt.values.ravel()))
    picked = obs.sel(time=vt.drop_vars([c for c in vt.coords if c not in vt.dims]))
    picked = picked.drop_vars("time", errors="ignore")
    return picked.transpose(*forecast.dims).assign_coords(
        {c: forecast[c] for c in forecast.coords if c not in picked.coords or c in forecast.dims}
    )


def known_metrics() -> set[str]:
    """The names :func:`verify` accepts."""
    return {*CONTINUOUS, "ssim", "psnr", "csi", "pod", "far", "hss", "fss"}


_NEEDS_THRESHOLD = ("csi", "pod", "far", "hss", "fss")


def _data_range(value: Any) -> float:
    """``data_range`` of ssim and psnr as a float: a finite number > 0, else a ConfigError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)) or \
            not np.isfinite(value) or value <= 0:
        raise ConfigError(f"data_range={value!r}: expected a finite number > 0 (the span of the values, max - min, "
                          "that ssim and psnr are relative to; 1 for fields in [0, 1])")
    return float(value)


def _listed(value: Any, argument: str, what: str) -> list[Any]:
    """A single value as a list of one; a list or tuple (or array) as a list; anything else a ConfigError."""
    if isinstance(value, (str, numbers.Number, np.generic)):
        return [value]
    if isinstance(value, (set, frozenset, dict, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{argument}={value!r}: expected {what}")
    return list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)


def check_verification(metrics: Any = ("mse", "mae"), thresholds: Any = (), scales: Any = (),
                       data_range: Any = 1.0) -> tuple[list[str], list[float], list[int], float]:
    """What :func:`verify` is asked to score, checked and normalised before anything is computed.

    ``metrics`` are known metric names (one name or a list), ``thresholds`` finite numbers in the variable's
    units (one or a list; needed by csi, pod, far, hss and fss), ``scales`` integers >= 1 (pixels; needed by
    fss) and ``data_range`` a finite number > 0 (ssim, psnr).  A :class:`~geostp.errors.ConfigError` names the
    argument, the value given and what is expected.
    """
    metric_list = _listed(metrics, "metrics", "a metric name or a list of metric names")
    known = known_metrics()
    bad = [m for m in metric_list if not isinstance(m, str)]
    if bad:
        raise ConfigError(f"metrics={metric_list!r}: {bad[0]!r} is not a metric name; expected names among "
                          f"{sorted(known)}")
    unknown = [m for m in metric_list if m not in known]
    if unknown:
        raise ConfigError(f"metrics: unknown metric(s) {unknown}; known metrics are {sorted(known)}")
    if not metric_list:
        raise ConfigError(f"metrics=[] names no score; expected at least one of {sorted(known)}")
    threshold_list = _listed(thresholds, "thresholds", "a number or a list of numbers (event thresholds, in the "
                                                       "variable's units)")
    for t in threshold_list:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (numbers.Real, np.number)) or not np.isfinite(t):
            raise ConfigError(f"thresholds={threshold_list!r}: {t!r} is not a finite number; expected numbers "
                              "(event thresholds, in the variable's units, e.g. thresholds=[1.0, 5.0] mm/h)")
    scale_list = _listed(scales, "scales", "an integer or a list of integers (pixels)")
    for k in scale_list:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (numbers.Integral, np.integer)) or k < 1:
            raise ConfigError(f"scales={scale_list!r}: {k!r} is not a window size; expected integers >= 1 (FSS "
                              "neighbourhoods, in pixels)")
    data_range = _data_range(data_range)
    wanting = [m for m in metric_list if m in _NEEDS_THRESHOLD]
    if wanting and not threshold_list:
        raise ConfigError(f"metric {wanting[0]!r} needs at least one threshold; expected thresholds=[...] with at "
                          "least one number (in the variable's units)")
    if "fss" in metric_list and not scale_list:
        raise ConfigError("metric 'fss' needs at least one scale; expected scales=[...] with at least one window "
                          "size (pixels)")
    return (list(metric_list), [float(t) for t in threshold_list], [int(k) for k in scale_list],
            float(data_range))


def verify(
    forecast: xr.DataArray,
    observed: xr.DataArray,
    *,
    metrics: Iterable[str] = ("mse", "mae"),
    thresholds: Iterable[float] = (),
    scales: Iterable[int] = (),
    data_range: float = 1.0,
) -> xr.Dataset:
    """Several scores per lead time in one Dataset.

    ``metrics`` may name any of mse, mae, rmse, mse_frame, mae_frame, ssim,
    psnr (continuous) and csi, pod, far, hss (at every threshold), and fss (at
    every threshold and scale). Variables are named like ``csi_1`` or
    ``fss_1_8`` (threshold 1, scale 8).
    """
    metrics, thresholds, scales, data_range = check_verification(metrics, thresholds, scales, data_range)
    out: dict[str, xr.DataArray] = {}
    for m in metrics:
        if m in CONTINUOUS:
            out[m] = CONTINUOUS[m](forecast, observed)
        elif m == "ssim":
            out[m] = ssim(forecast, observed, data_range=data_range)
        elif m == "psnr":
            out[m] = psnr(forecast, observed, data_range=data_range)
        elif m == "fss":
            for t in thresholds:
                for s in scales:
                    out[f"fss_{t:g}_{s}"] = fss(forecast, observed, t, s)
        else:
            fn = {"csi": csi, "pod": pod, "far": far, "hss": hss}[m]
            for t in thresholds:
                out[f"{m}_{t:g}"] = fn(forecast, observed, t)
    return xr.Dataset({k: v.drop_vars([c for c in v.coords if c not in v.dims], errors="ignore")
                       for k, v in out.items()})
