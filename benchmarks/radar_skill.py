#!/usr/bin/env python
"""Radar nowcasting skill on real data (issue 6, "Reproductions"): a small TAU against persistence and
pysteps extrapolation, measured on this machine's CPU.

What it does, only through geostp's public API:

- opens the catalog ``radar`` source ``mch`` (MeteoSwiss AQC composite, 640 x 710 at 1 km, 5-min steps,
  three events of 40 frames; the gaps between events are reported by ``validate_cube`` and no training
  window crosses them);
- **trains** a small TAU with ``geostp.fit`` (log-rain normalisation, rainy-patch filter, the trainer,
  a wall-clock budget) on the 2015-05-15 and 2016-07-11 events (fit validates on the last 15 % of the time
  axis when that holds a whole window: with 12 output steps it does not, and all windows train);
- **tests** on the 2017-01-31 event with ``geostp.evaluate``: TAU (6 frames in, 12 out = 60 min;
  ``--output-steps 6`` trains for 6 and rolls out to 12), ``persistence`` and the registered
  ``optical_flow`` model (pysteps Lucas-Kanade motion on the 3 newest frames + semi-Lagrangian extrapolation): MSE, CSI at 1 and
  5 mm/h and FSS at 1 mm/h on 8 and 32 km scales, per lead time;
- **tests** on the Bureau of Meteorology day (source ``bom``, 2020-10-31, radar 66), which the TAU never
  saw: 0.5 km / 10 min, averaged over 4 x 4 pixels to 2 km / 10 min, the same pixels per step as
  MeteoSwiss' 1 km / 5 min, and the TAU applied with ``transfer=True`` (refused without it); 6 steps =
  60 min. Scored on the held-back last third (16:00-23:50, nearly dry) and on the rainy part of the day
  (02:00-12:50).

Usage::

    GEOSTP_DATA=/work/shared/data .venv/bin/python benchmarks/radar_skill.py            # full
    GEOSTP_DATA=/work/shared/data .venv/bin/python benchmarks/radar_skill.py --quick    # a few minutes

writes ``benchmarks/results/radar_skill.json`` and ``radar_skill.md`` (``--out`` elsewhere; ``--quick``
writes ``radar_skill_quick.*``). Data: MeteoSwiss and the Bureau of Meteorology (pysteps example data set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TAU_ARGS = {"spatial_hidden_channels": 16, "temporal_hidden_channels": 128, "spatial_blocks": 4,
            "temporal_blocks": 4}
MODEL_ARGS = {"tau": TAU_ARGS, "predrnn_v2": {"hidden_channels": 64, "num_layers": 2, "patch_size": 4}}
LABELS = {"tau": "TAU", "predrnn_v2": "PredRNN-V2"}
METRICS = ["mse", "csi", "fss"]
THRESHOLDS = [1.0, 5.0]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def crop(ds, size: int | None):
    if not size:
        return ds
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    y0, x0 = max((ny - size) // 2, 0), max((nx - size) // 2, 0)
    return ds.isel(y=slice(y0, y0 + size), x=slice(x0, x0 + size))


def pick(candidates: np.ndarray, n: int) -> list:
    if n >= len(candidates):
        return list(candidates)
    idx = np.unique(np.round(np.linspace(0, len(candidates) - 1, n)).astype(int))
    return list(candidates[idx])


def train_set_size(cube, fitted, batch_size: int, validation_fraction: float = 0.15) -> dict[str, int]:
    """The windows one training epoch of ``geostp.fit`` draws (same split and spec as fit uses)."""
    from geostp.stream import CubeDataset, WindowSpec, split_cube

    spec = WindowSpec.from_dict(fitted.metadata["window"])
    nt = cube.sizes["time"]
    n_val = int(round(validation_fraction * nt))
    if n_val >= spec.length and nt - n_val >= spec.length:  # as geostp.fit decides
        splits = split_cube(cube, train=1 - validation_fraction, validation=validation_fraction)
    else:  # too short for a validation split: fit trains on every window and validates on none
        splits = {"train": None, "validation": None}
    out = {"validation_samples_per_epoch": 0}
    for name in ("train", "validation"):
        if name == "validation" and splits["validation"] is None:
            continue
        dset = CubeDataset(cube, fitted.variables, spec, split=splits[name], normalizer=fitted.normalizer,
                           batch_size=batch_size, shuffle=False)
        out[f"{name}_samples_per_epoch"] = int(sum(len(s) for s in dset.batch_samples()))
    return out


def scores_to_dict(scores) -> dict[str, Any]:
    leads = [int(v / np.timedelta64(1, "m")) for v in scores["lead_time"].values]
    return {"lead_minutes": leads,
            "scores": {str(var): {str(m): [float(x) for x in scores[var].sel(model=m).values]
                                  for m in scores["model"].values} for var in scores.data_vars}}


def md_table(res: dict[str, Any]) -> list[str]:
    leads = res["lead_minutes"]
    lines = ["| score | model | " + " | ".join(f"{lead} min" for lead in leads) + " |",
             "|---|---|" + "---|" * len(leads)]
    for var, per_model in res["scores"].items():
        for model, vals in per_model.items():
            lines.append(f"| {var} | {model} | " + " | ".join(f"{v:.3g}" for v in vals) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="cropped domain, 3 reference times, ~1.5 min training")
    ap.add_argument("--model", choices=sorted(MODEL_ARGS), default="tau",
                    help="the learned model (results of other models than tau go to radar_skill_<model>.*)")
    ap.add_argument("--train-minutes", type=float, default=None, help="training budget (default 12, quick 1.5)")
    ap.add_argument("--refs", type=int, default=None, help="reference times per test event (default 12, quick 3)")
    ap.add_argument("--crop", type=int, default=None, help="central square crop in pixels (default none, quick 256)")
    ap.add_argument("--output-steps", type=int, default=12,
                    help="TAU output frames in training (12 = the whole hour; fewer are rolled out to 12)")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="optimiser steps (OneCycle sized to them; --train-minutes then only caps the time)")
    ap.add_argument("--bom-coarsen", type=int, default=4,
                    help="average BoM over N x N pixels (4: 2 km / 10 min = MeteoSwiss' 1 km / 5 min in pixels per step)")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--tile", type=int, default=0,
                    help="forecast the learned model in overlapping tiles of this size (0: the whole domain)")
    ap.add_argument("--overlap", type=int, default=16, help="tile overlap in pixels")
    ap.add_argument("--save-model", type=Path, default=None, help="also write the fitted model here")
    ap.add_argument("--load-model", type=Path, default=None,
                    help="evaluate this checkpoint (written by --save-model) instead of training")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--scales", default="8,32", help="FSS scales in pixels (1 km MeteoSwiss, 0.5 km BoM)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    minutes = args.train_minutes if args.train_minutes is not None else (1.5 if args.quick else 12.0)
    n_refs = args.refs if args.refs is not None else (3 if args.quick else 12)
    size = args.crop if args.crop is not None else (256 if args.quick else None)
    scales = [int(s) for s in args.scales.split(",") if s]
    tile = args.tile or None
    os.environ.setdefault("GEOSTP_DATA", str(REPO.parent / "shared" / "data"))
    warnings.filterwarnings("ignore", category=RuntimeWarning)

    import pandas as pd
    import torch

    import geostp
    from geostp.cube import validate_cube
    from geostp.evaluate import format_table

    t_start = time.perf_counter()
    cat = geostp.open_catalog("radar")
    mch = crop(cat.open("mch"), size)
    info = validate_cube(mch, check_values=False)
    log(f"mch: {mch.sizes['time']} frames, step {info.step}, gaps {[(str(g.after), str(g.before)) for g in info.gaps]}")
    train = mch.sel(time=slice(None, "2016-12-31")).load()
    test = mch.sel(time=slice("2017-01-01", None)).load()
    tinfo = validate_cube(train, check_values=False)
    log(f"train cube {dict(train.sizes)} ({len(tinfo.gaps)} gap), test {dict(test.sizes)}")

    # ---------------------------------------------------------------- training
    store = tempfile.mkdtemp(prefix="geostp-radar-skill-store-")
    os.environ["GEOSTP_MODEL_STORE"] = store
    t0 = time.perf_counter()
    name, label, model_args = args.model, LABELS[args.model], MODEL_ARGS[args.model]
    if args.load_model is not None:
        fitted = geostp.load_forecaster(args.load_model)
        if fitted.name != name:
            raise SystemExit(f"{args.load_model} holds model {fitted.name!r}, not {name!r}")
    else:
        fitted = geostp.fit(train, name, model_args=dict(model_args), input_steps=6, output_steps=args.output_steps,
                            patch_size=args.patch, batch_size=args.batch, max_minutes=minutes, epochs=100_000,
                            max_steps=args.train_steps,
                            seed=args.seed, use_store=False, device="cpu", progress=False)
        fitted.metadata["train_seconds"] = round(time.perf_counter() - t0, 1)
        if args.save_model is not None:
            fitted.save(args.save_model)
    train_s = float(fitted.metadata.get("train_seconds", time.perf_counter() - t0))
    n_params = int(sum(p.numel() for p in fitted.model.parameters()))
    sizes = train_set_size(train, fitted, args.batch)
    meta = {k: fitted.metadata.get(k) for k in ("steps", "epochs", "stopped", "final_loss")}
    if isinstance(meta["epochs"], list):  # the trainer's per-epoch records: keep their number
        meta["epochs"] = len(meta["epochs"])
    log(f"{label} fitted in {train_s:.0f} s: {meta}, {sizes}, {n_params} parameters")

    baselines = {"persistence": geostp.fit(test, "persistence", model_args={"input_steps": 1}),
                 "optical_flow": geostp.fit(test, "optical_flow", model_args={"input_steps": 3})}

    # ---------------------------------------------------------------- MeteoSwiss 2017-01-31
    steps = 12
    t_in = int(fitted.model.input_steps)
    times = test["time"].values
    cand = times[t_in - 1: len(times) - steps]
    refs_mch = pick(cand, n_refs)
    log(f"MeteoSwiss 2017-01-31: {len(refs_mch)} reference times {pd.Timestamp(refs_mch[0])} .. {pd.Timestamp(refs_mch[-1])}")
    t0 = time.perf_counter()
    sc_mch = geostp.evaluate(test, {name: fitted, **baselines}, steps=steps, reference_times=refs_mch,
                             metrics=METRICS, thresholds=THRESHOLDS, scales=scales, device="cpu",
                             tile=tile, overlap=args.overlap, progress=False, print_table=False)
    eval_mch_s = time.perf_counter() - t0
    print(format_table(sc_mch), flush=True)

    # ---------------------------------------------------------------- BoM (TAU by transfer)
    # The TAU learned motion in pixels per step on 1 km / 5 min. BoM is 0.5 km / 10 min: averaged over
    # 4 x 4 pixels it is 2 km / 10 min, the same pixels per step, so the model sees the speeds it knows.
    factor = args.bom_coarsen
    bom_native = crop(cat.open("bom"), size)
    bom_all = bom_native.coarsen(y=factor, x=factor, boundary="trim").mean(keep_attrs=True) if factor > 1 \
        else bom_native
    binfo = validate_cube(bom_all, check_values=False)
    nb = bom_all.sizes["time"]
    bsteps = 6
    refused = ""
    try:
        fitted.predict(bom_all.isel(time=slice(0, t_in)), 1)
    except geostp.GeostpError as exc:
        refused = str(exc)
    bom_km = 0.5 * factor
    bscales = [max(1, round(sc / bom_km)) for sc in scales]  # the same scales in km as on MeteoSwiss
    log(f"BoM: step {binfo.step}, {bom_km:g} km pixels, FSS scales {bscales} px; without transfer: {refused}")

    def bom_block(first: int, last: int) -> dict[str, Any]:
        """The learned model and baselines from reference times whose forecasts verify inside frames first..last."""
        cube = bom_all.isel(time=slice(first - t_in, last + 1)).load()  # T_in input frames before the period
        btimes = cube["time"].values
        refs = pick(btimes[t_in: len(btimes) - bsteps], n_refs)
        models = {name: fitted,
                  "persistence": geostp.fit(cube, "persistence", model_args={"input_steps": 1}),
                  "optical_flow": geostp.fit(cube, "optical_flow", model_args={"input_steps": 3})}
        t0 = time.perf_counter()
        sc = geostp.evaluate(cube, models, steps=bsteps, reference_times=refs, metrics=METRICS,
                             thresholds=THRESHOLDS, scales=bscales, device="cpu", tile=tile, overlap=args.overlap,
                             transfer=True, progress=False,
                             print_table=False)
        period = cube["precipitation"].isel(time=slice(t_in, None))
        print(format_table(sc), flush=True)
        return {"steps": bsteps, "step_minutes": 10, "pixel_km": bom_km, "fss_scales_px": bscales,
                "models": list(sc["model"].values),
                "period": [str(pd.Timestamp(btimes[t_in])), str(pd.Timestamp(btimes[-1]))],
                "reference_times": [str(pd.Timestamp(t)) for t in refs], "refused_without_transfer": refused,
                "fraction_of_pixels_ge_1mmh": float((period >= 1.0).mean()),
                "fraction_of_pixels_ge_5mmh": float((period >= 5.0).mean()),
                "eval_seconds": round(time.perf_counter() - t0, 1), **scores_to_dict(sc)}

    bom_test = bom_block(nb - nb // 3, nb - 1)  # the held-back last third of the day
    bom_rainy = bom_block(12, 77)  # 02:00-12:50, the rainy part: as unseen by the TAU as the rest of the day
    test_frames = test["precipitation"].isel(time=slice(t_in, None))
    mch_rain = {"fraction_of_pixels_ge_1mmh": float((test_frames >= 1.0).mean()),
                "fraction_of_pixels_ge_5mmh": float((test_frames >= 5.0).mean())}

    # ---------------------------------------------------------------- results
    cmd = "python benchmarks/radar_skill.py " + " ".join(sys.argv[1:])
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    rain_frac = float((train["precipitation"] >= 1.0).mean())
    result = {
        "schema": 1, "command": cmd, "date": when, "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "load_average_end": list(os.getloadavg())},
        "data": {"source": "catalog radar: mch (MeteoSwiss AQC), bom (BoM Rainfields 3, radar 66); pysteps example data",
                 "crop_pixels": size, "grid_mch": [int(mch.sizes["y"]), int(mch.sizes["x"])],
                 "grid_bom": [int(bom_all.sizes["y"]), int(bom_all.sizes["x"])]},
        "training": {"model": name, "model_args": model_args,
                     "sampling_schedule": fitted.metadata.get("sampling_schedule"), "input_steps": 6, "output_steps": args.output_steps,
                     "parameters": n_params, "events": ["2015-05-15", "2016-07-11"],
                     "frames": int(train.sizes["time"]), "gaps": len(tinfo.gaps), "patch_size": args.patch,
                     "batch_size": args.batch, "budget_minutes": minutes, "max_steps": args.train_steps,
                     "inference_tile": tile, "inference_overlap": args.overlap if tile else None,
                     "loaded_from": str(args.load_model) if args.load_model else None, "wall_seconds": round(train_s, 1),
                     "samples_seen": int((meta["steps"] or 0) * args.batch),
                     "fraction_of_pixels_ge_1mmh": rain_frac, **meta, **sizes},
        "tests": {
            "mch_20170131": {"steps": steps, "step_minutes": 5, "models": list(sc_mch["model"].values),
                             "reference_times": [str(pd.Timestamp(t)) for t in refs_mch],
                             "eval_seconds": round(eval_mch_s, 1), **mch_rain, **scores_to_dict(sc_mch)},
            "bom_20201031_last_third": bom_test,
            "bom_20201031_rainy_0200_1250": bom_rainy,
        },
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "radar_skill" + ("" if name == "tau" else f"_{name}") + ("_quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    tr = result["training"]
    md = [
        "# Radar nowcasting skill on real data (CPU)", "",
        f"`{cmd}` on {when}: {result['machine']['platform']}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); the 2 cores were shared with other work.", "",
        "Data: MeteoSwiss AQC composite (catalog `radar`, source `mch`) and Bureau of Meteorology Rainfields 3 "
        "radar 66 (source `bom`), from the pysteps example data set; cite MeteoSwiss and the Bureau of "
        "Meteorology (Copyright Commonwealth of Australia) where these numbers are shown."
        + (f" Domain: central {size} x {size} pixels." if size else " Whole domains (640 x 710 and 512 x 512)."), "",
        "## Training", "",
        f"`geostp.fit(train, \"{name}\", model_args={model_args}, input_steps=6, output_steps={args.output_steps}, "
        f"patch_size={args.patch}, batch_size={args.batch}, max_minutes={minutes:g}"
        f"{f', max_steps={args.train_steps}' if args.train_steps else ''})` on the MeteoSwiss events "
        f"2015-05-15 and 2016-07-11 ({tr['frames']} frames, {tr['gaps']} gap between the events; fit validates on "
        f"the last 15 % of the time axis when that holds a whole window, else on nothing): {n_params:,} parameters, {tr['wall_seconds']:.0f} s of training "
        f"({tr['steps']} optimiser steps, {tr['samples_seen']:,} samples of {args.patch} x {args.patch} seen, "
        f"{tr['epochs']} complete epochs; an epoch is {tr['train_samples_per_epoch']} rainy patch windows; "
        f"{tr['validation_samples_per_epoch']} validation windows; stopped: {tr['stopped']}, "
        f"final training loss {tr['final_loss']:.4g}).", "",
        "Baselines: `persistence` (newest frame) and `optical_flow` (pysteps Lucas-Kanade motion on the 3 newest "
        "frames + semi-Lagrangian extrapolation, on the rain rates as `geostp.fit` hands them to a baseline).", "",
        "Scores from `geostp.evaluate` (`geostp.metrics.verify`): `mse` in (mm/h)^2, `csi_T` critical success "
        "index at T mm/h, `fss_T_S` fractions skill score at T mm/h over S x S pixels "
        f"(MeteoSwiss: 1 km pixels; BoM: {bom_km:g} km pixels). Mean over the reference times. Frames that "
        "learned models produce are clamped to the range of their training data (in model units, before "
        "they are fed back).", "",
        "## MeteoSwiss 2017-01-31 (test event), 5-min steps", "",
        f"{len(refs_mch)} reference times, {pd.Timestamp(refs_mch[0])} .. "
        f"{pd.Timestamp(refs_mch[-1])}; {label} ({args.output_steps} output steps in training) "
        f"{'rolled out to 12 steps' if args.output_steps < 12 else 'trained on the 12 steps it predicts'}; "
        f"{f'forecast in {tile} x {tile} tiles overlapping by {args.overlap} pixels (the training patch size); ' if tile else 'forecast on the whole domain at once; '}"
        f"{100 * mch_rain['fraction_of_pixels_ge_1mmh']:.1f} % of the verified pixels >= 1 mm/h, "
        f"{100 * mch_rain['fraction_of_pixels_ge_5mmh']:.2f} % >= 5 mm/h. Evaluation took "
        f"{eval_mch_s:.0f} s.", "",
        *md_table(result["tests"]["mch_20170131"]), "",
        f"## BoM 2020-10-31, 10-min steps: the {label} by transfer", "",
        f"The {label} never saw BoM data. BoM is 0.5 km / 10 min; averaged over {factor} x {factor} pixels it is "
        f"{bom_km:g} km / 10 min, which is MeteoSwiss' 1 km / 5 min in pixels per step, so the speeds the model "
        "learned carry over. It is applied with `geostp.evaluate(..., transfer=True)`; without that flag it is "
        f"refused (`{refused}`). All three models run and are verified on the averaged "
        f"{bom_all.sizes['y']} x {bom_all.sizes['x']} grid; the {label} gets its 6 input frames (60 min), the "
        f"baselines theirs; 6 steps = 60 min. FSS scales {bscales} pixels = {scales} km as on MeteoSwiss. "
        "Averaging over 2 km smooths the peaks, so fewer pixels pass 5 mm/h than at 0.5 km.", "",
        f"### Held-back last third of the day, {bom_test['period'][0]} .. {bom_test['period'][1]}", "",
        f"{len(bom_test['reference_times'])} reference times; forecasts verified inside this period only. "
        f"The period is nearly dry: {100 * bom_test['fraction_of_pixels_ge_1mmh']:.3f} % of the pixels >= 1 mm/h, "
        f"{100 * bom_test['fraction_of_pixels_ge_5mmh']:.3f} % >= 5 mm/h (NaN: no event in forecast or "
        f"observation at any reference time). Evaluation took {bom_test['eval_seconds']:.0f} s.", "",
        *md_table(bom_test), "",
        f"### The rainy part of the day, {bom_rainy['period'][0]} .. {bom_rainy['period'][1]}", "",
        f"As unseen by the {label} as the last third (it trained on MeteoSwiss only) and the day's real test: "
        f"{len(bom_rainy['reference_times'])} reference times, "
        f"{100 * bom_rainy['fraction_of_pixels_ge_1mmh']:.1f} % of the pixels >= 1 mm/h, "
        f"{100 * bom_rainy['fraction_of_pixels_ge_5mmh']:.1f} % >= 5 mm/h. Evaluation took "
        f"{bom_rainy['eval_seconds']:.0f} s.", "",
        *md_table(bom_rainy), "",
        f"Total run time {result['total_seconds']:.0f} s.", "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    log(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
