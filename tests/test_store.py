"""Ingest into zarr and open lazily: round trip, chunking policy, atomicity, memory cap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geostp.errors import StoreError
from geostp.store import COMPLETE_ATTR, default_chunks, ingest, open_cube


def test_round_trip_keeps_values_labels_and_crs(radar_cube, tmp_path):
    store = ingest(radar_cube, tmp_path / "c.zarr", time_chunk=8, spatial_chunk=32, progress=False)
    cube = open_cube(store)
    assert cube["precipitation"].chunks is not None  # lazy, dask-backed
    np.testing.assert_array_equal(cube["precipitation"].values, radar_cube["precipitation"].values)
    np.testing.assert_array_equal(cube["time"].values, radar_cube["time"].values)
    np.testing.assert_allclose(cube["lat"].values, radar_cube["lat"].values)
    assert cube["precipitation"].attrs["units"] == "mm h-1"
    assert cube.attrs[COMPLETE_ATTR] is True
    import pyproj

    assert pyproj.CRS.from_cf(dict(cube["crs"].attrs)).equals(
        pyproj.CRS.from_cf(dict(radar_cube["crs"].attrs)))
    # chunking policy on disk
    assert cube["precipitation"].encoding["chunks"] == (8, 32, 32)


def test_nan_survives_round_trip(radar_cube, tmp_path):
    store = ingest(radar_cube, tmp_path / "c.zarr", progress=False)
    a = open_cube(store)["precipitation"].values
    b = radar_cube["precipitation"].values
    assert np.isnan(b).any()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_store_path_only_for_the_arrays_open_cube_read(radar_cube, tmp_path):
    """The stream reads zarr chunks directly only for variables that are still the store's own arrays."""
    import xarray as xr

    from geostp.store import unmodified_store_path

    store = ingest(radar_cube, tmp_path / "c.zarr", progress=False)
    cube = open_cube(store)
    assert unmodified_store_path(cube, ["precipitation"]) is not None
    assert unmodified_store_path(cube.copy(), ["precipitation"]) is not None
    derived = cube.assign(precipitation=cube["precipitation"] * 2.0)
    assert unmodified_store_path(derived, ["precipitation"]) is None
    assert unmodified_store_path(cube.isel(time=slice(1, None)), ["precipitation"]) is None
    assert unmodified_store_path(cube.chunk({"time": 3}), ["precipitation"]) is None
    assert unmodified_store_path(cube.load(), ["precipitation"]) is None
    assert unmodified_store_path(radar_cube, ["precipitation"]) is None  # in memory, no store
    with xr.open_zarr(store, consolidated=False) as foreign:  # opened without geostp: no mark
        assert unmodified_store_path(foreign, ["precipitation"]) is None


def test_default_chunks_policy():
    assert default_chunks({"time": 1000, "y": 640, "x": 710}) == {"time": 20, "y": 256, "x": 256}
    assert default_chunks({"time": 5, "y": 16, "x": 8}) == {"time": 5, "y": 16, "x": 8}
    assert default_chunks({"sequence": 9, "time": 20, "y": 64, "x": 64})["sequence"] == 1


def test_existing_store_needs_overwrite(radar_cube, tmp_path):
    store = ingest(radar_cube, tmp_path / "c.zarr", progress=False)
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        ingest(radar_cube, store, progress=False)
    doubled = radar_cube.assign(precipitation=radar_cube["precipitation"] * 2)
    ingest(doubled, store, overwrite=True, progress=False)
    np.testing.assert_array_equal(open_cube(store)["precipitation"].values, doubled["precipitation"].values)
    assert not list(tmp_path.glob("c.zarr.*")), "no partial or old folders left behind"


def test_open_missing_and_foreign_stores(tmp_path, radar_cube):
    with pytest.raises(StoreError, match="no cube store at"):
        open_cube(tmp_path / "nothing.zarr")
    (tmp_path / "notzarr").mkdir()
    with pytest.raises(StoreError):
        open_cube(tmp_path / "notzarr")
    # a zarr store written without geostp's completion marker is refused
    radar_cube.to_zarr(tmp_path / "plain.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="not a complete geostp cube"):
        open_cube(tmp_path / "plain.zarr")


def _run_python(code: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, **kw)


def test_interrupted_ingest_leaves_no_complete_store(tmp_path):
    target = tmp_path / "big.zarr"
    code = f"""
        from geostp.data.synthetic import synthetic_radar
        from geostp.store import ingest
        ds = synthetic_radar(2000, 256, 256, seed=5, time_chunk=10)
        ingest(ds, {str(target)!r}, time_chunk=10, progress=False)
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        chunk_files: list[Path] = []
        while time.time() < deadline and len(chunk_files) < 20:
            partial = list(tmp_path.glob("big.zarr.partial-*"))
            chunk_files = [f for p in partial for f in (p / "precipitation" / "c").rglob("*") if f.is_file()] \
                if partial else []
            assert proc.poll() is None, f"ingest ended before it could be interrupted: {proc.stderr.read()}"
            time.sleep(0.05)
        assert len(chunk_files) >= 20, "the ingest never got half-way"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()
    with pytest.raises(StoreError, match="interrupted ingest left big.zarr.partial-"):
        open_cube(target)
    partial = next(tmp_path.glob("big.zarr.partial-*"))
    with pytest.raises(StoreError, match="unfinished ingest"):
        open_cube(partial)
    # re-running cleans up and completes
    from geostp.data.synthetic import synthetic_radar

    ingest(synthetic_radar(30, 32, 32, seed=5), target, progress=False)
    assert open_cube(target).sizes["time"] == 30
    assert not list(tmp_path.glob("big.zarr.partial-*"))


@pytest.mark.slow
def test_cube_larger_than_memory_cap_ingests_and_opens(tmp_path):
    """A 1 GB cube is generated, ingested and reduced under an address-space cap of +400 MB."""
    code = f"""
        import resource, re
        import numpy as np
        from geostp.data.synthetic import synthetic_radar
        from geostp.store import ingest, open_cube
        import dask
        vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        cap = vm + 400 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        ds = synthetic_radar(1000, 512, 512, seed=2, time_chunk=20)
        nbytes = ds["precipitation"].nbytes
        assert nbytes > 400 * 2**20, nbytes
        with dask.config.set(scheduler="synchronous"):
            store = ingest(ds, {str(tmp_path / 'big.zarr')!r}, progress=False)
            cube = open_cube(store)
            total = float(cube["precipitation"].sum().compute())
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(nbytes, total, rss, cap - vm)
    """
    out = _run_python(code, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    nbytes, total, rss, headroom = out.stdout.split()
    assert int(nbytes) > 1_000_000_000
    assert float(total) > 0
