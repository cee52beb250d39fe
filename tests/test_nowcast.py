"""Operational nowcasting: a --watch runner fed real MeteoSwiss frames one by one, and a soak run with injected faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

REPO = Path(__file__).resolve().parents[1]
NOWCAST_RECIPE = REPO / "geostp" / "recipes" / "examples" / "mch_nowcast.yaml"



# ----------------------------------------------------------------------------- helpers


def _records(log: Path) -> list[dict]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object: a torn line fails here
    return out


def _cycles(log: Path, outcome: str | None = None) -> list[dict]:
    return [r for r in _records(log) if r["event"] == "cycle" and (outcome is None or r["outcome"] == outcome)]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the runner exited ({proc.returncode}) while waiting for {what}: "
                                 f"{_stderr(proc)}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _stderr(proc: subprocess.Popen) -> str:
    err = getattr(proc, "_err_path", None)
    return Path(err).read_text()[-3000:] if err and Path(err).exists() else ""


def _runner(recipe: Path, sets: list[str], tmp: Path, tag: str, env_extra: dict | None = None,
            watch: bool = True) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    args = [sys.executable, "-m", "geostp.cli", "run", str(recipe), *(["--watch"] if watch else [])]
    for s in sets:
        args += ["--set", s]
    out = open(tmp / f"{tag}.stdout", "w")  # noqa: SIM115 - closed with the process
    err = open(tmp / f"{tag}.stderr", "w")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=REPO)
    proc._err_path = str(tmp / f"{tag}.stderr")  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _times(paths: list[Path]) -> list[np.datetime64]:
    return [np.datetime64(pd.Timestamp(datetime.strptime(p.stem.split("_")[1], "%Y%m%d%H%M")), "ns") for p in paths]


# ----------------------------------------------------------------------------- real MeteoSwiss frames, --watch


@pytest.mark.realdata
def test_watch_forecasts_each_new_reference_time_once(shared_data, tmp_path):
    frames = sorted((shared_data / "radar" / "mch" / "20160711").glob("AQC*_00005.801.gif"))[:7]
    assert len(frames) == 7
    feed, out = tmp_path / "feed", tmp_path / "out"
    feed.mkdir()
    steps = 3
    sets = [f"data.args.pattern={feed}/AQC*_00005.801.gif", f"output.dir={out}", f"nowcast.steps={steps}",
            "data.crop={size: 128}", "nowcast.wait_for_late=1", "nowcast.poll_seconds=0.25", "output.maps=[]"]
    proc = _runner(NOWCAST_RECIPE, sets, tmp_path, "runner")
    log = out / "nowcast.log.jsonl"
    try:
        start = _wait_for(lambda: [r for r in _records(log) if r["event"] == "start"], 90, "the runner to start",
                          proc)[0]
        t_in = start["input_steps"]
        for i, f in enumerate(frames):
            shutil.copy(f, feed / f.name)  # written in place, as many feeds do: a reader may see it half-written
            ref = pd.Timestamp(datetime.strptime(f.name[3:12], "%y%j%H%M")).isoformat()
            _wait_for(lambda ref=ref: [c for c in _cycles(log) if c["reference_time"] == ref], 60,
                      f"the cycle of frame {i} ({ref})", proc)

        # a second runner on the same output folder refuses to start
        second = subprocess.run([sys.executable, "-m", "geostp.cli", "run", str(NOWCAST_RECIPE), "--watch",
                                 *sum((["--set", s] for s in sets), [])], capture_output=True, text=True,
                                timeout=120, cwd=REPO)
        assert second.returncode == 2, second.stderr
        assert "another nowcast runner holds the lock" in second.stderr
    finally:
        rc = _stop(proc)
    assert rc == 0, _stderr(proc)
    assert "Traceback" not in _stderr(proc)

    refs = [np.datetime64(pd.Timestamp(datetime.strptime(f.name[3:12], "%y%j%H%M")), "ns") for f in frames]
    expected = refs[t_in - 1:]
    outputs = sorted(out.glob("nowcast_*.nc"))
    assert _times(outputs) == expected  # one forecast per new reference time with complete inputs
    written = [c["reference_time"] for c in _cycles(log, "written")]
    assert sorted(written) == [pd.Timestamp(t).isoformat() for t in expected]  # each exactly once
    skipped = _cycles(log, "skipped")
    assert [c["reference_time"] for c in skipped] == [pd.Timestamp(t).isoformat() for t in refs[:t_in - 1]]
    assert all("missing" in c["reason"] for c in skipped)
    stop = [r for r in _records(log) if r["event"] == "stop"]
    assert stop and stop[-1]["reason"] == "SIGTERM"
    for path, ref in zip(outputs, expected, strict=True):
        with xr.open_dataset(path) as ds:
            da = ds["precipitation"]
            assert da.dims == ("lead_time", "y", "x") and da.shape == (steps, 128, 128)
            assert (ds["lead_time"].values == np.arange(1, steps + 1) * np.timedelta64(5, "m")).all()
            assert ds["forecast_reference_time"].values == ref
            assert (ds["valid_time"].values == ref + ds["lead_time"].values).all()
            assert np.isfinite(da.values).any()
            assert json.loads(ds.attrs["geostp_recipe"])["kind"] == "nowcast"
    for rec in _cycles(log, "written"):
        assert rec["lead_times_min"] == [5.0, 10.0, 15.0][:steps]
        assert set(rec["timings"]) >= {"read_s", "forecast_s", "write_s", "total_s"}
        assert len(rec["inputs"]) == t_in
    assert (out / "recipe.yaml").exists() and not list(out.glob("*.tmp-*")) and not list(out.glob(".*.tmp-*"))


@pytest.mark.realdata
def test_nowcast_once_is_idempotent(shared_data, tmp_path, monkeypatch, capsys):
    """The example recipe, run once on real frames: the newest complete set; a rerun changes nothing."""
    from geostp.cli import main

    feed, out = tmp_path / "feed", tmp_path / "out"
    feed.mkdir()
    frames = sorted((shared_data / "radar" / "mch" / "20160711").glob("AQC*_00005.801.gif"))[10:14]
    for f in frames:
        shutil.copy(f, feed / f.name)
    (feed / frames[-1].name).write_bytes(frames[-1].read_bytes()[:5000])  # the newest is corrupt
    monkeypatch.setenv("GEOSTP_INCOMING", str(feed))
    sets = ["--set", f"output.dir={out}", "--set", "nowcast.steps=2", "--set", "data.crop={size: 96}",
            "--set", "output.maps=[10]"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(NOWCAST_RECIPE), *sets]) == 0
    log = out / "nowcast.log.jsonl"
    (written,) = _cycles(log, "written")
    newest_ok = pd.Timestamp(datetime.strptime(frames[-2].name[3:12], "%y%j%H%M"))
    assert written["reference_time"] == newest_ok.isoformat()  # the newest *complete* set
    assert written["maps"] == [f"nowcast_{newest_ok:%Y%m%d%H%M}_010min.png"]
    assert (out / written["maps"][0]).stat().st_size > 1000
    bad = [r for r in _records(log) if r["event"] == "bad_file"]
    assert bad and bad[0]["path"].endswith(frames[-1].name) and "truncated" in bad[0]["reason"]
    path = out / written["outputs"][0]
    before = (path.stat().st_mtime_ns, path.read_bytes())
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(NOWCAST_RECIPE), *sets]) == 0
    again = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["outcome"] for r in again if r["event"] == "cycle"] == ["exists"]
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


# ----------------------------------------------------------------------------- soak with injected faults


def _soak_frames(staging: Path, n: int, shifted_index: int) -> list[Path]:
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = synthetic_radar(n, 40, 40, seed=7, cells_per_frame=2.0).load()
    paths = []
    for i in range(n):
        frame = cube.isel(time=[i])
        p = staging / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc"
        frame.to_netcdf(p)
        paths.append(p)
    shifted = cube.isel(time=[shifted_index]).assign_coords(x=cube.x + 1000.0)
    shifted.to_netcdf(staging / "shifted.nc")
    return paths


def _frame_time(path: Path) -> pd.Timestamp:
    return pd.Timestamp(datetime.strptime(path.stem.split("_")[1], "%Y%m%d%H%M"))


def _soak_recipe(tmp: Path, feed: Path, out: Path) -> Path:
    recipe = {
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"variable": "precipitation", "time_step": "5min"},
                 "variables": ["precipitation"]},
        "model": {"name": "optical_flow"},
        "nowcast": {"steps": 2, "files": f"{feed}/frame_*.nc", "time_pattern": "frame_%Y%m%d%H%M",
                    "extension": "nc", "file_arg": "path", "poll_seconds": 0.2, "wait_for_late": 1.5,
                    "catch_up": 40},
        "output": {"dir": str(out), "formats": ["netcdf"]},
    }
    p = tmp / "soak.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return p


def test_soak_with_injected_faults(tmp_path):
    """Many cycles; late, missing, corrupt, half-written and wrong-grid files; a runner killed mid-write."""
    t0 = time.monotonic()
    staging, feed, out = tmp_path / "staging", tmp_path / "feed", tmp_path / "out"
    staging.mkdir()
    feed.mkdir()
    n = 30
    missing, corrupt, half, late, wrong_grid, odd_shape = 8, 14, 18, 22, 26, 11
    frames = _soak_frames(staging, n, wrong_grid)
    recipe = _soak_recipe(tmp_path, feed, out)
    log = out / "nowcast.log.jsonl"

    def deliver(i: int) -> None:
        target = feed / frames[i].name
        if i == corrupt:
            target.write_bytes(frames[i].read_bytes()[:300])  # truncated for good
        elif i == wrong_grid:
            shutil.copy(staging / "shifted.nc", target)  # same shape, moved 1 km east
        elif i == odd_shape:
            with xr.open_dataset(frames[i]) as ds:
                ds.load().isel(y=slice(0, 36)).to_netcdf(target)  # another grid shape
        else:
            shutil.copy(frames[i], target)

    # runner 1 pauses between writing a forecast's temporary file and renaming it: killed there
    r1 = _runner(recipe, [], tmp_path, "r1", {"GEOSTP_NOWCAST_COMMIT_DELAY": "3"})
    _wait_for(lambda: [r for r in _records(log) if r["event"] == "start"], 90, "runner 1 to start", r1)
    t_in = [r for r in _records(log) if r["event"] == "start"][0]["input_steps"]
    for i in range(t_in + 1):
        deliver(i)
    tmp_file = _wait_for(lambda: list(out.glob(".nowcast_*.tmp-*")), 60, "a forecast being written", r1)
    r1.send_signal(signal.SIGKILL)
    r1.wait(30)
    killed_ref = tmp_file[0].name.split(".nc")[0].lstrip(".")
    assert not (out / f"{killed_ref}.nc").exists()  # a reader sees no forecast, never half of one

    r2 = _runner(recipe, [], tmp_path, "r2")
    try:
        _wait_for(lambda: len([r for r in _records(log) if r["event"] == "start"]) == 2, 90, "runner 2", r2)
        third = subprocess.run([sys.executable, "-m", "geostp.cli", "run", str(recipe), "--watch"],
                               capture_output=True, text=True, timeout=120, cwd=REPO)
        assert third.returncode == 2 and "another nowcast runner holds the lock" in third.stderr

        for i in range(t_in + 1, n):
            if i in (missing, late):
                continue
            if i == half:  # arrives in two parts, 0.5 s apart: half-written when first seen
                data = frames[i].read_bytes()
                (feed / frames[i].name).write_bytes(data[: len(data) // 2])
                time.sleep(0.5)
                (feed / frames[i].name).write_bytes(data)
            else:
                deliver(i)
            if i == late + 1:
                time.sleep(0.4)
                deliver(late)  # later than its successor, within the wait limit
            time.sleep(0.15)

        present = {i for i in range(n) if i != missing}
        good = present - {corrupt, wrong_grid, odd_shape}
        expected = [i for i in sorted(present) if all(k in good for k in range(i - t_in + 1, i + 1))]
        expected_times = [_frame_time(frames[i]) for i in expected]
        all_refs = {_frame_time(frames[i]).isoformat() for i in present}

        def settled():
            decided = {c["reference_time"] for c in _cycles(log) if c["outcome"] in ("written", "skipped",
                                                                                     "refused")}
            return all_refs <= decided

        _wait_for(settled, 60, "every reference time to be decided", r2)
    finally:
        rc = _stop(r2)
    assert rc == 0 and "Traceback" not in _stderr(r2), _stderr(r2)
    assert "Traceback" not in _stderr(r1)

    outputs = sorted(out.glob("nowcast_*.nc"))
    assert _times(outputs) == [np.datetime64(t, "ns") for t in expected_times]  # nothing lost, nothing extra
    written = [c["reference_time"] for c in _cycles(log, "written")]
    assert len(written) == len(set(written)) == len(expected)  # no duplicate
    assert f"{killed_ref}.nc" in [p.name for p in outputs]  # the killed cycle was redone by runner 2
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # no partial file
    for p in outputs:
        with xr.open_dataset(p) as ds:
            assert ds["precipitation"].shape == (2, 40, 40) and ds.sizes["lead_time"] == 2

    refused = _cycles(log, "refused")
    assert refused and all("grid" in c["reason"] for c in refused)
    assert {c["reference_time"] for c in refused} >= {_frame_time(frames[wrong_grid]).isoformat(),
                                                       _frame_time(frames[odd_shape]).isoformat()}
    skipped = _cycles(log, "skipped")
    assert any("missing" in c["reason"] for c in skipped) and any("unreadable" in c["reason"] for c in skipped)
    bad = [r for r in _records(log) if r["event"] == "bad_file"]
    assert any(frames[corrupt].name in r["path"] for r in bad)
    starts = [r for r in _records(log) if r["event"] == "start"]
    assert any(name.startswith(f".{killed_ref}") for name in starts[1]["removed_partial_files"])
    assert time.monotonic() - t0 < 150


# ----------------------------------------------------------------------------- a trained checkpoint, fill policy


def test_nowcast_from_a_trained_checkpoint_with_a_filled_frame(tmp_path):
    """Train a tiny TAU with a recipe, then nowcast with its checkpoint; one input missing is filled."""
    from geostp.data.synthetic import synthetic_radar
    from geostp.recipes import load_recipe, run_recipe
    from geostp.train.checkpoint import load_checkpoint

    train = {
        "kind": "train",
        "data": {"catalog": "synthetic", "source": "radar_small", "args": {"n_times": 24, "ny": 32, "nx": 32},
                 "variables": ["precipitation"], "splits": {"train": 1.0},
                 "windows": {"input_steps": 3, "output_steps": 2}},
        "model": {"name": "tau", "args": {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8,
                                          "spatial_blocks": 2, "temporal_blocks": 2}},
        "training": {"max_iterations": 2, "batch_size": 2, "progress": False},
        "output": {"dir": str(tmp_path / "train")},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = run_recipe(load_recipe(tmp_path / "train.yaml"), progress=False)
        cube = synthetic_radar(n_times=24, ny=32, nx=32, seed=0).load()
    assert load_checkpoint(trained.checkpoint)["metadata"]["recipe"]["name"] == "train"

    feed = tmp_path / "feed"
    feed.mkdir()
    for i in (10, 11, 13):  # frame 12 never comes
        frame = cube.isel(time=[i])
        frame.to_netcdf(feed / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")
    nowcast = {
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"variable": "precipitation", "time_step": "5min"}},
        "model": {"checkpoint": str(trained.checkpoint)},
        "nowcast": {"steps": 4, "files": f"{feed}/frame_*.nc", "time_pattern": "frame_%Y%m%d%H%M",
                    "extension": "nc", "file_arg": "path", "on_missing": "fill_previous", "max_filled": 1},
        "output": {"dir": str(tmp_path / "out"), "formats": ["netcdf", "zarr"]},
    }
    (tmp_path / "nowcast.yaml").write_text(yaml.safe_dump(nowcast))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_recipe(load_recipe(tmp_path / "nowcast.yaml"))
    (rec,) = result.cycles
    ref = pd.Timestamp(cube.time.values[13])
    assert rec["outcome"] == "written" and rec["reference_time"] == ref.isoformat()
    assert rec["filled"] == [f"{pd.Timestamp(cube.time.values[12]).isoformat()} from frame_"
                             f"{pd.Timestamp(cube.time.values[11]):%Y%m%d%H%M}.nc"]
    stem = tmp_path / "out" / f"nowcast_{ref:%Y%m%d%H%M}"
    with xr.open_dataset(f"{stem}.nc") as nc, xr.open_zarr(f"{stem}.zarr") as zr:
        assert nc["precipitation"].shape == (4, 32, 32) and nc["precipitation"].attrs["model"] == "tau"
        assert nc.attrs["filled_inputs"] and np.isfinite(nc["precipitation"].values).any()
        np.testing.assert_array_equal(nc["precipitation"].values, zr["precipitation"].values)
        assert json.loads(nc.attrs["geostp_recipe"])["model"]["checkpoint"] == str(trained.checkpoint)
