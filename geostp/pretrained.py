"""Pretrained weights shipped with geostp, and when ``geostp.forecast`` uses them.

``geostp/weights/tau_radar.pt`` is an advection-aware TAU trained by ``benchmarks/radar_skill.py`` on the
radar corpus of the pysteps example data (MeteoSwiss 2015-05-15 and 2016-07-11, KNMI 2010-08-26, FMI
2016-09-28; RMI left out for its non-commercial terms): 1-km pixels, 5-minute steps, rain rate in mm/h.
Its model card is ``docs/model-card-tau-radar.md``.  :func:`geostp.forecast` uses it for ``model="tau"``
on a rain-rate cube of about that pixel size and step, instead of fitting a model on the cube's own
history; ``fine_tune_minutes`` trains it further on that history first.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geostp.cube import is_precipitation, validate_cube

__all__ = ["pretrained_path", "load_pretrained", "suits_pretrained", "PRETRAINED"]

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
