"""Bad inputs, by class and by entry point: each case gives geostp one kind of wrong input through one public door
(the API: adapters, catalogs, ingest, open_cube, forecast, fit, evaluate, recipes, checkpoints, plots, the runner;
and the CLI) and checks the error's type, that its message names the file or argument and says what was expected,
and that nothing was written under a final name.  Valid but unusual inputs (unicode and spaces in paths, int16
data, constant-zero rain, a variable whose own CF valid_range allows more) must simply work.

Classes: impossible values (fill values, infinities, negative rain, complex data, NaT times, no data where a
forecast needs some); a store whose chunk was deleted, truncated or overwritten; outputs that cannot be written
(a read-only folder, a file where a folder belongs); files of the wrong kind (not UTF-8, a folder, a damaged
checkpoint); impossible sizes (zero frames, a forecast that cannot fit in memory); arguments of the wrong type.
Everything runs on a few frames of 16 x 16 pixels.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

import geostp
from geostp.cli import main
from geostp.data.adapters import open_source
from geostp.errors import (
    CheckpointError,
    ConfigError,
    CubeError,
    CubeValueError,
    GeostpError,
    StoreError,
    WriteError,
)
from geostp.store import MANIFEST_NAME, ingest, open_cube, verify_store
from geostp.testing import assert_refused as _refused
from geostp.testing import read_only_folder

VAR = "precipitation"


# ----------------------------------------------------------------------------- helpers


def _cube(n: int = 8, size: int = 16) -> xr.Dataset:
    """A small synthetic radar cube in memory: rain rate in mm/h, 5-min steps, NaN outside the radar range."""
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthetic_radar(n_times=n, ny=size, nx=size, seed=0).load()


def _finals(root: Path) -> set[str]:
    """Every file and folder under ``root`` (relative names)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cli_error(argv: list[str], capsys, *named: str) -> str:
    """``geostp ARGV`` exits 2 with one ``geostp: error:`` line naming each of ``named``; no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: "), err
    assert "Traceback" not in err
    for name in named:
        assert name in err, (name, err)
    return err


def _with(cube: xr.Dataset, index, value) -> xr.Dataset:
    out = cube.copy(deep=True)
    out[VAR].values[index] = value
    return out


def _frames(folder: Path, cube: xr.Dataset) -> None:
    """One netCDF file per frame, ``frame_YYYYmmddHHMM.nc``, as a radar feed delivers them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(cube.sizes["time"]):
        frame = cube.isel(time=[i])
        frame.to_netcdf(folder / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")


def _nowcast_recipe(path: Path, feed: Path, out: Path) -> Path:
    recipe = {"kind": "nowcast",
              "data": {"adapter": "netcdf", "args": {"path": str(feed / "*.nc"), "variable": VAR,
                                                     "time_step": "5min"}, "variables": [VAR]},
              "model": {"name": "persistence"},
              "nowcast": {"steps": 2, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc"},
              "output": {"dir": str(out)}}
    path.write_text(yaml.safe_dump(recipe))
    return path


# ----------------------------------------------------------------------------- 1. impossible values

IMPOSSIBLE = {
    "fill value 1e30": ((-1, 5, 5), 1e30, CubeValueError, "1e+30"),
    "netCDF default fill": ((-1, 5, 5), 9.969209968386869e36, CubeValueError, "9.96921e+36"),
    "+inf": ((-1, 5, 5), np.inf, CubeValueError, "inf"),
    "-inf": ((-1, 6, 6), -np.inf, CubeValueError, "-inf"),
    "negative rain": ((-1, 5, 5), -3.0, CubeValueError, "-3"),
    "fill value -9999": ((-1, 0, 0), -9999.0, CubeValueError, "-9999"),
}


@pytest.mark.parametrize("case", IMPOSSIBLE, ids=list(IMPOSSIBLE))
def test_forecast_refuses_impossible_values(case):
    index, value, kind, shown = IMPOSSIBLE[case]
    cube = _with(_cube(), index, value)
    message = _refused(kind, lambda: geostp.forecast(cube, "persistence", 2), VAR, shown)
    assert "between -1 mm h-1 and 2000 mm h-1" in message or "finite" in message


def test_forecast_refuses_complex_data():
    cube = _cube()
    cube[VAR] = cube[VAR].astype(np.complex64).assign_attrs(cube[VAR].attrs)
    _refused(CubeValueError, lambda: geostp.forecast(cube, "persistence", 2), VAR, "complex")


def test_forecast_refuses_a_nat_in_the_time_axis():
    cube = _cube()
    times = cube["time"].values.copy()
    times[-1] = np.datetime64("NaT")
    cube = cube.assign_coords(time=times)
    _refused(CubeError, lambda: geostp.forecast(cube, "persistence", 2), "NaT", "index 7")


def test_an_all_nan_cube_is_refused_not_forecast_as_nan():
    cube = _cube()
    cube[VAR][:] = np.nan
    _refused(CubeValueError, lambda: geostp.forecast(cube, "persistence", 2), VAR, "only NaN",
             "reference time")


def test_an_outage_at_the_reference_time_is_refused_while_an_earlier_time_forecasts():
    cube = _cube()
    cube[VAR][-1] = np.nan  # the newest frame is an outage
    _refused(CubeValueError, lambda: geostp.forecast(cube, "persistence", 2), VAR, "2024-07-01 12:35:00")
    earlier = geostp.forecast(cube, "persistence", 2, reference_times=[cube.time.values[-2]])
    assert np.isfinite(earlier.values).any()


def test_validate_cube_finds_a_fill_value_in_the_frames_it_samples():
    from geostp.cube import validate_cube

    cube = _with(_cube(), (0, 3, 3), 1e30)  # frame 0 is always sampled
    _refused(CubeValueError, lambda: validate_cube(cube, source="radar.nc"), "radar.nc", VAR, "1e+30")


def test_ingest_refuses_a_fill_value_and_leaves_nothing(tmp_path):
    cube = _with(_cube(), (5, 2, 2), 1e30).chunk({"time": 2})
    _refused(CubeValueError, lambda: ingest(cube, tmp_path / "s.zarr", time_chunk=2, progress=False),
             VAR, "1e+30", "12:25")  # frame 5 of a 5-minute axis from 12:00
    assert _finals(tmp_path) == set()


def test_cli_ingest_refuses_an_infinity_from_a_netcdf_file(tmp_path, capsys):
    cube = _with(_cube(), (3, 4, 4), np.inf)
    cube.to_netcdf(tmp_path / "radar.nc")
    _cli_error(["ingest", "--adapter", "netcdf", "--arg", f"path={tmp_path / 'radar.nc'}", "--arg",
                f"variable={VAR}", "-o", str(tmp_path / "s.zarr"), "--quiet"], capsys, VAR, "inf", "expected")
    assert _finals(tmp_path) == {"radar.nc"}


def test_fit_refuses_a_fill_value_in_its_training_data(tmp_path):
    cube = _with(_cube(12), (2, 3, 3), 1e30)
    tiny = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2}
    _refused(CubeValueError, lambda: geostp.fit(cube, "tau", model_args=tiny, max_iterations=1, use_store=False,
                                                progress=False, checkpoint_dir=tmp_path / "fit"),
             VAR, "1e+30", "training")
    assert not (tmp_path / "fit").exists() or not any((tmp_path / "fit").rglob("*.pt"))


def test_evaluate_refuses_a_fill_value_among_the_observations():
    cube = _with(_cube(10), (7, 3, 3), 1e30)  # after the reference time: an observation, not an input
    _refused(CubeValueError, lambda: geostp.evaluate(cube, ["persistence"], steps=2,
                                                     reference_times=[cube.time.values[5]], progress=False,
                                                     print_table=False), VAR, "1e+30", "12:35")


def test_a_providers_small_negative_rain_is_accepted_and_clipped():
    cube = _with(_cube(), (-1, 5, 5), -0.6)  # BoM's Rainfields: -0.1 mm in 10 minutes
    fc = geostp.forecast(cube, "persistence", 2)
    assert float(fc.isel(lead_time=0, y=5, x=5)) == 0.0


def test_a_variable_whose_valid_range_allows_more_is_forecast():
    cube = _with(_cube(), (-1, 5, 5), 3000.0)  # beyond geostp's default bound for rain rate
    cube[VAR].attrs["valid_range"] = [0.0, 5000.0]
    fc = geostp.forecast(cube, "persistence", 2)
    assert float(fc.max()) == pytest.approx(3000.0)


def _runner_cycles(tmp_path, cube, capsys) -> list[dict]:
    """Run the nowcast recipe once over ``cube`` written as a feed; the log's cycle records."""
    _frames(tmp_path / "feed", cube)
    recipe = _nowcast_recipe(tmp_path / "nowcast.yaml", tmp_path / "feed", tmp_path / "out")
    main(["nowcast", str(recipe), "--quiet"])
    capsys.readouterr()
    records = [json.loads(line) for line in (tmp_path / "out" / "nowcast.log.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("event") == "cycle"]


def test_the_nowcast_runner_logs_an_outage_as_refused_and_writes_nothing(tmp_path, capsys):
    cube = _cube(5)
    cube[VAR][-1] = np.nan  # the newest frame of the feed: a radar outage
    cycles = _runner_cycles(tmp_path, cube, capsys)
    assert [c["outcome"] for c in cycles] == ["refused"], cycles
    assert "only NaN" in cycles[0]["reason"] and VAR in cycles[0]["reason"]
    assert not list((tmp_path / "out").glob("nowcast_*"))


def test_the_nowcast_runner_refuses_a_fill_value_in_a_frame(tmp_path, capsys):
    cube = _with(_cube(5), (-1, 3, 3), 1e30)
    cycles = _runner_cycles(tmp_path, cube, capsys)
    assert [c["outcome"] for c in cycles] == ["refused"] and "1e+30" in cycles[0]["reason"]
    assert not list((tmp_path / "out").glob("nowcast_*"))


# ----------------------------------------------------------------------------- 2. stores verified


@pytest.fixture
def store(tmp_path) -> Path:
    return ingest(_cube(8), tmp_path / "cube.zarr", time_chunk=2, progress=False)


def _chunks(store: Path) -> list[Path]:
    return sorted(p for p in (store / VAR / "c").rglob("*") if p.is_file())


def test_a_store_records_every_chunk_in_its_manifest_and_verifies(store):
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    recorded = set(manifest["files"])
    assert {p.relative_to(store).as_posix() for p in _chunks(store)} <= recorded
    check = verify_store(store)
    assert check.manifest and check.full and check.files == len(recorded)


def test_a_deleted_chunk_is_found_on_open(store):
    victim = _chunks(store)[1]
    victim.unlink()
    rel = victim.relative_to(store).as_posix()
    _refused(StoreError, lambda: open_cube(store), str(store), rel, "missing")


def test_a_truncated_chunk_is_found_on_open(store):
    victim = _chunks(store)[0]
    victim.write_bytes(victim.read_bytes()[:10])
    _refused(StoreError, lambda: open_cube(store), str(store), victim.relative_to(store).as_posix(), "bytes")


def test_a_chunk_overwritten_in_place_is_found_by_verify(store, capsys):
    victim = _chunks(store)[2]
    victim.write_bytes(bytes(len(victim.read_bytes())))  # same size: only the digest tells
    assert main(["info", str(store)]) == 0  # the cheap check on open cannot see it
    capsys.readouterr()
    _cli_error(["info", str(store), "--verify"], capsys, str(store), victim.relative_to(store).as_posix(),
               "digest")
    _refused(StoreError, lambda: open_cube(store, verify="full"), victim.relative_to(store).as_posix())


def test_a_damaged_manifest_is_an_error_naming_it(store):
    (store / MANIFEST_NAME).write_text("{not json")
    _refused(StoreError, lambda: open_cube(store), MANIFEST_NAME, str(store))


def test_a_store_written_before_the_manifest_opens_and_says_it_cannot_be_verified(store, capsys):
    (store / MANIFEST_NAME).unlink()
    meta = json.loads((store / "zarr.json").read_text())  # nor the mark saying ingest wrote one
    del meta["attributes"]["geostp_manifest"]
    (store / "zarr.json").write_text(json.dumps(meta))
    assert open_cube(store).sizes["time"] == 8
    assert main(["info", str(store), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "cannot be verified" in out and MANIFEST_NAME in out


def test_open_cube_refuses_an_unknown_verify_mode(store):
    _refused(StoreError, lambda: open_cube(store, verify="yes"), "verify='yes'", "'sizes', 'full' or 'none'")


def test_a_store_with_its_manifest_can_still_be_overwritten(store):
    again = ingest(_cube(6), store, time_chunk=2, overwrite=True, progress=False)
    assert open_cube(again).sizes["time"] == 6 and verify_store(again).manifest


# ----------------------------------------------------------------------------- 3. outputs that cannot be written


def test_api_ingest_into_aread_only_folder(tmp_path):
    folder = read_only_folder(tmp_path)
    target = folder / "cube.zarr"
    _refused(WriteError, lambda: ingest(_cube(4), target, progress=False), str(target), "read-only")
    assert not target.exists()


def test_cli_ingest_into_aread_only_folder(tmp_path, capsys):
    folder = read_only_folder(tmp_path)
    _cli_error(["ingest", "radar_small", "--catalog", "synthetic", "-o", str(folder / "s.zarr"), "--quiet",
                "--arg", "n_times=4", "--arg", "ny=16", "--arg", "nx=16"], capsys, str(folder / "s.zarr"), "expected")
    assert not (folder / "s.zarr").exists()


def test_cli_nowcast_into_aread_only_folder(tmp_path, capsys):
    folder = read_only_folder(tmp_path)
    _frames(tmp_path / "feed", _cube(4))
    recipe = _nowcast_recipe(tmp_path / "r.yaml", tmp_path / "feed", folder / "out")
    _cli_error(["nowcast", str(recipe), "--quiet"], capsys, str(folder / "out"), "output.dir")


@pytest.mark.parametrize("where", ["a regular file", "a path through a file"])
def test_an_output_dir_that_is_a_file(tmp_path, capsys, where):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" if where == "a regular file" else tmp_path / "notes.txt" / "out"
    _frames(tmp_path / "feed", _cube(4))
    recipe = _nowcast_recipe(tmp_path / "r.yaml", tmp_path / "feed", out)
    _cli_error(["nowcast", str(recipe), "--quiet"], capsys, str(out), "output.dir", "expected a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_forecast_file_into_aread_only_folder(tmp_path):
    from geostp.writers import write_forecast

    folder = read_only_folder(tmp_path)
    fc = geostp.forecast(_cube(8), "persistence", 2)
    _refused(WriteError, lambda: write_forecast(fc, folder / "fc.nc"), str(folder / "fc.nc"), "expected")


def test_an_animation_into_a_read_only_folder_and_a_bad_fps(tmp_path):
    pytest.importorskip("imageio")
    from geostp.plot import animate

    folder = read_only_folder(tmp_path)
    fc = geostp.forecast(_cube(8), "persistence", 2)
    _refused(WriteError, lambda: animate(fc, folder / "a.gif", natural_earth=False), str(folder / "a.gif"))
    _refused(GeostpError, lambda: animate(fc, tmp_path / "a.gif", fps="fast"), "fps='fast'")
    assert not (tmp_path / "a.gif").exists()


def test_a_checkpoint_into_a_path_through_a_file(tmp_path):
    import geostp.models as models
    from geostp.forecast import FittedForecaster

    (tmp_path / "f").write_text("x")
    fitted = FittedForecaster(model=models.get("persistence"), variables=[VAR])
    _refused(WriteError, lambda: fitted.save(tmp_path / "f" / "model.pt"), "model.pt", "a file is there")


# ----------------------------------------------------------------------------- 4. files of the wrong kind

NOT_YAML = {
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe sources: {}\n") and p,
    "a folder": lambda p: p.mkdir() or p,
    "Latin-1 text": lambda p: p.write_bytes("description: caf\xe9\n".encode("latin-1")) and p,
}


@pytest.mark.parametrize("kind", NOT_YAML, ids=list(NOT_YAML))
def test_a_catalog_that_is_not_a_yaml_text_file(tmp_path, capsys, kind):
    path = NOT_YAML[kind](tmp_path / "cat.yaml")
    _cli_error(["ingest", "x", "--catalog", str(path), "-o", str(tmp_path / "o.zarr")], capsys, str(path),
               "expected")
    _refused(ConfigError, lambda: geostp.open_catalog(path), str(path))
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("kind", NOT_YAML, ids=list(NOT_YAML))
def test_a_recipe_that_is_not_a_yaml_text_file(tmp_path, capsys, kind):
    from geostp.recipes import load_recipe

    path = NOT_YAML[kind](tmp_path / "recipe.yaml")
    _cli_error(["run", str(path), "--check"], capsys, str(path), "expected")
    _refused(ConfigError, lambda: load_recipe(path), str(path))


def _checkpoint(tmp_path: Path, *, normalizer: bool = False) -> tuple[Path, dict]:
    """A persistence checkpoint (with a normaliser if asked) and its raw contents."""
    import geostp.models as models
    from geostp.forecast import FittedForecaster
    from geostp.stream import compute_statistics

    norm = compute_statistics(_cube(4), [VAR]) if normalizer else None
    path = FittedForecaster(model=models.get("persistence"), variables=[VAR], normalizer=norm).save(
        tmp_path / "model.pt")
    return path, torch.load(path, weights_only=True)


def _damaged(raw: dict, key: str, change) -> dict:
    out = dict(raw)
    out[key] = change(json.loads(raw[key])) if callable(change) else change
    if callable(change):
        out[key] = json.dumps(out[key])
    return out


DAMAGED = {
    "metadata not JSON": ("metadata", "{variables: [", "not JSON"),
    "model_config a list": ("model_config", "[1, 2]", "JSON list"),
    "metadata a list": ("metadata", "[]", "JSON list"),
    "variables a string": ("metadata", lambda m: {**m, "variables": VAR}, "list of variable names"),
    "fill_value a word": ("metadata", lambda m: {**m, "fill_value": "zero"}, "fill_value"),
    "model_config with an unknown key": ("model_config", lambda c: {**c, "wings": 2}, "model_config"),
    "model_name a number": ("model_name", 7, "model_name=7"),
}


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_checkpoint_is_refused_naming_it(tmp_path, case):
    key, change, said = DAMAGED[case]
    path, raw = _checkpoint(tmp_path)
    torch.save(_damaged(raw, key, change) if callable(change) else {**raw, key: change}, path)
    _refused(CheckpointError, lambda: geostp.load_forecaster(path), str(path), said)
    _refused(CheckpointError, lambda: geostp.forecast(_cube(4), path, 2), str(path))


@pytest.mark.parametrize("damage", ["mean not a number", "std zero", "variable missing"])
def test_a_damaged_normaliser_names_the_checkpoint(tmp_path, damage):
    path, raw = _checkpoint(tmp_path, normalizer=True)

    def change(meta):
        stats = meta["normalizer"]["stats"]
        if damage == "mean not a number":
            stats[VAR]["mean"] = "abc"
        elif damage == "std zero":
            stats[VAR]["std"] = 0.0
        else:
            stats.pop(VAR)
        return meta

    torch.save(_damaged(raw, "metadata", change), path)
    _refused(CheckpointError, lambda: geostp.load_forecaster(path), str(path), "normaliser")


def test_a_checkpoint_that_is_a_folder(tmp_path):
    (tmp_path / "model.pt").mkdir()
    _refused(CheckpointError, lambda: geostp.load_forecaster(tmp_path / "model.pt"), "model.pt", "is a folder")


def test_a_nowcast_recipe_with_a_damaged_checkpoint(tmp_path, capsys):
    path, raw = _checkpoint(tmp_path)
    torch.save({**raw, "metadata": "nonsense"}, path)
    _frames(tmp_path / "feed", _cube(4))
    recipe = yaml.safe_load(_nowcast_recipe(tmp_path / "r.yaml", tmp_path / "feed", tmp_path / "out").read_text())
    recipe["model"] = {"checkpoint": str(path)}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    _cli_error(["nowcast", str(tmp_path / "r.yaml"), "--quiet"], capsys, str(path), "not JSON")
    assert not list((tmp_path / "out").glob("nowcast_*")) if (tmp_path / "out").exists() else True


# ----------------------------------------------------------------------------- 5. impossible sizes


def test_a_cube_with_zero_frames(tmp_path):
    empty = _cube(4).isel(time=slice(0, 0))
    _refused(CubeError, lambda: geostp.forecast(empty, "persistence", 2), "zero frames")
    _refused(CubeError, lambda: ingest(empty, tmp_path / "s.zarr", progress=False), "zero frames")
    assert not (tmp_path / "s.zarr").exists()


def test_a_cube_with_an_empty_grid():
    _refused(CubeError, lambda: geostp.forecast(_cube(4).isel(x=slice(0, 0)), "persistence", 2), "x has length 0")


@pytest.mark.parametrize("steps", [10**12, 2**40])
def test_a_forecast_that_cannot_fit_in_memory_says_how_much_it_needs(steps):
    message = _refused(ConfigError, lambda: geostp.forecast(_cube(8), "persistence", steps), f"steps={steps}",
                       "of memory")
    assert "PiB" in message or "TiB" in message


def test_predict_refuses_a_forecast_that_cannot_fit():
    import geostp.models as models
    from geostp.forecast import FittedForecaster

    fitted = FittedForecaster(model=models.get("persistence"), variables=[VAR])
    _refused(ConfigError, lambda: fitted.predict(_cube(8), 10**12), "steps=1000000000000", "more than")


@pytest.mark.parametrize("steps", [0, -1, 2.5, "12", True])
def test_steps_that_are_not_a_count(steps):
    _refused(ConfigError, lambda: geostp.forecast(_cube(8), "persistence", steps), "steps", "integer >= 1")


# ----------------------------------------------------------------------------- 6. arguments of the wrong type

WRONG_TYPES = {
    "n_times a float": ("n_times", 4.5, "expected int"),
    "n_times a word": ("n_times", "four", "expected int"),
    "seed a list": ("seed", [1], "expected int"),
    "nx a boolean": ("nx", True, "expected int"),
}


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_a_catalog_argument_of_the_wrong_type_is_named(tmp_path, case):
    key, value, said = WRONG_TYPES[case]
    args = {"n_times": 4, "ny": 16, "nx": 16, key: value}
    (tmp_path / "cat.yaml").write_text(yaml.safe_dump({"sources": {"s": {"adapter": "synthetic_radar",
                                                                          "args": args}}}))
    _refused(ConfigError, lambda: geostp.open_catalog(tmp_path / "cat.yaml").open("s"), key, said)


def test_a_cli_adapter_argument_of_the_wrong_type_is_named(tmp_path, capsys):
    _cli_error(["ingest", "--adapter", "synthetic_radar", "--arg", "n_times=many", "-o", str(tmp_path / "s.zarr"),
                "--quiet"], capsys, "n_times='many'", "expected int")
    assert not (tmp_path / "s.zarr").exists()


def test_a_path_argument_that_is_a_number(tmp_path):
    _refused(ConfigError, lambda: open_source("netcdf", {"path": 42, "variable": VAR}), "path=42")


def test_plot_map_of_something_that_is_not_data():
    from geostp.plot import plot_map

    _refused(GeostpError, lambda: plot_map([1, 2, 3]), "list", "expected an xarray DataArray")


def test_plot_map_of_a_lead_time_the_forecast_does_not_have():
    from geostp.plot import plot_map

    fc = geostp.forecast(_cube(8), "persistence", 2)
    _refused(GeostpError, lambda: plot_map(fc, lead_time=np.timedelta64(3, "h")), "lead_time", "available")


# ----------------------------------------------------------------------------- 7. valid but unusual: must work


def test_unicode_and_spaces_in_paths(tmp_path, capsys):
    folder = tmp_path / "rådar dätä 雨" / "runs [v2]"
    store = ingest(_cube(6), folder / "cube ström.zarr", time_chunk=2, progress=False)
    assert verify_store(store).manifest
    assert main(["info", str(store), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    fc = geostp.forecast(open_cube(store), "persistence", 2)
    assert np.isfinite(fc.values).any()


def test_int16_data_ingests_and_forecasts(tmp_path):
    cube = _cube(6)
    ints = cube[VAR].fillna(0).round().astype(np.int16).assign_attrs(cube[VAR].attrs)
    cube = cube.assign({VAR: ints})
    store = ingest(cube, tmp_path / "ints.zarr", time_chunk=2, progress=False)
    opened = open_cube(store)
    assert opened[VAR].dtype == np.int16
    fc = geostp.forecast(opened, "persistence", 2)
    np.testing.assert_array_equal(fc.isel(lead_time=0).values, ints.isel(time=-1).values)


@pytest.mark.parametrize("model", ["persistence", "optical_flow"])
def test_constant_zero_rain_forecasts_zero(model):
    cube = _cube(8)
    cube[VAR][:] = 0.0
    fc = geostp.forecast(cube, model, 2)
    assert np.isfinite(fc.values).all() and float(np.abs(fc).max()) == 0.0


def test_a_partial_outage_keeps_its_nan_and_forecasts_the_rest():
    cube = _cube(6)
    cube[VAR][-1, :8] = np.nan  # half the newest frame is missing
    fc = geostp.forecast(cube, "persistence", 2)
    assert np.isnan(fc.isel(lead_time=0).values[:8]).all() and np.isfinite(fc.isel(lead_time=0).values[8:]).any()


def test_read_only_input_folder_is_fine(tmp_path):
    cube = _cube(6)
    cube.to_netcdf(tmp_path / "radar.nc")
    os.chmod(tmp_path / "radar.nc", 0o444)
    opened = open_source("netcdf", {"path": str(tmp_path / "radar.nc"), "variable": VAR})
    store = ingest(opened, tmp_path / "out.zarr", progress=False)
    assert open_cube(store).sizes["time"] == 6
