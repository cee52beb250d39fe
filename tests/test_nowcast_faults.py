"""Operational faults of the nowcast runner: files stamped in the future or mis-named, and restarts that must not log
again what an earlier runner logged."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from geostp.errors import ConfigError, DataError

STEP = np.timedelta64(5, "m")


# ----------------------------------------------------------------------------- helpers


def _cube(n: int, size: int = 16) -> xr.Dataset:
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthetic_radar(n_times=n, ny=size, nx=size, seed=3, cells_per_frame=2.0).load()


def _name(t) -> str:
    return f"frame_{pd.Timestamp(t):%Y%m%d%H%M}.nc"


def _put(feed: Path, cube: xr.Dataset, i: int, *, stamp=None, shift_x: float = 0.0) -> Path:
    """Frame ``i`` of ``cube`` as a one-frame file in ``feed``, named by its time (or by ``stamp``)."""
    frame = cube.isel(time=[i])
    if shift_x:
        frame = frame.assign_coords(x=frame.x + shift_x)
    path = feed / _name(stamp if stamp is not None else frame.time.values[0])
    frame.to_netcdf(path)
    return path


def _runner(tmp: Path, feed: Path, out: Path, *, wall_clock=None, **nowcast):
    from geostp.recipes import load_recipe
    from geostp.recipes.run import nowcast_runner

    recipe = {
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"path": f"{feed}/frame_*.nc", "variable": "precipitation",
                                               "time_step": "5min"},
                 "variables": ["precipitation"]},
        "model": {"name": "optical_flow"},
        "nowcast": {"steps": 2, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc", "wait_for_late": 0,
                    **nowcast},
        "output": {"dir": str(out)},
    }
    path = tmp / "nowcast.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runner = nowcast_runner(load_recipe(path), echo=None)
    if wall_clock is not None:
        runner.wall_clock = wall_clock
    return runner


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _cycles(records: list[dict], *outcomes: str) -> list[dict]:
    return [r for r in records if r["event"] == "cycle" and (not outcomes or r["outcome"] in outcomes)]


def _events(records: list[dict], event: str) -> list[dict]:
    return [r for r in records if r["event"] == event]


def _iso(t) -> str:
    return pd.Timestamp(t).isoformat()


def _quiet_poll(runner, times: int = 1) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(times):
            runner.poll()


# ----------------------------------------------------------------------------- files from the future, mis-named


def test_a_future_stamped_file_is_ignored_while_the_runner_keeps_forecasting(tmp_path):
    cube = _cube(8)
    times = cube.time.values.astype("datetime64[ns]")
    feed, out = tmp_path / "feed", tmp_path / "out"
    feed.mkdir()
    now = [times[3] + np.timedelta64(2, "m")]  # files arrive just after their time, as in operation
    for i in range(4):
        _put(feed, cube, i)
    far = _put(feed, cube, 3, stamp="2099-01-01T00:00")  # a file stamped 2099
    ahead = _put(feed, cube, 3, stamp=times[3] + np.timedelta64(3, "h"))  # a clock three hours fast
    (feed / "frame_2024-07-01.nc").write_bytes(b"not a frame")  # mis-named: not the pattern, ignored
    (feed / "frame_202407011205.nc.part").write_bytes(b"half")  # a downloader's partial file
    runner = _runner(tmp_path, feed, out, wall_clock=lambda: now[0])
    log = out / "nowcast.log.jsonl"
    with runner:
        _quiet_poll(runner, 3)
        records = _records(log)
        written = [r["reference_time"] for r in _cycles(records, "written")]
        assert written == [_iso(times[2]), _iso(times[3])]  # forecast from the newest plausible time
        future = _events(records, "future_file")
        assert sorted(r["path"] for r in future) == sorted([str(far), str(ahead)])  # each logged once, 3 polls
        assert all("future_tolerance" in r["reason"] and r["future_tolerance_s"] == 3600 for r in future)
        assert {r["file_time"] for r in future} == {"2099-01-01T00:00:00", _iso(times[3] + np.timedelta64(3, "h"))}
        considered = {r["reference_time"] for r in _cycles(records)}
        assert considered == {_iso(t) for t in times[:4]}  # neither future time became a cycle

        for i in (4, 5):  # the feed goes on: so does the runner, the future files still there
            _put(feed, cube, i)
            now[0] = times[i] + np.timedelta64(1, "m")
            _quiet_poll(runner)
        records = _records(log)
        assert [r["reference_time"] for r in _cycles(records, "written")][-2:] == [_iso(times[4]), _iso(times[5])]
        assert len(_events(records, "future_file")) == 2
        assert not list(out.glob("nowcast_2099*")) and len(list(out.glob("nowcast_*.nc"))) == 4

        now[0] = times[3] + np.timedelta64(3, "h")  # the clock reaches the fast file: it is used from then on
        _quiet_poll(runner)
        assert _iso(times[3] + np.timedelta64(3, "h")) in {r["reference_time"] for r in _cycles(_records(log))}
    assert "2099" not in {r["reference_time"][:4] for r in _cycles(_records(log))}


def test_only_future_files_is_said_so_and_the_tolerance_is_a_setting(tmp_path):
    cube = _cube(4)
    times = cube.time.values.astype("datetime64[ns]")
    feed, out = tmp_path / "feed", tmp_path / "out"
    feed.mkdir()
    far = _put(feed, cube, 0, stamp="2099-01-01T00:00")
    with _runner(tmp_path, feed, out) as runner, pytest.raises(DataError, match="stamped in the future"):
        runner.run_once()

    for i in range(3):
        _put(feed, cube, i)
    five_minutes_ahead = _put(feed, cube, 2, stamp=times[2] + STEP)
    now = times[2]
    with _runner(tmp_path, feed, tmp_path / "strict", wall_clock=lambda: now, future_tolerance=0) as runner:
        rec = runner.run_once()  # 5 min ahead is too far with no tolerance: the newest plausible set is used
    assert rec["outcome"] == "written" and rec["reference_time"] == _iso(times[2])
    future = _events(_records(tmp_path / "strict" / "nowcast.log.jsonl"), "future_file")
    assert sorted(r["path"] for r in future) == sorted([str(far), str(five_minutes_ahead)])

    with _runner(tmp_path, feed, tmp_path / "lax", wall_clock=lambda: now, future_tolerance=600) as runner:
        _quiet_poll(runner)  # ten minutes of tolerance: the file 5 min ahead is a candidate like any other
    considered = {r["reference_time"] for r in _cycles(_records(tmp_path / "lax" / "nowcast.log.jsonl"))}
    assert _iso(times[2] + STEP) in considered

    with _runner(tmp_path, feed, tmp_path / "off", future_tolerance=None) as runner:
        _quiet_poll(runner)  # no limit: the 2099 file anchors the window, as before the setting existed
    assert "2099-01-01T00:00:00" in {r["reference_time"] for r in _cycles(_records(tmp_path / "off" /
                                                                                    "nowcast.log.jsonl"))}
    from geostp.operate import FeedPolicy

    with pytest.raises(ConfigError, match="future_tolerance=-1"):
        FeedPolicy(future_tolerance=-1)


# ----------------------------------------------------------------------------- restarts log each thing once


def test_a_restarted_runner_logs_each_given_up_cycle_once(tmp_path):
    """Skipped, refused, bad and future files are logged by the first runner only; a change is logged again."""
    cube = _cube(12)
    times = cube.time.values.astype("datetime64[ns]")
    feed, out = tmp_path / "feed", tmp_path / "out"
    feed.mkdir()
    missing, shifted, corrupt = 4, 7, 10
    for i in range(12):
        if i == missing:
            continue
        path = _put(feed, cube, i, shift_x=1000.0 if i == shifted else 0.0)
        if i == corrupt:
            path.write_bytes(path.read_bytes()[:300])
    _put(feed, cube, 0, stamp="2099-01-01T00:00")
    log = out / "nowcast.log.jsonl"
    with _runner(tmp_path, feed, out) as first:
        _quiet_poll(first, 2)
    records = _records(log)
    given_up = _cycles(records, "skipped", "refused")
    # cycles 0, 1: too few frames; 5, 6: frame 4 missing (no file, no cycle 4 yet); 7, 8, 9: frame 7 on another
    # grid (refused); 10, 11: frame 10 unreadable
    assert sorted(r["reference_time"] for r in given_up) == [_iso(times[i]) for i in (0, 1, 5, 6, 7, 8, 9, 10, 11)]
    assert {r["reference_time"] for r in _cycles(records, "refused")} == {_iso(times[i]) for i in (7, 8, 9)}
    assert len(_events(records, "bad_file")) == 1 and len(_events(records, "future_file")) == 1
    assert all(len(r["input_state"]) == 3 for r in given_up)

    with log.open("a") as fh:  # a runner killed while writing a line leaves it cut short
        fh.write('{"event":"cycle","reference_time":"2024-07-01T12:3')
    for restart in range(2):
        before = len(log.read_text().splitlines())
        with _runner(tmp_path, feed, out) as again:
            _quiet_poll(again, 2)
        lines = log.read_text().splitlines()[before:]
        new = [json.loads(line) for line in lines]  # the cut line was ended: every new line is one record
        assert [r["event"] for r in new] == ["start", "stop"], (restart, new)

    _put(feed, cube, missing)  # the missing frame arrives while no runner is up: its cycles change
    before = len(log.read_text().splitlines())
    with _runner(tmp_path, feed, out) as third:
        _quiet_poll(third, 2)
    new = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert [r["reference_time"] for r in _cycles(new, "written")] == [_iso(times[i]) for i in (4, 5, 6)]
    assert not _cycles(new, "skipped", "refused") and not _events(new, "bad_file")
    assert sorted(p.name for p in out.glob("nowcast_*.nc")) == [f"nowcast_{pd.Timestamp(times[i]):%Y%m%d%H%M}.nc"
                                                               for i in (2, 3, 4, 5, 6)]

    good = _put(feed, cube, corrupt)  # the corrupt file is replaced: cycle 10 reconsidered, and logged, once
    before = len(log.read_text().splitlines())
    with _runner(tmp_path, feed, out) as fourth:
        _quiet_poll(fourth, 2)
    new = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert good.exists() and {r["reference_time"] for r in _cycles(new)} == {_iso(times[i]) for i in (10, 11)}
    assert [r["outcome"] for r in _cycles(new)] == ["written", "written"]  # 7, 8, 9 stay refused, silently


def test_recall_reads_back_only_to_the_catch_up_window(tmp_path):
    from geostp.operate.journal import RunnerLog, recall

    t = np.datetime64("2024-07-01T12:00", "ns")
    rows = [
        {"event": "cycle", "reference_time": _iso(t + 20 * STEP), "outcome": "skipped", "input_state": ["early"]},
        {"event": "cycle", "reference_time": _iso(t), "outcome": "written"},  # far behind the window: stop here
        {"event": "bad_file", "path": "/feed/a.nc", "size": 3, "mtime_ns": 9},
        {"event": "cycle", "reference_time": _iso(t + 30 * STEP), "outcome": "skipped", "input_state": [None]},
        {"event": "cycle", "reference_time": _iso(t + 31 * STEP), "outcome": "refused", "input_state": ["x"]},
        {"event": "cycle", "reference_time": _iso(t + 31 * STEP), "outcome": "written"},  # the newest decides
        {"event": "future_file", "path": "/feed/f.nc", "file_time": "2099-01-01T00:00:00"},
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"event":"cyc')  # a cut last line
    log = RunnerLog(path, echo=None)
    log.open()
    try:
        assert len(list(log.read_back(block=16))) == len(rows)  # blocks smaller than a line are joined
        got = recall(log, horizon=t + 25 * STEP, window=12 * STEP)
    finally:
        log.close()
    assert got.given_up == {t + 30 * STEP: [None]}  # not the early record before the stop, not the written one
    assert got.bad_files == {("/feed/a.nc", 3, 9)}
    assert got.future_files == {("/feed/f.nc", "2099-01-01T00:00:00")}
    assert path.read_text().endswith('{"event":"cyc\n')  # opening ended the cut line


def test_a_one_shot_run_answers_even_for_a_cycle_an_earlier_run_gave_up(tmp_path):
    """``geostp run`` once: the answer is a record every time (a watching runner is the one that keeps quiet)."""
    cube = _cube(2)
    feed, out = tmp_path / "feed", tmp_path / "out"
    feed.mkdir()
    for i in range(2):
        _put(feed, cube, i)  # two frames: too few for optical_flow's three
    outcomes = []
    for _ in range(2):
        with _runner(tmp_path, feed, out) as runner:
            outcomes.append(runner.run_once()["outcome"])
    assert outcomes == ["skipped", "skipped"]
    assert len(_cycles(_records(out / "nowcast.log.jsonl"), "skipped")) == 2
