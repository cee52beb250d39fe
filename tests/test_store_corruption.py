"""A damaged store is reported as such wherever geostp computes from it, and a cube with no data is not ingested.

A chunk overwritten in place with garbage of the same size passes the cheap check of ``open_cube`` (sizes) and
fails only when it is decoded: every computation from the store (a forecast, an evaluation, a fit, a plot,
``.load()``, the stream's readers, the command line) must then raise a ``StoreError`` naming the store, the
variable and the chunk, and saying what to do, never a raw codec error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import geostp
from geostp.cli import main
from geostp.errors import CorruptStoreError, CubeValueError, GeostpError, StoreError
from geostp.store import MANIFEST_NAME, ingest, open_cube, verify_store
from geostp.testing import small_cube

VAR = "precipitation"
TIME_CHUNK = 4
N_TIMES = 16
DAMAGED = 2  # the time chunk overwritten: frames 8 .. 11
TINY_TAU = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2,
            "input_steps": 3, "output_steps": 2}


def _chunk(store: Path, index: int = DAMAGED, variable: str = VAR) -> Path:
    return store / variable / "c" / str(index) / "0" / "0"


def _garble(path: Path, how: str = "random") -> str:
    """Overwrite ``path`` in place with garbage of the same size; its path relative to the store."""
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(0).bytes(size) if how == "random" else bytes(size))
    store = next(p for p in path.parents if p.name.endswith(".zarr"))
    return path.relative_to(store).as_posix()


@pytest.fixture
def store(tmp_path) -> Path:
    return ingest(small_cube(N_TIMES, 24, 20), tmp_path / "cube.zarr", time_chunk=TIME_CHUNK, progress=False)


@pytest.fixture
def damaged(store) -> tuple[Path, str]:
    """The store with its third time chunk overwritten in place, and that chunk's path in the store."""
    return store, _garble(_chunk(store))


def _names_the_damage(exc: BaseException, store: Path, chunk: str, variable: str = VAR) -> str:
    message = str(exc)
    assert isinstance(exc, GeostpError), type(exc)
    for part in (str(store), repr(variable), chunk, "geostp info --verify"):
        assert part in message, (part, message)
    assert "Traceback" not in message, message
    return message


def _damaged_time(store: Path):
    return open_cube(store)["time"].values[DAMAGED * TIME_CHUNK + 1]


# ----------------------------------------------------------------------------- the API


@pytest.mark.parametrize("how", ["random", "zeros"])
def test_a_garbage_chunk_passes_open_and_fails_a_forecast_naming_store_variable_and_chunk(store, how):
    chunk = _garble(_chunk(store), how)
    assert chunk == f"{VAR}/c/{DAMAGED}/0/0"
    cube = open_cube(store)  # the size check on open cannot see a chunk changed in place
    with pytest.raises(CorruptStoreError) as info:
        geostp.forecast(cube, "persistence", 2, reference_times=[_damaged_time(store)], progress=False)
    message = _names_the_damage(info.value, store, chunk)
    assert "digest" in message and "ingest the store again" in message


def test_a_forecast_from_undamaged_frames_of_a_damaged_store_still_works(damaged):
    store, _ = damaged
    cube = open_cube(store)
    out = geostp.forecast(cube, "persistence", 2, reference_times=[cube["time"].values[5]], progress=False)
    assert np.isfinite(out.values).any()


def test_load_of_a_damaged_store_names_the_chunk(damaged):
    store, chunk = damaged
    with pytest.raises(StoreError) as info:
        open_cube(store).load()
    _names_the_damage(info.value, store, chunk)
    with pytest.raises(CorruptStoreError):
        open_cube(store)[VAR].isel(time=DAMAGED * TIME_CHUNK).load()  # one frame of it is enough


def test_evaluate_on_a_damaged_store_names_the_chunk(damaged):
    store, chunk = damaged
    with pytest.raises(CorruptStoreError) as info:
        geostp.evaluate(open_cube(store), ["persistence"], steps=2, reference_times=[_damaged_time(store)],
                        progress=False, print_table=False)
    _names_the_damage(info.value, store, chunk)


def test_fit_on_a_damaged_store_names_the_chunk_and_writes_no_checkpoint(damaged, tmp_path):
    store, chunk = damaged
    with pytest.raises(CorruptStoreError) as info:
        geostp.fit(open_cube(store), "tau", model_args=TINY_TAU, max_iterations=2, max_minutes=None, patch_size=16,
                   batch_size=2, progress=False, checkpoint_dir=tmp_path / "fit")
    _names_the_damage(info.value, store, chunk)
    assert not any((tmp_path / "fit").rglob("*.pt"))


@pytest.mark.parametrize(("reader", "workers"), [("zarr", 0), ("xarray", 0), ("zarr", 1)])
def test_the_stream_readers_name_the_chunk_also_from_a_loader_worker(damaged, reader, workers):
    from geostp.stream import CubeDataset, WindowSpec, make_loader

    store, chunk = damaged
    spec = WindowSpec(input_steps=2, output_steps=1, patch_size=8)
    dataset = CubeDataset(str(store), [VAR], spec, batch_size=4, shuffle=False, reader=reader)
    assert dataset.reader_kind == reader
    with pytest.raises(CorruptStoreError) as info:
        for _ in make_loader(dataset, workers):
            pass
    message = _names_the_damage(info.value, store, chunk)
    assert "DataLoader worker" not in message  # the worker's own message, not torch's wrapping of it


def test_a_plot_of_a_damaged_frame_names_the_chunk(damaged):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geostp.plot as gplot

    store, chunk = damaged
    cube = open_cube(store)
    try:
        with pytest.raises(CorruptStoreError) as info:
            gplot.plot_map(cube[VAR].sel(time=_damaged_time(store)), natural_earth=False)
    finally:
        plt.close("all")
    _names_the_damage(info.value, store, chunk)


def test_a_damaged_coordinate_chunk_is_named_on_open(store):
    chunk = _garble(store / "time" / "c" / "0")
    with pytest.raises(CorruptStoreError) as info:
        open_cube(store)
    assert str(store) in str(info.value) and chunk in str(info.value)


def test_a_damaged_lat_chunk_names_lat(store):
    chunk = _garble(_chunk(store, 0, "lat").parent)  # lat is (y, x): its one chunk is lat/c/0/0
    with pytest.raises(CorruptStoreError) as info:
        open_cube(store)["lat"].load()
    _names_the_damage(info.value, store, chunk, variable="lat")


# ----------------------------------------------------------------------------- what the message says


def test_without_a_manifest_the_chunk_read_is_still_named(damaged):
    store, chunk = damaged
    (store / MANIFEST_NAME).unlink()
    with pytest.raises(CorruptStoreError) as info:
        open_cube(store).load()
    message = str(info.value)
    assert str(store) in message and repr(VAR) in message and chunk in message and MANIFEST_NAME in message


def test_a_read_failure_of_chunks_that_match_the_manifest_is_a_store_error_not_corruption(damaged):
    store, chunk = damaged
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    garbage = (store / chunk).read_bytes()  # a manifest rewritten to the garbage ...
    manifest["files"][chunk] = [len(garbage), hashlib.blake2b(garbage, digest_size=16).hexdigest()]
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(StoreError) as info:
        open_cube(store).load()
    assert not isinstance(info.value, CorruptStoreError)  # ... cannot show that the chunk changed
    assert chunk in str(info.value) and "match" in str(info.value)


def test_verify_reports_the_overwritten_chunk_as_corruption(damaged):
    store, chunk = damaged
    with pytest.raises(CorruptStoreError, match=chunk):
        verify_store(store)


def test_a_deleted_chunk_is_still_refused_on_open(store):
    _chunk(store).unlink()
    with pytest.raises(CorruptStoreError) as info:
        open_cube(store)
    assert f"{VAR}/c/{DAMAGED}/0/0" in str(info.value) and "missing" in str(info.value)


# ----------------------------------------------------------------------------- the command line


def test_cli_ingest_from_a_damaged_store_is_one_error_line_and_writes_nothing(damaged, tmp_path, capsys):
    store, chunk = damaged
    out = tmp_path / "copy.zarr"
    assert main(["ingest", "--adapter", "zarr_cube", "--arg", f"path={store}", "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(store) in err and chunk in err and "geostp info --verify" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr"]  # no copy, no partial folder


def test_cli_run_of_an_evaluation_on_a_damaged_store_is_one_error_line(damaged, tmp_path, capsys):
    store, chunk = damaged
    recipe = {
        "kind": "evaluate",
        "data": {"adapter": "zarr_cube", "args": {"path": str(store)}, "variables": [VAR],
                 "splits": {"train": 0.5, "test": 0.5}, "windows": {"input_steps": 2, "output_steps": 2}},
        "model": {"name": "persistence"},
        "evaluation": {"steps": 2, "metrics": ["mse"], "baselines": []},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: ") and "Traceback" not in err, err
    assert str(store) in err and chunk in err


# ----------------------------------------------------------------------------- no data at all


def test_ingest_refuses_a_cube_that_holds_only_nan_naming_the_variable(tmp_path):
    cube = small_cube(8, 16, 16, backend="numpy")
    cube[VAR][:] = np.nan  # a radar outage over the whole period
    target = tmp_path / "outage.zarr"
    with pytest.raises(CubeValueError) as info:
        ingest(cube, target, time_chunk=4, progress=False, source="radar feed")
    message = str(info.value)
    assert "radar feed" in message and repr(VAR) in message and "only NaN" in message and "expected" in message
    assert not list(tmp_path.iterdir())  # nothing under the store's name, no partial folder


def test_cli_ingest_of_an_all_nan_source_is_one_error_line(tmp_path, capsys):
    cube = small_cube(6, 16, 16, backend="numpy")
    cube[VAR][:] = np.nan
    cube.to_netcdf(tmp_path / "outage.nc")
    out = tmp_path / "outage.zarr"
    assert main(["ingest", "--adapter", "netcdf", "--arg", f"path={tmp_path / 'outage.nc'}", "--arg",
                 f"variable={VAR}", "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: ") and VAR in err and "only NaN" in err and "Traceback" not in err
    assert not out.exists()


def test_a_cube_with_an_outage_in_part_of_it_is_ingested_and_verifies(tmp_path):
    cube = small_cube(12, 16, 16, backend="numpy")
    cube[VAR][4:8] = np.nan  # one whole time chunk missing: zarr writes no file for it
    store = ingest(cube, tmp_path / "part.zarr", time_chunk=4, progress=False)
    assert not _chunk(store, 1).exists() and _chunk(store, 0).exists()
    assert verify_store(store).manifest
    back = open_cube(store)[VAR].load()
    assert np.isnan(back.values[4:8]).all() and np.isfinite(back.values[:4]).any()
