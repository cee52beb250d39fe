"""Scale-out benchmark: ingest and statistics on dask (local threads vs a 2-worker LocalCluster),
training with 1 and 2 DDP processes (gloo, CPU), and an estimate for a multi-year archive.

Measured on this machine, in one run:

- ingest of a lazily generated synthetic radar cube into a chunked zarr store (generation + encode +
  write), and of that store into a second one (read + decode + encode + write: what an ingest of
  already decoded data costs), with dask's local threads and with a 2-worker ``LocalCluster``;
- normalisation statistics over the store, local threads and the cluster;
- the streaming loader alone (samples/s, one process), and training a small TAU with 1 process
  (2 torch threads) and with 2 DDP processes (gloo, 1 thread each) at the same global batch;
- from those per-sample costs, an estimate of what a multi-year radar archive would need.

Usage::

    .venv/bin/python benchmarks/scale.py           # full run (a few minutes)
    .venv/bin/python benchmarks/scale.py --quick   # small cube, few steps, to check the script

Results go to ``benchmarks/results/scale.json`` and ``scale.md`` (``--quick`` writes them under
``/tmp/geostp-bench/scale-quick`` unless ``--out`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN_WORKER = r'''
import json, os, sys, time
import torch
import geostp.models as models
from geostp.train.ddp import barrier, init_from_env, rank, shutdown, world_size
from geostp.stream import CubeDataset, WindowSpec, Normalizer, make_loader
from geostp.train.trainer import Trainer, TrainSettings

store, out, global_batch, steps, warmup, patch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
init_from_env()
torch.manual_seed(0)
norm = Normalizer.from_dict(json.loads(open(os.path.join(out, "normalizer.json")).read()))
spec = WindowSpec(input_steps=4, output_steps=4, patch_size=patch, patch_stride=patch)
ds = CubeDataset(store, ["precipitation"], spec, normalizer=norm, batch_size=global_batch // world_size(),
                 shuffle=True, seed=0, drop_last=True)
net = models.get("tau", input_steps=4, output_steps=4, channels=1, spatial_hidden_channels=16,
                 temporal_hidden_channels=64, spatial_blocks=2, temporal_blocks=4)
stamps = []
def on_step(trainer, record):
    stamps.append(time.perf_counter())
settings = TrainSettings(epochs=100, max_iterations=steps, lr=1e-3, schedule="constant", device="cpu",
                         progress=False, seed=0)
trainer = Trainer(net, settings, on_step=on_step)
barrier()
t0 = time.perf_counter()
result = trainer.fit(make_loader(ds, 0), None, resume=False)
barrier()
t1 = time.perf_counter()
if rank() == 0:
    timed = stamps[warmup - 1:]
    per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    json.dump({"world_size": world_size(), "per_rank_batch": global_batch // world_size(),
               "steps": len(stamps), "timed_steps": len(timed) - 1, "s_per_step": per_step,
               "samples_per_s": global_batch / per_step, "wall_s": t1 - t0,
               "params": sum(p.numel() for p in net.parameters()),
               "final_loss": result.history[-1]["loss"], "threads": torch.get_num_threads()},
              open(os.path.join(out, f"train_{world_size()}.json"), "w"))
shutdown()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()[:1]] if hasattr(os, "getloadavg") else []


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def bench_data(work: Path, n_times: int, size: int) -> dict:
    from distributed import Client, LocalCluster

    from geostp.data.synthetic import synthetic_radar
    from geostp.store import ingest, open_cube
    from geostp.stream import compute_statistics

    cube = synthetic_radar(n_times=n_times, ny=size, nx=size, seed=0, time_chunk=20)
    decoded = n_times * size * size * 4
    res: dict = {"cube": {"frames": n_times, "ny": size, "nx": size, "decoded_bytes": decoded,
                          "chunks": [20, min(size, 256), min(size, 256)]}}
    rows = []

    def row(what, scheduler, seconds, frames):
        rows.append({"what": what, "scheduler": scheduler, "seconds": round(seconds, 3),
                     "frames_per_s": round(frames / seconds, 1),
                     "decoded_mb_per_s": round(frames * size * size * 4 / seconds / 1e6, 1),
                     "ms_per_frame_megapixel": round(seconds / (frames * size * size / 1e6) * 1e3, 2),
                     "load": _load()})

    src = work / "synthetic.zarr"
    _, s = _timed(ingest, cube, src, overwrite=True, progress=False)
    row("ingest: generate synthetic radar -> zarr", "local threads (2)", s, n_times)
    res["cube"]["stored_bytes"] = _store_bytes(src)
    stored = open_cube(src)
    _, s = _timed(ingest, stored, work / "copy_local.zarr", overwrite=True, progress=False)
    row("ingest: zarr -> zarr (read, decode, encode, write)", "local threads (2)", s, n_times)
    norm, s = _timed(compute_statistics, stored, ["precipitation"])
    row("normalisation statistics over the store", "local threads (2)", s, n_times)

    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40)
    client = Client(cluster, set_as_default=False)
    res["cluster_start_s"] = round(time.perf_counter() - t, 2)
    try:
        # first small computations import the code (generator, zarr, xarray) in the workers; not counted
        compute_statistics(synthetic_radar(n_times=20, ny=32, nx=32), ["precipitation"], client=client)
        compute_statistics(stored.isel(time=slice(0, 20)), ["precipitation"], client=client)
        _, s = _timed(ingest, cube, work / "synthetic_cluster.zarr", overwrite=True, progress=False,
                      client=client)
        row("ingest: generate synthetic radar -> zarr", "LocalCluster, 2 workers x 1 thread", s, n_times)
        _, s = _timed(ingest, stored, work / "copy_cluster.zarr", overwrite=True, progress=False, client=client)
        row("ingest: zarr -> zarr (read, decode, encode, write)", "LocalCluster, 2 workers x 1 thread", s, n_times)
        remote, s = _timed(compute_statistics, stored, ["precipitation"], client=client)
        row("normalisation statistics over the store", "LocalCluster, 2 workers x 1 thread", s, n_times)
        res["statistics_equal"] = bool(abs(remote.mean["precipitation"] - norm.mean["precipitation"]) < 1e-9
                                       and abs(remote.std["precipitation"] - norm.std["precipitation"]) < 1e-9)
    finally:
        client.close()
        cluster.close()
    import numpy as np

    a = open_cube(work / "copy_local.zarr")["precipitation"].values
    b = open_cube(work / "copy_cluster.zarr")["precipitation"].values
    res["ingest_equal"] = bool(np.array_equal(a, b, equal_nan=True))
    res["rows"] = rows
    (work / "normalizer.json").write_text(json.dumps(norm.to_dict()))
    res["store"] = str(src)
    return res


def bench_loader(store: Path, work: Path, patch: int, batches: int) -> dict:
    from geostp.stream import CubeDataset, Normalizer, WindowSpec, make_loader
    from geostp.stream.windows import SAMPLE_DTYPE

    norm = Normalizer.from_dict(json.loads((work / "normalizer.json").read_text()))
    spec = WindowSpec(input_steps=4, output_steps=4, patch_size=patch, patch_stride=patch)
    ds = CubeDataset(str(store), ["precipitation"], spec, normalizer=norm, batch_size=8, shuffle=True, seed=0,
                     drop_last=True)
    loader = make_loader(ds, 0)
    ds.set_epoch(0)
    t = time.perf_counter()
    n = 0
    for i, batch in enumerate(loader):
        if i == 0:
            t = time.perf_counter()
            continue
        n += batch["x"].shape[0]
        if i >= batches:
            break
    s = time.perf_counter() - t
    plan = ds._plan(0)
    plan_bytes = plan.samples.nbytes + plan.unit.nbytes + plan.order.nbytes + plan.local.nbytes
    return {"samples_per_s": round(n / s, 1), "samples": n, "samples_per_epoch": len(plan.samples),
            "plan_bytes": int(plan_bytes), "plan_bytes_per_sample": round(plan_bytes / len(plan.samples), 1),
            "sample_record_bytes": SAMPLE_DTYPE.itemsize, "block": list(ds.block), "load": _load()}


def bench_train(store: Path, work: Path, nproc: int, threads: int, global_batch: int, steps: int, warmup: int,
                patch: int) -> dict:
    script = work / "train_worker.py"
    script.write_text(TRAIN_WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    threads = str(threads)  # (a LocalCluster leaves MKL/OMP=1 in this process's environment: set all three)
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               PYTHONPATH=str(REPO))
    args = [str(script), str(store), str(work), str(global_batch), str(steps), str(warmup), str(patch)]
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training with {nproc} process(es) failed:\n{proc.stderr[-4000:]}")
    out = json.loads((work / f"train_{nproc}.json").read_text())
    out["threads"] = int(threads)
    out["launch_to_exit_s"] = round(time.perf_counter() - t, 2)
    out["load"] = _load()
    return out


def estimate(data: dict, loader: dict, train: dict, patch: int) -> dict:
    """A multi-year radar archive, from the per-frame and per-sample costs measured above."""
    years, minutes, ny, nx = 10, 5, 710, 640  # a national composite (MeteoSwiss CPC's grid) every 5 minutes
    frames = int(years * 365.25 * 24 * 60 / minutes)
    mpix = ny * nx / 1e6
    rows = {(r["what"], r["scheduler"].startswith("Local")): r for r in data["rows"]}
    ratio = data["cube"]["stored_bytes"] / data["cube"]["decoded_bytes"]
    def cost(what: str) -> float:
        # core-seconds per frame-megapixel: both schedulers used the 2 cores; the cheaper one counts
        # (on a small cube the cluster's per-task overhead dominates; on a large one it is amortised)
        return min(rows[(what, c)]["ms_per_frame_megapixel"] for c in (False, True)) * 2 / 1e3

    ingest_core_s = cost("ingest: zarr -> zarr (read, decode, encode, write)") * frames * mpix
    stats_core_s = cost("normalisation statistics over the store") * frames * mpix
    windows = frames - 8 + 1
    patches = (ny // patch) * (nx // patch)
    samples = windows * patches
    per_sample_core_s = {k: v["world_size"] * v["threads"] / v["samples_per_s"] for k, v in train.items()}
    best = min(per_sample_core_s.values())
    return {
        "archive": {"years": years, "step_minutes": minutes, "ny": ny, "nx": nx, "frames": frames,
                    "decoded_tb": round(frames * ny * nx * 4 / 1e12, 2),
                    "stored_tb_at_measured_ratio": round(frames * ny * nx * 4 * ratio / 1e12, 3),
                    "compression_ratio": round(1 / ratio, 1)},
        "ingest": {"core_hours": round(ingest_core_s / 3600, 2),
                   "hours_on_64_workers": round(ingest_core_s / 64 / 3600, 3),
                   "note": "zarr->zarr cost; an adapter's file decoding (netCDF/HDF5/GIF) comes on top"},
        "statistics": {"core_hours": round(stats_core_s / 3600, 2),
                       "minutes_on_64_workers": round(stats_core_s / 64 / 60, 2)},
        "samples_per_epoch": {"windows": windows, "patches_per_window": patches, "samples": samples,
                              "plan_gb_per_rank": round(samples * loader["plan_bytes_per_sample"] / 1e9, 2)},
        "loader": {"core_hours_per_epoch": round(samples / loader["samples_per_s"] / 3600, 1)},
        "training": {"cpu_core_s_per_sample": round(best, 5),
                     "cpu_core_hours_per_epoch": round(samples * best / 3600, 0),
                     "days_per_epoch_on_8_nodes_x_32_cores": round(samples * best / (8 * 32) / 86400, 2)},
    }


def write_md(res: dict, path: Path) -> None:
    d, ld, tr, est = res["data"], res["loader"], res["train"], res["estimate"]
    c = d["cube"]
    lines = [
        "# Scale-out benchmark",
        "",
        f"Command: `{res['command']}` ({res['date']}, {res['cpus']} CPUs, torch {res['torch']}, "
        f"dask {res['dask']}, distributed {res['distributed']}).",
        "The machine was shared with other jobs; the 1-minute load average is given beside each figure.",
        "",
        f"Cube: {c['frames']} x {c['ny']} x {c['nx']} float32 synthetic radar rain rate, "
        f"{c['decoded_bytes'] / 1e6:.0f} MB decoded, {c['stored_bytes'] / 1e6:.1f} MB on disk, "
        f"chunks {tuple(c['chunks'])}.",
        "",
        "## Data on dask: local threads and a 2-worker LocalCluster",
        "",
        "| work | scheduler | s | frames/s | decoded MB/s | ms per frame-megapixel | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        lines.append(f"| {r['what']} | {r['scheduler']} | {r['seconds']} | {r['frames_per_s']} | "
                     f"{r['decoded_mb_per_s']} | {r['ms_per_frame_megapixel']} | {r['load']} |")
    lines += [
        "",
        f"Starting the LocalCluster took {d['cluster_start_s']} s (not counted). The cluster's stores equal "
        f"the local ones: {d['ingest_equal']}; its statistics equal the local ones: {d['statistics_equal']}.",
        "",
        "## Training: 1 process vs 2 DDP processes (gloo, CPU)",
        "",
        f"TAU with {tr['1x1']['params']:,} parameters, 4 + 4 frames of {res['patch']} x {res['patch']}, "
        f"global batch {res['global_batch']}, streamed from the store (CubeDataset, shard='streams', no "
        f"loader workers). Step time is the mean over {tr['1x1']['timed_steps']} steps after "
        f"{res['warmup']} warm-up steps.",
        "",
        "| processes | threads each | batch per rank | s/step | samples/s | launch to exit (s) | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in tr.values():
        lines.append(f"| {t['world_size']} | {t['threads']} | {t['per_rank_batch']} | {t['s_per_step']:.3f} | "
                     f"{t['samples_per_s']:.1f} | {t['launch_to_exit_s']} | {t['load']} |")
    one = max(tr["1x1"]["samples_per_s"], tr["1x2"]["samples_per_s"])
    lines += [
        "",
        f"2 DDP processes / the faster 1-process run: **{tr['2x1']['samples_per_s'] / one:.2f}x**; "
        f"2 processes x 1 thread / 1 process x 1 thread: **{tr['2x1']['samples_per_s'] / tr['1x1']['samples_per_s']:.2f}x** "
        "(the ideal is 2x: each DDP process brings its own core, and pays for the gloo all-reduce of "
        f"{tr['1x1']['params'] * 4 / 1e6:.1f} MB of gradients per step). One process with 2 threads suffers "
        "most when other jobs share the cores (intra-op threads wait for each other), as the load shows.",
        "",
        f"The loader alone (one process, no workers): {ld['samples_per_s']} samples/s "
        f"(load {ld['load']}); the epoch plan holds {ld['plan_bytes_per_sample']} bytes per sample "
        f"({ld['sample_record_bytes']} in the sample record); read blocks of {tuple(ld['block'])} origins "
        "(sequence, time, y, x).",
        "",
        "## Estimate for a multi-year archive",
        "",
    ]
    a = est["archive"]
    sp = est["samples_per_epoch"]
    lines += [
        f"{a['years']} years of {a['step_minutes']}-minute composites on a {a['ny']} x {a['nx']} grid: "
        f"{a['frames']:,} frames, {a['decoded_tb']} TB decoded, about {a['stored_tb_at_measured_ratio']} TB "
        f"stored at the compression measured here ({a['compression_ratio']}x; real radar compresses "
        "differently).",
        "",
        f"- **Ingest** (zarr -> zarr, the cheaper scheduler's core-seconds): {est['ingest']['core_hours']} core-hours, "
        f"{est['ingest']['hours_on_64_workers']} h on 64 dask workers; {est['ingest']['note']}.",
        f"- **Statistics**: {est['statistics']['core_hours']} core-hours, "
        f"{est['statistics']['minutes_on_64_workers']} min on 64 workers.",
        f"- **Samples per epoch** (every window, {sp['patches_per_window']} non-overlapping "
        f"{res['patch']} x {res['patch']} patches each): {sp['samples']:,}; the epoch plan needs "
        f"{sp['plan_gb_per_rank']} GB on every rank (a rain filter or a patch stride shrinks it; this, not "
        "the cube, is what has to fit in memory).",
        f"- **Loader**: {est['loader']['core_hours_per_epoch']} core-hours per epoch at the measured rate, "
        "spread over the ranks' loader workers (shard='streams': each rank reads only its share).",
        f"- **Training** the small TAU on CPUs: {est['training']['cpu_core_s_per_sample']} core-s per sample "
        f"(best of the runs), {est['training']['cpu_core_hours_per_epoch']:,.0f} core-hours per epoch, "
        f"{est['training']['days_per_epoch_on_8_nodes_x_32_cores']} days per epoch on 8 nodes x 32 cores. "
        "Such an archive is trained on GPUs, with a rain filter and a sub-sampled epoch "
        "(`training.max_iterations`), not by full CPU epochs.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small cube and few steps")
    parser.add_argument("--out", default=None, help="results folder")
    parser.add_argument("--work", default=None, help="scratch folder for the stores (default: a temp dir)")
    args = parser.parse_args()
    import dask
    import distributed
    import torch

    quick = args.quick
    out = Path(args.out) if args.out else (Path("/tmp/geostp-bench/scale-quick") if quick
                                           else REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="geostp-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    n_times, size = (100, 128) if quick else (600, 256)
    patch, global_batch = 64, 8
    steps, warmup = (6, 2) if quick else (30, 5)
    t0 = time.perf_counter()
    try:
        print(f"data: {n_times} x {size} x {size} ...", flush=True)
        data = bench_data(work, n_times, size)
        store = Path(data["store"])
        print("loader ...", flush=True)
        loader = bench_loader(store, work, patch, 10 if quick else 60)
        train = {}
        for nproc, threads in ((1, 1), (2, 1), (1, 2)):
            print(f"training, {nproc} process(es) x {threads} thread(s) ...", flush=True)
            train[f"{nproc}x{threads}"] = bench_train(store, work, nproc, threads, global_batch, steps, warmup,
                                                      patch)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    cmd = "benchmarks/scale.py" + (" --quick" if quick else "")
    res = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
           "machine": platform.machine(), "torch": torch.__version__, "dask": dask.__version__,
           "distributed": distributed.__version__, "patch": patch, "global_batch": global_batch,
           "warmup": warmup, "data": data, "loader": loader, "train": train}
    res["estimate"] = estimate(data, loader, train, patch)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "scale.json").write_text(json.dumps(res, indent=2))
    write_md(res, out / "scale.md")
    print((out / "scale.md").read_text())
    print(f"wrote {out / 'scale.json'} and {out / 'scale.md'} in {res['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
