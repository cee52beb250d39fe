"""`geostp ingest`: catalog sources, adapters with --arg, errors, and a clean restart after an interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from geostp.cli import main
from geostp.errors import StoreError
from geostp.store import COMPLETE_ATTR, open_cube


def _taxibj_file(path: Path) -> np.ndarray:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 100, (96, 2, 6, 5)).astype(np.float64)
    dates = [f"2014{m:02d}{d:02d}{s:02d}" for m, d in ((3, 1), (3, 2)) for s in range(1, 49)]
    with h5py.File(path, "w") as h:
        h["data"] = data
        h["date"] = np.array([d.encode() for d in dates], dtype="S10")
    return data


def test_ingest_an_adapter_with_args(tmp_path, capsys):
    data = _taxibj_file(tmp_path / "BJ14.h5")
    out = tmp_path / "flows.zarr"
    rc = main(["ingest", "--adapter", "taxibj", "--arg", f"paths={tmp_path / 'BJ14.h5'}",
               "--arg", "duplicates=first", "--arg", "variables=[arriving, leaving]", "--out", str(out),
               "--time-chunk", "24", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    cube = open_cube(out)
    assert set(cube.data_vars) == {"arriving", "leaving"} and cube.sizes["time"] == 96
    np.testing.assert_array_equal(cube["leaving"].values, data[:, 1])
    assert cube.attrs["time_step"] == "30min" and cube["leaving"].encoding["chunks"][0] == 24
    assert "wrote" in capsys.readouterr().out


def test_ingest_a_catalog_source_with_overrides(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    out = tmp_path / "knmi.zarr"
    rc = main(["ingest", "knmi", "--catalog", "radar", "--arg", "end=2010-08-26T00:20", "--out", str(out),
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    cube = open_cube(out)
    assert cube.sizes == {"time": 5, "y": 765, "x": 700}
    from geostp.data.catalog import open_catalog

    src = open_catalog("radar").open("knmi", end="2010-08-26T00:20")
    np.testing.assert_array_equal(cube["precipitation"].values, src["precipitation"].values)
    np.testing.assert_allclose(cube["lat"].values, src["lat"].values)


def test_ingest_argument_errors(tmp_path, capsys):
    out = str(tmp_path / "x.zarr")
    assert main(["ingest", "--adapter", "radr", "--out", out]) == 2
    assert "unknown adapter 'radr'; registered adapters are: " in capsys.readouterr().err
    assert main(["ingest", "--adapter", "taxibj", "--arg", "paths", "--out", out]) == 2
    assert "--arg 'paths' is not KEY=VALUE" in capsys.readouterr().err
    assert main(["ingest", "--adapter", "taxibj", "--arg", "colour=red", "--out", out]) == 2
    assert "adapter 'taxibj' rejected the arguments ['colour']" in capsys.readouterr().err
    assert main(["ingest", "--out", out]) == 2
    assert "nothing to ingest" in capsys.readouterr().err
    assert main(["ingest", "knmi", "--catalog", "radar", "--adapter", "radar", "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["ingest", "--adapter", "taxibj", "--arg", f"paths={tmp_path / 'none.h5'}", "--out", out]) == 2
    assert "none.h5 does not exist" in capsys.readouterr().err
    assert not Path(out).exists()


def test_rerun_after_an_interruption_restarts_cleanly(tmp_path):
    """Kill an ingest mid-write (SIGKILL: no cleanup), then re-run the same command: it completes."""
    out = tmp_path / "radar.zarr"
    cmd = [sys.executable, "-m", "geostp.cli", "ingest", "--adapter", "synthetic_radar",
           "--arg", "n_times=1200", "--arg", "ny=192", "--arg", "nx=192", "--arg", "seed=4",
           "--out", str(out), "--time-chunk", "10", "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        written: list[Path] = []
        while time.time() < deadline and len(written) < 6:
            assert proc.poll() is None, f"the ingest ended before it could be interrupted: {proc.stderr.read()}"
            written = [f for p in tmp_path.glob("radar.zarr.partial-*")
                       for f in (p / "precipitation" / "c").rglob("*") if f.is_file()]
            time.sleep(0.05)
        assert len(written) >= 6, "the ingest never started writing data"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stale = list(tmp_path.glob("radar.zarr.partial-*"))
    assert len(stale) == 1 and not out.exists()
    with pytest.raises(StoreError, match="interrupted ingest left radar.zarr.partial-"):
        open_cube(out)
    # the same command, smaller so the test stays quick, run again to completion
    rerun = [a if a != "n_times=1200" else "n_times=30" for a in cmd]
    done = subprocess.run(rerun, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(tmp_path.glob("radar.zarr.partial-*")), "the stale partial folder is removed"
    cube = open_cube(out)
    assert cube.sizes["time"] == 30 and cube.attrs[COMPLETE_ATTR] is True
    assert np.isfinite(cube["precipitation"].isel(time=29).values).any()
