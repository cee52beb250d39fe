"""Operational hardening, the rest of issue 16: where the API writes, an evaluation over an outage, a short soak.

1. Every writer of the API refuses a place it cannot write (a regular file where its folder belongs, a path
   through a file, a read-only folder, a broken link) with a :class:`~geostp.errors.WriteError` that names the
   path and says what was expected, before anything is written: the nowcast runner's output folder and log
   (:class:`~geostp.operate.NowcastRunner`, and a nowcast recipe run through the API), ``geostp.fit``'s
   checkpoint, TensorBoard and model-store folders, the motion cache.
2. ``geostp.evaluate`` over reference times of which some hit an outage (a frame of only NaN): those are left
   out, with one warning naming them, and recorded in the scores' attrs; the scores are those of the usable
   times alone; only if none is usable is it an error.
3. A short soak of the runner (``benchmarks/soak.py``'s feed, faults and counting): in-process runners over a
   faulty feed, and ``geostp run --watch`` killed with ``kill -9`` while it starts and while it writes a forecast.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import geostp
from geostp.errors import ConfigError, CubeValueError, GeostpError, UnsafePathError, WriteError
from geostp.testing import assert_refused as _refused
from geostp.testing import read_only_folder

VAR = "precipitation"
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


def _cube(n: int = 8, size: int = 16) -> xr.Dataset:
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthetic_radar(n_times=n, ny=size, nx=size, seed=0).load()


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _feed(folder: Path, n: int = 4) -> Path:
    """``n`` frames as a feed delivers them, one netCDF file each."""
    folder.mkdir(parents=True, exist_ok=True)
    cube = _cube(n)
    for i in range(n):
        frame = cube.isel(time=[i])
        frame.to_netcdf(folder / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")
    return folder


def _runner(tmp_path: Path, **kwargs):
    """A runner (persistence, two lead times) over a feed of four frames in ``tmp_path/feed``."""
    import geostp.models as models
    from geostp.forecast import FittedForecaster
    from geostp.operate import FileFeed, NowcastRunner

    feed = _feed(tmp_path / "feed")
    files = FileFeed("netcdf", {"path": str(feed / "*.nc"), "variable": VAR, "time_step": "5min"},
                     time_pattern="frame_%Y%m%d%H%M", extension="nc")
    fitted = FittedForecaster(model=models.get("persistence", input_steps=2), variables=[VAR])
    return NowcastRunner(files, fitted, steps=2, echo=None, **kwargs)


def _bad_place(kind: str, tmp_path: Path) -> Path:
    """A folder path geostp cannot write: ``kind`` says why (the file in the way holds "mine")."""
    (tmp_path / "notes.txt").write_text("mine")
    if kind == "a regular file":
        return tmp_path / "notes.txt"
    if kind == "a path through a file":
        return tmp_path / "notes.txt" / "out"
    if kind == "a read-only folder":
        return read_only_folder(tmp_path) / "out"
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # a broken symbolic link
    return tmp_path / "gone" / "out"


BAD_PLACES = ["a regular file", "a path through a file", "a read-only folder", "a broken link"]


# ----------------------------------------------------------------------------- 1. the runner's places


@pytest.mark.parametrize("kind", BAD_PLACES)
def test_the_runner_refuses_an_output_folder_it_cannot_write_before_writing_anything(kind, tmp_path):
    out = _bad_place(kind, tmp_path)
    _feed(tmp_path / "feed")
    before = _tree(tmp_path)
    # refused when the runner is made; a read-only folder (that root may write, as far as access() says) at the
    # latest when it starts
    start = (lambda: _runner(tmp_path, out_dir=out).open()) if kind == "a read-only folder" else \
        (lambda: _runner(tmp_path, out_dir=out))
    _refused(WriteError, start, str(out), "out_dir", expected="expected a folder")
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("feed")} == \
        {k: v for k, v in before.items() if not k.startswith("feed")}, "nothing written, the file in the way kept"
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["a path through a file", "a read-only folder", "a broken link"])
def test_the_runner_refuses_a_log_it_cannot_write_before_creating_its_output_folder(kind, tmp_path):
    log = _bad_place(kind, tmp_path) / "nowcast.log.jsonl"
    out = tmp_path / "out"
    if kind == "a read-only folder":
        runner = _runner(tmp_path, out_dir=out, log_path=log)  # root: access() may say yes, the kernel says no
        _refused(WriteError, runner.open, str(log), expected="expected a folder")
        assert not list(out.glob("nowcast_*")) and not (out / "nowcast.log.jsonl").exists()
        return
    _refused(WriteError, lambda: _runner(tmp_path, out_dir=out, log_path=log), str(log), "log_path",
             expected="expected a folder")
    assert not out.exists(), "no output folder, no lock"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_output_folder_that_becomes_a_file_before_the_runner_starts(tmp_path):
    out = tmp_path / "out"
    runner = _runner(tmp_path, out_dir=out)
    out.write_text("mine")  # taken before open(): refused there too, the file left as it is
    _refused(WriteError, runner.open, str(out), expected="expected a folder")
    assert out.read_text() == "mine"


def test_a_folder_that_refuses_the_lock_is_a_write_error_not_an_unsafe_file(tmp_path, monkeypatch):
    folder = read_only_folder(tmp_path)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)  # the kernel, not the check, says no
    runner = _runner(tmp_path, out_dir=folder, log_path=tmp_path / "log.jsonl")
    with pytest.raises(GeostpError) as info:
        runner.open()
    assert isinstance(info.value, WriteError) and not isinstance(info.value, UnsafePathError), info.value
    assert str(folder / ".geostp-nowcast.lock") in str(info.value) and "expected" in str(info.value)
    assert not (tmp_path / "log.jsonl").exists()


def test_an_output_folder_with_missing_parents_and_odd_characters_is_created(tmp_path):
    out = tmp_path / "nowcasts ünïcode" / "a b" / "out"
    with _runner(tmp_path, out_dir=out) as runner:
        assert runner.run_once()["outcome"] == "written"
    assert len(list(out.glob("nowcast_*.nc"))) == 1


def test_a_log_that_cannot_be_written_mid_run_is_a_write_error_and_the_lock_is_released(tmp_path):
    out = tmp_path / "out"
    runner = _runner(tmp_path, out_dir=out)
    runner.open()

    class FullDisk:  # the log file, on a disk that has filled up
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def write(self, _text):
            raise OSError(errno.ENOSPC, "No space left on device")

    runner.log._fh = FullDisk(runner.log._fh)
    _refused(WriteError, runner.run_once, str(out / "nowcast.log.jsonl"), "disk is full")
    with pytest.raises(WriteError):
        runner.close("disk full")
    assert runner.log._fh is None and runner._lock_fd is None
    with _runner(tmp_path, out_dir=out) as again:  # the lock went with the runner that could not log
        assert again.run_once()["outcome"] in ("written", "exists")


def test_a_nowcast_recipe_whose_log_cannot_be_written_writes_nothing(tmp_path):
    import yaml

    from geostp.recipes.run import run_file

    feed = _feed(tmp_path / "feed")
    (tmp_path / "notes.txt").write_text("mine")
    log = tmp_path / "notes.txt" / "nowcast.log.jsonl"
    recipe = tmp_path / "nowcast.yaml"
    recipe.write_text(yaml.safe_dump({
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"path": str(feed / "*.nc"), "variable": VAR, "time_step": "5min"},
                 "variables": [VAR]},
        "model": {"name": "persistence"},
        "nowcast": {"steps": 2, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc"},
        "output": {"dir": str(tmp_path / "out"), "log": str(log)}}))
    _refused(WriteError, lambda: run_file(recipe), str(log), expected="expected a folder")
    assert not list((tmp_path / "out").glob("*")), "no recipe.yaml, no lock, no forecast"


# ----------------------------------------------------------------------------- 1. fit, TensorBoard, motion cache


TINY = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2}


@pytest.mark.parametrize("where", ["checkpoint_dir", "log_dir", "model store"])
def test_fit_refuses_a_folder_it_cannot_write_before_training(where, tmp_path, monkeypatch):
    import geostp.pipeline

    def trained(*args, **kwargs):
        raise AssertionError("the fit trained before refusing its output folder")

    monkeypatch.setattr(geostp.pipeline, "train_forecaster", trained)
    (tmp_path / "notes.txt").write_text("mine")
    bad = tmp_path / "notes.txt" / "sub"
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(bad if where == "model store" else tmp_path / "store"))
    kwargs = {"checkpoint_dir": bad} if where == "checkpoint_dir" else {"log_dir": bad} if where == "log_dir" else {}
    _refused(WriteError, lambda: geostp.fit(_cube(12), "tau", model_args=TINY, max_iterations=1, progress=False,
                                            use_store=where == "model store", **kwargs),
             str(bad), "GEOSTP_MODEL_STORE" if where == "model store" else where, expected="expected a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "store").exists()


def test_tensorboard_into_a_file_is_a_write_error(tmp_path):
    pytest.importorskip("tensorboard")
    from geostp.train.tensorboard import TensorBoardLogger

    (tmp_path / "notes.txt").write_text("mine")
    _refused(WriteError, lambda: TensorBoardLogger(tmp_path / "notes.txt"), str(tmp_path / "notes.txt"), "log_dir")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_motion_cache_through_a_file_is_a_write_error_naming_the_file(tmp_path):
    from geostp.advection import MotionCache

    (tmp_path / "notes.txt").write_text("mine")
    cache = MotionCache(tmp_path / "notes.txt" / "motion")
    frames = np.nan_to_num(_cube(3)[VAR].values).astype(np.float32)
    _refused(WriteError, lambda: cache.get("cube", 0, frames), str(tmp_path / "notes.txt" / "motion"))
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- 2. evaluate over an outage


def _evaluate(cube: xr.Dataset, refs, **kwargs) -> xr.Dataset:
    return geostp.evaluate(cube, ["persistence", "optical_flow"], steps=2, reference_times=refs, progress=False,
                           print_table=False, **kwargs)


def _label(cube: xr.Dataset, i: int) -> str:
    return str(pd.Timestamp(cube.time.values[i]))


def _outage(cube: xr.Dataset, *frames: int) -> xr.Dataset:
    out = cube.copy(deep=True)
    for i in frames:
        out[VAR].values[i] = np.nan  # the radar was down: no data at all in that frame
    return out


def _skip_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "cannot be scored" in str(w.message)]


def test_evaluate_leaves_out_the_reference_times_an_outage_hits_and_scores_the_rest(recwarn):
    cube = _outage(_cube(20), 10)
    refs = cube.time.values[6:14]
    scores = _evaluate(cube, refs)
    hit = [8, 9, 10]  # 10 is the reference frame; 8 and 9 are verified against it (two lead times)
    (message,) = _skip_warnings(recwarn)  # one warning, naming each time left out and why
    assert all(_label(cube, i) in message for i in hit) and "only NaN" in message, message
    assert scores.attrs["skipped_reference_times"] == [_label(cube, i) for i in hit]
    assert len(scores.attrs["skipped_reasons"]) == 3 and "at the reference time" in scores.attrs["skipped_reasons"][2]
    kept = [i for i in range(6, 14) if i not in hit]
    assert scores.attrs["cases"] == len(kept)
    assert scores.attrs["reference_times"] == [_label(cube, i) for i in kept]
    # the scores are those of the usable times alone: nothing of the outage is averaged in
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        alone = _evaluate(cube, cube.time.values[kept])
    assert not _skip_warnings(again) and alone.attrs["skipped_reference_times"] == []
    for name in scores.data_vars:
        assert np.isfinite(scores[name].values).all(), name
        np.testing.assert_array_equal(scores[name].values, alone[name].values)


def test_evaluate_leaves_out_a_reference_time_whose_observation_is_an_outage(recwarn):
    cube = _outage(_cube(20), 15)
    scores = _evaluate(cube, cube.time.values[6:14])
    assert scores.attrs["skipped_reference_times"] == [_label(cube, 13)]  # verified against 14 and 15
    assert _label(cube, 15) in scores.attrs["skipped_reasons"][0]
    (message,) = _skip_warnings(recwarn)
    assert _label(cube, 13) in message and "verify against" in message


def test_an_outage_in_an_earlier_input_frame_is_forecast_as_the_runner_does(recwarn):
    cube = _outage(_cube(20), 5)  # only the newest input frame must hold data (NaN is missing data)
    scores = _evaluate(cube, cube.time.values[8:12])
    assert scores.attrs["skipped_reference_times"] == [] and scores.attrs["cases"] == 4
    assert not _skip_warnings(recwarn)


def test_evaluate_refuses_when_no_reference_time_can_be_scored():
    cube = _outage(_cube(20), 8, 10)
    refs = cube.time.values[[8, 9, 10]]
    message = _refused(CubeValueError, lambda: _evaluate(cube, refs), *(_label(cube, i) for i in (8, 9, 10)),
                       "only NaN")
    assert "no reference time can be scored" in message


def test_scores_of_a_multi_sequence_cube_leave_out_the_cases_of_an_outage(recwarn):
    import geostp.models as models
    from geostp.evaluate import Verification, score_cases
    from geostp.forecast import FittedForecaster

    a, b = _cube(8), _cube(8)
    cube = xr.concat([a, b.assign_coords(time=a.time)], dim="sequence")
    cube[VAR].values[1, 4] = np.nan  # sequence 1, frame 4
    cases = np.zeros(4, dtype=[("sequence", int), ("time", int)])
    cases["sequence"], cases["time"] = [0, 0, 1, 1], [1, 3, 1, 3]
    fitted = FittedForecaster(model=models.get("persistence", input_steps=2), variables=[VAR])
    scores = score_cases(cube, {"persistence": fitted}, cases, steps=2, verification=Verification())
    assert scores.attrs["cases"] == 2
    assert scores.attrs["skipped_reference_times"] == [f"{_label(a, 2)} (sequence 1)", f"{_label(a, 4)} (sequence 1)"]
    assert len(_skip_warnings(recwarn)) == 1


def test_evaluate_refuses_reference_times_whose_lead_times_run_past_the_data():
    cube = _cube(20)
    _refused(ConfigError, lambda: _evaluate(cube, cube.time.values[[10, 19]]), _label(cube, 19), "steps=2")


# ----------------------------------------------------------------------------- 3. a short soak


def _soak_module():
    """``benchmarks/soak.py``: its feed, runner processes and counting."""
    spec = importlib.util.spec_from_file_location("geostp_soak_benchmark", REPO / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: The faulty frames of the short soak (frame index -> fault), as benchmarks/soak.py names them.
SHORT_SOAK_FAULTS = {4: "missing", 7: "corrupt", 12: "half_written", 14: "duplicate", 16: "all_nan", 18: "late",
                     21: "wrong_grid"}


def _wait(what: str, condition, proc, limit: float = 240.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = condition()
        if got:
            return got
        assert proc.poll() is None, f"the runner ended (rc {proc.returncode}) before {what}"
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what} after {limit:.0f} s")


def test_a_short_soak_loses_duplicates_and_leaves_half_written_nothing(tmp_path):
    """25 frames with a missing, a corrupt, a half-written, a duplicate, an all-NaN, a late and a wrong-grid frame
    and a file stamped 2099, through three runners of this process and two ``geostp run --watch`` processes
    killed with kill -9: one while it starts, one while it writes a forecast (a temporary file in the folder)."""
    from geostp.recipes import load_recipe
    from geostp.recipes.run import nowcast_runner

    soak = _soak_module()
    n = 25
    times, frames = soak.make_frames(n, tmp_path, seed=16)
    feed, out, work = tmp_path / "feed", tmp_path / "out", tmp_path / "work"
    feed.mkdir()
    work.mkdir()
    recipe = tmp_path / "soak.yaml"
    recipe.write_text(json.dumps(soak.nowcast_recipe(feed, out, wait_for_late=0, catch_up=48)))
    seen: dict[str, tuple[int, int]] = {}
    rewritten: set[str] = set()
    log = out / "nowcast.log.jsonl"

    def deliver(i: int, variant: str = "good") -> None:
        (feed / soak.name_of(times[i])).write_bytes(soak.frame_bytes(frames, i, variant))

    def frame(i: int, runner) -> None:
        """Frame ``i`` arrives as its fault says (a late one two frames on), the runner polls after each file."""
        fault = SHORT_SOAK_FAULTS.get(i)
        steps = {"missing": [], "late": [], "corrupt": ["corrupt"], "all_nan": ["all_nan"],
                 "wrong_grid": ["wrong_grid"], "half_written": ["half", "good"]}.get(fault, ["good"])
        if i - 2 in SHORT_SOAK_FAULTS and SHORT_SOAK_FAULTS[i - 2] == "late":
            steps = [*steps, ("late", i - 2)]
        if i - 3 in SHORT_SOAK_FAULTS and SHORT_SOAK_FAULTS[i - 3] == "duplicate":
            steps = [*steps, ("again", i - 3)]  # sent again after its forecast was written
        for step in steps:
            if isinstance(step, tuple):
                deliver(step[1])
            else:
                deliver(i, step)
            runner.poll()
            soak.note_outputs(out, seen, rewritten)
        if fault == "duplicate":
            deliver(i)  # the same file twice in a row
            runner.poll()

    def in_process():
        return nowcast_runner(load_recipe(recipe), echo=None)

    (feed / "frame_209901010000.nc").write_bytes(frames["good"][0])  # a clock gone wrong: ignored, logged once
    with in_process() as runner:
        for i in range(10):
            frame(i, runner)
    deliver(10)
    procs = []
    try:
        starting = soak.launch(recipe, 0, False, work)  # killed while it starts (importing, opening its log)
        procs.append(starting)
        time.sleep(0.5)
        soak.kill9(starting, "during start-up")
        writing = soak.launch(recipe, 1, True, work, commit_delay=120)  # killed with a forecast half-written
        procs.append(writing)
        tmp = _wait("a temporary forecast file", lambda: list(out.glob(".nowcast_*.tmp-*")), writing.proc)
        soak.kill9(writing, "mid-write")
        assert tmp[0].exists() and not (out / tmp[0].name.split(".tmp-")[0][1:]).exists()
    finally:
        for p in procs:
            if p.proc.poll() is None:
                soak.kill9(p, "test ended")
    with in_process() as runner:  # a runner started after the kill removes what the killed one left
        runner.poll()
        soak.note_outputs(out, seen, rewritten)
        for i in range(11, n):
            frame(i, runner)
        runner.poll()
    recs, cut = soak.records(log)
    before = len(recs)
    with in_process() as quiet:  # a restart on a quiet feed logs its start and stop, nothing else
        quiet.poll()
        quiet.poll()
    recs, cut = soak.records(log)
    assert [r["event"] for r in recs[before:]] == ["start", "stop"], recs[before:]

    expected = set(soak.expected_cycles(n, SHORT_SOAK_FAULTS))
    counts = soak.tally(out, times, expected, recs, rewritten)
    assert counts["expected"] == counts["written"] == 13, counts  # 23 reference times, 10 without their inputs
    assert (counts["lost"], counts["extra"], counts["duplicate"], counts["partial"]) == (0, 0, 0, 0), counts
    cycles = [r for r in recs if r["event"] == "cycle"]
    assert soak.repeated_give_ups(cycles) == 0, "a cycle given up is logged once"
    assert [r["path"] for r in recs if r["event"] == "future_file"] == [str(feed / "frame_209901010000.nc")]
    nan_ref = times[16].isoformat()
    assert any(c["reference_time"] == nan_ref and c["outcome"] == "refused" and "NaN" in c["reason"] for c in cycles)
    assert not any(c["reference_time"] == nan_ref and c["outcome"] == "written" for c in cycles)
    assert any(r["event"] == "bad_file" and r["path"].endswith(soak.name_of(times[7])) for r in recs)
    starts = [r for r in recs if r["event"] == "start"]
    assert any(tmp[0].name in s["removed_partial_files"] for s in starts), "the half-written file was removed"
    assert cut <= 2  # lines cut by the two kills at most


@pytest.mark.parametrize(("field", "value"), [
    ("expected_shape", (0, 0)), ("expected_shape", (128,)), ("expected_shape", (128.0, 128)),
    ("expected_shape", "128x128"), ("wait_for_late", -1.0), ("wait_for_late", float("nan")),
    ("wait_for_late", "2 min"), ("catch_up", -1), ("catch_up", 2.5), ("max_filled", "1"), ("max_attempts", 0),
])
def test_a_feed_policy_made_in_python_refuses_what_the_recipe_schema_refuses(field, value):
    from geostp.operate import FeedPolicy

    with pytest.raises(ConfigError, match=rf"FeedPolicy {field}=.*expected"):
        FeedPolicy(**{field: value})


def test_a_feed_policy_takes_its_usual_values():
    from geostp.operate import FeedPolicy

    policy = FeedPolicy(wait_for_late=0, catch_up=np.int64(12), expected_shape=(710, 640), max_filled=0)
    assert policy.expected_shape == (710, 640) and policy.catch_up == 12
