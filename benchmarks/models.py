"""CPU benchmark of geostp's TAU and PredRNN-V2: parameters, forward FLOPs, training-step time, inference throughput.

Run ``.venv/bin/python benchmarks/models.py`` (``--quick`` for a short run).
Results go to ``benchmarks/results/models_cpu.json`` and ``models_cpu.md``
with the reference figures of DESIGN.md (OpenSTL's implementations on the same
kind of two-core machine) beside them.

The machine may be shared.  Every timed repetition also records how much CPU
*other* processes used meanwhile (from ``/proc/stat`` minus our own CPU time);
before each repetition the script waits (up to ``--max-wait`` seconds) for the
other processes to go quiet, and the reported median uses only the quiet
("clean") repetitions when there are any.  With ``--untuned`` the same
measurements are repeated in a child process with ``GEOSTP_NO_MALLOPT=1`` and
``GEOSTP_BF16=0``, i.e. with glibc's default allocator and in fp32, as a
same-run baseline without geostp's CPU tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

BATCH = 16
SHAPE = (10, 1, 64, 64)  # Moving-MNIST: T_in x C x H x W, 10 -> 10 frames

# name -> (registry name, constructor kwargs)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "tau-mmnist": ("tau", {}),
    "tau-small": ("tau", dict(spatial_hidden_channels=16, temporal_hidden_channels=128, temporal_blocks=4)),
    "predrnn_v2-mmnist": ("predrnn_v2", {}),
    "predrnn_v2-small": ("predrnn_v2", dict(hidden_channels=64)),
}

# DESIGN.md "Reference figures": OpenSTL on this kind of machine, batch 16, Adam.
REFERENCE: dict[str, dict[str, float]] = {
    "tau-mmnist": dict(params=44_656_001, forward_flops=31.8e9, train_step_s=19.0, infer_samples_per_s=4.1),
    "tau-small": dict(params=1.6e6, train_step_s=1.5, infer_samples_per_s=44.0),
    # 116.6 G multiply-accumulates per sample (training-mode forward, 19 steps).
    "predrnn_v2-mmnist": dict(params=23_855_104, forward_flops=2 * 116.6e9, train_step_s=52.0,
                              infer_samples_per_s=1.0),
    "predrnn_v2-small": {},
}


# --------------------------------------------------------------------------- machine load
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Meter:
    """Wall time, our CPU time and other processes' CPU time over a block."""

    def __enter__(self) -> Meter:
        self.busy0, self.own0, self.wall0 = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = _own_seconds() - self.own0
        busy1 = _busy_seconds()
        if self.busy0 is None or busy1 is None:
            self.foreign = float("nan")
        else:
            # Tick granularity (10 ms) and kernel threads make this a little
            # noisy; clamp the small negative values it can give.
            self.foreign = max(0.0, (busy1 - self.busy0) - self.cpu)


def foreign_load(seconds: float = 1.0) -> float:
    """Average number of cores other processes used over ``seconds`` (while we sleep)."""
    with Meter() as m:
        time.sleep(seconds)
    return m.foreign / m.wall if m.foreign == m.foreign else 0.0


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Sleep until other processes use less than ``threshold`` cores; return the last reading."""
    deadline = time.monotonic() + max_wait
    load = foreign_load()
    while load > threshold and time.monotonic() < deadline:
        time.sleep(2.0)
        load = foreign_load()
    return load


def timed(fn, repeats: int, warmup: int, max_wait: float, label: str) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs; median over the quiet ones."""
    for _ in range(warmup):
        fn()
    runs = []
    for i in range(repeats):
        before = wait_for_quiet(max_wait)
        with Meter() as m:
            fn()
        # "Clean": others used under 0.1 core on average during the run.
        clean = m.foreign / m.wall < 0.1 if m.foreign == m.foreign else True
        runs.append(dict(wall_s=m.wall, cpu_s=m.cpu, foreign_cpu_s=m.foreign, foreign_before=before, clean=clean))
        print(f"  {label} {i + 1}/{repeats}: {m.wall:.2f} s wall, {m.cpu:.2f} s cpu, "
              f"others {m.foreign:.2f} s cpu{'' if clean else '  (contended)'}", flush=True)
    chosen = [r for r in runs if r["clean"]] or runs
    return dict(
        median_s=statistics.median(r["wall_s"] for r in chosen),
        min_s=min(r["wall_s"] for r in runs),
        median_cpu_s=statistics.median(r["cpu_s"] for r in chosen),
        clean_runs=sum(r["clean"] for r in runs),
        runs=runs,
    )


# --------------------------------------------------------------------------- measurements
def count_flops(model: torch.nn.Module) -> float:
    """Forward FLOPs per sample of an inference forward (10 -> 10 frames), torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, *SHAPE)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train()
    return float(counter.get_total_flops())


def measure(config: str, train_repeats: int, infer_repeats: int, max_wait: float) -> dict[str, Any]:
    import geostp.models as models
    from geostp.models.allocator import tune_allocator
    from geostp.models.base import bf16_autocast, native_bf16

    allocator_tuned = tune_allocator()  # as training does (a no-op in the untuned child: GEOSTP_NO_MALLOPT=1)

    name, kwargs = CONFIGS[config]
    torch.manual_seed(0)
    model = models.get(name, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model)
    x = torch.rand(BATCH, *SHAPE)
    y = torch.rand(BATCH, *SHAPE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def train_step() -> None:
        # iteration 0: PredRNN-V2's reverse schedule feeds true frames with
        # probability 0.5 in both halves, as early in training.  Autocast as the
        # trainer does it by default: bf16 where the CPU has AMX, else fp32.
        with bf16_autocast("cpu"):
            loss, _ = model.training_loss(x, y, iteration=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        model.predict(x)

    print(f"{config}: {params:,} parameters, {flops / 1e9:.1f} GFLOPs/sample forward", flush=True)
    train = timed(train_step, train_repeats, 1, max_wait, "train step")
    inference = timed(infer, infer_repeats, 1, max_wait, "inference")
    return dict(
        config=config,
        model=name,
        kwargs=kwargs,
        allocator_tuned=allocator_tuned,
        bf16=native_bf16("cpu"),
        params=params,
        forward_flops_per_sample=flops,
        train_step_s=train["median_s"],
        train_samples_per_s=BATCH / train["median_s"],
        train=train,
        infer_samples_per_s=BATCH / inference["median_s"],
        inference=inference,
    )


def _with_reference(result: dict[str, Any]) -> dict[str, Any]:
    ref = REFERENCE.get(result["config"], {})
    result["reference"] = ref
    if "train_step_s" in ref:
        result["train_speedup"] = ref["train_step_s"] / result["train_step_s"]
    if "infer_samples_per_s" in ref:
        result["infer_speedup"] = result["infer_samples_per_s"] / ref["infer_samples_per_s"]
    return result


def run_untuned(configs: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same measurements in a child process without geostp's CPU tuning: glibc's default
    allocator settings and fp32 (no bf16 autocast even where the CPU has AMX)."""
    out = RESULTS / "_untuned.tmp.json"
    cmd = [sys.executable, __file__, "--child", "--output", str(out), "--configs", *configs,
           "--train-repeats", str(args.untuned_repeats), "--infer-repeats", str(args.untuned_repeats),
           "--max-wait", str(args.max_wait)]
    env = dict(os.environ, GEOSTP_NO_MALLOPT="1", GEOSTP_BF16="0")
    subprocess.run(cmd, check=True, env=env)
    results = json.loads(out.read_text())["results"]
    out.unlink()
    return results


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# geostp models on the CPU",
        "",
        f"`{meta['command']}` on {meta['date']}: {meta['cpu']}, {meta['threads']} torch threads, "
        f"torch {meta['torch']}, batch {BATCH}, input {'x'.join(map(str, SHAPE))}, Adam.",
        "Reference: DESIGN.md's figures for OpenSTL's implementations on the same kind of machine.",
        "Times are medians over repetitions during which other processes used < 0.1 core "
        "(see `clean_runs` in the JSON).",
        "",
        "| config | params | ref params | GFLOPs/sample fwd | ref | train step (s) | ref | speed-up "
        "| infer samples/s | ref | speed-up | untuned step (s) | untuned infer/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    untuned = {r["config"]: r for r in report.get("untuned", [])}

    def fmt(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    for r in report["results"]:
        ref = r["reference"]
        u = untuned.get(r["config"], {})
        lines.append(
            f"| {r['config']} | {r['params']:,} | {fmt(ref.get('params'), ',.0f')} "
            f"| {r['forward_flops_per_sample'] / 1e9:.1f} | {fmt(ref.get('forward_flops') and ref['forward_flops'] / 1e9, '.1f')} "
            f"| {r['train_step_s']:.2f} | {fmt(ref.get('train_step_s'), '.1f')} | {fmt(r.get('train_speedup'), '.2f')}x "
            f"| {r['infer_samples_per_s']:.1f} | {fmt(ref.get('infer_samples_per_s'), '.1f')} "
            f"| {fmt(r.get('infer_speedup'), '.2f')}x "
            f"| {fmt(u.get('train_step_s'), '.2f')} | {fmt(u.get('infer_samples_per_s'), '.1f')} |"
        )
    lines += [
        "",
        "PredRNN-V2's reference FLOPs are OpenSTL's 116.6 G multiply-accumulates (training-mode forward,",
        "with the decoupling adapter) doubled; ours count the inference forward (no adapter).",
        "\"untuned\": the same code in a child process with `GEOSTP_NO_MALLOPT=1 GEOSTP_BF16=0` (glibc's default "
        "allocator, fp32). Tuned runs use bf16 autocast where the CPU has AMX (column `bf16` in the JSON), as the "
        "trainer and `predict` do by default.",
        "",
    ]
    return "\n".join(lines).replace("–x", "–")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small configs only, two repetitions")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--train-repeats", type=int, default=None)
    parser.add_argument("--infer-repeats", type=int, default=None)
    parser.add_argument("--untuned", action="store_true", help="also measure with GEOSTP_NO_MALLOPT=1 GEOSTP_BF16=0")
    parser.add_argument("--untuned-repeats", type=int, default=2)
    parser.add_argument("--max-wait", type=float, default=120.0,
                        help="seconds to wait for other processes to go quiet before each repetition")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    configs = args.configs or (["tau-small", "predrnn_v2-small"] if args.quick else list(CONFIGS))
    train_repeats = args.train_repeats or (2 if args.quick else 3)
    infer_repeats = args.infer_repeats or (2 if args.quick else 5)
    results = [_with_reference(measure(c, train_repeats, infer_repeats, args.max_wait)) for c in configs]
    report: dict[str, Any] = dict(
        meta=dict(
            command="python benchmarks/models.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            date=time.strftime("%Y-%m-%d %H:%M:%S"),
            cpu=platform.processor() or platform.machine(),
            cores=os.cpu_count(),
            threads=torch.get_num_threads(),
            torch=torch.__version__,
            python=platform.python_version(),
            batch=BATCH,
            shape=list(SHAPE),
        ),
        reference_source="DESIGN.md, Reference figures (OpenSTL TAU and PredRNN-V2, two cores, torch 2.13 CPU)",
        results=results,
    )
    if args.untuned and not args.child:
        report["untuned"] = run_untuned(configs, args)
    output = args.output or RESULTS / ("models_cpu_quick.json" if args.quick else "models_cpu.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    if not args.child:
        output.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
