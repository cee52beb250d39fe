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


def run_demo(out: str | os.PathLike[str] = "out", *, minutes: float = 2.0, model: str = "tau",
             fine_tune_minutes: float = 0.0, progress: bool = True) -> dict:
    """Run the demo; returns the paths written and the scores.

    ``model="tau"`` uses the pretrained advection-aware TAU that geostp ships (fine-tuned on the cube's
    history for ``fine_tune_minutes`` if asked); other models, or a package without the weights, are fitted
    on the history for ``minutes``.
    """
    import pandas as pd

    from geostp.api import forecast, resolve_forecaster
    from geostp.cube import describe
    from geostp.data.catalog import open_catalog
    from geostp.evaluate import evaluate
    from geostp.store import ingest, open_cube
    from geostp.writers import write_forecast

    out = Path(out)
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
