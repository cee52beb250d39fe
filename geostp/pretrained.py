"""Pretrained weights shipped with geostp, and when ``geostp.forecast`` uses them.

``geostp/weights/tau_radar.pt`` is an advection-aware TAU trained by ``benchmarks/radar_skill.py`` on the
radar corpus of the pysteps example data (MeteoSwiss 2015-05-15 and 2016-07-11, KNMI 2010-08-26, FMI
2016-09-28; RMI left out for its non-commercial terms): 1-km pixels, 5-minute steps, rain rate in mm/h.
Its model card is ``docs/model-card-tau-radar.md``.  :func:`geostp.forecast` uses it for ``model="tau"``
on a rain-rate cube of about that pixel size and step, instead of fitting a model on the cube's own
history; ``fine_tune_minutes`` trains it further on that history first.

A model trained on a few radars does not carry over to another one unchanged: trained without FMI, the
corpus model grows FMI's intense rain two- to threefold and its error in mm/h is four times S-PROG's
(``docs/benchmarks.md``).  :func:`calibrate_to_history` therefore sets the lead gate (how much of the learned
change each lead keeps; 0 is the S-PROG base alone) again on the cube's own recent history before it
forecasts: the factor of each lead that gave the least rain-rate error over the newest whole windows there.
``geostp.forecast`` does so for the shipped weights whenever the cube holds such a window
(``calibrate="auto"``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geostp.cube import is_precipitation, validate_cube

__all__ = ["pretrained_path", "load_pretrained", "suits_pretrained", "calibrate_to_history", "PRETRAINED",
           "HISTORY_WINDOWS"]

#: Registered model name -> (weights file in ``geostp/weights``, pixel size in metres, time step in seconds).
PRETRAINED: dict[str, tuple[str, float, float]] = {"tau": ("tau_radar.pt", 1000.0, 300.0)}


def pretrained_path(model: str) -> Path | None:
    """The shipped weights for ``model``, or None when geostp ships none (or they were not installed)."""
    entry = PRETRAINED.get(model)
    if entry is None:
        return None
    path = Path(str(resources.files("geostp") / "weights" / entry[0]))
    return path if path.is_file() else None


def suits_pretrained(cube: xr.Dataset, model: str, variables: list[str] | None = None) -> bool:
    """Whether ``cube`` is what ``model``'s shipped weights were trained for (one rain-rate variable, within
    10 % of their pixel size and exactly their time step)."""
    from geostp.stream.lagrangian import pixel_size

    entry = PRETRAINED.get(model)
    if entry is None or pretrained_path(model) is None:
        return False
    info = validate_cube(cube, check_values=False)
    names = list(variables) if variables is not None else list(info.variables)
    if len(names) != 1 or not is_precipitation(cube[names[0]]) or \
            str(cube[names[0]].attrs.get("units")) not in ("mm h-1", "mm/h"):
        return False
    px = pixel_size(cube)
    if px is None or abs(px - entry[1]) > 0.1 * entry[1] or not isinstance(info.step, np.timedelta64):
        return False
    return abs(info.step / np.timedelta64(1, "s") - entry[2]) < 1e-6


def load_pretrained(model: str, variable: str | None = None) -> Any:
    """The shipped :class:`~geostp.forecast.FittedForecaster` for ``model`` (loaded with ``weights_only``), renamed
    to forecast ``variable``; its schema is dropped, so that it applies to any grid of its pixel size."""
    from geostp.errors import ConfigError
    from geostp.forecast import load_forecaster

    path = pretrained_path(model)
    if path is None:
        raise ConfigError(f"geostp ships no pretrained weights for {model!r} (it has {sorted(PRETRAINED)})")
    fitted = load_forecaster(path)
    if variable is not None and fitted.variables != [variable]:
        trained = fitted.variables[0]
        fitted.variables = [variable]
        if fitted.normalizer is not None:
            fitted.normalizer = fitted.normalizer.renamed({trained: variable})
    fitted.metadata["pretrained"] = str(path.name)
    fitted.schema = None
    return fitted


#: The newest whole windows of a cube's history that :func:`calibrate_to_history` uses by default.
HISTORY_WINDOWS = 6
#: At most this many batches of 8 patches of those windows score the lead gate (fewer on a small grid).
_CALIBRATION_BATCHES = 24


# Over 80 lines: the docstring says which frames are used and what happens without any; the body checks its
# arguments, then builds the windows as training does and scores the gate on them.
def calibrate_to_history(
    fitted: Any,
    cube: xr.Dataset,
    *,
    before: Any = None,
    windows: int = HISTORY_WINDOWS,
    motion_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """``fitted`` (advection-aware, with a lead gate) with the gate set again on ``cube``'s own history.

    The history is the cube up to and including ``before`` (default: its last time): only frames a forecast
    from ``before`` could know.  Its newest ``windows`` whole windows (inputs and every lead's target) are
    carried into the moving frame with their S-PROG base, as in training (motion and S-PROG cached beside the
    model store, or in ``motion_dir``), and each lead keeps the share of the learned change (0, 0.05, ..., 1)
    whose forecast had the least squared error in mm/h there
    (:meth:`~geostp.models.lagrangian.Lagrangian.calibrate_lead_gate` with ``objective="rain_mse"``).

    Returns a copy of ``fitted`` (``fitted`` itself is not changed) and a report, also kept in the copy's
    ``metadata["history_calibration"]``: the gate before and after, the windows used and the errors of the
    base, the ungated and the gated forecast per lead.  A history without a whole window leaves the gate as it
    is, with ``{"calibrated": False, "why": ...}`` as the report.
    """
    import copy

    from geostp.advection import MotionCache
    from geostp.cube import parse_time
    from geostp.errors import ConfigError
    from geostp.forecast import FittedForecaster, data_fingerprint, model_store_dir
    from geostp.stream.lagrangian import LagrangianCorpus, corpus_windows

    if not isinstance(fitted, FittedForecaster) or not hasattr(fitted.model, "calibrate_lead_gate"):
        raise ConfigError(f"calibrate_to_history needs an advection-aware FittedForecaster (one with a lead gate); "
                          f"got {getattr(fitted, 'name', type(fitted).__name__)!r}")
    if isinstance(windows, bool) or not isinstance(windows, (int, np.integer)) or windows < 1:
        raise ConfigError(f"calibrate_to_history: windows={windows!r}; expected a whole number >= 1")
    net = fitted.model
    variable = fitted.variables[0]
    if variable not in cube.data_vars:
        raise ConfigError(f"calibrate_to_history: the cube has no variable {variable!r} (the model forecasts it); "
                          f"it has {[str(v) for v in cube.data_vars]}")
    times = cube["time"].values
    end = len(times) - 1
    if before is not None:
        t = parse_time(before, argument="before") if np.issubdtype(times.dtype, np.datetime64) else before
        hits = np.nonzero(times == t)[0] if not isinstance(t, (bool, str)) else np.zeros(0, int)
        if hits.size == 0:
            raise ConfigError(f"calibrate_to_history: before={before!r} is not a time of the cube "
                              f"({times[0]} ... {times[-1]}); expected one of its times")
        end = int(hits[0])
    end_label = np.datetime_as_string(times[end], unit="m") if np.issubdtype(times.dtype, np.datetime64) \
        else str(times[end])
    length = net.input_steps + net.output_steps
    history = cube.isel(time=slice(max(0, end + 1 - (int(windows) + length - 1)), end + 1))
    ny, nx = history.sizes["y"], history.sizes["x"]
    multiple = max(1, int(getattr(net, "spatial_multiple", 1)))
    patch = min(64, ny, nx) // multiple * multiple
    gate_before = list(net.lead_gate) if net.lead_gate is not None else None
    if len(corpus_windows(history, length)) == 0 or patch < 8:
        why = (f"the history up to {end_label} holds no whole window of "
               f"{length} consecutive frames" if patch >= 8 else f"the grid ({ny} x {nx}) is too small")
        return _noted(fitted, {"calibrated": False, "why": why + "; the lead gate is kept as trained",
                               "lead_gate": gate_before})
    cache = MotionCache.shared(motion_dir if motion_dir is not None else model_store_dir().parent / "motion")
    try:
        corpus = LagrangianCorpus([history], variable, input_steps=net.input_steps, output_steps=net.output_steps,
                                  normalizer=fitted.normalizer, identities=[data_fingerprint(cube, [variable])],
                                  motion_cache=cache, patch_size=patch, batch_size=8, batches_per_epoch=8,
                                  stride=1, augment=False, seed=20_000, base=net.base, base_levels=net.base_levels,
                                  progress=progress)
    except ConfigError as exc:  # every window of the history hit an outage
        return _noted(fitted, {"calibrated": False, "why": f"no usable window in the history ({exc})",
                               "lead_gate": gate_before})

    # No more patches than twice the windows' pixels (a small grid is covered by a few), at most 24 batches of 8.
    n_batches = int(min(_CALIBRATION_BATCHES, max(2, np.ceil(2 * corpus.n_windows * ny * nx / patch ** 2 / 8))))

    def batches():
        for epoch in range(-(-n_batches // 8)):
            corpus.set_epoch(epoch)
            yield from corpus

    model = copy.deepcopy(net)
    scores = model.calibrate_lead_gate(batches(), objective="rain_mse", bounds=fitted.output_bounds(),
                                       max_batches=n_batches)
    out, report = _noted(fitted, {"calibrated": True, "lead_gate_before": gate_before,
                                  "windows": int(corpus.n_windows), "history_end": end_label, **scores})
    out.model = model
    return out, report


def _noted(fitted: Any, report: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A copy of ``fitted`` (the same model) that records ``report``, and the report."""
    import copy

    out = copy.copy(fitted)
    out.metadata = {**fitted.metadata, "history_calibration": report}
    return out, report
