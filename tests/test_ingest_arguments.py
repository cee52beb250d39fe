"""Arguments of the ingest, data and run entry points, by class: each case gives one wrong argument through one
public door and checks the error's type (a GeostpError subclass; on the command line exit 2 with one
``geostp: error:`` line), that the message names the file or argument and says what was expected, and that nothing
was written under a final name.

Classes: YAML mappings that give a key twice (catalogs, recipes, ``--set``, ``--arg``); names a recipe gives its
data that do not resolve (``run --check``); map lead times and expected shapes that cannot be; polling flags;
chunk sizes; paths that are not paths; adapter arguments of the wrong type or an impossible size; a netCDF
variable with a level dim; a checkpoint whose model_config asks for an impossible model; the demo's arguments.
Everything runs on a few frames of 16 x 16 pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import geostp
from geostp.cli import main
from geostp.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    UnknownNameError,
    WriteError,
)
from geostp.testing import assert_refused as _refused

VAR = "precipitation"


# ----------------------------------------------------------------------------- helpers


def _cube(n: int = 8, size: int = 16) -> xr.Dataset:
    from geostp.testing import small_cube

    return small_cube(n, size, size, backend="numpy")


def _cli_error(argv: list[str], capsys, *named: str, code: int = 2) -> str:
    """``geostp ARGV`` exits ``code`` with one ``geostp: error:`` line naming each of ``named``; no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("geostp: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _nothing_under(folder: Path, *kept: str) -> None:
    """``folder`` holds nothing but ``kept`` (the inputs the test wrote): no output, no partial store."""
    found = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert found == sorted(kept), found


def _frames(folder: Path, n: int = 5) -> Path:
    """``n`` one-frame netCDF files of a 16 x 16 synthetic radar, named frame_YYYYmmddHHMM.nc."""
    cube = _cube(n)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        frame = cube.isel(time=[i])
        frame.to_netcdf(folder / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")
    return folder


def _nowcast(root: Path, **changes) -> dict:
    """A nowcast recipe of the persistence baseline over ``root/feed`` into ``root/out``."""
    recipe = {
        "kind": "nowcast",
        "data": {"adapter": "netcdf", "args": {"path": f"{root}/feed/*.nc", "variable": VAR, "time_step": "5min"},
                 "variables": [VAR]},
        "model": {"name": "persistence"},
        "nowcast": {"steps": 2, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc", "wait_for_late": 0},
        "output": {"dir": str(root / "out")},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            recipe[section][name] = value
        else:
            recipe[section] = value
    return recipe


def _write(path: Path, recipe: dict | str) -> Path:
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return path


# ----------------------------------------------------------------------------- YAML keys given twice


CATALOG_TWICE = """\
description: a source written twice
sources:
  s:
    adapter: synthetic_radar
    args: {n_times: 4, ny: 16, nx: 16}
  s:
    adapter: synthetic_radar
    args: {n_times: 6, ny: 16, nx: 16}
"""

ARGS_TWICE = """\
sources:
  s:
    adapter: synthetic_radar
    args:
      n_times: 4
      ny: 16
      n_times: 6
"""

FLOW_TWICE = """\
sources:
  s: {adapter: synthetic_radar, adapter: netcdf}
"""


@pytest.mark.parametrize("text, key, line", [(CATALOG_TWICE, "'s'", "line 6"), (ARGS_TWICE, "'n_times'", "line 7"),
                                             (FLOW_TWICE, "'adapter'", "line 2")],
                         ids=["source", "argument", "flow-mapping"])
def test_a_catalog_key_given_twice_is_refused(tmp_path, text, key, line):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    from geostp.data.safe_yaml import YamlDuplicateKeyError

    _refused(YamlDuplicateKeyError, lambda: geostp.open_catalog(path), str(path), key, line, "duplicate")
    assert isinstance(YamlDuplicateKeyError("x"), ConfigError)


def test_a_recipe_section_given_twice_is_refused_by_check(tmp_path, capsys):
    text = yaml.safe_dump(_nowcast(tmp_path)) + f"output: {{dir: {tmp_path}/elsewhere}}\n"
    path = _write(tmp_path / "twice.yaml", text)
    _cli_error(["run", str(path), "--check"], capsys, "twice.yaml", "'output'", "line", "expected")
    _nothing_under(tmp_path, "twice.yaml")


def test_a_key_given_twice_in_set_or_arg_is_refused(tmp_path, capsys):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path))
    _cli_error(["run", str(path), "--check", "--set", "data.args={path: a.nc, path: b.nc}"], capsys,
               "--set data.args", "'path'", "expected")
    out = tmp_path / "k.zarr"
    _cli_error(["ingest", "radar_small", "--catalog", "synthetic", "--arg", "grid={epsg: 1, epsg: 2}", "-o",
                str(out), "--quiet"], capsys, "--arg grid", "'epsg'", "expected")
    _nothing_under(tmp_path, "r.yaml")


# ----------------------------------------------------------------------------- run --check resolves names


@pytest.mark.parametrize("data, key, named", [
    ({"catalog": "synthetic", "source": "nope", "variables": [VAR]}, "data.source", "nope"),
    ({"catalog": "no_such_catalog", "source": "radar_small", "variables": [VAR]}, "data.catalog", "no_such_catalog"),
    ({"adapter": "no_such_adapter", "args": {}, "variables": [VAR]}, "data.adapter", "no_such_adapter"),
    ({"adapter": "netcdf", "args": {"path": "x/*.nc", "bogus": 1, "time_step": "5min"}, "variables": [VAR]},
     "data.args.bogus", "netcdf"),
    ({"catalog": "synthetic", "source": "radar_small", "variables": [VAR]}, "data.source", "synthetic_radar"),
], ids=["unknown-source", "unknown-catalog", "unknown-adapter", "unknown-argument", "no-feed-support"])
def test_check_resolves_the_data_names(tmp_path, capsys, data, key, named):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path, data=data))
    _cli_error(["run", str(path), "--check"], capsys, "r.yaml", key, named, "expected")
    # the run refuses it the same way, before anything is created
    _cli_error(["run", str(path), "--quiet"], capsys, "r.yaml", key, named)
    _nothing_under(tmp_path, "r.yaml")


def test_check_resolves_corpus_sources(tmp_path, capsys):
    recipe = {"kind": "train", "data": {"catalog": "synthetic", "sources": ["radar_small", "not_there"],
                                        "variables": [VAR]},
              "model": {"name": "tau", "advection": True}, "output": {"dir": str(tmp_path / "out")}}
    path = _write(tmp_path / "corpus.yaml", recipe)
    _cli_error(["run", str(path), "--check"], capsys, "data.sources[1]", "not_there", "expected")
    _nothing_under(tmp_path, "corpus.yaml")


# ----------------------------------------------------------------------------- maps, expected shapes


@pytest.mark.parametrize("maps, shown", [
    (["banana"], "'banana'"), ([-30], "-30"), ([0], "0"), (["0min"], "'0min'"), ([True], "True"),
    ([15], "15"), ([7], "7"), ([5, "1h"], "'1h'"),
], ids=["not-a-time", "negative", "zero", "zero-interval", "boolean", "beyond-steps", "between-steps",
        "second-beyond"])
def test_maps_that_are_no_lead_time_are_refused(tmp_path, capsys, maps, shown):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path, output__maps=maps))
    _cli_error(["run", str(path), "--check"], capsys, "r.yaml", "output.maps[", shown, "expected")
    _nothing_under(tmp_path, "r.yaml")


def test_maps_of_lead_times_pass_and_maps_elsewhere_are_refused(tmp_path, capsys):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path, output__maps=[5, "10min"]))
    assert main(["run", str(path), "--check"]) == 0
    assert "maps:" in capsys.readouterr().out
    recipe = _nowcast(tmp_path, output__maps=[5], kind="evaluate")
    recipe.pop("nowcast")
    path = _write(tmp_path / "e.yaml", recipe)
    _cli_error(["run", str(path), "--check"], capsys, "e.yaml", "output.maps", "evaluate")
    _nothing_under(tmp_path, "r.yaml", "e.yaml")


@pytest.mark.parametrize("shape", [[0, 0], [-1, 16], [16], [16, 16, 1], ["a", 16]],
                         ids=["zero", "negative", "one-number", "three-numbers", "not-a-number"])
def test_an_impossible_expected_shape_is_refused(tmp_path, capsys, shape):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path, nowcast__expected_shape=shape))
    _cli_error(["run", str(path), "--check"], capsys, "r.yaml", "nowcast.expected_shape")
    _nothing_under(tmp_path, "r.yaml")


def test_a_refused_cycle_says_so_on_stderr_even_when_quiet(tmp_path, capsys):
    _frames(tmp_path / "feed")
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path, nowcast__expected_shape=[8, 8]))
    line = _cli_error(["run", str(path), "--quiet"], capsys, "r.yaml", "refused", "expected_shape", "(8, 8)",
                      code=1)
    assert "nowcast.log.jsonl" in line
    assert not list((tmp_path / "out").glob("nowcast_*.nc"))


# ----------------------------------------------------------------------------- polling flags


@pytest.mark.parametrize("flags, named", [
    (["--watch", "--poll", "-1", "--max-polls", "1"], "--poll"),
    (["--watch", "--poll", "0", "--max-polls", "1"], "--poll"),
    (["--watch", "--poll", "nan", "--max-polls", "1"], "--poll"),
    (["--watch", "--poll", "inf", "--max-polls", "1"], "--poll"),
    (["--watch", "--poll", "0.01", "--max-polls", "-1"], "--max-polls"),
    (["--watch", "--poll", "0.01", "--max-polls", "0"], "--max-polls"),
    (["--poll", "5"], "--poll"),
    (["--max-polls", "3"], "--max-polls"),
], ids=["poll-negative", "poll-zero", "poll-nan", "poll-inf", "max-polls-negative", "max-polls-zero",
        "poll-without-watch", "max-polls-without-watch"])
def test_polling_flags_that_cannot_be_are_refused(tmp_path, capsys, flags, named):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path))
    _cli_error(["run", str(path), *flags, "--quiet"], capsys, named, "expected")
    _nothing_under(tmp_path, "r.yaml")


def test_polling_arguments_of_run_recipe_are_checked(tmp_path):
    from geostp.recipes import load_recipe, run_recipe

    recipe = load_recipe(_write(tmp_path / "r.yaml", _nowcast(tmp_path)))
    _refused(ConfigError, lambda: run_recipe(recipe, watch=True, poll_seconds=-1, max_polls=1), "poll_seconds=-1")
    _refused(ConfigError, lambda: run_recipe(recipe, watch=True, poll_seconds=1, max_polls=0), "max_polls=0")
    _refused(ConfigError, lambda: run_recipe(recipe, watch=True, poll_seconds="5", max_polls=1), "poll_seconds")
    _nothing_under(tmp_path, "r.yaml")


@pytest.mark.parametrize("poll, polls, named", [
    (-1, None, "poll_seconds=-1"), (0, None, "poll_seconds=0"), (float("nan"), None, "poll_seconds=nan"),
    ("5", None, "poll_seconds='5'"), (True, None, "poll_seconds=True"), (1, 0, "max_polls=0"),
    (1, 1.5, "max_polls=1.5"), (1, -1, "max_polls=-1"),
], ids=["negative", "zero", "nan", "str", "bool", "no-polls", "float-polls", "negative-polls"])
def test_the_runner_refuses_polling_that_cannot_be(tmp_path, poll, polls, named):
    from geostp.recipes import load_recipe
    from geostp.recipes.run import nowcast_runner

    runner = nowcast_runner(load_recipe(_write(tmp_path / "r.yaml", _nowcast(tmp_path))), echo=None)
    _refused(ConfigError, lambda: runner.watch(poll, max_polls=polls, handle_signals=False), named, "expected")
    assert not (tmp_path / "out" / "nowcast.log.jsonl").exists()


# ----------------------------------------------------------------------------- chunk sizes


@pytest.mark.parametrize("argument", ["time_chunk", "spatial_chunk"])
@pytest.mark.parametrize("value", ["2", 2.5, None, 0, -1, True], ids=["str", "float", "none", "zero", "negative",
                                                                     "bool"])
def test_ingest_refuses_chunk_sizes_that_are_not_counts(tmp_path, argument, value):
    target = tmp_path / "c.zarr"
    _refused(ConfigError, lambda: geostp.ingest(_cube(), target, progress=False, **{argument: value}),
             f"ingest: {argument}={value!r}", "integer >= 1")
    _nothing_under(tmp_path)


def test_ingest_takes_numpy_integer_chunk_sizes(tmp_path):
    store = geostp.ingest(_cube(), tmp_path / "c.zarr", time_chunk=np.int64(4), spatial_chunk=np.int32(8),
                          progress=False)
    attrs = geostp.open_cube(store).attrs
    assert (attrs["geostp_time_chunk"], attrs["geostp_spatial_chunk"]) == (4, 8)


@pytest.mark.parametrize("flag, value", [("--time-chunk", "0"), ("--time-chunk", "-1"), ("--spatial-chunk", "-5"),
                                         ("--spatial-chunk", "0")])
def test_the_ingest_command_refuses_chunk_flags_below_one(tmp_path, capsys, flag, value):
    out = tmp_path / "k.zarr"
    _cli_error(["ingest", "radar_small", "--catalog", "synthetic", "--arg", "n_times=4", "--arg", "ny=16", "--arg",
                "nx=16", flag, value, "-o", str(out), "--quiet"], capsys, f"{flag}={value}", "expected")
    _nothing_under(tmp_path)


# ----------------------------------------------------------------------------- paths that are not paths


def _checkpoint_owner():
    import geostp.models as models
    from geostp.forecast import FittedForecaster

    return FittedForecaster(model=models.get("persistence"), variables=[VAR])


def _adapter(module: str, name: str, **kwargs):
    """``geostp.data.<module>.<name>(path, **kwargs)``, an adapter called directly."""
    import importlib

    function = getattr(importlib.import_module(f"geostp.data.{module}"), name)
    return lambda p: function(p, **kwargs)


def _load_recipe(path):
    from geostp.recipes import load_recipe

    return load_recipe(path)


RADAR_ARCHIVE = {"fn_pattern": "AQC%y%j%H%M", "fn_ext": "gif", "start": "2015-05-15", "end": "2015-05-15T01:00",
                 "timestep": 5}

PATH_CALLS = {
    "ingest": (lambda p: geostp.ingest(_cube(), p, progress=False), "ingest: path"),
    "open_cube": (lambda p: geostp.open_cube(p), "open_cube: path"),
    "verify_store": (lambda p: geostp.verify_store(p), "verify_store: path"),
    "open_catalog": (lambda p: geostp.open_catalog(p), "open_catalog: path_or_name"),
    "load_forecaster": (lambda p: geostp.load_forecaster(p), "load_forecaster: path"),
    "save": (lambda p: _checkpoint_owner().save(p), "FittedForecaster.save: path"),
    "load_recipe": (_load_recipe, "load_recipe: path"),
    "open_netcdf": (_adapter("netcdf", "open_netcdf"), "path="),
    "open_radolan": (_adapter("radolan", "open_radolan"), "path="),
    "open_taxibj": (_adapter("crowdflow", "open_taxibj"), "paths="),
    "open_video_files": (_adapter("video", "open_video_files"), "paths="),
    "open_frame_folders": (_adapter("video", "open_frame_folders"), "root="),
    "open_moving_mnist_npy": (_adapter("video", "open_moving_mnist_npy"), "path="),
    "open_radar_root": (lambda p: _adapter("radar", "open_radar", root=p, **RADAR_ARCHIVE)("mch_gif"), "root="),
}


_NO_PATHS = {"none": None, "int": 42, "float": 2.5, "bytes": b"x.zarr"}
# root=None is the radar adapter's 'no archive root' (then pattern= is required): a valid value, not a case here
_NO_PATH_CASES = [pytest.param(entry, value, id=f"{kind}-{entry}") for entry in sorted(PATH_CALLS)
                  for kind, value in _NO_PATHS.items() if not (entry == "open_radar_root" and value is None)]


@pytest.mark.parametrize(("entry", "value"), _NO_PATH_CASES)
def test_a_path_argument_that_is_no_path_is_refused(tmp_path, monkeypatch, entry, value):
    monkeypatch.chdir(tmp_path)
    call, named = PATH_CALLS[entry]
    _refused(ConfigError, lambda: call(value), named, "expected")
    _nothing_under(tmp_path)


@pytest.mark.parametrize("entry", ["ingest", "open_cube", "open_catalog", "load_forecaster"])
def test_an_empty_path_is_refused(tmp_path, monkeypatch, entry):
    monkeypatch.chdir(tmp_path)
    call, named = PATH_CALLS[entry]
    _refused(ConfigError, lambda: call(""), named, "empty")
    _nothing_under(tmp_path)


# ----------------------------------------------------------------------------- adapter arguments


@pytest.mark.parametrize("args, named", [(["a"], "args=['a']"), ("a", "args='a'"), (42, "args=42"),
                                         ({1: 2}, "key 1")], ids=["list", "str", "int", "int-key"])
def test_open_source_refuses_arguments_that_are_no_mapping(args, named):
    from geostp.data.adapters import AdapterArgumentsError, open_source

    _refused(AdapterArgumentsError, lambda: open_source("netcdf", args), named, "expected a mapping")


@pytest.mark.parametrize("args, named, expected", [
    ({"n_times": -3}, "n_times=-3", "integer >= 1"),
    ({"n_times": 0}, "n_times=0", "integer >= 1"),
    ({"n_times": "4"}, "n_times='4'", "integer >= 1"),
    ({"ny": 2.5}, "ny=2.5", "integer >= 1"),
    ({"time_chunk": 0}, "time_chunk=0", "integer >= 1"),
    ({"seed": -1}, "seed=-1", "integer >= 0"),
    ({"step": 0}, "step", "positive interval"),
    ({"step": "banana"}, "step", "positive interval"),
    ({"start": "yesterday-ish"}, "start='yesterday-ish'", "expected an ISO 8601 time"),
    ({"cells_per_frame": float("nan")}, "cells_per_frame=nan", "expected a finite number"),
    ({"radar_range_km": 0}, "radar_range_km=0", "expected a finite number > 0"),
    ({"n_times": 10**8, "ny": 4, "nx": 4, "step": "1D"}, "100000000 frames", "expected fewer frames"),
], ids=["negative-times", "zero-times", "str-times", "float-ny", "zero-chunk", "negative-seed", "zero-step",
        "bad-step", "bad-start", "nan-cells", "zero-range", "times-past-2262"])
def test_synthetic_radar_refuses_impossible_arguments(args, named, expected):
    from geostp.data.synthetic import synthetic_radar

    given = {"n_times": 4, "ny": 16, "nx": 16, **args}
    _refused(ConfigError, lambda: synthetic_radar(**given), "synthetic_radar", named, expected)


@pytest.mark.parametrize("args, named", [({"n_times": 10**12}, "n_times=1000000000000"),
                                         ({"ny": 10**9, "nx": 10**9}, "ny=1000000000")],
                         ids=["times", "grid"])
def test_sizes_that_cannot_fit_are_refused_saying_how_much(tmp_path, args, named):
    catalog = tmp_path / "big.yaml"
    catalog.write_text(yaml.safe_dump({"sources": {"big": {"adapter": "synthetic_radar",
                                                            "args": {"n_times": 4, "ny": 16, "nx": 16, **args}}}}))
    message = _refused(ConfigError, lambda: geostp.open_catalog(catalog).open("big"), named, "cannot fit",
                       "would need", expected="expected")
    assert "B of memory" in message  # an amount: KiB ... PiB


@pytest.mark.parametrize("arg, value, named", [("n_times", "-3", "n_times=-3"), ("ny", "1000000000", "cannot fit"),
                                               ("start", "garbage", "start='garbage'")])
def test_the_ingest_command_refuses_impossible_adapter_arguments(tmp_path, capsys, arg, value, named):
    out = tmp_path / "k.zarr"
    given = {"n_times": "4", "ny": "16", "nx": "1000000000" if arg == "ny" else "16", arg: value}  # each key once
    pairs = [x for k, v in given.items() for x in ("--arg", f"{k}={v}")]
    _cli_error(["ingest", "radar_small", "--catalog", "synthetic", *pairs, "-o", str(out), "--quiet"], capsys,
               "synthetic_radar", named, "expected")
    _nothing_under(tmp_path)


def test_moving_mnist_refuses_a_canvas_smaller_than_its_digits():
    from geostp.data.synthetic import moving_mnist

    digits = np.zeros((3, 28, 28), np.uint8)
    _refused(ConfigError, lambda: moving_mnist(2, digits=digits, size=20), "size=20", "no larger than the canvas")
    _refused(ConfigError, lambda: moving_mnist(0, digits=digits), "n_sequences=0", "integer >= 1")
    _refused(ConfigError, lambda: moving_mnist(2, digits=digits, split="validation"), "split='validation'")


def test_a_netcdf_variable_with_a_level_dim_is_a_data_error(tmp_path):
    from geostp.data.netcdf import open_netcdf

    times = pd.date_range("2024-07-01", periods=3, freq="5min")
    y = ("y", np.arange(4) * 1000.0, {"standard_name": "projection_y_coordinate", "units": "m"})
    x = ("x", np.arange(5) * 1000.0, {"standard_name": "projection_x_coordinate", "units": "m"})
    ds = xr.Dataset({"rain": (("time", "level", "y", "x"), np.zeros((3, 2, 4, 5), np.float32), {"units": "mm h-1"})},
                    coords={"time": times, "level": [1, 2], "y": y, "x": x})
    path = tmp_path / "levels.nc"
    ds.to_netcdf(path)
    for kwargs in ({"variable": "rain"}, {}):
        _refused(DataError, lambda kw=kwargs: open_netcdf(path, **kw), str(path), "'rain'", "'level'",
                 "expected dims (time, y, x)")


# ----------------------------------------------------------------------------- checkpoints asking for too much


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import geostp.models as models
    from geostp.forecast import FittedForecaster

    model = models.get("tau", input_steps=2, output_steps=1, channels=1, spatial_hidden_channels=4,
                       temporal_hidden_channels=8, spatial_blocks=2, temporal_blocks=2)
    return FittedForecaster(model=model, variables=[VAR]).save(tmp_path_factory.mktemp("ck") / "tiny.pt")


@pytest.mark.parametrize("change, named", [
    ({"spatial_hidden_channels": 200000, "temporal_hidden_channels": 200000}, "cannot fit"),
    ({"spatial_hidden_channels": 8}, "weights do not fit"),
], ids=["absurd-size", "other-shapes"])
def test_a_model_config_the_weights_cannot_have_is_refused_before_building(tmp_path, tiny_checkpoint, change, named):
    from geostp.train.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(tiny_checkpoint)
    ck["model_config"] = {**ck["model_config"], **change}
    path = save_checkpoint(tmp_path / "crafted.pt", ck)
    message = _refused(CheckpointError, lambda: geostp.load_forecaster(path), str(path), named, "expected")
    if "cannot fit" in message:
        assert "parameters" in message and "would need" in message
    assert geostp.load_forecaster(tiny_checkpoint).name == "tau"


# ----------------------------------------------------------------------------- the demo's arguments


@pytest.mark.parametrize("flags, named, kind", [
    (["--model", "nosuchmodel"], "--model", UnknownNameError),
    (["--minutes", "-1"], "--minutes", ConfigError),
    (["--minutes", "0"], "--minutes", ConfigError),
    (["--fine-tune-minutes", "nan"], "--fine-tune-minutes", ConfigError),
    (["--fine-tune-minutes", "-2"], "--fine-tune-minutes", ConfigError),
    (["--out", "AFILE"], "--out", WriteError),
], ids=["unknown-model", "negative-minutes", "zero-minutes", "nan-fine-tune", "negative-fine-tune", "out-is-a-file"])
def test_the_demo_checks_its_arguments_before_any_work(tmp_path, capsys, flags, named, kind):
    (tmp_path / "afile").write_text("mine")
    flags = [str(tmp_path / "afile") if f == "AFILE" else f for f in flags]
    argv = ["demo", "--quiet", *(["--out", str(tmp_path / "demo")] if "--out" not in flags else []), *flags]
    _cli_error(argv, capsys, named, "expected")
    _nothing_under(tmp_path, "afile")
    assert (tmp_path / "afile").read_text() == "mine"
    from geostp.demo import run_demo

    values = dict(zip(flags[::2], flags[1::2], strict=True))
    kwargs = {"model": values.get("--model", "tau"), "minutes": float(values.get("--minutes", 2)),
              "fine_tune_minutes": float(values.get("--fine-tune-minutes", 0))}
    _refused(kind, lambda: run_demo(values.get("--out", tmp_path / "demo"), progress=False, **kwargs),
             named.lstrip("-").replace("-", "_") if kind is not WriteError else "--out")
    _nothing_under(tmp_path, "afile")


def test_the_demo_refuses_a_model_of_the_wrong_type(tmp_path):
    from geostp.demo import run_demo

    _refused(ConfigError, lambda: run_demo(tmp_path / "demo", model=42, progress=False), "model=42")
    _refused(ConfigError, lambda: run_demo(tmp_path / "demo", minutes=True, progress=False), "minutes=True")
    _nothing_under(tmp_path)



# ----------------------------------------------------------------------------- a repeated option gives a key twice


def test_arg_given_twice_for_one_key_is_refused_not_the_last_one_silently(tmp_path, capsys):
    out = tmp_path / "b.zarr"
    line = _cli_error(["ingest", "radar_small", "--catalog", "synthetic", "--arg", "n_times=4", "--arg",
                       "n_times=6", "--arg", "ny=16", "--arg", "nx=16", "--quiet", "-o", str(out)], capsys,
                      "--arg n_times", "given twice", "'n_times=4'", "'n_times=6'", "expected each key once")
    assert "n_times=6" in line
    _nothing_under(tmp_path)
    # the same key with other spacing is the same key; other keys once each are fine (checked by the run below)
    _cli_error(["ingest", "--adapter", "synthetic_radar", "--arg", "seed=1", "--arg", " seed =2", "-o", str(out),
                "--quiet"], capsys, "--arg seed", "given twice")
    _nothing_under(tmp_path)
    assert main(["ingest", "radar_small", "--catalog", "synthetic", "--arg", "n_times=4", "--arg", "ny=16",
                 "--arg", "nx=16", "--quiet", "-o", str(out)]) == 0
    assert geostp.open_cube(out).sizes["time"] == 4
    capsys.readouterr()


@pytest.mark.parametrize("sets, named", [
    (["nowcast.steps=2", "nowcast.steps=3"], ("--set nowcast.steps", "given twice", "'nowcast.steps=2'",
                                              "'nowcast.steps=3'")),
    (["output.dir=a", " output.dir = b"], ("--set output.dir", "given twice")),
    (["data.args={path: a.nc}", "data.args.path=b.nc"], ("--set data.args.path", "overlaps --set data.args")),
    (["data.args.path=b.nc", "data.args={path: a.nc}"], ("--set data.args", "overlaps --set data.args.path")),
], ids=["same", "spacing", "inside-after", "inside-before"])
def test_set_given_twice_for_one_key_is_refused(tmp_path, capsys, sets, named):
    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path))
    for extra in (["--check"], ["--quiet"]):  # refused when the recipe is read: before a check, before a run
        argv = ["run", str(path), *extra, *sum((["--set", s] for s in sets), [])]
        _cli_error(argv, capsys, "r.yaml", *named, "expected each setting once")
    _nothing_under(tmp_path, "r.yaml")


def test_set_of_a_renamed_key_under_both_names_is_refused(tmp_path, capsys):
    from geostp.recipes.schema import apply_overrides

    path = _write(tmp_path / "r.yaml", _nowcast(tmp_path))
    _cli_error(["run", str(path), "--check", "--set", "training.max_steps=3", "--set",
                "training.max_iterations=5"], capsys, "--set training.max_iterations", "given twice",
               "'training.max_steps=3'")
    _refused(ConfigError, lambda: apply_overrides({}, {"a.b": 1, "a": {"b": 2}}), "--set a", "overlaps --set a.b",
             expected="expected each setting once")
    assert apply_overrides({"a": {"b": 0}}, ["a.b=1", "a.c=2", "ab=3"]) == {"a": {"b": 1, "c": 2}, "ab": 3}
    _nothing_under(tmp_path, "r.yaml")
