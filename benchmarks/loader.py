"""Loader benchmark: geostp's streaming dataset against xbatcher and the store's raw read bandwidth.

Builds (once, cached) a zarr cube of synthetic radar rain rate (default 4000 x 512 x 512
float32, 4.2 GB decoded), then measures, in one run so that the machine's load is shared:

- the raw read-and-decompress bandwidth of the store (every chunk of a portion, zarr-python),
  and the windows/s it implies for 20 x 64 x 64 float32 windows;
- xbatcher's BatchGenerator (20 x 64 x 64 windows) in a torch DataLoader, 0 and 2 workers;
- geostp's CubeDataset (10 input + 10 target frames, 64 x 64 patches) with 0 and 2 workers,
  for all windows (stride 1) and for non-overlapping ones (stride 20, xbatcher's sample set);
- peak memory (RSS and PSS of the main process and its workers) over a full epoch.

Usage::

    .venv/bin/python benchmarks/loader.py            # the full run (generates the cube the first time)
    .venv/bin/python benchmarks/loader.py --quick    # a small cube and short runs, to check the script

Results go to ``benchmarks/results/loader.json`` and ``loader.md`` (``--quick`` writes them
under ``/tmp/geostp-bench/quick`` unless ``--out`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WINDOW = (20, 64, 64)
WINDOW_BYTES = 4 * WINDOW[0] * WINDOW[1] * WINDOW[2]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


# ----------------------------------------------------------------------------- the cube


def ensure_cube(path: Path, frames: int, size: int, cells: float) -> dict:
    from geostp.store import ingest, open_cube
    from geostp.data.synthetic import synthetic_radar
    from geostp.errors import StoreError

    built = None
    try:
        cube = open_cube(path)
        if cube.sizes["time"] != frames or cube.sizes["y"] != size or cube.attrs.get("bench_cells") != cells:
            raise StoreError("different cube")
    except StoreError:
        log(f"building {frames} x {size} x {size} synthetic radar cube at {path} (once; minutes)")
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = synthetic_radar(frames, size, size, seed=0, cells_per_frame=cells, time_chunk=20)
            ds.attrs["bench_cells"] = cells
            ingest(ds, path, time_chunk=20, spatial_chunk=256, overwrite=True, progress=True)
        built = round(time.perf_counter() - t, 1)
        cube = open_cube(path)
    disk = int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])
    return {
        "path": str(path), "frames": cube.sizes["time"], "ny": cube.sizes["y"], "nx": cube.sizes["x"],
        "decoded_bytes": int(cube["precipitation"].nbytes), "disk_bytes": disk,
        "chunks": list(cube["precipitation"].encoding["chunks"]), "codec": "blosc zstd clevel 3, byte shuffle",
        "cells_per_frame": cells, "build_seconds": built,
    }


# ----------------------------------------------------------------------------- raw bandwidth


def _cpu() -> float:
    """CPU seconds of this process and of its finished (joined) children, e.g. DataLoader workers."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def raw_bandwidth(path: Path, frames: int) -> dict:
    import zarr

    arr = zarr.open_group(path, mode="r")["precipitation"]
    tc, yc, xc = arr.chunks
    nt, ny, nx = arr.shape
    nbytes, t, cpu = 0, time.perf_counter(), _cpu()
    for t0 in range(0, min(frames, nt), tc):
        for y0 in range(0, ny, yc):
            for x0 in range(0, nx, xc):
                nbytes += arr[t0: t0 + tc, y0: y0 + yc, x0: x0 + xc].nbytes
    dt, cpu = time.perf_counter() - t, _cpu() - cpu
    mbs = nbytes / dt / 1e6
    return {"frames_read": min(frames, nt), "bytes": nbytes, "seconds": round(dt, 2), "MB_per_s": round(mbs, 1),
            "implied_windows_per_s": round(nbytes / dt / WINDOW_BYTES, 1),
            "implied_windows_per_cpu_s": round(nbytes / cpu / WINDOW_BYTES, 1), "load": load()}


# ----------------------------------------------------------------------------- xbatcher


def _sync_dask(worker_id: int) -> None:
    import dask

    dask.config.set(scheduler="synchronous")  # the threaded scheduler hangs in forked workers


def _to_tensor(batch):
    import torch

    return torch.as_tensor(np.asarray(batch.values))


def run_xbatcher(path: Path, workers: int, seconds: float, batch_size: int) -> dict:
    import torch
    import xbatcher
    from torch.utils.data import DataLoader
    from xbatcher.loaders.torch import MapDataset

    from geostp.store import open_cube

    cube = open_cube(path)
    gen = xbatcher.BatchGenerator(cube["precipitation"], input_dims=dict(zip(("time", "y", "x"), WINDOW, strict=True)))
    loader = DataLoader(MapDataset(gen, transform=_to_tensor), batch_size=batch_size, shuffle=True,
                        num_workers=workers, worker_init_fn=_sync_dask if workers else None,
                        generator=torch.Generator().manual_seed(0))
    return _time_loader(lambda: loader, seconds, key=None) | {"workers": workers, "samples_in_epoch": len(gen)}


# ----------------------------------------------------------------------------- geostp


def _time_loader(make, seconds: float, key: str | None = "x") -> dict:
    """Samples/s after the first batch (which carries the start-up), and samples per CPU-second overall.

    The CPU time covers this process and the loader's workers (joined when the iterator is dropped),
    so it does not depend on what else the machine runs, unlike samples/s.
    """
    import gc

    cpu0, l0 = _cpu(), load()
    start, first, n, nb, t_first, n_all = time.perf_counter(), None, 0, 0, None, 0
    it = iter(make())
    for batch in it:
        now = time.perf_counter()
        size = (batch[key] if key else batch).shape[0]
        n_all += size
        if first is None:  # the first batch carries the start-up (forks, plan, first read)
            first, t_first = now, now - start
            continue
        n += size
        nb += 1
        if now - first > seconds:
            break
    dt = time.perf_counter() - first
    del it, batch
    gc.collect()
    time.sleep(0.5)  # let the workers exit and be joined, so that their CPU time is counted
    cpu = _cpu() - cpu0
    return {"samples": n, "batches": nb, "seconds": round(dt, 2), "samples_per_s": round(n / dt, 1),
            "first_batch_seconds": round(t_first, 2), "cpu_seconds": round(cpu, 2),
            "samples_per_cpu_s": round(n_all / cpu, 1), "load": [l0, load()]}


def run_geostp(path: Path, spec, normalizer, split, workers: int, seconds: float, batch_size: int,
               reader: str = "auto") -> dict:
    from geostp.store import open_cube
    from geostp.stream import CubeDataset, make_loader

    ds = CubeDataset(open_cube(path), ["precipitation"], spec, split=split, normalizer=normalizer,
                     batch_size=batch_size, seed=0, reader=reader)
    ds.set_epoch(0)
    out = _time_loader(lambda: make_loader(ds, workers), seconds)
    return out | {"workers": workers, "stride": spec.stride, "batches_in_epoch": ds.batches_per_epoch(),
                  "block": list(ds.block), "reader": ds.reader_kind}


# ----------------------------------------------------------------------------- memory over an epoch


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _mem(pid: int) -> tuple[int, int]:
    """RSS and PSS of a process, bytes (PSS splits shared pages among the processes mapping them)."""
    try:
        rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
        pss = int(re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M).group(1)) * 1024
        return rss, pss
    except (OSError, AttributeError):
        return 0, 0


class MemorySampler(threading.Thread):
    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period, self.stop_flag = period, threading.Event()
        self.peak = {"rss_total": 0, "pss_total": 0, "rss_main": 0, "rss_worker_max": 0, "processes": 0}

    def run(self) -> None:
        me = os.getpid()
        while not self.stop_flag.is_set():
            kids = _children(me)
            main = _mem(me)
            workers = [_mem(k) for k in kids]
            p = self.peak
            p["rss_total"] = max(p["rss_total"], main[0] + sum(w[0] for w in workers))
            p["pss_total"] = max(p["pss_total"], main[1] + sum(w[1] for w in workers))
            p["rss_main"] = max(p["rss_main"], main[0])
            p["rss_worker_max"] = max([p["rss_worker_max"], *(w[0] for w in workers)])
            p["processes"] = max(p["processes"], 1 + len(kids))
            time.sleep(self.period)


def memory_epoch(path: Path, spec, normalizer, workers: int, batch_size: int, cube_bytes: int) -> dict:
    from geostp.stream import CubeDataset, make_loader

    ds = CubeDataset(path, ["precipitation"], spec, normalizer=normalizer, batch_size=batch_size, seed=0)
    ds.set_epoch(1)
    sampler = MemorySampler()
    sampler.start()
    t = time.perf_counter()
    l0 = load()
    n = nb = 0
    for batch in make_loader(ds, workers):
        n += batch["x"].shape[0]
        nb += 1
    dt = time.perf_counter() - t
    sampler.stop_flag.set()
    sampler.join()
    p = sampler.peak
    return {
        "workers": workers, "stride": spec.stride, "samples": n, "batches": nb, "seconds": round(dt, 1),
        "samples_per_s": round(n / dt, 1), "load": [l0, load()],
        "peak_rss_total_bytes": p["rss_total"], "peak_pss_total_bytes": p["pss_total"],
        "peak_rss_main_bytes": p["rss_main"], "peak_rss_worker_bytes": p["rss_worker_max"],
        "processes": p["processes"], "cube_bytes": cube_bytes,
        "cube_over_peak_rss_total": round(cube_bytes / max(p["rss_total"], 1), 2),
        "cube_over_peak_pss_total": round(cube_bytes / max(p["pss_total"], 1), 2),
    }


# ----------------------------------------------------------------------------- report


def markdown(r: dict) -> str:
    c, raw = r["cube"], r["raw"]
    mb = 1e6
    lines = [
        "# Loader benchmark",
        "",
        f"Command: `{r['command']}` ({r['date']}, {r['machine']['cpus']} CPUs, torch {r['machine']['torch']}, "
        f"zarr {r['machine']['zarr']}, xbatcher {r['machine']['xbatcher']}).",
        "The machine was shared with other jobs; the 1-minute load average is given beside each figure. All loaders "
        "ran in this one run, so they saw the same conditions.",
        "",
        f"Cube: {c['frames']} x {c['ny']} x {c['nx']} float32 synthetic radar rain rate, "
        f"{c['decoded_bytes'] / 1e9:.2f} GB decoded, {c['disk_bytes'] / 1e9:.2f} GB on disk, chunks "
        f"{tuple(c['chunks'])}, {c['codec']}.",
        "",
        f"Raw read-and-decompress (zarr, every chunk of the first {raw['frames_read']} frames): "
        f"**{raw['MB_per_s']:.0f} MB/s**, i.e. at most **{raw['implied_windows_per_s']:.0f} windows/s** of "
        f"20 x 64 x 64 float32 if every window had to be read on its own (load {raw['load']}); "
        f"{raw['implied_windows_per_cpu_s']:.0f} windows per CPU-second.",
        "",
        "samples/s is wall-clock throughput after the first batch; samples per CPU-second counts the CPU time "
        "of the main process and its workers over the whole run, so it does not depend on the machine's load.",
        "",
        "| loader | sample set | workers | samples/s | x xbatcher (same workers) | / raw implied | "
        "samples per CPU-s | first batch (s) | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    xb = {x["workers"]: x["samples_per_s"] for x in r["xbatcher"]}
    for x in r["xbatcher"]:
        lines.append(f"| xbatcher BatchGenerator + DataLoader | 20x64x64, non-overlapping, shuffled | {x['workers']} | "
                     f"{x['samples_per_s']:.0f} | 1.0 | {x['samples_per_s'] / raw['implied_windows_per_s']:.2f} | "
                     f"{x['samples_per_cpu_s']:.0f} | {x['first_batch_seconds']} | {x['load']} |")
    for g in r["geostp"]:
        what = ("10+10 frames x 64x64, every window (stride 1), shuffled" if g["stride"] == 1
                else f"10+10 frames x 64x64, stride {g['stride']}, shuffled")
        how = "reading zarr directly" if g["reader"] == "zarr" else "reading through xarray + dask (synchronous)"
        lines.append(f"| geostp CubeDataset + make_loader, {how} | {what} | {g['workers']} | {g['samples_per_s']:.0f} | "
                     f"{g['samples_per_s'] / xb[g['workers']]:.1f} | "
                     f"{g['samples_per_s'] / raw['implied_windows_per_s']:.2f} | {g['samples_per_cpu_s']:.0f} | "
                     f"{g['first_batch_seconds']} | {g['load']} |")
    m = r["memory"]
    lines += [
        "",
        f"Statistics for the normaliser (log10 transform, training split = first 80% of frames, "
        f"{r['statistics']['frames']} frames) took {r['statistics']['seconds']:.1f} s, computed chunk by chunk with dask.",
        "",
        f"Memory over a full epoch (stride {m['stride']}, {m['samples']} samples in {m['batches']} batches, "
        f"{m['workers']} workers, {m['seconds']:.0f} s, {m['samples_per_s']:.0f} samples/s): peak RSS summed over the "
        f"main process and its workers **{m['peak_rss_total_bytes'] / mb:.0f} MB** (main {m['peak_rss_main_bytes'] / mb:.0f} MB, "
        f"largest worker {m['peak_rss_worker_bytes'] / mb:.0f} MB), peak PSS sum {m['peak_pss_total_bytes'] / mb:.0f} MB; "
        f"the cube is {m['cube_over_peak_rss_total']:.1f}x the summed RSS ({m['cube_over_peak_pss_total']:.1f}x the PSS). "
        "RSS counts pages shared between the processes (libraries, copy-on-write) once per process.",
        "",
        "Aims: " + "; ".join(f"{k}: {'met' if v['met'] else 'NOT met'} ({v['value']})" for k, v in r["aims"].items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small cube and short runs (checks the script)")
    ap.add_argument("--store", type=Path, default=None, help="where the cube is cached (default under /tmp)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--cells", type=float, default=2.0, help="rain cells born per frame (rain cover)")
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per loader")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--memory-epoch", default=None, help=argparse.SUPPRESS)  # internal: one epoch, JSON job
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default benchmarks/results, or /tmp/geostp-bench/quick with --quick)")
    args = ap.parse_args(argv)
    if args.memory_epoch:
        warnings.simplefilter("ignore")
        from geostp.stream import Normalizer, WindowSpec

        job = json.loads(args.memory_epoch)
        spec = WindowSpec(10, 10, stride=job["stride"], patch_size=64)
        out = memory_epoch(Path(job["store"]), spec, Normalizer.from_dict(job["normalizer"]), job["workers"],
                           job["batch_size"], job["cube_bytes"])
        print(json.dumps(out))
        return
    frames = args.frames or (600 if args.quick else 4000)
    size = args.size or (256 if args.quick else 512)
    seconds = args.seconds or (4.0 if args.quick else 20.0)
    store = args.store or Path(f"/tmp/geostp-bench/radar-{frames}x{size}.zarr")
    warnings.simplefilter("ignore")

    import torch
    import xbatcher
    import zarr

    from geostp.store import open_cube
    from geostp.stream import WindowSpec, compute_statistics, split_cube

    result: dict = {
        "command": "benchmarks/loader.py" + (" --quick" if args.quick else "") + " " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "zarr": zarr.__version__, "xbatcher": xbatcher.__version__, "load_at_start": load()},
    }
    result["command"] = result["command"].strip()
    result["cube"] = ensure_cube(store, frames, size, args.cells)
    log(f"cube ready: {result['cube']['decoded_bytes'] / 1e9:.2f} GB decoded")

    result["raw"] = raw_bandwidth(store, min(frames, 800))
    log(f"raw: {result['raw']}")

    cube = open_cube(store)
    splits = split_cube(cube, train=0.8, test=0.2)
    t = time.perf_counter()
    norm = compute_statistics(cube, ["precipitation"], split=splits["train"])
    result["statistics"] = {"seconds": round(time.perf_counter() - t, 1), "frames": int(splits["train"].time_mask(cube).sum()),
                            "normalizer": norm.to_dict()}
    log(f"statistics: {result['statistics']['seconds']} s, {norm}")

    result["xbatcher"] = []
    for w in (0, 2):
        result["xbatcher"].append(run_xbatcher(store, w, seconds, args.batch_size))
        log(f"xbatcher: {result['xbatcher'][-1]}")

    result["geostp"] = []
    for stride in (1, 20):
        spec = WindowSpec(10, 10, stride=stride, patch_size=64)
        for w in (0, 2):
            result["geostp"].append(run_geostp(store, spec, norm, None, w, seconds, args.batch_size))
            log(f"geostp: {result['geostp'][-1]}")
    # the same blocks read through xarray + dask (synchronous scheduler) instead of zarr directly
    spec = WindowSpec(10, 10, stride=1, patch_size=64)
    result["geostp"].append(run_geostp(store, spec, norm, None, 2, seconds, args.batch_size, reader="xarray"))
    log(f"geostp: {result['geostp'][-1]}")

    # in a fresh process: the main process of a training run has not run the benchmarks above
    job = {"store": str(store), "normalizer": norm.to_dict(), "workers": 2, "batch_size": args.batch_size,
           "cube_bytes": result["cube"]["decoded_bytes"], "stride": 1}
    proc = subprocess.run([sys.executable, __file__, "--memory-epoch", json.dumps(job)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"memory epoch failed:\n{proc.stderr[-3000:]}")
    result["memory"] = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"memory: {result['memory']}")

    xb2 = next(x for x in result["xbatcher"] if x["workers"] == 2)["samples_per_s"]
    g2 = {g["stride"]: g["samples_per_s"] for g in result["geostp"] if g["workers"] == 2 and g["reader"] == "zarr"}
    raw_w = result["raw"]["implied_windows_per_s"]
    m = result["memory"]
    result["aims"] = {
        ">= 5x xbatcher, 2 workers, stride 1": {"met": g2[1] >= 5 * xb2, "value": f"{g2[1] / xb2:.1f}x"},
        ">= 5x xbatcher, 2 workers, stride 20 (same sample set)": {"met": g2[20] >= 5 * xb2,
                                                                   "value": f"{g2[20] / xb2:.1f}x"},
        ">= half the raw-implied windows/s, 2 workers, stride 1": {"met": g2[1] >= 0.5 * raw_w,
                                                                   "value": f"{g2[1] / raw_w:.2f}"},
        ">= half the raw-implied windows/s, 2 workers, stride 20": {"met": g2[20] >= 0.5 * raw_w,
                                                                    "value": f"{g2[20] / raw_w:.2f}"},
        "cube >= 3x the summed peak RSS of the epoch": {"met": m["cube_over_peak_rss_total"] >= 3,
                                                         "value": f"{m['cube_over_peak_rss_total']:.1f}x"},
    }
    result["machine"]["load_at_end"] = load()
    out = args.out or (Path("/tmp/geostp-bench/quick") if args.quick else REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "loader.md").write_text(markdown(result))
    log(f"wrote {out / 'loader.json'} and {out / 'loader.md'}")
    print(markdown(result))


if __name__ == "__main__":
    main()
