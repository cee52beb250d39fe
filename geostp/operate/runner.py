"""The operational runner: forecast from the newest frames of a folder that files arrive in, cycle after cycle.

A :class:`NowcastRunner` watches a :class:`~geostp.operate.feed.FileFeed`
(files of one source, their times read from their names, each read through
the source's adapter), and for every new reference time runs a forecaster on
the ``T_in`` frames ending there, writes the forecast atomically as
``nowcast_YYYYmmddHHMM.nc`` (and/or ``.zarr``), optionally map images
(:func:`geostp.plot.plot_map`), and one JSON log line per cycle.

Feed policy (what real feeds do; ``docs/nowcast.md`` says the same)
-------------------------------------------------------------------
Reference times
    Every time whose file is present and lies within ``catch_up`` steps of
    the newest file's time is a candidate; candidates run oldest first, each
    exactly once: a cycle whose outputs all exist as forecasts geostp wrote
    is complete and never rerun (a rerun after a restart is a no-op); a
    file of that name geostp did not write refuses the cycle (outcome
    ``refused``, logged once, naming the file; the file is left as it is).
Files from the future
    A file whose name carries a time more than ``future_tolerance`` seconds
    after the wall clock (UTC; a mis-named file, a clock gone wrong) is
    logged once (``future_file``) and ignored until the clock reaches it:
    the newest *plausible* time anchors the catch-up window, so such a file
    never stops the forecasts.
Restarts
    A restarted runner reads back what the log says about the reference
    times of its catch-up window: a cycle given up (``skipped``,
    ``refused``) whose files have not changed since, a bad file and a file
    from the future already logged are not logged again.
Late file
    A cycle with an input missing or unreadable waits up to
    ``wait_for_late`` seconds from when the runner first saw its
    reference-time file; a file that is still being written reads as corrupt
    and is simply waited for.  Once the inputs are complete the cycle runs,
    even late.
Missing frame
    After the wait, ``on_missing='skip'`` skips the cycle, logging which
    frames were missing (outcome ``skipped``); ``'fill_previous'`` fills up
    to ``max_filled`` missing inputs with the nearest earlier frame (never
    the reference-time frame itself), logging which (outcome ``written``,
    ``filled`` listed).  A skipped cycle is reconsidered when its files
    change, so a frame arriving after the skip still gets its forecast.
Corrupt file
    A file the adapter cannot read (empty, truncated, wrong format) is
    logged once (``bad_file``) and counts as missing; it is read again if it
    changes (size or modification time).  Nothing a file holds crashes the
    runner.
Different grid
    Every frame must have the grid of the runner's reference grid: the
    ``expected_shape`` if given, and the grid of the first cycle this output
    folder ever ran (recorded in ``.geostp-nowcast-grid.json``); a model
    checkpoint also checks its training grid.  A cycle with a frame on another
    grid is refused (outcome ``refused``, the message names the frame and both
    grids) and reconsidered only if that file changes.
No data, impossible values
    A cycle whose reference-time frame holds no data (only NaN: an outage)
    or whose inputs hold values its variable cannot take (a fill value, an
    infinity) is refused the same way (:class:`~geostp.errors.CubeValueError`),
    never written as an all-NaN or nonsense forecast.
Failures
    Any other error in a cycle is logged (outcome ``failed``) and retried at
    the next poll, ``max_attempts`` times in all.
Outputs
    Written through :mod:`geostp.writers` (the CF encoding and global
    attributes of every geostp forecast file): to a temporary name in the
    output folder, flushed to disk (fsync), then renamed onto the final name
    (an atomic rename): a reader sees a complete forecast or none.  Temporary
    leftovers of a killed runner are removed when the next runner starts.
Lock
    A runner holds ``fcntl.flock`` on ``.geostp-nowcast.lock`` in the output
    folder; a second runner on the same folder stops at once with
    :class:`NowcastLockedError`.  The kernel releases the lock of a killed
    process.  The lock and the log are opened without following links
    (``O_NOFOLLOW``): a lock or log that is a symbolic link, a hard link or
    not a regular file is refused (:class:`~geostp.errors.UnsafePathError`)
    and whatever it points at is left untouched.  A log, lock or grid record
    that is a regular file the runner did not write (a user's file of that
    name; ``log_path`` naming a user's notes) is refused with a
    :class:`~geostp.errors.WriteError` before anything is written
    (:func:`geostp.operate.journal.check_runner_files`); such a map is left
    as it is and logged (``map_failed``).
Where it writes
    The output folder and the log's folder are checked when the runner is
    made and again in :meth:`NowcastRunner.open`, before anything is created:
    one that cannot be written (a regular file where the folder belongs, a
    path through a file, a broken link, a read-only folder) is a
    :class:`~geostp.errors.WriteError` naming it; so is a folder that refuses
    the lock or log file, and a log that cannot be written later (a full
    disk), after which :meth:`NowcastRunner.close` still releases the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import to_timedelta
from geostp.cube import parse_time
from geostp.errors import (
    CheckpointError,
    ConfigError,
    CubeError,
    DataError,
    GeostpError,
    WriteError,
    writable_folder,
    writing,
)
from geostp.forecast import check_steps
from geostp.operate.feed import BadFile, FeedPolicy, FileFeed, Frame, grid_difference, stat_key
from geostp.operate.journal import (
    GRID_NAME,
    LOCK_EXPECTED,
    LOCK_NAME,
    MAP_EXPECTED,
    MAP_SOFTWARE,
    Logged,
    RunnerLog,
    check_runner_files,
    is_lock,
    is_lock_file,
    is_own_map,
    open_own_file,
    recall,
)
from geostp.writers import (
    SUFFIXES,
    atomic_path,
    atomic_write_text,
    check_own_file,
    forecasts_present,
    foreign_forecast,
    is_temp_name,
    redacted,
    remove_path,
    write_forecasts,
)

__all__ = ["NowcastRunner", "NowcastLockedError", "output_stem", "COMMIT_DELAY_ENV", "LOCK_NAME", "GRID_NAME"]

#: Seconds to pause between writing a forecast's temporary file and renaming it
#: (fault-injection tests use it to kill a runner in the middle of a write).
COMMIT_DELAY_ENV = "GEOSTP_NOWCAST_COMMIT_DELAY"


class NowcastLockedError(GeostpError):
    """Another nowcast runner holds the output folder's lock."""


def output_stem(reference_time: Any) -> str:
    """``nowcast_YYYYmmddHHMM`` for a reference time."""
    return "nowcast_" + pd.Timestamp(reference_time).strftime("%Y%m%d%H%M")


@dataclass
class _Cycle:
    first_seen: float
    status: str = "new"  # new | waiting | skipped | refused | failed | done
    key: tuple = ()
    attempts: int = 0
    recalled: Any = None  # the inputs' state when an earlier runner gave this cycle up, as its log holds it
    foreign: str | None = None  # why a file geostp did not write under an output's name refused it (logged)


def _iso(t: Any) -> str:
    return pd.Timestamp(t).isoformat()


def _utc_now() -> np.datetime64:
    return np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "ns")


class NowcastRunner:
    """Forecast each new reference time of a feed exactly once (module docstring for the policy).

    Parameters
    ----------
    feed
        A :class:`FileFeed`.
    forecaster
        A :class:`geostp.forecast.FittedForecaster` (a checkpoint, or a baseline
        wrapped with no normaliser).
    steps
        Lead times per cycle.
    out_dir
        The output folder (created; locked while the runner lives).
    formats
        ``"netcdf"`` and/or ``"zarr"``.
    maps
        Lead times (minutes, or strings such as ``"30min"``) drawn as PNG maps
        when :mod:`geostp.plot` is available; failures are logged, never fatal.
    policy
        :class:`FeedPolicy`.
    crop
        ``crop(ny, nx) -> {"y": slice, "x": slice}``: a sub-domain of every frame.
    log_path
        The JSON-lines log (default ``out_dir/nowcast.log.jsonl``).
    echo
        A stream that also gets every log line (default ``"stdout"``: the current
        ``sys.stdout``; None for none).
    attrs
        Global attributes of every output file (the resolved recipe, say).
    redact
        ``{text: replacement}`` applied to every log line (a recipe's expanded ``${VAR}`` values by their
        references, so that a secret in an environment variable stays out of the log).
    device, tile
        Passed to :meth:`FittedForecaster.predict`.
    clock
        Monotonic seconds (tests replace it).
    wall_clock
        The time now in UTC, as ``datetime64[ns]`` without a time zone: what file times are compared with
        (``policy.future_tolerance``; tests replace it).
    """

    def __init__(
        self,
        feed: FileFeed,
        forecaster: Any,
        *,
        steps: int,
        out_dir: str | os.PathLike[str],
        formats: Sequence[str] = ("netcdf",),
        maps: Sequence[Any] = (),
        policy: FeedPolicy | None = None,
        crop: Callable[[int, int], dict[str, slice]] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        echo: TextIO | str | None = "stdout",
        attrs: Mapping[str, Any] | None = None,
        redact: Mapping[str, str] | None = None,
        device: str = "cpu",
        tile: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], np.datetime64] | None = None,
    ) -> None:
        if not formats or any(f not in SUFFIXES for f in formats):
            raise ConfigError(f"formats={list(formats)}; expected one or more of {list(SUFFIXES)}")
        steps = check_steps(steps)
        self.feed = feed
        self.forecaster = forecaster
        self.t_in = int(forecaster.model.input_steps)
        self.steps = int(steps)
        self.out_dir = Path(out_dir)
        self.formats = list(dict.fromkeys(formats))
        self.maps = list(maps)
        self.policy = policy or FeedPolicy()
        self.crop = crop
        self.log = RunnerLog(Path(log_path) if log_path else self.out_dir / "nowcast.log.jsonl", echo,
                             {k: v for k, v in (redact or {}).items() if k}, own_only=True)
        self.attrs = dict(attrs or {})
        self.device = device
        self.tile = tile
        self.clock = clock
        self.wall_clock = wall_clock or _utc_now
        self.stop_event = threading.Event()
        self._cycles: dict[np.datetime64, _Cycle] = {}
        self._frames: dict[Path, tuple[tuple[int, int] | None, Frame | BadFile]] = {}
        self._bad_logged: set[tuple[Path, Any]] = set()
        self._notes_logged: set[str] = set()
        self._future_logged: set[tuple[Path, np.datetime64]] = set()
        self._logged: Logged | None = None  # what earlier runners logged (read back at the first scan)
        self._lock_fd: int | None = None
        self._grid: dict[str, Any] | None = None
        self.written: list[np.datetime64] = []
        self._check_places()

    def _check_places(self) -> None:
        """Refuse (:class:`~geostp.errors.WriteError`) an output folder or a log folder the runner cannot write,
        creating nothing: called when the runner is made and again when it starts."""
        writable_folder(self.out_dir, "output folder of the nowcast runner (out_dir)")
        if self.log.path is not None:
            writable_folder(self.log.path.parent, "nowcast log (log_path)", for_file=self.log.path)
        check_runner_files(self.out_dir, self.log.path)

    # ------------------------------------------------------------------ lock and lifecycle
    def __enter__(self) -> NowcastRunner:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        """Create and lock the output folder; remove partial files a killed runner left.

        An output or log folder that cannot be written (a read-only folder, a file where a folder belongs) is a
        :class:`~geostp.errors.WriteError` naming it, raised before anything is created.
        """
        self._check_places()
        with writing(self.out_dir, "output folder of the nowcast runner (out_dir)"):
            self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = open_own_file(self.out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, "nowcast lock file")
        if not is_lock(os.pread(fd, 64, 0)):  # a file geostp did not write: left as it is
            os.close(fd)
            check_own_file(self.out_dir / LOCK_NAME, is_lock_file, what="nowcast lock file", expected=LOCK_EXPECTED)
            raise WriteError(f"refusing to write {self.out_dir / LOCK_NAME}: it is not a lock file geostp wrote; "
                             f"expected {LOCK_EXPECTED}")  # it changed meanwhile: refused all the same
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise NowcastLockedError(
                f"another nowcast runner holds the lock on {self.out_dir} ({holder or 'unknown holder'}); "
                "two runners must not write the same output folder: stop the other one or choose another "
                "output.dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_iso(datetime.now(timezone.utc))}"
                      .encode(), 0)
        self._lock_fd = fd
        try:
            self.log.open()  # a log that is a link is refused before the runner writes anything
        except GeostpError:
            self._unlock()
            raise
        removed = []
        for p in sorted(self.out_dir.iterdir()):
            if is_temp_name(p.name) and (p.name.startswith(".nowcast_") or p.name.startswith(GRID_NAME)):
                remove_path(p)
                removed.append(p.name)
        grid_file = self.out_dir / GRID_NAME
        if grid_file.exists():
            with contextlib.suppress(OSError, ValueError):
                self._grid = json.loads(grid_file.read_text())
        self._event("start", pid=os.getpid(), feed=self.feed.files, model=self.forecaster.name,
                    input_steps=self.t_in, steps=self.steps, out_dir=str(self.out_dir),
                    removed_partial_files=removed, policy=self.policy.__dict__)

    def close(self, reason: str = "done") -> None:
        try:
            if self._lock_fd is not None:
                self._event("stop", reason=reason, written=len(self.written))
        finally:  # a log that cannot be written (a full disk) still lets the lock go
            self._unlock()
            self.log.close()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _event(self, event: str, **fields: Any) -> None:
        self.log.write({"event": event, "time": _iso(datetime.now(timezone.utc)), **fields})

    # ------------------------------------------------------------------ frames
    def _frame(self, path: Path, t: np.datetime64) -> Frame:
        key = stat_key(path)
        cached = self._frames.get(path)
        if cached is not None and cached[0] == key:
            result = cached[1]
        else:
            try:
                result = self.feed.read(path, t)
            except BadFile as exc:
                result = exc
            self._frames[path] = (key, result)
        if isinstance(result, BadFile):
            if (path, key) not in self._bad_logged:
                self._bad_logged.add((path, key))
                size, mtime = key or (None, None)
                if self._logged is None or tuple(self.log.as_logged([str(path), size, mtime])) \
                        not in self._logged.bad_files:
                    self._event("bad_file", path=str(path), kind=result.kind, reason=result.reason, size=size,
                                mtime_ns=mtime)
            raise result
        return result

    def _check_grid(self, frame: Frame) -> None:
        exp = self.policy.expected_shape
        if exp is not None and list(frame.grid["shape"]) != list(exp):
            raise BadFile(frame.path, "grid", f"has a grid of shape {tuple(frame.grid['shape'])}; expected "
                                              f"{tuple(exp)} (nowcast.expected_shape)")
        if self._grid is not None and (diff := grid_difference(self._grid, frame.grid)):
            raise BadFile(frame.path, "grid", f"is on another grid: {diff} (the grid of this output folder's "
                                              f"first cycle, recorded in {GRID_NAME}; delete that file if the "
                                              "feed's grid changed on purpose)")

    def _prune(self, newest: np.datetime64) -> None:
        horizon = newest - (self.policy.catch_up + self.t_in + 2) * self.feed.step
        for p in [p for p, (_, f) in self._frames.items()
                  if isinstance(f, Frame) and f.time < horizon]:
            del self._frames[p]
        for t in [t for t in self._cycles if t < horizon]:
            del self._cycles[t]

    # ------------------------------------------------------------------ outputs
    def output_paths(self, t: Any) -> list[Path]:
        stem = output_stem(t)
        return [self.out_dir / (stem + SUFFIXES[f]) for f in self.formats]

    def complete(self, t: Any) -> bool:
        """All outputs of reference time ``t`` exist as geostp's forecasts (only complete: atomic renames)."""
        return forecasts_present(self.output_paths(t))

    # ------------------------------------------------------------------ one pass
    def poll(self, *, wait: bool = True) -> list[dict[str, Any]]:
        """Look at the feed once and run every cycle that is due; return the cycle records logged."""
        files = self._scan()
        if not files:
            return []
        newest = max(files)
        self._prune(newest)
        first = newest - self.policy.catch_up * self.feed.step
        records = []
        for t in sorted(t for t in files if t >= first):
            if self.stop_event.is_set():
                break
            rec = self._consider(t, files, wait=wait)
            if rec is not None:
                records.append(rec)
        return records

    def _scan(self) -> dict[np.datetime64, Path]:
        """The feed's files by time, those from the future left out (each logged once, as is each feed note)."""
        files, notes = self.feed.scan()
        tolerance = self.policy.future_tolerance
        now = self.wall_clock()
        limit = None if tolerance is None else now + np.timedelta64(round(tolerance * 1e9), "ns")
        future = {t: p for t, p in files.items() if limit is not None and t > limit}
        files = {t: p for t, p in files.items() if t not in future}
        if self._logged is None and (files or future):
            newest = max(files) if files else np.datetime64(now, "ns")
            self._logged = recall(self.log, newest - (self.policy.catch_up + self.t_in + 2) * self.feed.step,
                                  self.policy.catch_up * self.feed.step)
        logged = self._logged or Logged()
        for note in notes:
            if note not in self._notes_logged:
                self._notes_logged.add(note)
                if self.log.as_logged(note) not in logged.notes:
                    self._event("feed_note", note=note)
        for t, p in sorted(future.items()):
            if (p, t) not in self._future_logged:
                self._future_logged.add((p, t))
                if tuple(self.log.as_logged([str(p), _iso(t)])) not in logged.future_files:
                    self._event("future_file", path=str(p), file_time=_iso(t), wall_clock_utc=_iso(now),
                                future_tolerance_s=tolerance,
                                reason=f"its name says {_iso(t)}, more than {tolerance:g} s after the wall clock "
                                       f"(UTC); ignored until then (nowcast.future_tolerance)")
        return files

    def _inputs_key(self, needed: Sequence[np.datetime64], files: Mapping[np.datetime64, Path]) -> tuple:
        return tuple((str(files[n]), *(stat_key(files[n]) or (None, None))) if n in files else None
                     for n in needed)

    def _give_up(self, t, cyc: _Cycle, outcome: str, **fields: Any) -> dict[str, Any]:
        """Record a cycle given up (``skipped`` or ``refused``) with the state of its inputs: the log says it once."""
        cyc.status = outcome
        return self._record(t, outcome, **fields, input_state=[list(k) if k else None for k in cyc.key])

    def _consider(self, t: np.datetime64, files: Mapping[np.datetime64, Path], *, wait: bool,
                  forced: bool = False, read_before: float = 0.0) -> dict[str, Any] | None:
        step = self.feed.step
        needed = [t - k * step for k in range(self.t_in - 1, -1, -1)]
        cyc = self._cycles.get(t)
        if cyc is None:
            cyc = self._cycles[t] = _Cycle(first_seen=self.clock())
            if self._logged is not None and t in self._logged.given_up:  # given up by an earlier runner
                cyc.status, cyc.recalled = "skipped", self._logged.given_up.pop(t)
        if cyc.status == "done":
            return None
        said, cyc.foreign = cyc.foreign, foreign_forecast(self.output_paths(t))  # never taken for its forecast
        if cyc.foreign:  # logged once per reason (a one-shot run says it again); gone: it runs
            return self._record(t, "refused", inputs=[], reason=cyc.foreign) if forced or cyc.foreign != said else None
        if self.complete(t):
            cyc.status = "done"
            return None if not forced else self._record(t, "exists", inputs=[], reason="outputs already exist")
        key = self._inputs_key(needed, files)
        if cyc.recalled is not None:  # the same files as when it was given up: nothing to log again
            cyc.key = key if self.log.as_logged([list(k) if k else None for k in key]) == cyc.recalled else ()
            cyc.recalled = None
        if cyc.status in ("skipped", "refused") and cyc.key == key and not forced:
            return None  # nothing changed since it was given up (a one-shot run asked for it: it is said again)
        if cyc.status == "failed" and cyc.attempts >= self.policy.max_attempts and cyc.key == key:
            return None
        cyc.key = key

        clock0 = self.clock()
        started = time.perf_counter() - read_before  # frames already read for this cycle count as reading
        frames: dict[np.datetime64, Frame] = {}
        problems: dict[np.datetime64, str] = {}
        refused: list[str] = []
        for n in needed:
            p = files.get(n)
            if p is None:
                problems[n] = "missing"
                continue
            try:
                frame = self._frame(p, n)
                self._check_grid(frame)
                frames[n] = frame
            except BadFile as exc:
                if exc.kind == "grid":
                    refused.append(f"{exc.path.name} {exc.reason}")
                else:
                    problems[n] = f"unreadable: {exc.path.name} {exc.reason}"
        if not refused and frames and self._grid is None:
            grids = [f.grid for f in frames.values()]
            odd = [f for f in frames.values() if grid_difference(grids[-1], f.grid)]
            if odd:
                refused.append(f"the inputs are on different grids ({odd[0].path.name}: "
                               f"{grid_difference(grids[-1], odd[0].grid)} compared with "
                               f"{frames[max(frames)].path.name})")
        read_s = time.perf_counter() - started
        inputs = [str(frames[n].path.name) if n in frames else None for n in needed]
        if refused:
            return self._give_up(t, cyc, "refused", inputs=inputs, reason="; ".join(refused),
                                 timings={"read_s": read_s})
        filled: list[str] = []
        if problems:
            waited = clock0 - cyc.first_seen
            if wait and waited < self.policy.wait_for_late:
                if cyc.status != "waiting":
                    cyc.status = "waiting"
                    self._event("waiting", reference_time=_iso(t), for_frames={_iso(n): r for n, r in problems.items()},
                                wait_limit_s=self.policy.wait_for_late)
                return None
            fill = self._fill(t, needed, frames, problems, files)
            if fill is None:
                head = f"incomplete inputs after waiting {waited:.1f} s" if wait else "incomplete inputs"
                detail = "; ".join(f"{_iso(n)} {r}" for n, r in problems.items())
                return self._give_up(t, cyc, "skipped", inputs=inputs, timings={"read_s": read_s},
                                     reason=f"{head}: {detail}", missing=[_iso(n) for n in problems])
            frames, filled = fill
        return self._run(t, needed, frames, filled, cyc, read_s, started)

    def _fill(self, t, needed, frames, problems, files):
        """Fill missing inputs with the nearest earlier frame (policy fill_previous); None if not allowed."""
        pol = self.policy
        if pol.on_missing != "fill_previous" or t in problems or len(problems) > pol.max_filled:
            return None
        out = dict(frames)
        filled = []
        for n in needed:
            if n in out:
                continue
            prev = None
            for k in range(1, pol.max_filled + 2):  # search back a little beyond the window
                c = n - k * self.feed.step
                if c in out:
                    prev = out[c]
                    break
                if c in files:
                    with contextlib.suppress(BadFile):
                        cand = self._frame(files[c], c)
                        self._check_grid(cand)
                        prev = cand
                        break
            if prev is None:
                return None
            out[n] = Frame(time=n, path=prev.path, data=prev.data.assign_coords(time=[n]), grid=prev.grid)
            filled.append(f"{_iso(n)} from {prev.path.name}")
        return out, filled

    def _cube(self, needed: Sequence[np.datetime64], frames: Mapping[np.datetime64, Frame]) -> xr.Dataset:
        parts = [frames[n].data for n in needed]
        cube = parts[0] if len(parts) == 1 else xr.concat(
            parts, dim="time", data_vars="minimal", coords="minimal", compat="override", join="override")
        if self.crop is not None:
            cube = cube.isel(self.crop(cube.sizes["y"], cube.sizes["x"]))
        from geostp.conventions import format_step

        cube.attrs["time_step"] = format_step(pd.Timedelta(self.feed.step))
        return cube

    def _run(self, t, needed, frames, filled, cyc: _Cycle, read_s: float, started: float):
        timings: dict[str, float] = {"read_s": read_s}
        inputs = [frames[n].path.name for n in needed]
        try:
            cube = self._cube(needed, frames)
            timings["read_s"] = time.perf_counter() - started
            t1 = time.perf_counter()
            fc = self.forecaster.predict(cube, self.steps, device=self.device, tile=self.tile)
            timings["forecast_s"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            written = self._write(fc, t, inputs, filled)
            timings["write_s"] = time.perf_counter() - t2
        except (CheckpointError, CubeError) as exc:  # the data do not fit the model (a grid or unit change), or
            # hold impossible values or no data at all (an outage): retrying the same inputs cannot help
            return self._give_up(t, cyc, "refused", inputs=inputs, reason=str(exc), timings=timings)
        except Exception as exc:
            cyc.status = "failed"
            cyc.attempts += 1
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return self._record(t, "failed", inputs=inputs, timings=timings, attempt=cyc.attempts,
                                reason=tb, retry=cyc.attempts < self.policy.max_attempts)
        if self._grid is None:
            self._grid = frames[needed[-1]].grid
            atomic_write_text(self.out_dir / GRID_NAME, json.dumps(self._grid))
        maps = self._maps(fc, t)
        timings["total_s"] = time.perf_counter() - started
        cyc.status = "done"
        self.written.append(t)
        leads = (fc["lead_time"].values / np.timedelta64(1, "m")).astype(float).tolist()
        return self._record(t, "written", inputs=inputs, filled=filled, timings=timings,
                            outputs=[p.name for p in written], maps=maps, lead_times_min=leads)

    def _record(self, t, outcome: str, **fields: Any) -> dict[str, Any]:
        timings = fields.pop("timings", None)
        if timings is not None:
            timings = {k: round(v, 4) for k, v in timings.items()}
        rec = {"event": "cycle", "time": _iso(datetime.now(timezone.utc)), "reference_time": _iso(t),
               "outcome": outcome, "model": self.forecaster.name, **fields}
        if timings is not None:
            rec["timings"] = timings
        self.log.write(rec)
        return rec

    # ------------------------------------------------------------------ writing
    def _write(self, fc: xr.DataArray, t, inputs: Sequence[str], filled: Sequence[str]) -> list[Path]:
        """Every missing output of reference time ``t``, all at once (:func:`geostp.writers.write_forecasts`)."""
        todo = [(f, p) for f, p in zip(self.formats, self.output_paths(t), strict=True) if not forecasts_present([p])]
        attrs = {"model": self.forecaster.name, "input_files": ", ".join(inputs), "filled_inputs": "; ".join(filled),
                 **self.attrs}
        if self.log.redact:  # a path in the forecast's attributes (its checkpoint) may hold an expanded secret
            attrs = redacted(attrs, self.log.redact)
            fc = fc.copy()
            fc.attrs = redacted(dict(fc.attrs), self.log.redact)
        delay = float(os.environ.get(COMMIT_DELAY_ENV, "0") or 0)
        # keep_existing: a concurrent writer cannot exist (lock); a final left by an earlier runner wins
        return write_forecasts(fc, todo, attrs=attrs, keep_existing=True,
                               before_commit=(lambda: time.sleep(delay)) if delay > 0 else None)

    def _maps(self, fc: xr.DataArray, t) -> list[str]:
        if not self.maps:
            return []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            from geostp.plot import plot_map
        except ImportError as exc:
            self._event("maps_unavailable", reason=str(exc))
            return []
        out = []
        for lead in self.maps:
            try:
                ax = plot_map(fc, lead)
                delta = to_timedelta(lead)  # minutes, or an interval
                path = self.out_dir / f"{output_stem(t)}_{int(delta / pd.Timedelta(minutes=1)):03d}min.png"
                check_own_file(path, is_own_map, what="map", expected=MAP_EXPECTED)  # a user's file: map_failed
                with atomic_path(path) as tmp:
                    ax.figure.savefig(tmp, dpi=90, format="png", metadata={"Software": MAP_SOFTWARE})
                plt.close(ax.figure)
                out.append(path.name)
            except Exception as exc:  # a map is a by-product: never fail the cycle for it
                plt.close("all")
                self._event("map_failed", reference_time=_iso(t), lead_time=str(lead),
                            reason=f"{type(exc).__name__}: {exc}"[:300])
        return out

    # ------------------------------------------------------------------ modes
    def run_once(self, reference_time: Any = None) -> dict[str, Any]:
        """One cycle now, no waiting: the newest reference time whose inputs are complete (or ``reference_time``).

        With ``on_missing='fill_previous'`` the newest fillable set is used when no
        complete one is within ``catch_up`` steps.
        """
        files = self._scan()
        if not files:
            ignored = f" (only files stamped in the future, ignored: {len(self._future_logged)})" \
                if self._future_logged else ""
            raise DataError(f"no file matching {self.feed.files} (names like {self.feed.time_pattern}) is there "
                            f"yet{ignored}")
        if reference_time is not None:
            t = parse_time(reference_time, argument="reference_time")  # a ConfigError naming a value that is no time
            if t not in files:
                raise DataError(f"no input file for reference time {pd.Timestamp(t)} in {self.feed.files}")
            rec = self._consider(t, files, wait=False, forced=True)
            return rec if rec is not None else self._record(t, "exists", inputs=[], reason="already done")
        newest = max(files)
        first = newest - self.policy.catch_up * self.feed.step
        candidates = sorted((t for t in files if t >= first), reverse=True)
        for t in candidates:  # the newest complete set first
            if self.complete(t):
                return self._record(t, "exists", inputs=[], reason="outputs already exist")
            checked = time.perf_counter()
            needed = [t - k * self.feed.step for k in range(self.t_in - 1, -1, -1)]
            ok = True
            for n in needed:
                try:
                    if n not in files:
                        raise KeyError(n)
                    self._check_grid(self._frame(files[n], n))
                except (KeyError, BadFile):
                    ok = False
                    break
            if ok:
                return self._consider(t, files, wait=False, forced=True,  # type: ignore[return-value]
                                      read_before=time.perf_counter() - checked)
        return self._consider(candidates[0], files, wait=False, forced=True)  # type: ignore[return-value]

    def watch(self, poll_seconds: float = 30.0, *, max_polls: int | None = None,
              handle_signals: bool = True) -> int:
        """Poll until SIGTERM/SIGINT (or ``max_polls``); return the number of forecasts written."""
        from geostp.checks import check_polling

        check_polling(poll_seconds, max_polls)  # a ConfigError before the first poll: <= 0 would poll back to back
        previous: dict[int, Any] = {}
        reason = "max_polls reached"

        def stop(signum, _frame):
            nonlocal reason
            reason = signal.Signals(signum).name
            self.stop_event.set()

        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, stop)
        polls = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self.poll()
                except Exception as exc:  # never crash on what a feed holds: log it, keep polling
                    self._event("poll_error", reason=f"{type(exc).__name__}: {exc}"[:500],
                                where=traceback.format_exc(limit=3)[-800:])
                polls += 1
                if max_polls is not None and polls >= max_polls:
                    break
                self.stop_event.wait(poll_seconds)
            if self.stop_event.is_set() and reason == "max_polls reached":
                reason = "stopped"
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close(reason)
        return len(self.written)
