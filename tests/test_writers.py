"""The one atomic write and the one CF forecast encoding (geostp.writers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geostp.writers import (
    atomic_path,
    atomic_paths,
    atomic_write_bytes,
    atomic_write_text,
    forecast_dataset,
    is_temp_name,
    write_forecast,
    write_forecasts,
)


def _forecast(model: str = "persistence") -> xr.DataArray:
    leads = pd.to_timedelta([5, 10, 15], unit="min")
    ref = np.datetime64("2024-05-01T12:00", "ns")
    da = xr.DataArray(np.random.default_rng(0).random((3, 8, 6), dtype=np.float32),
                      dims=("lead_time", "y", "x"), name="precipitation",
                      coords={"lead_time": leads, "y": np.arange(8.0) * 1000, "x": np.arange(6.0) * 1000,
                              "forecast_reference_time": ref, "valid_time": ("lead_time", ref + leads.values)},
                      attrs={"model": model, "units": "mm h-1"})
    return da


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(p, "two")
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
    assert p.read_text() == "two" and (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.txt", "sub"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_writer_that_raises_leaves_no_partial_file(tmp_path, existing):
    target = tmp_path / "out.nc"
    if existing:
        target.write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and is_temp_name(tmp.name)
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert [f.name for f in tmp_path.iterdir()] == (["out.nc"] if existing else [])
    if existing:
        assert target.read_text() == "previous"


def test_a_failing_forecast_writer_leaves_nothing(tmp_path, monkeypatch):
    def broken(self, path, *args, **kwargs):
        open(path, "wb").write(b"CDF half")  # noqa: SIM115
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        write_forecast(_forecast(), tmp_path / "nowcast_202405011200.nc")
    assert list(tmp_path.iterdir()) == []


def test_several_paths_commit_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b"
    with pytest.raises(ValueError), atomic_paths([a, b]) as (ta, tb):
        ta.write_text("a")
        tb.mkdir()
        (tb / "inner").write_text("b")
        raise ValueError("second writer failed")
    assert list(tmp_path.iterdir()) == []
    a.write_text("stale")
    with atomic_paths([a, b], keep_existing=True) as (ta, tb):
        ta.write_text("new")
        tb.mkdir()
    assert a.read_text() == "stale" and b.is_dir() and not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


def test_forecast_files_carry_the_cf_attrs_and_encoding(tmp_path):
    da = _forecast("tau")
    ds = forecast_dataset(da, attrs={"input_files": "a.nc, b.nc", "geostp_recipe": {"kind": "nowcast"}})
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["source"].endswith("model tau")
    assert ds.attrs["forecast_reference_time"] == "2024-05-01T12:00:00"
    assert ds.attrs["geostp_recipe"] == '{"kind": "nowcast"}'
    nc, zarr = write_forecasts(da, [("netcdf", tmp_path / "f.nc"), ("zarr", tmp_path / "f.zarr")])
    with xr.open_dataset(nc, decode_timedelta=False) as f:
        assert f["precipitation"].encoding["zlib"] and f["precipitation"].encoding["complevel"] == 1
        assert f["lead_time"].attrs["units"] == "minutes" and f["lead_time"].dtype == np.int32
        assert f["lead_time"].attrs["standard_name"] == "forecast_period"
        assert f["forecast_reference_time"].attrs["standard_name"] == "forecast_reference_time"
        assert f["valid_time"].attrs["standard_name"] == "time"
        assert f.attrs["title"] == "geostp nowcast from 2024-05-01T12:00:00"
    with xr.open_zarr(zarr) as z:
        np.testing.assert_array_equal(z["precipitation"].values, da.values)
    assert da.encoding == {} and "units" not in da["lead_time"].encoding  # the caller's array is untouched


def test_the_demo_and_a_nowcast_recipe_write_the_same_kind_of_file(tmp_path, monkeypatch):
    """``geostp demo`` and a nowcast recipe write through the one writer: same encoding, same global attrs."""
    import warnings

    import yaml

    from geostp.data.synthetic import synthetic_radar
    from geostp.demo import run_demo
    from geostp.recipes import load_recipe, run_recipe

    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / "store"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo = run_demo(tmp_path / "demo", model="persistence", minutes=0.01, progress=False)["forecast"]
        cube = synthetic_radar(n_times=6, ny=32, nx=32, seed=0).load()
    feed = tmp_path / "feed"
    feed.mkdir()
    for i in range(cube.sizes["time"]):
        frame = cube.isel(time=[i])
        frame.to_netcdf(feed / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")
    recipe = {
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"variable": "precipitation", "time_step": "5min"},
                 "variables": ["precipitation"]},
        "model": {"name": "persistence"},
        "nowcast": {"steps": 3, "files": f"{feed}/frame_*.nc", "time_pattern": "frame_%Y%m%d%H%M",
                    "extension": "nc"},
        "output": {"dir": str(tmp_path / "out")},
    }
    (tmp_path / "nowcast.yaml").write_text(yaml.safe_dump(recipe))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_recipe(load_recipe(tmp_path / "nowcast.yaml"))
    (nowcast,) = [p for p in result.files if p.suffix == ".nc"]
    with xr.open_dataset(demo, decode_timedelta=False) as a, xr.open_dataset(nowcast, decode_timedelta=False) as b:
        standard = {"Conventions", "title", "source", "history", "geostp_version", "geostp_model",
                    "forecast_reference_time"}
        assert set(a.attrs) == standard
        assert set(b.attrs) == standard | {"input_files", "filled_inputs", "geostp_recipe"}
        for key in ("Conventions", "geostp_version", "geostp_model"):
            assert a.attrs[key] == b.attrs[key]
        assert a.attrs["source"].endswith("model persistence") and b.attrs["source"].endswith("model persistence")
        keys = ("zlib", "complevel", "shuffle", "dtype", "contiguous")
        assert {k: a["precipitation"].encoding[k] for k in keys} == {k: b["precipitation"].encoding[k] for k in keys}
        assert a["precipitation"].encoding["complevel"] == 1
        for f in (a, b):
            assert f["lead_time"].dtype == np.int32 and f["lead_time"].attrs["units"] == "minutes"
            assert f["precipitation"].encoding["chunksizes"] == (1, *f["precipitation"].shape[1:])  # a map a chunk
