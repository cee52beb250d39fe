#!/usr/bin/env python
"""Radar nowcasting skill on real data: advection-aware TAU trained on a multi-source corpus, against
persistence, pysteps extrapolation and S-PROG, on the CPU.

Through geostp's public API only:

- **corpus** (catalog ``radar``): MeteoSwiss 2015-05-15 and 2016-07-11, KNMI 2010-08-26, FMI 2016-09-28
  (all 1 km / 5 min; ``geostp.stream.lagrangian.harmonise`` checks units, pixel size and step). RMI is left
  out because its terms forbid commercial use and these weights ship with the package; BoM (0.5 km /
  10 min) is refused by the harmonisation at a 5-min step. MeteoSwiss 2017-01-31 is never trained on.
- **main**: ``geostp.fit(corpus, "tau", advection=--base, validation_fraction=--validation-fraction)`` (``"sprog"``: the change learned from S-PROG's
  forecast in the moving frame; ``"extrapolation"``: from the newest frame), ``--output-steps`` leads at once,
  rain-weighted loss, for ``--iterations`` optimiser iterations (OneCycle), weights written to ``--save-model``
  (only when at least 90 % of the planned iterations were taken); verified on MeteoSwiss 2017-01-31, whole domain,
  the 12 reference times of the earlier reproductions, leads 5-60 min: MSE, CSI at 1 and 5 mm/h, FSS at
  1 mm/h over 8 km, for persistence, ``optical_flow`` (pysteps' standard recipe), ``sprog`` and the model
  with and without probability matching.
- **ablations** (``--ablation-iterations`` each, extrapolation base, 6 output steps, the last 15 % of each cube
  held out where both parts hold a window: KNMI's last 14 frames, where the lead gate is calibrated): Eulerian
  TAU on MeteoSwiss 2015+2016, advection-aware TAU with the rain-weighted loss and with plain MSE,
  advection-aware PredRNN-V2; each advection-aware one with and without probability matching, beside
  extrapolation and S-PROG on the same ``--ablation-refs`` reference times.
- **loso**: the main recipe (validation part and lead gate included) without FMI, for ``--ablation-iterations``
  / ``--ablation-minutes``, verified on FMI 2016-09-28 against extrapolation and S-PROG (``--save-loso PATH``
  keeps its weights).

Usage (each phase writes ``benchmarks/results/radar_skill_parts/<phase>.json``; ``report`` assembles them
into ``radar_skill.md`` / ``.json``)::

    GEOSTP_DATA=../shared/data .venv/bin/python benchmarks/radar_skill.py --phase all
    GEOSTP_DATA=../shared/data .venv/bin/python benchmarks/radar_skill.py --phase main --iterations 300  # shorter

Data: MeteoSwiss, KNMI, FMI (pysteps example data set): cite the providers where these numbers are shown.
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
PARTS = REPO / "benchmarks" / "results" / "radar_skill_parts"

TAU_ARGS = {"spatial_hidden_channels": 16, "temporal_hidden_channels": 128, "spatial_blocks": 2,
            "temporal_blocks": 4}
PREDRNN_ARGS = {"hidden_channels": 32, "num_layers": 2, "patch_size": 4}
METRICS = ["mse", "csi", "fss"]
THRESHOLDS = [1.0, 5.0]
SCALES = [8]
STEPS = 12
CORPUS = ["mch_2015", "mch_2016", "knmi", "fmi"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pick(candidates: np.ndarray, n: int) -> list:
    idx = np.unique(np.round(np.linspace(0, len(candidates) - 1, n)).astype(int))
    return list(candidates[idx])


def open_sources() -> dict[str, Any]:
    import geostp

    cat = geostp.open_catalog("radar")
    mch = cat.open("mch")
    out = {"mch_2015": mch.sel(time=slice("2015-01-01", "2015-12-31")),
           "mch_2016": mch.sel(time=slice("2016-01-01", "2016-12-31")),
           "mch_2017": mch.sel(time=slice("2017-01-01", None)),
           "knmi": cat.open("knmi"), "fmi": cat.open("fmi"), "bom": cat.open("bom")}
    for k, c in out.items():
        c.attrs["source_name"] = k
    return out


def refs_for(cube) -> list:
    times = cube["time"].values
    return pick(times[5:len(times) - STEPS], 12)  # the 12 reference times of the earlier reproductions


def scores_to_dict(scores) -> dict[str, Any]:
    leads = [int(v / np.timedelta64(1, "m")) for v in scores["lead_time"].values]
    return {"lead_minutes": leads,
            "scores": {str(var): {str(m): [float(x) for x in scores[var].sel(model=m).values]
                                  for m in scores["model"].values} for var in scores.data_vars}}


def train(cubes, model: str, *, iterations: int, minutes: float, advection: bool | str, loss: str = "weighted",
          model_args: dict[str, Any], patch: int, batch: int, seed: int, output_steps: int = 6,
          validation_fraction: float = 0.15) -> tuple[Any, dict[str, Any]]:
    import geostp

    t0 = time.perf_counter()
    fitted = geostp.fit(cubes, model, model_args=dict(model_args), advection=advection, loss=loss,
                        input_steps=4 if advection else 6, output_steps=output_steps, patch_size=patch,
                        batch_size=batch,
                        max_iterations=iterations, max_minutes=minutes, epochs=100_000, seed=seed, use_store=False,
                        window_stride=2 if advection else 1, validation_fraction=validation_fraction,
                        device="cpu", progress=False)
    meta = {k: fitted.metadata.get(k) for k in ("iterations", "stopped", "final_loss", "corpus",
                                                "sampling_schedule", "skipped_iterations", "lead_gate",
                                                "from_checkpoint")}
    meta["epochs"] = len(fitted.metadata["epochs"]) if isinstance(fitted.metadata.get("epochs"), list) \
        else fitted.metadata.get("epochs")
    meta.update(wall_seconds=round(time.perf_counter() - t0, 1), planned_iterations=iterations, budget_minutes=minutes,
                parameters=int(sum(p.numel() for p in fitted.model.parameters())), model=model,
                advection=advection, loss=loss, model_args=model_args, patch_size=patch, batch_size=batch,
                output_steps=output_steps, validation_fraction=validation_fraction)
    log(f"trained {model} advection={advection} loss={loss}: {meta}")
    return fitted, meta


def evaluate(cube, models: dict[str, Any], refs: list, tile: int | None, overlap: int) -> dict[str, Any]:
    import geostp

    t0 = time.perf_counter()
    sc = geostp.evaluate(cube, models, steps=STEPS, reference_times=refs, metrics=METRICS, thresholds=THRESHOLDS,
                         scales=SCALES, device="cpu", tile=tile, overlap=overlap, progress=False, print_table=False)
    from geostp.evaluate import format_table

    print(format_table(sc), flush=True)
    return {"eval_seconds": round(time.perf_counter() - t0, 1), **scores_to_dict(sc)}


def ungated(fitted):
    """The same weights with the whole learned change (no lead gate): what the gate changed."""
    import copy

    out = copy.copy(fitted)
    out.model = copy.deepcopy(fitted.model)
    out.model.set_lead_gate(None)
    return out


def with_pm(fitted):
    import copy

    pm = copy.copy(fitted)
    pm.metadata = {**fitted.metadata, "probability_matching": True}
    return pm


def save_part(name: str, data: dict[str, Any]) -> None:
    PARTS.mkdir(parents=True, exist_ok=True)
    data = {"phase": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": "python " + " ".join(sys.argv),
            "load_average_end": list(os.getloadavg()), **data}
    (PARTS / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    log(f"wrote {PARTS / (name + '.json')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", default="all",
                    help="all, or a comma-separated list of baselines, main, record, ablations, loso, report")
    ap.add_argument("--iterations", "--steps", dest="iterations", type=int, default=1000,
                    help="optimiser iterations of the main run (--steps: the earlier name)")
    ap.add_argument("--minutes", type=float, default=40.0, help="wall-clock cap of the main run's training")
    ap.add_argument("--ablation-iterations", "--ablation-steps", dest="ablation_iterations", type=int, default=250,
                    help="optimiser iterations of each ablation and of the leave-one-source-out run")
    ap.add_argument("--ablation-minutes", type=float, default=8.0)
    ap.add_argument("--ablation-refs", type=int, default=12,
                    help="reference times the ablations are verified on (a subset of the 12, evenly spread)")
    ap.add_argument("--ablation-variants", default="all",
                    help="ablations: a comma-separated subset of the variants (they are merged into the part on disk)")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tile", type=int, default=64, help="learned models forecast in tiles of the patch size")
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default="sprog", choices=["sprog", "extrapolation"],
                    help="main and loso: what the learned change is added to (advection=...)")
    ap.add_argument("--output-steps", type=int, default=12,
                    help="main and loso: leads trained at once (12: the whole hour, no forecast fed back)")
    ap.add_argument("--validation-fraction", type=float, default=0.33,
                    help="main: the last part of each corpus cube held out where both parts hold a window (with 16 "
                         "frames a window, 0.33 holds out KNMI's last 30 frames only); the lead gate is calibrated "
                         "there")
    ap.add_argument("--save-model", type=Path, default=REPO / "geostp" / "weights" / "tau_radar.pt")
    ap.add_argument("--save-loso", type=Path, default=None,
                    help="loso: also save the model trained without FMI here (to study its transfer later)")
    args = ap.parse_args()
    os.environ.setdefault("GEOSTP_DATA", str(REPO.parent / "shared" / "data"))
    os.environ.setdefault("GEOSTP_MODEL_STORE", tempfile.mkdtemp(prefix="geostp-radar-skill-store-"))
    warnings.filterwarnings("ignore")
    phases = ["main", "record", "baselines", "report", "loso", "ablations", "report"] if args.phase == "all" \
        else args.phase.split(",")
    for ph in phases:
        log(f"phase {ph}")
        globals()[f"phase_{ph}"](args)


def _harmonised(names: list[str]):
    from geostp.stream.lagrangian import harmonise

    src = open_sources()
    cubes = [src[n].load() for n in names]
    return harmonise(cubes, "precipitation", pixel=1000.0, step="5min")


def phase_baselines(args) -> None:
    import geostp
    from geostp.stream.lagrangian import harmonise

    src = open_sources()
    out: dict[str, Any] = {}
    for event in ("mch_2017", "fmi"):
        cube = src[event].load()
        models = {"persistence": geostp.fit(cube, "persistence", model_args={"input_steps": 1}),
                  "optical_flow": geostp.fit(cube, "optical_flow", model_args={"input_steps": 3}),
                  "sprog": geostp.fit(cube, "sprog", model_args={"input_steps": 3})}
        refs = refs_for(cube)
        out[event] = {"reference_times": [str(t) for t in refs], **evaluate(cube, models, refs, None, 0)}
    try:
        harmonise([src["mch_2016"], src["bom"]], "precipitation", pixel=1000.0, step="5min")
        out["bom_in_corpus"] = "accepted"
    except geostp.GeostpError as exc:
        out["bom_in_corpus"] = f"refused: {exc}"
    save_part("baselines", out)


def _label(args) -> str:
    return "tau_sprog_base" if args.base == "sprog" else "tau_advection"


def phase_main(args) -> None:
    import torch

    cubes = _harmonised(CORPUS)
    fitted, meta = train(cubes, "tau", iterations=args.iterations, minutes=args.minutes, advection=args.base,
                         model_args=TAU_ARGS, patch=args.patch, batch=args.batch, seed=args.seed,
                         output_steps=args.output_steps, validation_fraction=args.validation_fraction)
    complete = meta["iterations"] >= 0.9 * args.iterations
    if complete and args.save_model:
        args.save_model.parent.mkdir(parents=True, exist_ok=True)
        fitted.metadata.update(corpus_sources=CORPUS, training_run=meta)
        fitted.save(args.save_model)
        log(f"saved {args.save_model} ({args.save_model.stat().st_size / 1e6:.2f} MB)")
    else:
        log(f"NOT saving the weights: {meta['iterations']} of {args.iterations} planned iterations")
    src = open_sources()
    test = src["mch_2017"].load()
    refs = refs_for(test)
    label = _label(args)
    runs = {label: fitted, label + "_pm": with_pm(fitted)}
    if fitted.model.lead_gate is not None:
        runs[label + "_ungated"] = ungated(fitted)
    res = evaluate(test, runs, refs, args.tile, args.overlap)
    save_part("main", {"training": meta, "saved": str(args.save_model) if complete else None,
                       "torch_threads": torch.get_num_threads(), "mch_2017": res})


def phase_ablations(args) -> None:
    src = open_sources()
    test = src["mch_2017"].load()
    refs = refs_for(test)
    refs = [refs[i] for i in np.unique(np.round(np.linspace(0, len(refs) - 1, args.ablation_refs)).astype(int))]
    cubes = _harmonised(CORPUS)
    import geostp

    mch = geostp.open_catalog("radar").open("mch")
    eul_train = mch.sel(time=slice(None, "2016-12-31")).load()
    variants = {
        "tau_advection_weighted": (cubes, "tau", True, "weighted", TAU_ARGS),
        "tau_advection_mse": (cubes, "tau", True, "mse", TAU_ARGS),
        "predrnn_v2_advection_weighted": (cubes, "predrnn_v2", True, "weighted", PREDRNN_ARGS),
        "tau_eulerian_mse": (eul_train, "tau", False, "mse", TAU_ARGS),
    }
    if args.ablation_variants != "all":
        wanted = args.ablation_variants.split(",")
        unknown = sorted(set(wanted) - set(variants))
        if unknown:
            raise SystemExit(f"--ablation-variants: unknown {unknown}; choose from {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in wanted}
    part = PARTS / "ablations.json"
    out: dict[str, Any] = {}
    if args.ablation_variants != "all" and part.exists():
        old = json.loads(part.read_text())
        if old.get("baselines", {}).get("reference_times") == [str(t) for t in refs]:
            out = {k: v for k, v in old.items() if isinstance(v, dict) and "mch_2017" in v}
    # the baselines on the same reference times, so that every row of the table is measured side by side
    if "baselines" not in out:
        base_models = {"optical_flow": geostp.fit(test, "optical_flow", model_args={"input_steps": 3}),
                       "sprog": geostp.fit(test, "sprog", model_args={"input_steps": 3})}
        out["baselines"] = {"training": None, "reference_times": [str(t) for t in refs],
                            "mch_2017": evaluate(test, base_models, refs, None, 0)}
        save_part("ablations", out)
    for label, (data, model, adv, loss, margs) in variants.items():
        fitted, meta = train(data, model, iterations=args.ablation_iterations, minutes=args.ablation_minutes, advection=adv,
                             loss=loss, model_args=margs, patch=args.patch, batch=args.batch, seed=args.seed)
        models = {label: fitted}
        if adv:
            models[label + "_pm"] = with_pm(fitted)
        out[label] = {"training": meta, "reference_times": [str(t) for t in refs],
                      "mch_2017": evaluate(test, models, refs, args.tile, args.overlap)}
        save_part("ablations", out)


def phase_loso(args) -> None:
    names = [n for n in CORPUS if n != "fmi"]
    cubes = _harmonised(names)
    fitted, meta = train(cubes, "tau", iterations=args.ablation_iterations, minutes=args.ablation_minutes,
                         advection=args.base, model_args=TAU_ARGS, patch=args.patch, batch=args.batch, seed=args.seed,
                         output_steps=args.output_steps, validation_fraction=args.validation_fraction)
    if args.save_loso and meta["iterations"] >= 0.9 * args.ablation_iterations:
        args.save_loso.parent.mkdir(parents=True, exist_ok=True)
        fitted.metadata.update(corpus_sources=names, training_run=meta)
        fitted.save(args.save_loso)
        log(f"saved {args.save_loso}")
    fmi = open_sources()["fmi"].load()
    refs = refs_for(fmi)
    label = _label(args) + "_without_fmi"
    res = evaluate(fmi, {label: fitted, label + "_pm": with_pm(fitted)}, refs, args.tile, args.overlap)
    save_part("loso", {"corpus": names, "training": meta, "fmi": {"reference_times": [str(t) for t in refs], **res}})


#: The small fixed case the shipped weights' recorded score is computed on (tests/test_pretrained.py).
RECORD_CASE = {"n_times": 30, "ny": 48, "nx": 48, "seed": 5, "reference_index": 20, "steps": 6}


def record_score(path: Path) -> dict[str, Any]:
    """MSE per lead of the weights at ``path`` on :data:`RECORD_CASE` (synthetic, generated in code)."""
    import geostp
    from geostp.testing import small_cube

    c = RECORD_CASE
    cube = small_cube(c["n_times"], c["ny"], c["nx"], seed=c["seed"], backend="numpy")
    fitted = geostp.load_forecaster(path)
    fitted.schema = None
    ref = cube["time"].values[c["reference_index"]]
    fc = fitted.predict(cube, c["steps"], reference_times=[ref])
    obs = cube["precipitation"].isel(time=slice(c["reference_index"] + 1, c["reference_index"] + 1 + c["steps"]))
    err = (fc.values[0] - obs.values) ** 2
    return {**c, "mse": [float(np.nanmean(e)) for e in err]}


def phase_record(args) -> None:
    """Write the shipped weights' recorded score beside them (``<weights>.json``)."""
    path = args.save_model
    rec = {"weights": path.name, "bytes": path.stat().st_size, "record": record_score(path)}
    main = PARTS / "main.json"
    if main.exists():
        part = json.loads(main.read_text())
        rec["training"] = part["training"]
        rec["mch_2017"] = part["mch_2017"]
    path.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    log(f"wrote {path.with_suffix('.json')}")


def _iterations(training: dict[str, Any]) -> Any:
    """Optimiser iterations of a training record (parts written before the rename say ``steps``)."""
    return training.get("iterations", training.get("steps"))


_LEGEND = ("Rows: `tau_sprog_base` is the main run's model (advection-aware TAU learning the change from S-PROG's "
           "forecast in the moving frame, 12 leads at once, the change of each lead scaled by the lead gate calibrated "
           "on the held-out windows); `_ungated` is the same weights with the whole change; `tau_sprog_base_v1` is "
           "the first S-PROG-based run (all windows trained on, no gate; `main_v1.json`); `tau_advection` is the "
           "earlier run learning from the newest frame (6 leads fed back beyond 30 min; `main_extrapolation.json`); "
           "`_without_fmi` rows are the leave-one-source-out run; `_pm` adds CDF probability matching to the newest "
           "observation.")


def _row(part: str, label: str) -> str:
    """A row's name in the report: the first S-PROG-based run (``main_v1``) gets ``_v1`` after its label."""
    return label.replace("tau_sprog_base", "tau_sprog_base_v1", 1) if part == "main_v1" else label


def _verdict(scores: dict[str, dict[str, list[float]]], leads: list[int]) -> list[str]:
    """Per learned row: the leads where it beats both extrapolation and S-PROG (CSI at 1 mm/h up, MSE down)."""
    lines = []
    for model in scores.get("csi_1", {}):
        if model in ("persistence", "optical_flow", "sprog"):
            continue
        parts = []
        for var, better in (("csi_1", max), ("mse", min)):
            per = scores.get(var, {})
            if not {"optical_flow", "sprog", model} <= set(per):
                continue
            wins = [lead for i, lead in enumerate(leads)
                    if better(per[model][i], per["optical_flow"][i], per["sprog"][i]) == per[model][i]
                    and per[model][i] not in (per["optical_flow"][i], per["sprog"][i])]
            parts.append(f"{var} at {', '.join(map(str, wins)) or 'no'} min")
        if parts:
            lines.append(f"- `{model}` beats both extrapolation and S-PROG on " + "; on ".join(parts)
                         + f" (of {len(leads)} leads).")
    return (lines + [""]) if lines else []


def _table(scores: dict[str, dict[str, list[float]]], leads: list[int], var: str, show: list[int]) -> list[str]:
    cols = [leads.index(m) for m in show if m in leads]
    lines = [f"| {var} | " + " | ".join(f"{leads[c]} min" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for model, vals in scores.get(var, {}).items():
        lines.append(f"| {model} | " + " | ".join(f"{vals[c]:.3f}" for c in cols) + " |")
    return lines


def phase_report(args) -> None:
    import torch

    parts = {p.stem: json.loads(p.read_text()) for p in sorted(PARTS.glob("*.json"))}
    show = [5, 10, 15, 20, 30, 40, 45, 50, 60]
    md = ["# Radar nowcasting skill: advection-aware TAU on a multi-source corpus (CPU)", "",
          f"Assembled {time.strftime('%Y-%m-%d %H:%M')} on {platform.platform()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}); the two cores were shared "
          "with other work. Each part's own command, date and load are in `radar_skill_parts/*.json`.", "",
          "Data: MeteoSwiss, KNMI, FMI (pysteps example data set); cite the providers where these numbers are shown.",
          "Scores from `geostp.evaluate`: MSE in (mm/h)^2, `csi_T` at T mm/h, `fss_1_8` at 1 mm/h over 8 x 8 km; "
          "means over the reference times.", ""]
    merged: dict[str, Any] = {}
    for event, title in (("mch_2017", "MeteoSwiss 2017-01-31 (never trained on), whole domain, 12 reference times"),
                         ("fmi", "FMI 2016-09-28, 12 reference times (leave-one-source-out)")):
        scores: dict[str, dict[str, list[float]]] = {}
        leads: list[int] = []
        for part in ("baselines", "main_extrapolation", "main_v1", "main", "loso"):
            res = parts.get(part, {}).get(event)
            if res:
                leads = res["lead_minutes"]
                for var, per in res["scores"].items():
                    scores.setdefault(var, {}).update({_row(part, k): v for k, v in per.items()})
        if not scores:
            continue
        merged[event] = {"lead_minutes": leads, "scores": scores}
        md += [f"## {title}", ""]
        if event == "mch_2017":
            md += [_LEGEND, ""]
        for var in ("mse", "csi_1", "csi_5", "fss_1_8"):
            md += _table(scores, leads, var, show) + [""]
        md += _verdict(scores, leads)
    for part, title in (("main", "The main run"),
                        ("loso", "The leave-one-source-out run (the main recipe without FMI)"),
                        ("main_v1", "The first S-PROG-based run (no validation part, no lead gate)"),
                        ("main_extrapolation", "The earlier main run (extrapolation base, 6 output steps)")):
        if part in parts:
            tr = parts[part]["training"]
            md += [f"## {title}", "", f"`{parts[part]['command']}` ({parts[part]['date']})", "", "```",
                   json.dumps(tr, indent=1, default=str), "```", ""]
    if "ablations" in parts:
        md += ["## Ablations (each trained for the same short budget; MeteoSwiss 2017-01-31)", "",
               "Advection-aware rows learn from the extrapolation base with 6 output steps (fed back beyond 30 min); "
               "`_pm` rows add probability matching. Every row is verified on the same reference times.", ""]
        rows = {}
        for label, res in parts["ablations"].items():
            if not (isinstance(res, dict) and "mch_2017" in res):
                continue  # the part's own facts (phase, date, command, load)
            for var, per in res["mch_2017"]["scores"].items():
                rows.setdefault(var, {}).update(per)
            leads = res["mch_2017"]["lead_minutes"]
            t = res["training"]
            if t is None:
                md.append(f"- `{label}`: pysteps' extrapolation and S-PROG on the same {len(res['reference_times'])} "
                          "reference times")
                continue
            md.append(f"- `{label}`: {_iterations(t)} iterations in {t['wall_seconds']:.0f} s ({t['stopped']}), "
                      f"{t['parameters']:,} parameters")
        md.append("")
        for var in ("mse", "csi_1", "csi_5", "fss_1_8"):
            md += _table(rows, leads, var, show) + [""]
    if "baselines" in parts:
        md += [f"BoM in the corpus at 1 km / 5 min: {parts['baselines'].get('bom_in_corpus')}", ""]
    out = REPO / "benchmarks" / "results"
    (out / "radar_skill.md").write_text("\n".join(md) + "\n")
    (out / "radar_skill.json").write_text(json.dumps({"parts": parts, "merged": merged}, indent=1, default=str))
    log(f"wrote {out / 'radar_skill.md'}")


if __name__ == "__main__":
    main()
