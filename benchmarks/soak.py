"""Soak benchmark of the operational runner: hundreds of cycles over a faulty feed, with ``kill -9`` restarts.

What runs: ``geostp run soak.yaml --watch`` (a separate process, the ``optical_flow`` baseline, three frames in,
three lead times, tiny synthetic radar frames of 24 x 24 pixels) watches a folder while this script delivers one
frame file every ``--interval`` seconds, as a feed does, with faults mixed in:

- *missing*: a frame that never comes;
- *corrupt*: a frame truncated for good;
- *half-written*: a frame written in two parts 0.6 s apart (the runner may read it half-written);
- *late*: a frame that comes three frames late (within ``wait_for_late``), or eight frames late (after it: the
  cycles waiting for it are skipped, then looked at again when it comes);
- *duplicate*: a frame written twice in a row, or sent again some frames after its forecast was written;
- *future-stamped*: extra files named 2099 or some days after the wall clock;
- *mis-named*: extra files whose name does not follow the pattern, or carries a time off the 5-minute grid;
- *all-NaN*: a frame that holds only NaN (a radar outage);
- *wrong grid*: a frame shifted 1 km east.

The runner is killed with SIGKILL ``--kills`` times, in turn: while it writes a forecast (it is started with
``GEOSTP_NOWCAST_COMMIT_DELAY`` so that a write lasts long enough, and killed once a temporary output file
exists), at a random moment after it started (polling, reading, forecasting, writing), and while it starts (the
runner that replaced the one just killed, 0.2 to 3 s after its launch); a new runner is started at once, while
the feed goes on.  The feed's clock stops while its next frame would be more than ``--lead`` frames ahead of the
newest reference time the runner has decided, so that files pile up while a runner is down or slow, but never
beyond the catch-up window.  At the end the runner is stopped with SIGTERM, and one more runner is started on
the quiet feed and stopped: what it logs shows whether a restart logs again what was logged before.

What is counted (``benchmarks/results/soak.json`` and ``.md``):

- *expected*: the reference times whose three input files all came, readable and on the grid, and whose
  reference-time frame holds data.  An earlier input that holds only NaN does not make a cycle invalid: the
  runner's policy is that only the newest frame must hold data (NaN is missing data), and those cycles are
  counted apart;
- *written*: forecast files present at the end, each opened and checked (lead times, grid, reference time,
  finite values); *lost*: expected but not written; *extra*: written but not expected;
- *duplicate*: a reference time with more than one ``written`` record, or a forecast file that changed after it
  first appeared;
- *partial*: a temporary file left in the output folder, or a forecast file that does not open or check.

Usage::

    nice -n 19 .venv/bin/python benchmarks/soak.py                  # 240 cycles, 6 kills: benchmarks/results/soak.*
    .venv/bin/python benchmarks/soak.py --cycles 20 --kills 1 --out /tmp/soak   # a quick check

The feed (:func:`make_frames`, :func:`frame_bytes`, :func:`nowcast_recipe`), the runner processes (:func:`launch`,
:func:`kill9`) and the counting (:func:`expected_cycles`, :func:`note_outputs`, :func:`tally`) are functions of
their own: ``tests/test_operate_hardening.py`` runs a short soak with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T_IN, STEPS, SIZE = 3, 3, 24
#: How the runner is killed, in turn: while it writes a forecast (a temporary file exists), at a random moment
#: after it started (polling, reading, forecasting, writing), or while it starts (importing, opening its log:
#: the runner started after the kill before is killed again 0.2 to 3 s after its launch).
KILL_MODES = ("mid-write", "after start", "during start-up")
FAULTS = {"missing": 0.025, "corrupt": 0.025, "half_written": 0.025, "late": 0.025, "very_late": 0.017,
          "duplicate": 0.025, "resent": 0.025, "all_nan": 0.025, "wrong_grid": 0.0125}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the feed


def make_frames(n: int, staging: Path, seed: int) -> tuple[list[pd.Timestamp], dict[str, list[bytes]]]:
    """Each frame as netCDF bytes: good, all-NaN and shifted 1 km east."""
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = synthetic_radar(n_times=n, ny=SIZE, nx=SIZE, seed=seed, cells_per_frame=2.0).load()
    out: dict[str, list[bytes]] = {"good": [], "all_nan": [], "wrong_grid": []}
    for i in range(n):
        frame = cube.isel(time=[i])
        variants = {"good": frame, "wrong_grid": frame.assign_coords(x=frame.x + 1000.0)}
        nan = frame.copy(deep=True)
        nan["precipitation"][:] = np.nan
        variants["all_nan"] = nan
        for kind, ds in variants.items():
            path = staging / f"{kind}_{i}.nc"
            ds.to_netcdf(path)
            out[kind].append(path.read_bytes())
    return [pd.Timestamp(t) for t in cube.time.values], out


def name_of(t: pd.Timestamp) -> str:
    return f"frame_{t:%Y%m%d%H%M}.nc"


def frame_bytes(frames: dict[str, list[bytes]], i: int, variant: str) -> bytes:
    """What a delivery of frame ``i`` writes: ``good``, ``all_nan`` or ``wrong_grid`` (:func:`make_frames`), or
    the good frame cut short: ``half`` (the first half, as a file being written) or ``corrupt`` (300 bytes)."""
    data = frames["good" if variant in ("half", "corrupt") else variant][i]
    return data[: len(data) // 2] if variant == "half" else data[:300] if variant == "corrupt" else data


def nowcast_recipe(feed: Path, out: Path, *, wait_for_late: float, catch_up: int,
                   poll_seconds: float = 0.2) -> dict[str, Any]:
    """The nowcast recipe of the soak: ``optical_flow`` over ``feed/frame_*.nc``, forecasts into ``out``."""
    return {
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"path": f"{feed}/frame_*.nc", "variable": "precipitation",
                                               "time_step": "5min"},
                 "variables": ["precipitation"]},
        "model": {"name": "optical_flow"},
        "nowcast": {"steps": STEPS, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc",
                    "poll_seconds": poll_seconds, "wait_for_late": wait_for_late, "catch_up": catch_up},
        "output": {"dir": str(out), "formats": ["netcdf"]},
    }


def assign_faults(n: int, rng: random.Random) -> dict[int, str]:
    """One fault at most per frame, none among the first frames (the output folder's grid is set by them)."""
    candidates = list(range(T_IN + 3, n - 10))
    rng.shuffle(candidates)
    faults: dict[int, str] = {}
    for kind, share in FAULTS.items():
        for _ in range(max(1, round(share * n))):
            if candidates:
                faults[candidates.pop()] = kind
    return faults


@dataclass(order=True)
class Event:
    at: float
    order: int
    kind: str = field(compare=False)
    args: tuple = field(compare=False, default=())


def schedule(n: int, faults: dict[int, str], interval: float, kills: int, rng: random.Random) -> list[Event]:
    """Every delivery, extra file and kill, in time order."""
    events: list[Event] = []

    def add(at: float, kind: str, *args: Any) -> None:
        events.append(Event(at, len(events), kind, args))

    for i in range(n):
        fault = faults.get(i)
        at = i * interval
        if fault == "missing":
            continue
        if fault == "late":
            add(at + 3 * interval + 0.01, "deliver", i, "good")
        elif fault == "very_late":
            add(at + 8 * interval + 0.01, "deliver", i, "good")
        elif fault == "half_written":
            add(at, "deliver", i, "half")
            add(at + 0.6, "deliver", i, "good")
        elif fault == "duplicate":
            add(at, "deliver", i, "good")
            add(at + 0.2, "deliver", i, "good")
        elif fault == "resent":
            add(at, "deliver", i, "good")
            add(at + 15 * interval, "deliver", i, "good")
        else:
            add(at, "deliver", i, {"corrupt": "corrupt", "all_nan": "all_nan", "wrong_grid": "wrong_grid"}.get(
                fault or "", "good"))
    for k in range(8):  # files from the future, spread over the run
        add(rng.uniform(0.05, 0.95) * n * interval, "future", k)
    for k, name in enumerate(["frame_latest.nc", "frame_2024-07-01_1200.nc", "frame_.nc", "frame_20240701.nc"]):
        add(rng.uniform(0.05, 0.95) * n * interval, "misnamed", name, k)
    for _ in range(2):  # names that follow the pattern with a time off the 5-minute grid
        add(rng.uniform(0.2, 0.8) * n * interval, "off_grid", rng.randrange(T_IN, n - 1))
    timed = [j for j in range(kills) if KILL_MODES[j % len(KILL_MODES)] != "during start-up"]
    for k, j in enumerate(timed):  # a start-up kill follows the kill before it at once (soak.maybe_kill)
        add((k + 1) * n * interval / (len(timed) + 1), "kill", j, KILL_MODES[j % len(KILL_MODES)])
    return sorted(events)


# ----------------------------------------------------------------------------- the runner processes


@dataclass
class Runner:
    proc: subprocess.Popen
    index: int
    delayed: bool
    started: float
    log_dir: Path
    ended: str = ""
    tmp_seen: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "pid": self.proc.pid, "commit_delay": self.delayed, "ended": self.ended,
                "returncode": self.proc.returncode, "killed_while_writing": self.tmp_seen}


def launch(recipe: Path, index: int, delayed: bool, work: Path, commit_delay: float = 0.4) -> Runner:
    """``geostp run RECIPE --watch`` in a process of its own (output in ``work/runnerN.std*``); ``delayed``: each
    forecast waits ``commit_delay`` seconds between its temporary file and the rename (a window to kill it in)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if delayed:
        env["GEOSTP_NOWCAST_COMMIT_DELAY"] = str(commit_delay)
    out = open(work / f"runner{index}.stdout", "w")  # noqa: SIM115 - the child's, closed when it ends
    err = open(work / f"runner{index}.stderr", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "geostp.cli", "run", str(recipe), "--watch"], stdout=out,
                            stderr=err, env=env, cwd=REPO)
    return Runner(proc, index, delayed, time.monotonic(), work)


def kill9(runner: Runner, how: str) -> None:
    runner.proc.send_signal(signal.SIGKILL)
    runner.proc.wait(60)
    runner.ended = f"SIGKILL ({how})"


def stop(runner: Runner) -> None:
    if runner.proc.poll() is None:
        runner.proc.send_signal(signal.SIGTERM)
    try:
        runner.proc.wait(120)
    except subprocess.TimeoutExpired:
        runner.proc.kill()
        runner.proc.wait(30)
        runner.ended = "SIGTERM ignored, killed"
        return
    runner.ended = runner.ended or "SIGTERM"


def records(log_path: Path) -> tuple[list[dict[str, Any]], int]:
    """The log's records, and the number of lines that are not one JSON object (cut by a kill)."""
    out, cut = [], 0
    if not log_path.exists():
        return out, cut
    for line in log_path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            cut += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out, cut


class LogTail:
    """The new complete lines of a growing JSON-lines log, as records (a line cut by a kill is dropped)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rest = path, 0, b""

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


# ----------------------------------------------------------------------------- counting


def expected_cycles(n: int, faults: dict[int, str]) -> list[int]:
    """The reference times (frame indices) that must get a forecast: their ``T_IN`` inputs all came, readable and
    on the grid, and the reference-time frame holds data (an earlier all-NaN input does not matter)."""
    bad = {i for i, f in faults.items() if f in ("missing", "corrupt", "wrong_grid")}
    return [i for i in range(T_IN - 1, n)
            if not any(k in bad for k in range(i - T_IN + 1, i + 1)) and faults.get(i) != "all_nan"]


def check_output(path: Path, t: pd.Timestamp) -> str | None:
    """What is wrong with a forecast file (None: it opens, with its lead times, grid, reference time, data)."""
    import xarray as xr

    try:
        with xr.open_dataset(path) as ds:
            da = ds["precipitation"]
            if da.dims != ("lead_time", "y", "x") or da.shape != (STEPS, SIZE, SIZE):
                return f"dims {da.dims} shape {da.shape}"
            if pd.Timestamp(ds["forecast_reference_time"].values) != t:
                return "reference time differs from its name"
            if not np.isfinite(da.values).any():
                return "no finite value"
    except Exception as exc:  # noqa: BLE001 - whatever fails to open is a partial file
        return f"{type(exc).__name__}: {exc}"
    return None


def note_outputs(out: Path, seen: dict[str, tuple[int, int]], rewritten: set[str]) -> None:
    """Note each forecast file's identity when first seen; one that changes later was written twice."""
    for p in out.glob("nowcast_*.nc"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        ident = (st.st_ino, st.st_mtime_ns)
        first = seen.setdefault(p.name, ident)
        if first != ident:
            rewritten.add(p.name)


def repeated_give_ups(cycles: list[dict[str, Any]]) -> int:
    """``skipped``/``refused`` records that repeat the one before for the same reference time and the same files."""
    given_up: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in cycles:
        if r["outcome"] in ("skipped", "refused"):
            given_up[r["reference_time"]].append(r)
    return sum(1 for rs in given_up.values() for a, b in zip(rs, rs[1:], strict=False)
               if a.get("input_state") == b.get("input_state") and a["outcome"] == b["outcome"])


def tally(out: Path, times: list[pd.Timestamp], expected: set[int], recs: list[dict[str, Any]],
          rewritten: set[str]) -> dict[str, Any]:
    """Expected, written, lost, extra, duplicate and partial forecasts (and which), from the output folder, the
    log's records and the files seen to change (:func:`note_outputs`)."""
    by_name = {f"nowcast_{t:%Y%m%d%H%M}.nc": (i, t) for i, t in enumerate(times)}
    problems = {}
    for name in sorted(p.name for p in out.glob("nowcast_*.nc")):
        i_t = by_name.get(name)
        problems[name] = "not a reference time of the feed" if i_t is None else check_output(out / name, i_t[1])
    bad = {k: v for k, v in problems.items() if v}
    written = {by_name[n][0] for n in problems if n in by_name and n not in bad}
    written_records = Counter(r["reference_time"] for r in recs
                              if r.get("event") == "cycle" and r.get("outcome") == "written")
    dup_records = sorted(t for t, c in written_records.items() if c > 1)
    temporary = sorted(p.name for p in out.iterdir() if ".tmp-" in p.name)
    return {
        "expected": len(expected), "written": len(written), "lost": len(expected - written),
        "extra": len(written - expected), "duplicate": len(set(dup_records) | rewritten),
        "partial": len(temporary) + len(bad),
        "lost_reference_times": [times[i].isoformat() for i in sorted(expected - written)],
        "extra_reference_times": [times[i].isoformat() for i in sorted(written - expected)],
        "duplicate_written_records": dup_records, "rewritten_files": sorted(rewritten),
        "temporary_files_left": temporary, "outputs_that_do_not_check": bad,
    }


# ----------------------------------------------------------------------------- the run


class Soak:
    def __init__(self, opts: argparse.Namespace, work: Path) -> None:
        self.opts, self.work = opts, work
        self.feed, self.out = work / "feed", work / "out"
        self.feed.mkdir()
        self.rng = random.Random(opts.seed)
        self.times, self.frames = make_frames(opts.cycles, work, opts.seed)
        self.faults = assign_faults(opts.cycles, self.rng)
        self.events = schedule(opts.cycles, self.faults, opts.interval, opts.kills, self.rng)
        self.recipe = work / "soak.yaml"
        self.recipe.write_text(json.dumps(nowcast_recipe(self.feed, self.out, wait_for_late=opts.wait_for_late,
                                                         catch_up=opts.catch_up)))
        self.runners: list[Runner] = []
        self.seen_outputs: dict[str, tuple[int, int]] = {}
        self.rewritten: set[str] = set()
        self.extra_files: dict[str, list[str]] = defaultdict(list)
        self.kills: list[dict[str, Any]] = []
        self.tail = LogTail(self.log_path())
        self.index_of = {t.isoformat(): i for i, t in enumerate(self.times)}
        self.index_of.update({f"nowcast_{t:%Y%m%d%H%M}.nc": i for i, t in enumerate(self.times)})
        self.decided = -1
        self.started_runners = 0
        self.startup_kills = 0

    def log_path(self) -> Path:
        return self.out / "nowcast.log.jsonl"

    def do(self, ev: Event) -> None:
        if ev.kind == "deliver":
            i, variant = ev.args
            (self.feed / name_of(self.times[i])).write_bytes(frame_bytes(self.frames, i, variant))
        elif ev.kind == "future":
            k = ev.args[0]
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            stamp = pd.Timestamp("2099-01-01T00:00") + pd.Timedelta(minutes=5 * k) if k % 2 == 0 else \
                pd.Timestamp(now + timedelta(days=1 + k)).floor("5min")
            path = self.feed / name_of(stamp)
            path.write_bytes(self.frames["good"][k])
            self.extra_files["future_stamped"].append(path.name)
        elif ev.kind == "misnamed":
            (self.feed / ev.args[0]).write_bytes(self.frames["good"][ev.args[1]])
            self.extra_files["misnamed"].append(ev.args[0])
        elif ev.kind == "off_grid":
            i = ev.args[0]
            path = self.feed / name_of(self.times[i] + pd.Timedelta(minutes=2))
            path.write_bytes(self.frames["good"][i])
            self.extra_files["off_grid_time"].append(path.name)

    def watch_outputs(self) -> None:
        note_outputs(self.out, self.seen_outputs, self.rewritten)

    def progress(self) -> None:
        """Read the log's new lines: runners started, reference times decided (the newest one's frame index)."""
        for rec in self.tail.new():
            if rec.get("event") == "start":
                self.started_runners += 1
            elif rec.get("event") == "cycle" and rec.get("outcome") in ("written", "skipped", "refused", "exists"):
                i = self.index_of.get(rec.get("reference_time"))
                if i is not None:
                    self.decided = max(self.decided, i)
        for name in self.seen_outputs:  # a forecast renamed into place by a runner killed before it logged it
            i = self.index_of.get(name)
            if i is not None:
                self.decided = max(self.decided, i)

    def maybe_kill(self, pending: dict[str, Any]) -> None:
        """Kill the runner once the kill's moment has come (its mode says which moment)."""
        runner = self.runners[-1]
        up = self.started_runners > runner.index - self.startup_kills  # it has logged its start
        now = time.monotonic()
        if pending["mode"] == "during start-up":
            if now - runner.started < pending["after"]:
                return
        elif not up:
            return  # wait for it to start (under load the imports alone can take minutes)
        else:
            pending.setdefault("up_at", now)
            if pending["mode"] == "mid-write":
                tmp = [p.name for p in self.out.glob(".nowcast_*.tmp-*")]
                if not tmp and now - pending["up_at"] < 120:
                    return
                runner.tmp_seen = tmp[0] if tmp else None
            elif now - pending["up_at"] < pending["after"]:
                return
        kill9(runner, pending["mode"])
        self.progress()  # did it log its start after all, before it died?
        up = self.started_runners > runner.index - self.startup_kills
        if not up:
            self.startup_kills += 1  # this runner never logged a start
        self.kills.append({"kill": pending["index"] + 1, "mode": pending["mode"], "runner_pid": runner.proc.pid,
                           "runner_had_started": up, "temporary_file_at_kill": runner.tmp_seen,
                           "runner_lived_s": round(now - runner.started, 1)})
        log(f"kill -9 runner {runner.index} ({pending['mode']}{': ' + runner.tmp_seen if runner.tmp_seen else ''}"
            f"{'' if up else ', before it started'})")
        pending.clear()
        nxt = len(self.runners)
        self.runners.append(launch(self.recipe, nxt, self.mode(nxt) == "mid-write", self.work))
        if self.mode(nxt) == "during start-up":
            pending.update(index=nxt, mode="during start-up", after=self.rng.uniform(0.2, 3.0))

    def mode(self, j: int) -> str | None:
        return KILL_MODES[j % len(KILL_MODES)] if j < self.opts.kills else None

    def run(self) -> None:
        """Deliver the feed on a clock that runs while the runner keeps up, killing the runner on the way.

        The feed's clock stops while its next frame would be more than ``--lead`` frames ahead of the newest
        reference time the runner has decided: under a heavy load (or while a runner starts) the files still
        pile up, as they do in operation, but never so far that the catch-up window would drop them.
        """
        self.runners.append(launch(self.recipe, 0, self.mode(0) == "mid-write", self.work))
        pending: dict[str, Any] = {}
        events = list(self.events)
        clock, last, last_watch = 0.0, time.monotonic(), 0.0
        while events or pending:
            now = time.monotonic()
            if now - last_watch > 0.3:
                self.watch_outputs()
                self.progress()
                last_watch = now
            nxt = next((e for e in events if e.kind == "deliver"), None)
            if nxt is None or nxt.args[0] <= self.decided + self.opts.lead:
                clock += now - last
            last = now
            while events and events[0].at <= clock and not (pending and events[0].kind == "kill"):
                ev = events.pop(0)
                if ev.kind == "kill":
                    pending.update(index=ev.args[0], mode=ev.args[1], after=self.rng.uniform(0.2, 3.0))
                else:
                    self.do(ev)
            if pending:
                self.maybe_kill(pending)
            time.sleep(0.02)
        log(f"feed delivered; {len(self.runners)} runners so far; waiting for the last one to settle")
        self.settle()
        stop(self.runners[-1])
        self.watch_outputs()

    def settle(self) -> None:
        """Until every expected forecast exists and the log has been quiet for a while (or a time limit)."""
        expected = {f"nowcast_{self.times[i]:%Y%m%d%H%M}.nc" for i in self.expected()}
        quiet_for = max(6.0, 3 * self.opts.wait_for_late)
        end = time.monotonic() + self.opts.settle_limit
        size, since = -1, time.monotonic()
        while time.monotonic() < end:
            self.watch_outputs()
            now_size = self.log_path().stat().st_size if self.log_path().exists() else 0
            if now_size != size:
                size, since = now_size, time.monotonic()
            if expected <= set(self.seen_outputs) and time.monotonic() - since > quiet_for:
                return
            time.sleep(0.3)
        log("settle time limit reached")

    def quiet_restart(self) -> dict[str, Any]:
        """One more runner on the quiet feed: what does it log besides start and stop?"""
        before = len(records(self.log_path())[0])
        runner = launch(self.recipe, len(self.runners), False, self.work)
        self.runners.append(runner)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            recs = records(self.log_path())[0][before:]
            started = [r for r in recs if r["event"] == "start"]
            if started and time.monotonic() - runner.started > 1 and \
                    (datetime.now(timezone.utc) - datetime.fromisoformat(started[0]["time"])).total_seconds() > 5:
                break  # five seconds of polls (every 0.2 s) after its start
            time.sleep(0.3)
        stop(runner)
        new = records(self.log_path())[0][before:]
        return {"events": dict(Counter(r["event"] for r in new)),
                "cycle_records": [r for r in new if r["event"] == "cycle"][:20]}

    # ------------------------------------------------------------------ counting
    def expected(self) -> list[int]:
        return expected_cycles(self.opts.cycles, self.faults)

    def count(self) -> dict[str, Any]:
        recs, cut = records(self.log_path())
        expected = set(self.expected())
        counts = tally(self.out, self.times, expected, recs, self.rewritten)
        cycles = [r for r in recs if r["event"] == "cycle"]
        given_up = Counter(r["reference_time"] for r in cycles if r["outcome"] in ("skipped", "refused"))
        future = Counter(r["path"] for r in recs if r["event"] == "future_file")
        bad_files = Counter((r["path"], r.get("size"), r.get("mtime_ns")) for r in recs if r["event"] == "bad_file")
        nan_refs = {self.times[i].isoformat() for i, f in self.faults.items() if f == "all_nan"}
        refused_nan = {r["reference_time"] for r in cycles if r["outcome"] == "refused" and "NaN" in r["reason"]}
        stderr_tracebacks = sum("Traceback" in (self.work / f"runner{r.index}.stderr").read_text()
                                for r in self.runners if not r.ended.startswith("SIGKILL"))
        nan_earlier = [i for i in expected if any(self.faults.get(k) == "all_nan" for k in range(i - T_IN + 1, i))]
        return {
            "reference_times_on_the_grid": self.opts.cycles,
            **counts,
            "expected_with_an_all_nan_earlier_input": len(nan_earlier),
            "log": {
                "records": len(recs), "cut_lines": cut, "events": dict(Counter(r["event"] for r in recs)),
                "outcomes": dict(Counter(r["outcome"] for r in cycles)),
                "given_up_reference_times": len(given_up),
                "given_up_records": sum(given_up.values()),
                "given_up_records_repeating_the_one_before": repeated_give_ups(cycles),
                "future_file_records": sum(future.values()), "future_files_logged_more_than_once":
                    sum(1 for c in future.values() if c > 1),
                "bad_file_versions_logged_more_than_once": sum(1 for c in bad_files.values() if c > 1),
                "poll_errors": sum(1 for r in recs if r["event"] == "poll_error"),
            },
            "all_nan_reference_frames": len(nan_refs), "all_nan_refused_as_no_data": len(refused_nan & nan_refs),
            "tracebacks_of_runners_not_killed": stderr_tracebacks,
        }


def markdown(r: dict[str, Any]) -> str:
    c, lg, q = r["counts"], r["counts"]["log"], r["quiet_restart"]
    ok = c["expected"] == c["written"] and not (c["lost"] or c["duplicate"] or c["partial"] or c["extra"])
    frames = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["feed"]["faults"].items())
    extras = ", ".join(f"{k.replace('_', ' ')} {len(v)}" for k, v in r["feed"]["extra_files"].items())
    kills = "; ".join(f"{k['mode']}" + (f" ({k['temporary_file_at_kill']})" if k["temporary_file_at_kill"] else "")
                      + ("" if k["runner_had_started"] else " (before it had logged its start)") for k in r["kills"])
    return "\n".join([
        "# Soak: the operational runner over a faulty feed, killed with kill -9",
        "",
        f"`{r['command']}` on {r['date']}: {r['machine']['platform']}, {r['machine']['cpus']} CPUs, load average "
        f"{r['machine']['load_average_1min']} at the end; {r['wall_s']:.0f} s in all.",
        "",
        f"`geostp run --watch` (optical_flow, {T_IN} frames in, {STEPS} lead times, {SIZE} x {SIZE} synthetic "
        f"frames, `wait_for_late` {r['settings']['wait_for_late']} s, `catch_up` {r['settings']['catch_up']}) over "
        f"{r['settings']['cycles']} frames delivered every {r['settings']['interval']} s. Faulty frames: {frames}. "
        f"Extra files: {extras}. {len(r['kills'])} `kill -9`: {kills}; {len(r['runners'])} runner processes in all.",
        "",
        "| expected | written | lost | extra | duplicate | partial |",
        "|---|---|---|---|---|---|",
        f"| {c['expected']} | {c['written']} | {c['lost']} | {c['extra']} | {c['duplicate']} | {c['partial']} |",
        "",
        f"**{'Pass' if ok else 'FAIL'}**: expected = written, 0 lost, 0 extra, 0 duplicate, 0 partial. *Expected*: "
        "reference times whose three input files all came, readable and on the grid, with data in the "
        f"reference-time frame ({c['expected_with_an_all_nan_earlier_input']} of them have an all-NaN earlier "
        "input: the runner forecasts from them, as its policy says). *Written*: forecast files present at the "
        "end that open and check. *Duplicate*: more than one `written` record for a reference time, or a file "
        "that changed after it appeared. *Partial*: a temporary file left, or a forecast file that does not check.",
        "",
        f"- All-NaN reference frames: {c['all_nan_reference_frames']}, refused as holding no data: "
        f"{c['all_nan_refused_as_no_data']} (the others lacked another input first and were skipped).",
        f"- Log: {lg['records']} records, {lg['cut_lines']} lines cut by a kill; outcomes {lg['outcomes']}; "
        f"{lg['given_up_records']} `skipped`/`refused` records for {lg['given_up_reference_times']} reference "
        f"times, {lg['given_up_records_repeating_the_one_before']} repeating the one before with the same "
        f"files; {lg['future_file_records']} `future_file` records, {lg['future_files_logged_more_than_once']} "
        f"files logged more than once; bad-file versions logged more than once: "
        f"{lg['bad_file_versions_logged_more_than_once']}; poll errors: {lg['poll_errors']}.",
        f"- A runner started once more on the quiet feed logged {q['events']} (nothing but start and stop is "
        "what a restart should log).",
        f"- Tracebacks from runners that were not killed: {c['tracebacks_of_runners_not_killed']}.",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=240, help="frames delivered (reference times)")
    ap.add_argument("--kills", type=int, default=6, help="kill -9 restarts")
    ap.add_argument("--interval", type=float, default=0.4, help="seconds between frames")
    ap.add_argument("--wait-for-late", type=float, default=2.0)
    ap.add_argument("--catch-up", type=int, default=288, help="the runner's catch_up (288: a day of 5-min frames)")
    ap.add_argument("--settle-limit", type=float, default=600.0, help="seconds to wait for the last cycles")
    ap.add_argument("--lead", type=int, default=24, help="frames the feed may run ahead of the runner")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    opts = ap.parse_args()
    from geostp._version import __version__

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="geostp-soak-"))
    try:
        soak = Soak(opts, work)
        log(f"{opts.cycles} frames, faults {dict(Counter(soak.faults.values()))}, {opts.kills} kills; work {work}")
        soak.run()
        quiet = soak.quiet_restart()
        counts = soak.count()
        report = {
            "what": "soak of the operational runner: faulty feed, kill -9 restarts",
            "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": round(time.monotonic() - t0, 1),
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average_1min": round(os.getloadavg()[0], 2), "geostp": __version__},
            "settings": {"cycles": opts.cycles, "kills": opts.kills, "interval": opts.interval,
                         "wait_for_late": opts.wait_for_late, "catch_up": opts.catch_up, "seed": opts.seed,
                         "lead": opts.lead,
                         "model": "optical_flow", "input_steps": T_IN, "steps": STEPS, "size": SIZE},
            "feed": {"faults": dict(Counter(soak.faults.values())),
                     "faulty_frames": {str(i): f for i, f in sorted(soak.faults.items())},
                     "extra_files": dict(soak.extra_files)},
            "kills": soak.kills, "runners": [r.as_dict() for r in soak.runners],
            "counts": counts, "quiet_restart": quiet,
        }
    finally:
        if opts.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "soak.md").write_text(markdown(report))
    print(markdown(report))
    c = counts
    sys.exit(0 if c["expected"] == c["written"] and not (c["lost"] or c["duplicate"] or c["partial"] or c["extra"])
             else 1)


if __name__ == "__main__":
    main()
