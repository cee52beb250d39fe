"""Nowcast cycle benchmark: wall time per operational cycle on a 512 x 512 domain with 12 lead times.

What one cycle is here: a new MeteoSwiss frame (2016-07-11, the shared pysteps example data) lands in
a feed folder; the :class:`geostp.operate.NowcastRunner` notices it, reads it through the radar adapter
(the earlier inputs are cached), crops the central 512 x 512 pixels, forecasts 12 lead times (1 h at 5 min)
and writes ``nowcast_YYYYmmddHHMM.nc`` atomically.  Measured, in one run (the machine's load is shared):

- geostp's ``optical_flow`` baseline (no training): pysteps' Lucas-Kanade motion and semi-Lagrangian
  advection wrapped as a geostp model, on dB values (the ``db`` transform, as ``recipes/mch_nowcast.yaml``);
- a small TAU checkpoint (16 spatial / 128 temporal channels, 4 spatial and 4 temporal blocks, 6 frames
  in, rolled out to 12) with **randomly initialised** weights (seed 0) and the log10 normaliser of the
  same frames: its speed is that of a trained model of this size, its forecasts are meaningless;
- pysteps' own extrapolation nowcast of the same inputs: ``pysteps.motion`` Lucas-Kanade on the three
  newest frames in dB (threshold 0.1 mm/h, zero value -15 dB), then ``pysteps.nowcasts`` extrapolation
  (semi-Lagrangian) of the newest rain-rate frame for 12 steps; read with pysteps' importer and written
  with pysteps' netCDF exporter.

For each, the median over ``--cycles`` cycles (after one warm-up cycle; the methods take turns, one
cycle each, so that the machine's load touches them alike) of the time to forecast, and of the whole
cycle (read + forecast + write; for pysteps a script that reads its three inputs with pysteps' importer
and writes with pysteps' netCDF exporter).  DESIGN.md's aim: a 512 x 512, 12-step cycle no
slower than pysteps' extrapolation nowcast.

Usage::

    .venv/bin/python benchmarks/nowcast.py                 # writes benchmarks/results/nowcast.json and .md
    .venv/bin/python benchmarks/nowcast.py --cycles 2 --out /tmp/bench   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MCH_KW = {"importer": "mch_gif", "fn_pattern": "AQC%y%j%H%M?_00005.801", "fn_ext": "gif", "timestep": 5,
          "importer_kwargs": {"product": "AQC", "unit": "mm", "accutime": 5}}
SMALL_TAU = {"spatial_hidden_channels": 16, "temporal_hidden_channels": 128, "spatial_blocks": 4,
             "temporal_blocks": 4, "input_steps": 6, "output_steps": 6, "channels": 1}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def data_dir() -> Path:
    env = os.environ.get("GEOSTP_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    folder = path / "radar" / "mch" / "20160711"
    if not folder.is_dir():
        sys.exit(f"MeteoSwiss frames not found in {folder}: set GEOSTP_DATA to the shared data folder")
    return folder


def central(size: int):
    def crop(ny: int, nx: int) -> dict[str, slice]:
        y0, x0 = (ny - size) // 2, (nx - size) // 2
        return {"y": slice(y0, y0 + size), "x": slice(x0, x0 + size)}

    return crop


def make_tau_checkpoint(frames: list[Path], size: int, path: Path) -> Path:
    """A randomly initialised small TAU with the normaliser of the frames, saved as a geostp checkpoint."""
    import torch

    import geostp.models as models
    from geostp.data.radar import open_radar
    from geostp.forecast import FittedForecaster, cube_schema
    from geostp.stream import compute_statistics

    cube = open_radar(pattern=[str(f) for f in frames], **MCH_KW)
    cube = cube.isel(central(size)(cube.sizes["y"], cube.sizes["x"]))
    torch.manual_seed(0)
    get = getattr(models, "get", None)
    if get is None:
        from geostp.models.base import build_model as get
    net = get("tau", **SMALL_TAU).eval()
    normalizer = compute_statistics(cube, ["precipitation"])
    fitted = FittedForecaster(model=net, variables=["precipitation"], normalizer=normalizer,
                              schema=cube_schema(cube, ["precipitation"]), fill_value=normalizer.fill_value,
                              metadata={"weights": "random (torch.manual_seed(0)), untrained"})
    return fitted.save(path)


def geostp_cycles(name: str, forecaster, frames: list[Path], size: int, steps: int, cycles: int,
                  work: Path) -> Iterator[dict]:
    """Feed frames one by one to a runner; yield the timings of each cycle (the first is a warm-up)."""
    from geostp.operate import FeedPolicy, FileFeed, NowcastRunner

    feed, out = work / f"feed-{name}", work / f"out-{name}"
    feed.mkdir()
    t_in = int(forecaster.model.input_steps)
    args = {k: v for k, v in MCH_KW.items() if k != "importer"}
    ff = FileFeed("radar", {"importer": "mch_gif", **args}, files=f"{feed}/AQC*.gif",
                  time_pattern=MCH_KW["fn_pattern"], extension="gif", time_step="5min",
                  variables=["precipitation"])
    for f in frames[: t_in - 1]:
        shutil.copy(f, feed / f.name)
    runner = NowcastRunner(ff, forecaster, steps=steps, out_dir=out, policy=FeedPolicy(catch_up=0),
                           crop=central(size), echo=None)
    with runner:
        for f in frames[t_in - 1: t_in + cycles]:
            shutil.copy(f, feed / f.name)
            wall = time.perf_counter()
            recs = runner.poll(wait=False)
            wall = time.perf_counter() - wall
            (rec,) = [r for r in recs if r["outcome"] == "written"]
            rec["timings"]["poll_wall_s"] = round(wall, 4)
            log(f"{name} {rec['reference_time']}: {rec['timings']}")
            yield rec


def pysteps_cycles(frames: list[Path], size: int, steps: int, cycles: int, work: Path) -> Iterator[dict]:
    """pysteps' LK + semi-Lagrangian extrapolation on the same cropped inputs.

    ``forecast_s`` is the compute from arrays in memory (dB transform, motion, extrapolation);
    ``total_s`` a whole pysteps cycle as an operational script would run it: read the three input
    files with pysteps' importer, compute, and write the forecast with pysteps' netCDF exporter
    (compression level 1, as geostp writes).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps import motion, nowcasts
        from pysteps.io import exporters, import_mch_gif
        from pysteps.utils import transformation
    crop = central(size)
    oflow = motion.get_method("LK")
    extrapolate = nowcasts.get_method("extrapolation")
    outdir = work / "pysteps"
    outdir.mkdir()

    def read(f: Path):
        r, _, meta = import_mch_gif(str(f), product="AQC", unit="mm", accutime=5)
        r = np.asarray(np.ma.filled(r, np.nan), float) * 12.0  # mm per 5 min -> mm/h
        s = crop(*r.shape)
        meta = dict(meta, unit="mm/h", accutime=5, transform=None, threshold=0.1, zerovalue=0.0)
        meta["x1"] += s["x"].start * meta["xpixelsize"]
        meta["x2"] = meta["x1"] + size * meta["xpixelsize"]
        meta["y2"] -= s["y"].start * meta["ypixelsize"]
        meta["y1"] = meta["y2"] - size * meta["ypixelsize"]
        return r[s["y"], s["x"]], meta

    for k in range(3 - 1, 3 + cycles):
        t0 = time.perf_counter()
        read_in = [read(f) for f in frames[k - 2: k + 1]]
        inputs = np.stack([a for a, _ in read_in])
        meta = read_in[-1][1]
        t1 = time.perf_counter()
        db, _ = transformation.dB_transform(inputs, meta, threshold=0.1, zerovalue=-15.0)
        db[~np.isfinite(db)] = -15.0
        velocity = oflow(db)
        t2 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = extrapolate(inputs[-1], velocity, steps)
        t3 = time.perf_counter()
        assert fc.shape == (steps, size, size)
        from datetime import datetime

        start = datetime.strptime(frames[k].name[3:12], "%y%j%H%M")
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exporter = exporters.initialize_forecast_exporter_netcdf(
                str(outdir), f"pysteps_{k}", start, 5, steps, (size, size), meta, complevel=1)
            exporters.export_forecast_dataset(fc, exporter)
            exporters.close_forecast_files(exporter)
        t4 = time.perf_counter()
        rec = {"read_s": round(t1 - t0, 4), "motion_s": round(t2 - t1, 4), "extrapolation_s": round(t3 - t2, 4),
               "forecast_s": round(t3 - t1, 4), "write_s": round(t4 - t3, 4), "total_s": round(t4 - t0, 4)}
        log(f"pysteps cycle {k}: {rec}")
        yield rec


def summarise(records: list[dict], key: str) -> float:
    values = [r["timings"][key] if "timings" in r else r[key] for r in records[1:]]  # the first warms up
    return round(statistics.median(values), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cycles", type=int, default=8, help="timed cycles (after one warm-up)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    opts = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from geostp import __version__
    from geostp.forecast import FittedForecaster, load_forecaster

    frames = sorted(data_dir().glob("AQC*_00005.801.gif"))
    need = 6 + opts.cycles + 1
    if len(frames) < need:
        sys.exit(f"need {need} frames, found {len(frames)}")
    frames = frames[:need]
    work = Path(tempfile.mkdtemp(prefix="geostp-nowcast-bench-"))
    results: dict = {}
    try:
        import geostp.models as models

        get = getattr(models, "get", None)
        if get is None:
            from geostp.models.base import build_model as get
        from geostp.recipes.run import fixed_normalizer

        db = fixed_normalizer("db", ["precipitation"])
        extrap = FittedForecaster(model=get("optical_flow", output_steps=opts.steps, channels=1),
                                  variables=["precipitation"], normalizer=db, fill_value=db.fill_value)
        log(f"extrapolation: {extrap.model!r}")
        ck = make_tau_checkpoint(frames, opts.size, work / "tau_small.pt")
        tau = load_forecaster(ck)
        n_params = sum(p.numel() for p in tau.model.parameters())
        # One cycle of each method in turn, so that a change in the machine's load touches them all alike.
        streams = {
            "geostp_extrapolation": geostp_cycles("extrapolation", extrap, frames, opts.size, opts.steps,
                                                  opts.cycles, work),
            "pysteps_extrapolation": pysteps_cycles(frames, opts.size, opts.steps, opts.cycles, work),
            "geostp_tau_small_random": geostp_cycles("tau", tau, frames, opts.size, opts.steps, opts.cycles,
                                                     work),
        }
        for _ in range(opts.cycles + 1):
            for key, stream in streams.items():
                results.setdefault(key, []).append(next(stream))
        for stream in streams.values():
            stream.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        "geostp_extrapolation": {"forecast_s": summarise(results["geostp_extrapolation"], "forecast_s"),
                                 "cycle_s": summarise(results["geostp_extrapolation"], "total_s")},
        "geostp_tau_small_random": {"forecast_s": summarise(results["geostp_tau_small_random"], "forecast_s"),
                                    "cycle_s": summarise(results["geostp_tau_small_random"], "total_s"),
                                    "parameters": n_params},
        "pysteps_extrapolation": {"forecast_s": summarise(results["pysteps_extrapolation"], "forecast_s"),
                                  "cycle_s": summarise(results["pysteps_extrapolation"], "total_s"),
                                  "motion_s": summarise(results["pysteps_extrapolation"], "motion_s"),
                                  "extrapolation_s": summarise(results["pysteps_extrapolation"],
                                                               "extrapolation_s")},
    }
    ref = summary["pysteps_extrapolation"]
    for k in ("geostp_extrapolation", "geostp_tau_small_random"):
        summary[k]["cycle_vs_pysteps_cycle"] = round(summary[k]["cycle_s"] / ref["cycle_s"], 3)
        summary[k]["forecast_vs_pysteps_forecast"] = round(summary[k]["forecast_s"] / ref["forecast_s"], 3)
    report = {
        "what": "wall time per nowcast cycle, 512 x 512 MeteoSwiss crop, 12 lead times",
        "command": "python benchmarks/nowcast.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average_1min": round(os.getloadavg()[0], 2), "geostp": __version__},
        "settings": {"size": opts.size, "steps": opts.steps, "cycles": opts.cycles,
                     "frames": [f.name for f in frames], "tau": {**SMALL_TAU, "weights": "random, seed 0"}},
        "summary": summary,
        "cycles": results,
    }
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nowcast.json").write_text(json.dumps(report, indent=1))
    (out / "nowcast.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    s, m = r["summary"], r["machine"]
    ge, gt, ps = s["geostp_extrapolation"], s["geostp_tau_small_random"], s["pysteps_extrapolation"]
    aim = "met" if ge["cycle_s"] <= ps["cycle_s"] else "not met"
    return "\n".join([
        "# Nowcast cycle: 512 x 512, 12 lead times",
        "",
        f"`{r['command']}` on {r['date']}: {m['platform']}, {m['cpus']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads), load average {m['load_average_1min']} at the end.",
        "",
        f"Median of {r['settings']['cycles']} cycles after one warm-up; MeteoSwiss 2016-07-11 frames, central "
        f"{r['settings']['size']} x {r['settings']['size']} pixels. *Forecast*: the computation from the input "
        "frames in memory; *cycle*: a new file arrives, is read, the forecast computed and written as netCDF "
        "(geostp: the runner, reading only the new frame; pysteps: a script reading its three inputs with "
        "pysteps' importer and writing with its netCDF exporter).",
        "",
        "| method | forecast (s) | whole cycle (s) |",
        "|---|---|---|",
        f"| geostp `optical_flow` baseline (LK + semi-Lagrangian, in dB) | {ge['forecast_s']:.2f} | "
        f"{ge['cycle_s']:.2f} |",
        f"| geostp small TAU checkpoint ({gt['parameters'] / 1e6:.2f} M parameters, random weights) | "
        f"{gt['forecast_s']:.2f} | {gt['cycle_s']:.2f} |",
        f"| pysteps LK motion + extrapolation nowcast (motion {ps['motion_s']:.2f} s, extrapolation "
        f"{ps['extrapolation_s']:.2f} s) | {ps['forecast_s']:.2f} | {ps['cycle_s']:.2f} |",
        "",
        f"DESIGN.md's aim, a 512 x 512, 12-step geostp cycle no slower than pysteps' extrapolation nowcast of "
        f"the same inputs: **{aim}** for the extrapolation baseline (geostp cycle / pysteps cycle = "
        f"{ge['cycle_vs_pysteps_cycle']}; forecast alone {ge['forecast_vs_pysteps_forecast']} x pysteps'). "
        f"The small TAU's cycle takes {gt['cycle_vs_pysteps_cycle']} x pysteps' cycle.",
        "",
    ])


if __name__ == "__main__":
    main()
