"""The README's main job: a nowcast demo on the embedded synthetic radar, end to end.

Generate the synthetic radar, ingest it into zarr, take the pretrained
advection-aware TAU that geostp ships (or fit a model on the first hours),
forecast the held-back hours from several reference times, print the
verification table against persistence, optical-flow extrapolation and
S-PROG, and write the forecast as CF netCDF (:func:`geostp.writers.write_forecast`,
the encoding and global attributes of the operational runner's files).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo"]


def _check_arguments(out: object, minutes: object, model: object, fine_tune_minutes: object) -> Path:
    """Every argument of :func:`run_demo`, checked before any work (the ingest of 192 frames comes first):
    a :class:`~geostp.errors.ConfigError` (or a :class:`~geostp.errors.WriteError` for ``out``) naming it."""
    import math
    import numbers

    from geostp.checks import as_path
    from geostp.errors import ConfigError, UnknownNameError, writable_folder

    def minutes_of(value: object, name: str, flag: str, *, zero: bool) -> None:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
            and (float(value) >= 0 if zero else float(value) > 0)
        if not ok:
            raise ConfigError(f"run_demo: {name}={value!r} ({flag}); expected a finite number of minutes "
                              f"{'>= 0' if zero else '> 0'}")

    path = as_path(out, "run_demo: out (--out)", expected="the demo's output folder")
    minutes_of(minutes, "minutes", "--minutes", zero=False)
    minutes_of(fine_tune_minutes, "fine_tune_minutes", "--fine-tune-minutes", zero=True)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"run_demo: model={model!r} (--model); expected a registered model's name, e.g. 'tau'")
    if not Path(model).is_file():  # a checkpoint file is taken as it is; a name must be registered
        import geostp.models as models

        try:
            models.model_class(model)
        except UnknownNameError as exc:
            raise UnknownNameError(f"run_demo: model={model!r} (--model): {exc}; expected one of those names or a "
                                   "checkpoint file") from None
    return writable_folder(path, "demo output folder (--out)")


def run_demo(out: str | os.PathLike[str] = "out", *, minutes: float = 2.0, model: str = "tau",
             fine_tune_minutes: float = 0.0, progress: bool = True) -> dict:
    """Run the demo; returns the paths written and the scores.

    ``model="tau"`` uses the pretrained advection-aware TAU that geostp ships (fine-tuned on the cube's
    history for ``fine_tune_minutes`` if asked); other models, or a package without the weights, are fitted
    on the history for ``minutes``.  Every argument is checked before any work: an unknown model, minutes that
    are not a finite positive number, or an ``out`` that is a file is a :class:`~geostp.errors.GeostpError`
    naming it, and nothing is written.
    """
    out = _check_arguments(out, minutes, model, fine_tune_minutes)
    import pandas as pd

    from geostp.api import forecast, resolve_forecaster
    from geostp.cube import describe
    from geostp.data.catalog import open_catalog
    from geostp.evaluate import evaluate
    from geostp.store import ingest, open_cube
    from geostp.writers import write_forecast

    t0 = time.perf_counter()
    cube = open_catalog("synthetic").open("radar_small", n_times=192)
    store = ingest(cube, out / "synthetic_radar.zarr", overwrite=True, progress=progress)
    cube = open_cube(store)
    print(f"[1/4] ingested the embedded synthetic radar into {store}")
    print("      " + describe(cube).replace("\n", "\n      "))

    n_test = 36  # the last three hours are never seen in training
    history = cube.isel(time=slice(0, cube.sizes["time"] - n_test))
    t1 = time.perf_counter()
    fitted = resolve_forecaster(history, model, fit_minutes=minutes, fine_tune_minutes=fine_tune_minutes,
                                progress=progress)
    if fitted.metadata.get("pretrained") and not fine_tune_minutes:
        how = f"the pretrained advection-aware model shipped with geostp ({fitted.metadata['pretrained']})"
        cal = fitted.metadata.get("history_calibration") or {}
        if cal.get("calibrated"):
            how += (f", its lead gate set on the newest {cal['windows']} windows of the history "
                    f"(share of the learned change kept at 5 / 30 / 60 min: {cal['lead_gate'][0]:g} / "
                    f"{cal['lead_gate'][5]:g} / {cal['lead_gate'][-1]:g})")
    elif fitted.metadata.get("from_store"):
        how = "loaded from the model store"
    else:
        cached = "cached in the model store" if fitted.metadata.get("cached") else \
            "NOT cached: it ran too few steps to be reused"
        how = (f"{'fine-tuned' if fitted.metadata.get('pretrained') else 'trained'}: "
               f"{fitted.metadata.get('iterations')} iterations ({fitted.metadata.get('stopped')}); {cached}")
    print(f"[2/4] {model}: {how}, in {time.perf_counter() - t1:.0f} s")

    steps = 12
    t_in = fitted.model.input_steps
    times = cube["time"].values
    first = cube.sizes["time"] - n_test + t_in - 1
    refs = times[first: cube.sizes["time"] - steps: 3]
    scores = evaluate(cube, {model: fitted, "persistence": "persistence", "optical_flow": "optical_flow",
                             "sprog": "sprog"},
                      steps=steps, reference_times=refs, metrics=["mse", "csi", "fss"], thresholds=[1.0, 5.0],
                      scales=[8], progress=False, print_table=False)
    print(f"[3/4] verification over {len(refs)} reference times of the held-back hours "
          "(MSE in (mm/h)^2, CSI and FSS at 1 and 5 mm/h, FSS over 8 km):")
    from geostp.evaluate import format_table

    keep = [v for v in ("mse", "csi_1", "csi_5", "fss_1_8") if v in scores]
    table = scores[keep].isel(lead_time=[0, 2, 5, 8, 11])
    print("      " + format_table(table).replace("\n", "\n      "))

    fc = forecast(cube, fitted, steps, progress=False)
    ref = pd.Timestamp(fc["forecast_reference_time"].values).strftime("%Y%m%d%H%M")
    path = write_forecast(fc, out / f"nowcast_{ref}.nc")
    print(f"[4/4] wrote the {steps}-step forecast from {ref} to {path} "
          f"(total {time.perf_counter() - t0:.0f} s)")
    return {"store": store, "forecast": path, "scores": scores,
            "mean_mse": {m: float(np.nanmean(scores["mse"].sel(model=m))) for m in scores["model"].values}}
