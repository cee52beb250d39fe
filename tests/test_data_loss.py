"""geostp replaces or appends to only the files it wrote, and writes nowhere a name does not allow.

Each refusal is checked the same way: the exception type, a message that names the file (or the recipe key)
and what was expected, the user's file byte for byte as it was, and nothing new under a final name (no
forecast, no recipe copy, no log, no lock, no temporary left).  The normal re-run of a recipe into its own
``output.dir`` (its own recipe copy, log, lock, grid record, scores, checkpoint) still works.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

import geostp
from geostp.cli import main
from geostp.errors import ConfigError, UnsafePathError, WriteError
from geostp.recipes import load_recipe, run_file
from geostp.recipes.run import RECIPE_HEADER

VAR = "precipitation"
NOTES = b"my notes: not geostp's\nline two\n"


def _cube(n: int = 5, size: int = 16) -> xr.Dataset:
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthetic_radar(n_times=n, ny=size, nx=size, seed=0).load()


@pytest.fixture(scope="module")
def feed(tmp_path_factory) -> Path:
    """One netCDF file per frame, ``frame_YYYYmmddHHMM.nc``, as a radar feed delivers them (read only)."""
    folder = tmp_path_factory.mktemp("feed")
    cube = _cube()
    for i in range(cube.sizes["time"]):
        frame = cube.isel(time=[i])
        frame.to_netcdf(folder / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")
    return folder


def _nowcast(path: Path, feed: Path, out: Path | None, **output) -> Path:
    recipe = {"kind": "nowcast",
              "data": {"adapter": "netcdf", "args": {"path": str(feed / "*.nc"), "variable": VAR,
                                                     "time_step": "5min"}, "variables": [VAR]},
              "model": {"name": "persistence"},
              "nowcast": {"steps": 2, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc", "wait_for_late": 0},
              "output": {**({"dir": str(out)} if out is not None else {}), **output}}
    path.write_text(yaml.safe_dump(recipe))
    return path


def _evaluate(path: Path, out: Path, **changes) -> Path:
    recipe = {"kind": "evaluate",
              "data": {"catalog": "synthetic", "source": "radar_small", "args": {"n_times": 12, "ny": 16, "nx": 16},
                       "variables": [VAR], "splits": {"train": 0.5, "test": 0.5},
                       "windows": {"input_steps": 3, "output_steps": 2}},
              "model": {"name": "persistence"},
              "evaluation": {"steps": 2, "metrics": ["mse"], "max_cases": 1},
              "output": {"dir": str(out)}, **changes}
    path.write_text(yaml.safe_dump(recipe))
    return path


def _train(path: Path, out: Path) -> Path:
    recipe = {"kind": "train",
              "data": {"catalog": "synthetic", "source": "radar_small", "args": {"n_times": 24, "ny": 32, "nx": 32},
                       "variables": [VAR], "splits": {"train": 0.7, "test": 0.3},
                       "windows": {"input_steps": 3, "output_steps": 2}, "patches": {"size": 16, "random": 1}},
              "model": {"name": "tau", "args": {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8,
                                                "spatial_blocks": 2, "temporal_blocks": 2}},
              "training": {"max_iterations": 1, "batch_size": 2, "progress": False},
              "output": {"dir": str(out)}}
    path.write_text(yaml.safe_dump(recipe))
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones and temporaries included) with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(kind, call, *named: str) -> str:
    with pytest.raises(kind) as err:
        call()
    message = str(err.value)
    for text in named:
        assert text in message, f"{text!r} not in {message!r}"
    return message


def _run(recipe: Path):
    return run_file(recipe, progress=False) if load_recipe(recipe).kind != "nowcast" else run_file(recipe)


# ----------------------------------------------------------------------------- the nowcast runner's files

@pytest.mark.parametrize("name", ["recipe.yaml", "nowcast.log.jsonl", ".geostp-nowcast.lock",
                                  ".geostp-nowcast-grid.json"])
def test_a_nowcast_refuses_a_users_file_under_a_name_it_writes(tmp_path, feed, name, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(NOTES)
    before = _tree(out)
    recipe = _nowcast(tmp_path / "r.yaml", feed, out)
    message = _refused(WriteError, lambda: run_file(recipe), str(out / name), "expected", "geostp did not write")
    assert "no file at all" in message
    assert _tree(out) == before, "the user's file unchanged, nothing else written (no lock, log, forecast)"
    capsys.readouterr()


def test_the_cli_says_so_and_exits_2(tmp_path, feed, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.yaml").write_bytes(NOTES)
    before = _tree(out)
    assert main(["run", str(_nowcast(tmp_path / "r.yaml", feed, out)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "geostp: error:" in err and str(out / "recipe.yaml") in err and "expected a recipe copy" in err
    assert _tree(out) == before


def test_output_log_naming_a_users_file_is_refused(tmp_path, feed, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(NOTES)
    out = tmp_path / "out"
    recipe = _nowcast(tmp_path / "r.yaml", feed, out, log=str(notes))
    _refused(WriteError, lambda: run_file(recipe), str(notes), "append to", "nowcast log")
    assert notes.read_bytes() == NOTES
    assert _tree(out) == {}, "nothing written in output.dir"
    capsys.readouterr()


def test_output_log_naming_the_recipe_itself_is_refused(tmp_path, feed, capsys):
    recipe = tmp_path / "r.yaml"
    _nowcast(recipe, feed, tmp_path / "out", log=str(recipe))
    text = recipe.read_bytes()
    _refused(WriteError, lambda: run_file(recipe), str(recipe), "nowcast log")
    assert recipe.read_bytes() == text
    assert _tree(tmp_path / "out") == {}
    capsys.readouterr()


def test_the_runner_api_refuses_a_users_log_when_it_is_made(tmp_path, feed):
    from geostp.forecast import FittedForecaster
    from geostp.operate import FileFeed, NowcastRunner

    log = tmp_path / "mine.jsonl"
    log.write_bytes(b'{"event": "my own json lines"}\n')  # JSON lines, but not a runner's log
    fc = FittedForecaster(model=geostp.models.get("persistence", output_steps=2), variables=[VAR])
    files = FileFeed("netcdf", {"path": str(feed / "*.nc"), "variable": VAR, "time_step": "5min"},
                     time_pattern="frame_%Y%m%d%H%M", extension="nc", variables=[VAR])
    _refused(WriteError, lambda: NowcastRunner(files, fc, steps=2, out_dir=tmp_path / "out", log_path=log,
                                               echo=None), str(log), "expected")
    assert log.read_bytes() == b'{"event": "my own json lines"}\n' and not (tmp_path / "out").exists()


def test_a_symlinked_log_is_still_refused_as_unsafe(tmp_path, feed, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(NOTES)
    out = tmp_path / "out"
    out.mkdir()
    (out / "nowcast.log.jsonl").symlink_to(victim)
    _refused(UnsafePathError, lambda: run_file(_nowcast(tmp_path / "r.yaml", feed, out)), "nowcast.log.jsonl")
    assert victim.read_bytes() == NOTES
    capsys.readouterr()


def test_a_rerun_into_its_own_folder_appends_to_its_log_and_replaces_its_recipe(tmp_path, feed, capsys):
    out = tmp_path / "out"
    recipe = _nowcast(tmp_path / "r.yaml", feed, out)
    first = run_file(recipe)
    assert first.exit_code == 0
    copy = (out / "recipe.yaml").read_text()
    assert copy.startswith(RECIPE_HEADER) and load_recipe(out / "recipe.yaml").kind == "nowcast"
    second = run_file(recipe)  # its own recipe copy, log, lock and grid record: all fine
    assert second.exit_code == 0 and second.cycles[0]["outcome"] == "exists"
    starts = [json.loads(line)["event"] for line in (out / "nowcast.log.jsonl").read_text().splitlines()]
    assert starts.count("start") == 2
    # the stored copy run again (it is geostp's own file in its own output.dir)
    assert run_file(out / "recipe.yaml").exit_code == 0
    capsys.readouterr()


def test_own_files_written_before_the_markers_and_empty_files_are_accepted(tmp_path, feed, capsys):
    from geostp.recipes.schema import recipe_to_yaml

    out = tmp_path / "out"
    out.mkdir()
    recipe = _nowcast(tmp_path / "r.yaml", feed, out)
    (out / "recipe.yaml").write_text(recipe_to_yaml(load_recipe(recipe)))  # a copy without the header
    start = {"event": "start", "time": "2024-01-01T00:00:00+00:00", "pid": 1, "feed": "x", "out_dir": str(out)}
    (out / "nowcast.log.jsonl").write_text(json.dumps(start, separators=(",", ":"))[:40])  # cut short by a kill
    (out / ".geostp-nowcast.lock").write_bytes(b"")
    assert run_file(recipe).exit_code == 0
    assert (out / "recipe.yaml").read_text().startswith(RECIPE_HEADER)
    capsys.readouterr()


# ----------------------------------------------------------------------------- train and evaluate outputs

@pytest.mark.parametrize("name", ["recipe.yaml", "scores.json", "scores.txt", "scores.nc"])
def test_an_evaluation_refuses_a_users_file_before_it_scores(tmp_path, name):
    out = tmp_path / "eval"
    out.mkdir()
    (out / name).write_bytes(NOTES)
    before = _tree(out)
    _refused(WriteError, lambda: _run(_evaluate(tmp_path / "e.yaml", out)), str(out / name), "expected")
    assert _tree(out) == before


@pytest.mark.parametrize("name", ["recipe.yaml", "history.json", "model.pt", "checkpoints/last.pt",
                                  "checkpoints/best.pt"])
def test_a_training_run_refuses_a_users_file_before_it_trains(tmp_path, name):
    out = tmp_path / "run"
    (out / name).parent.mkdir(parents=True)
    (out / name).write_bytes(NOTES)
    before = _tree(out)
    _refused(WriteError, lambda: _run(_train(tmp_path / "t.yaml", out)), str(out / name), "expected",
             "output.dir")
    assert _tree(out) == before


def test_an_evaluation_rerun_replaces_its_own_scores(tmp_path):
    out = tmp_path / "eval"
    recipe = _evaluate(tmp_path / "e.yaml", out)
    _run(recipe)
    first = sorted(p.name for p in out.iterdir())
    assert {"recipe.yaml", "scores.nc", "scores.txt", "scores.json"} <= set(first)
    _run(recipe)  # every file there is its own
    assert sorted(p.name for p in out.iterdir()) == first


# ----------------------------------------------------------------------------- checkpoints

def _forecaster():
    from geostp.forecast import FittedForecaster

    return FittedForecaster(model=geostp.models.get("persistence"), variables=[VAR])


def test_save_refuses_to_replace_a_file_that_is_not_a_checkpoint(tmp_path):
    thesis = tmp_path / "thesis.pt"
    thesis.write_bytes(NOTES)
    _refused(WriteError, lambda: _forecaster().save(thesis), str(thesis), "geostp checkpoint", "overwrite=True")
    assert thesis.read_bytes() == NOTES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.pt"], "no temporary left"


def test_save_refuses_a_zip_that_is_not_a_checkpoint_and_a_link(tmp_path):
    import zipfile

    archive = tmp_path / "data.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.txt", "mine")
    before = archive.read_bytes()
    _refused(WriteError, lambda: _forecaster().save(archive), str(archive))
    assert archive.read_bytes() == before
    link = tmp_path / "link.pt"
    link.symlink_to(_forecaster().save(tmp_path / "real.pt"))
    real = (tmp_path / "real.pt").read_bytes()
    _refused(WriteError, lambda: _forecaster().save(link), str(link), "symbolic link")
    assert link.is_symlink() and (tmp_path / "real.pt").read_bytes() == real


def test_save_replaces_a_geostp_checkpoint_and_overwrite_replaces_anything(tmp_path):
    path = _forecaster().save(tmp_path / "model.pt")
    again = _forecaster().save(path)  # a geostp checkpoint: replaced (what training resumes rely on)
    assert geostp.load_forecaster(again).name == "persistence"
    thesis = tmp_path / "thesis.pt"
    thesis.write_bytes(NOTES)
    _forecaster().save(thesis, overwrite=True)
    assert geostp.load_forecaster(thesis).name == "persistence"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _forecaster().save(empty)  # an empty file is fine to fill
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.pt", "model.pt", "thesis.pt"]


def test_the_trainers_checkpoint_writer_keeps_the_same_rule(tmp_path):
    from geostp.train.checkpoint import save_checkpoint

    last = tmp_path / "last.pt"
    last.write_bytes(NOTES)
    _refused(WriteError, lambda: save_checkpoint(last, {"model_name": "x"}), str(last))
    assert last.read_bytes() == NOTES


# ----------------------------------------------------------------------------- forecast files and maps

def test_write_forecast_refuses_a_users_netcdf_and_replaces_its_own(tmp_path):
    from geostp.writers import write_forecast

    fc = geostp.forecast(_cube(8), "persistence", 2)
    theirs = tmp_path / "theirs.nc"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(theirs)
    before = theirs.read_bytes()
    _refused(WriteError, lambda: write_forecast(fc, theirs), str(theirs), "geostp_version")
    assert theirs.read_bytes() == before
    mine = write_forecast(fc, tmp_path / "mine.nc")
    write_forecast(fc, mine)  # its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.nc", "theirs.nc"]


def test_a_users_png_under_a_map_name_is_left_and_logged(tmp_path, feed, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    out.mkdir()
    res = run_file(_nowcast(tmp_path / "r.yaml", feed, out, maps=[5]))
    drawn = out / res.cycles[0]["maps"][0]
    assert drawn.exists()
    for p in out.glob("nowcast_*.nc"):  # the cycle again, over a map that is the user's picture
        p.unlink()
    drawn.write_bytes(b"\x89PNG\r\n\x1a\nmy picture")
    again = run_file(_nowcast(tmp_path / "r.yaml", feed, out, maps=[5]))
    assert again.cycles[0]["outcome"] == "written" and again.cycles[0]["maps"] == []
    assert drawn.read_bytes() == b"\x89PNG\r\n\x1a\nmy picture"
    failed = [json.loads(line) for line in (out / "nowcast.log.jsonl").read_text().splitlines()
              if '"map_failed"' in line]
    assert failed and str(drawn) in failed[0]["reason"]
    capsys.readouterr()


# ----------------------------------------------------------------------------- names that become paths

BAD_NAMES = {
    "parent": "../../escaped",
    "separator": "a/b",
    "backslash": "a\\b",
    "dot-dot": "..",
    "dot": ".",
    "dots inside": "x..y",
    "absolute": "/tmp/x",
    "newline": "a\nb",
    "tab": "a\tb",
    "nul": "a\x00b",
    "escape": "a\x1b[31mb",
    "bidi override": "evil\u202egnp",
    "empty": " ",
    "too long": "n" * 300,
}


@pytest.mark.parametrize("case", BAD_NAMES, ids=list(BAD_NAMES))
def test_a_recipe_name_that_is_not_a_plain_name_is_refused_at_check_time(tmp_path, feed, monkeypatch, case,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    recipe = _nowcast(tmp_path / "r.yaml", feed, None)
    raw = yaml.safe_load(recipe.read_text())
    raw["name"] = BAD_NAMES[case]
    recipe.write_text(yaml.safe_dump(raw))
    before = _tree(tmp_path)
    _refused(ConfigError, lambda: load_recipe(recipe), "r.yaml: name:", "expected a plain name")
    assert main(["run", str(recipe), "--check"]) == 2
    assert "name:" in capsys.readouterr().err
    assert _tree(tmp_path) == before and not (tmp_path / "runs").exists()


def test_the_default_name_from_an_odd_file_name_is_refused_too(tmp_path, feed, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = _nowcast(tmp_path / "bad\tname.yaml", feed, None)
    _refused(ConfigError, lambda: load_recipe(recipe), "name:", "recipe file's name")


def test_a_plain_name_runs_under_runs(tmp_path, feed, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = _nowcast(tmp_path / "r.yaml", feed, None)
    raw = yaml.safe_load(recipe.read_text())
    raw["name"] = "radar nowcast é-1.2"
    recipe.write_text(yaml.safe_dump(raw))
    assert run_file(recipe).out_dir == Path("runs") / "radar nowcast é-1.2"
    assert (tmp_path / "runs" / "radar nowcast é-1.2" / "recipe.yaml").exists()
    capsys.readouterr()


def test_variables_and_registered_names_are_plain_names_too(tmp_path, feed):
    from geostp.registry import Registry

    recipe = _nowcast(tmp_path / "r.yaml", feed, tmp_path / "out")
    raw = yaml.safe_load(recipe.read_text())
    raw["data"]["variables"] = ["../../x"]
    recipe.write_text(yaml.safe_dump(raw))
    _refused(ConfigError, lambda: load_recipe(recipe), "data.variables[0]", "expected a plain name")
    _refused(ConfigError, lambda: Registry("model").register("../evil", object()), "../evil", "plain name")
    assert not (tmp_path / "out").exists()


def test_the_name_checker_itself():
    from geostp.names import name_problem

    for good in ("mch-tau", "run_1", "radar nowcast", "é", ".hidden", "v1.2"):
        assert name_problem(good) is None, good
    for bad in BAD_NAMES.values():
        assert name_problem(bad) is not None, repr(bad)
    assert name_problem(None) is not None and name_problem(os.sep.join(["a", "b"])) is not None


# ----------------------------------------------------------------------------- a file named like a forecast

USER_FORECAST = b"USER DATA\n"


def _cycles(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "nowcast.log.jsonl").read_text().splitlines()) if r["event"] == "cycle"]


def _newest_stem(feed: Path) -> str:
    newest = max(pd.Timestamp(p.stem.removeprefix("frame_")) for p in feed.glob("frame_*.nc"))
    return f"nowcast_{newest:%Y%m%d%H%M}"


@pytest.mark.parametrize("command", ["run", "nowcast"])
def test_a_users_file_named_like_the_forecast_is_a_refused_cycle_not_already_there(tmp_path, feed, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / (_newest_stem(feed) + ".nc")
    theirs.write_bytes(USER_FORECAST)
    recipe = _nowcast(tmp_path / "r.yaml", feed, out)
    assert main([command, str(recipe), "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("geostp: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "refused" in lines[0] and str(theirs) in lines[0] and "geostp did not write" in lines[0]
    assert "geostp_version" in lines[0] and "already exist" not in err
    assert theirs.read_bytes() == USER_FORECAST
    (cycle,) = _cycles(out)
    assert cycle["outcome"] == "refused" and str(theirs) in cycle["reason"] and "expected" in cycle["reason"]
    assert sorted(p.name for p in out.glob("nowcast_*")) == [theirs.name], "no forecast written beside it"


def test_the_runner_refuses_a_users_file_once_while_watching_and_forecasts_once_it_is_gone(tmp_path, feed):
    from geostp.recipes.run import nowcast_runner

    out = tmp_path / "out"
    out.mkdir()
    theirs = out / (_newest_stem(feed) + ".nc")
    theirs.write_bytes(USER_FORECAST)
    with nowcast_runner(load_recipe(_nowcast(tmp_path / "r.yaml", feed, out)), echo=None) as runner:
        first = runner.poll(wait=False)
        assert [r["reference_time"] for r in first if r["outcome"] == "refused"] == [
            pd.Timestamp(theirs.stem.removeprefix("nowcast_")).isoformat()]
        assert runner.poll(wait=False) == [], "the same refusal is not logged at every poll"
        assert theirs.read_bytes() == USER_FORECAST
        theirs.unlink()  # the user moves it away: the cycle runs
        (again,) = runner.poll(wait=False)
    assert again["outcome"] == "written" and again["outputs"] == [theirs.name]
    from geostp.writers import is_geostp_forecast

    assert is_geostp_forecast(theirs)


def test_a_rerun_keeps_geostps_own_forecast_and_an_empty_file_is_written_over(tmp_path, feed, capsys):
    out = tmp_path / "out"
    recipe = _nowcast(tmp_path / "r.yaml", feed, out)
    assert main(["run", str(recipe), "--quiet"]) == 0
    mine = out / (_newest_stem(feed) + ".nc")
    before = (mine.stat().st_mtime_ns, mine.read_bytes())
    assert main(["run", str(recipe), "--quiet"]) == 0  # idempotent: its own forecast is kept
    assert (mine.stat().st_mtime_ns, mine.read_bytes()) == before
    assert _cycles(out)[-1]["outcome"] == "exists"
    mine.write_bytes(b"")  # an empty file (a crash of something else) is no forecast: written over
    assert main(["run", str(recipe), "--quiet"]) == 0
    assert _cycles(out)[-1]["outcome"] == "written" and mine.stat().st_size > 0
    capsys.readouterr()


def test_write_forecasts_keep_existing_keeps_only_its_own(tmp_path):
    from geostp.writers import forecast_there, write_forecasts

    fc = geostp.forecast(_cube(8), "persistence", 2)
    theirs, store = tmp_path / "theirs.nc", tmp_path / "theirs.zarr"
    theirs.write_bytes(USER_FORECAST)
    _refused(WriteError, lambda: write_forecasts(fc, [(None, theirs)], keep_existing=True), str(theirs),
             "geostp did not write", "expected a netCDF forecast written by geostp")
    assert theirs.read_bytes() == USER_FORECAST
    store.mkdir()
    (store / "notes.txt").write_bytes(NOTES)
    _refused(WriteError, lambda: write_forecasts(fc, [(None, tmp_path / "ok.nc"), (None, store)],
                                                 keep_existing=True), str(store), "a folder that geostp did not write",
             "zarr forecast store")
    assert (store / "notes.txt").read_bytes() == NOTES and not (tmp_path / "ok.nc").exists(), "all or none"
    both = [(None, tmp_path / "f.nc"), (None, tmp_path / "f.zarr")]
    write_forecasts(fc, both)
    assert all(forecast_there(p) for _, p in both)
    stamp = [p.stat().st_mtime_ns for _, p in both]
    assert write_forecasts(fc, both, keep_existing=True) == [p for _, p in both]
    assert [p.stat().st_mtime_ns for _, p in both] == stamp, "kept, not rewritten"
