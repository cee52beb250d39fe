"""Operational hardening, by class of bad input: each test feeds geostp one kind of hostile or unlucky input and
checks the error (its type, that it names the file or argument and says what was expected) and that nothing
was written under a final name and no file geostp did not write was touched.

1. ``ingest --overwrite`` replaces only a store geostp wrote, and cleans up the old copies a killed overwrite left;
2. paths holding glob characters (a folder ``runs [v2]``) are taken literally before a pattern is added;
3. the nowcast runner's lock and log are never opened through a link;
4. ``${VAR}`` values (secrets) never reach a stored recipe, a checkpoint, a forecast file or the log;
5. YAML anchors and aliases (alias bombs) are refused in recipes, catalogs, ``--set`` and ``--arg``;
6. a recipe's training is reproducible from ``training.seed`` alone;
7. ``--dask-scheduler tcp://...`` says that the scheduler is trusted with pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from geostp.cli import main
from geostp.errors import ConfigError, GeostpError, StoreError, UnsafePathError
from geostp.store import ingest, open_cube
from geostp.testing import small_cube

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-T0ken-7f3a9c"
TINY_TAU = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2}
SMALL = ["--arg", "n_times=4", "--arg", "ny=16", "--arg", "nx=16"]


# ----------------------------------------------------------------------------- helpers


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root`` (links not followed): a file's content digest and mtime, a link's target."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            else:
                out[rel] = ("other", p.stat().st_mode)
    return out


def _frames(folder: Path, n: int = 5, size: int = 16) -> xr.Dataset:
    """``n`` one-frame netCDF files of a small synthetic radar cube, ``frame_YYYYmmddHHMM.nc``, in ``folder``."""
    from geostp.data.synthetic import synthetic_radar

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = synthetic_radar(n_times=n, ny=size, nx=size, seed=0).load()
    for i in range(n):
        frame = cube.isel(time=[i])
        frame.to_netcdf(folder / f"frame_{pd.Timestamp(frame.time.values[0]):%Y%m%d%H%M}.nc")
    return cube


def _nowcast(feed: str, out: str, **output) -> dict:
    """A nowcast recipe: the persistence baseline on the netCDF frames matched by ``feed``."""
    return {"kind": "nowcast",
            "data": {"adapter": "netcdf", "args": {"path": feed, "variable": "precipitation", "time_step": "5min"},
                     "variables": ["precipitation"]},
            "model": {"name": "persistence"},
            "nowcast": {"steps": 2, "time_pattern": "frame_%Y%m%d%H%M", "extension": "nc"},
            "output": {"dir": out, **output}}


def _train(out: str, **training) -> dict:
    return {"kind": "train",
            "data": {"catalog": "synthetic", "source": "radar_small", "args": {"n_times": 24, "ny": 32, "nx": 32},
                     "variables": ["precipitation"], "splits": {"train": 0.7, "test": 0.3},
                     "windows": {"input_steps": 3, "output_steps": 2}, "patches": {"size": 16, "random": 1}},
            "model": {"name": "tau", "args": dict(TINY_TAU)},
            "training": {"max_iterations": 3, "batch_size": 2, "progress": False, **training},
            "output": {"dir": out}}


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def _quiet_run(recipe_path: Path, **kwargs):
    from geostp.recipes import load_recipe, run_recipe

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_recipe(load_recipe(recipe_path), **kwargs)


# ----------------------------------------------------------------------------- 1. overwrite only geostp's stores


def _not_geostp(kind: str, tmp_path: Path) -> Path:
    """A path that ``ingest(..., overwrite=True)`` must refuse: something geostp did not write there."""
    d = tmp_path / "d"
    if kind == "folder of files":
        d.mkdir()
        (d / "thesis.txt").write_text("five years of work")
    elif kind == "empty folder":
        d.mkdir()
    elif kind == "plain file":
        d.write_text("not a store")
    elif kind == "zarr store not written by geostp":
        xr.Dataset({"a": ("t", np.arange(3.0))}).to_zarr(d, zarr_format=3, consolidated=False)
    elif kind in ("geostp store holding a foreign file", "geostp store with a foreign file in an array folder"):
        ingest(small_cube(4, 8, 8), d, progress=False)
        (d / ("notes.txt" if kind.endswith("file") else "precipitation/notes.txt")).write_text("mine")
    elif kind == "link to a geostp store":
        ingest(small_cube(4, 8, 8), tmp_path / "real.zarr", progress=False)
        d.symlink_to(tmp_path / "real.zarr")
    elif kind == "link to a folder of files":
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "thesis.txt").write_text("x")
        d.symlink_to(tmp_path / "home")
    return d


NOT_GEOSTP = ["folder of files", "empty folder", "plain file", "zarr store not written by geostp",
              "geostp store holding a foreign file", "geostp store with a foreign file in an array folder",
              "link to a geostp store", "link to a folder of files"]


@pytest.mark.parametrize("kind", NOT_GEOSTP)
def test_ingest_overwrite_refuses_what_geostp_did_not_write(kind, tmp_path):
    d = _not_geostp(kind, tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError) as err:
        ingest(small_cube(4, 8, 8), d, overwrite=True, progress=False)
    msg = str(err.value)
    assert str(d) in msg and "refusing to overwrite" in msg and "expected" in msg and "geostp.ingest" in msg
    assert isinstance(err.value, GeostpError)
    assert _snapshot(tmp_path) == before, "nothing touched, no partial or old folder left"


def test_cli_ingest_overwrite_of_a_users_folder_is_an_error_and_keeps_the_folder(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("x\n")
    before = _snapshot(tmp_path)
    rc = main(["ingest", "radar_small", "--catalog", "synthetic", *SMALL, "-o", str(d), "--overwrite", "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("geostp: error: refusing to overwrite") and str(d) in err
    assert "holds thesis.txt" in err or "not a zarr store" in err
    assert _snapshot(tmp_path) == before and (d / "thesis.txt").read_text() == "x\n"


def test_ingest_overwrite_replaces_a_geostp_store(tmp_path, capsys):
    d = tmp_path / "c.zarr"
    assert main(["ingest", "radar_small", "--catalog", "synthetic", *SMALL, "-o", str(d), "--quiet"]) == 0
    assert main(["ingest", "radar_small", "--catalog", "synthetic", "--arg", "n_times=6", "--arg", "ny=16",
                 "--arg", "nx=16", "-o", str(d), "--overwrite", "--quiet"]) == 0, capsys.readouterr().err
    assert open_cube(d).sizes["time"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"], "no partial or old copy left"


def test_a_killed_overwrite_leaves_an_old_copy_that_the_next_ingest_removes(tmp_path, monkeypatch):
    import geostp.store as store

    d = tmp_path / "c.zarr"
    ingest(small_cube(4, 8, 8), d, progress=False)

    def killed(path):  # the process dies after the swap, before the old copy is removed
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_remove_store", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest(small_cube(6, 8, 8), d, overwrite=True, progress=False)
    monkeypatch.undo()
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith("c.zarr.old-")]
    assert open_cube(old).sizes["time"] == 4, "a full copy of the old store"
    # an old copy cut short while it was being removed (its root metadata is removed last) is geostp's too
    half = tmp_path / "c.zarr.old-0123abcd"
    shutil.copytree(old, half)
    shutil.rmtree(half / "precipitation")
    # names that only look like ours, or folders that are not geostp stores, are someone else's
    mine = {"c.zarr.old-deadbeef": "thesis.txt", "c.zarr.old-backup": "notes.txt", "c 1.zarr.old-0123abcd": "x.txt"}
    for name, f in mine.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / f).write_text("keep me")
    kept = {n: _snapshot(tmp_path / n) for n in mine}

    ingest(small_cube(5, 8, 8), d, overwrite=True, progress=False)
    assert open_cube(d).sizes["time"] == 5
    assert not old.exists() and not half.exists(), "geostp's own stale old copies are removed"
    assert {n: _snapshot(tmp_path / n) for n in mine} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.zarr", *mine])


# ----------------------------------------------------------------------------- 2. glob characters in paths


def test_a_folder_named_with_glob_characters_is_read_by_the_netcdf_adapter(tmp_path):
    from geostp.data.netcdf import open_netcdf

    runs = tmp_path / "runs [v2]"
    cube = _frames(runs, 4)
    # decoys that '[v2]' read as a character class would match instead: 'runs v' and 'runs 2'
    for decoy in ("runs v", "runs 2"):
        shutil.copytree(runs, tmp_path / decoy)
        (tmp_path / decoy / "frame_202001010000.nc").write_bytes((runs / os.listdir(runs)[0]).read_bytes())
    files = sorted(runs.iterdir())
    for path in (f"{runs}/frame_*.nc", str(runs), runs, [str(f) for f in files], str(files[0]),
                 f"{runs}/**/frame_*.nc"):
        ds = open_netcdf(path, "precipitation")
        n = 1 if path == str(files[0]) else 4
        assert ds.sizes["time"] == n, path
        np.testing.assert_allclose(ds["precipitation"].values, cube["precipitation"].values[:n], rtol=1e-6)
    with pytest.raises(GeostpError) as err:  # a pattern that matches nothing still says where it looked
        open_netcdf(f"{runs}/rain_*.nc")
    assert "matched no netCDF file" in str(err.value) and f"nothing matches rain_*.nc in {runs}" in str(err.value)


def test_a_folder_named_with_glob_characters_is_read_by_the_radar_adapter(tmp_path, shared_data):
    from geostp.data.radar import open_radar

    runs = tmp_path / "runs [v2]"
    runs.mkdir()
    frames = sorted((shared_data / "radar" / "mch" / "20160711").glob("AQC*_00005.801.gif"))[:3]
    for f in frames:
        shutil.copy(f, runs / f.name)
    args = {"importer": "mch_gif", "fn_pattern": "AQC%y%j%H%M?_00005.801", "fn_ext": "gif", "timestep": 5,
            "importer_kwargs": {"product": "AQC", "unit": "mm", "accutime": 5}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_radar(pattern=f"{runs}/AQC*_00005.801.gif", **args)
        one = open_radar(pattern=[str(runs / frames[0].name)], **args)  # the feed's way: one literal file
    assert ds.sizes["time"] == 3 and one.sizes["time"] == 1
    assert np.isfinite(ds["precipitation"].isel(time=0).values).any()


def test_a_feed_and_a_store_in_a_folder_named_with_glob_characters(tmp_path):
    from geostp.operate import FileFeed

    runs = tmp_path / "runs [v2]"
    _frames(runs, 3)
    feed = FileFeed("netcdf", {"variable": "precipitation", "time_step": "5min"}, files=f"{runs}/frame_*.nc",
                    time_pattern="frame_%Y%m%d%H%M", extension="nc")
    found, _ = feed.scan()
    assert len(found) == 3
    t, path = next(iter(found.items()))
    assert feed.read(path, t).data.sizes["time"] == 1
    # the store's own stale partials are found by name, not by a pattern: 'c [1]' must not reach 'c 1'
    target = runs / "c [1].zarr"
    other = runs / "c 1.zarr.partial-0123abcd"
    other.mkdir()
    (other / "zarr.json").write_text("{}")
    stale = runs / "c [1].zarr.partial-89abcdef"
    stale.mkdir()
    ingest(small_cube(4, 8, 8), target, progress=False)
    ingest(small_cube(5, 8, 8), target, progress=False, overwrite=True)
    assert open_cube(target).sizes["time"] == 5 and not stale.exists()
    assert (other / "zarr.json").read_text() == "{}", "another store's partial folder is left alone"


# ----------------------------------------------------------------------------- 3. lock and log never through a link


def _hostile(kind: str, out: Path, victim: Path) -> tuple[Path, dict]:
    """Put a link (or another non-file) where the runner keeps its lock or log; the recipe's output extras."""
    from geostp.operate.runner import LOCK_NAME

    out.mkdir()
    what, how = kind.split(": ")
    target = out / (LOCK_NAME if what == "lock" else "nowcast.log.jsonl")
    extra: dict = {}
    if what == "custom log":
        target = out.parent / "logs" / "my.log"
        target.parent.mkdir()
        extra = {"log": str(target)}
    if how == "symlink":
        target.symlink_to(victim)
    elif how == "dangling symlink":
        target.symlink_to(victim.parent / "created-through-the-link")
    elif how == "hard link":
        os.link(victim, target)
    elif how == "folder":
        target.mkdir()
    elif how == "fifo":
        os.mkfifo(target)
    return target, extra


HOSTILE = ["lock: symlink", "lock: dangling symlink", "lock: hard link", "lock: folder", "lock: fifo",
           "log: symlink", "log: dangling symlink", "log: hard link", "log: folder", "log: fifo",
           "custom log: symlink", "custom log: hard link"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_the_runner_refuses_a_lock_or_log_that_is_not_its_own_file(kind, tmp_path, capsys):
    _frames(tmp_path / "feed", 3)
    home = tmp_path / "home"
    home.mkdir()
    victim = home / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    target, extra = _hostile(kind, out, victim)
    recipe = _write(tmp_path / "nc.yaml", _nowcast(f"{tmp_path}/feed/frame_*.nc", str(out), **extra))
    before = _snapshot(home)
    rc = main(["run", str(recipe), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("geostp: error:") and str(target) in err, err
    assert "expected a regular file" in err
    assert _snapshot(home) == before and victim.read_text() == "precious\n", "the target is untouched"
    assert not list(out.glob("nowcast_*")) and not (out / "recipe.yaml").exists(), "nothing written"
    assert not (home / "created-through-the-link").exists()

    # the API raises the error class; the lock is released, so a runner starts once the file is fixed
    from geostp.recipes import load_recipe
    from geostp.recipes.run import nowcast_runner

    runner = nowcast_runner(load_recipe(recipe), echo=None)
    with pytest.raises(UnsafePathError, match="refusing"):
        runner.open()
    if target.is_dir() and not target.is_symlink():
        target.rmdir()
    else:
        target.unlink()
    with nowcast_runner(load_recipe(recipe), echo=None) as ok:
        assert ok.run_once()["outcome"] == "written"
    assert victim.read_text() == "precious\n"


# ----------------------------------------------------------------------------- 4. secrets stay out of every file


def _files_holding(root: Path, text: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and text.encode() in p.read_bytes()]


def test_environment_values_never_reach_a_stored_recipe_checkpoint_forecast_or_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEOSTP_TEST_SECRET", SECRET)
    root = tmp_path / "work"
    # train: the secret in output.dir (a path that holds a token); the model is then verified and nowcasts
    train = _train(f"{root}/train-${{GEOSTP_TEST_SECRET}}")
    train["evaluation"] = {"steps": 2, "metrics": ["mse"], "baselines": ["persistence"], "max_cases": 2}
    root.mkdir()
    trained = _quiet_run(_write(tmp_path / "train.yaml", train), progress=False)
    assert SECRET in str(trained.out_dir), "the run itself used the expanded value"
    feed = root / f"feed-{SECRET}"
    cube = _frames(feed, 4, size=32)
    times = [pd.Timestamp(t) for t in cube.time.values]
    # a bad file: the runner logs it with its full path, which holds the secret
    (feed / f"frame_{times[-1] + pd.Timedelta('5min'):%Y%m%d%H%M}.nc").write_bytes(b"truncated")
    nowcast = _nowcast(f"{root}/feed-${{GEOSTP_TEST_SECRET}}/frame_*.nc", f"{root}/out-${{GEOSTP_TEST_SECRET}}",
                       formats=["netcdf", "zarr"])
    nowcast["model"] = {"checkpoint": f"{root}/train-${{GEOSTP_TEST_SECRET}}/model.pt"}
    nowcast["nowcast"]["wait_for_late"] = 0
    path = _write(tmp_path / "nowcast.yaml", nowcast)
    result = _quiet_run(path, reference_time=times[-1])
    assert result.cycles[0]["outcome"] == "written", result.cycles
    bad = _quiet_run(path, reference_time=times[-1] + pd.Timedelta("5min"))
    assert bad.cycles[0]["outcome"] != "written"
    printed = capsys.readouterr().out
    assert "bad_file" in printed and SECRET not in printed, "nor in the log lines echoed"
    written = [p for p in root.rglob("*") if p.is_file() and feed not in p.parents]
    assert len(written) > 10
    assert _files_holding(root, SECRET) == [], "no file written holds the secret"
    nc = next((root / f"out-{SECRET}").glob("nowcast_*.nc"))
    with xr.open_dataset(nc) as ds:
        stored = json.loads(ds.attrs["geostp_recipe"])
        assert stored["output"]["dir"].endswith("out-${GEOSTP_TEST_SECRET}")
        assert all(SECRET not in str(v) for var in ds.variables for v in ds[var].attrs.values())
    from geostp.forecast import load_forecaster
    from geostp.recipes import load_recipe

    meta = load_forecaster(trained.checkpoint).metadata["recipe"]
    assert meta["output"]["dir"].endswith("train-${GEOSTP_TEST_SECRET}")
    log = (root / f"out-{SECRET}" / "nowcast.log.jsonl").read_text()
    assert "bad_file" in log and "${GEOSTP_TEST_SECRET}" in log
    # what is stored loads back to the same recipe (the reference expanded again)
    again = load_recipe(root / f"out-{SECRET}" / "recipe.yaml")
    assert again.output.dir == f"{root}/out-{SECRET}" and again.data.args["path"] == f"{feed}/frame_*.nc"


def test_a_reference_given_by_set_is_stored_as_written(tmp_path, monkeypatch, capsys):
    from geostp.recipes import load_recipe, recipe_to_yaml

    monkeypatch.setenv("GEOSTP_TEST_SECRET", SECRET)
    monkeypatch.setenv("GEOSTP_TEST_ITERATIONS", "2")
    p = _write(tmp_path / "r.yaml", _train(str(tmp_path / "run")))
    recipe = load_recipe(p, [f"output.dir={tmp_path}/${{GEOSTP_TEST_SECRET}}",
                             "training.max_iterations=${GEOSTP_TEST_ITERATIONS}"])
    assert recipe.training.max_iterations == 2 and recipe.output.dir == f"{tmp_path}/{SECRET}"
    text = recipe_to_yaml(recipe)
    assert SECRET not in text and "${GEOSTP_TEST_SECRET}" in text and "${GEOSTP_TEST_ITERATIONS}" in text
    assert main(["run", str(p), "--check", "--set", "output.dir=${GEOSTP_TEST_SECRET}"]) == 0
    assert SECRET not in capsys.readouterr().out


# ----------------------------------------------------------------------------- 5. no YAML anchors or aliases


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def _indent(text: str, n: int) -> str:
    return "".join(" " * n + line + "\n" for line in text.splitlines())


def test_a_recipe_with_an_alias_bomb_is_refused_at_once(tmp_path):
    from geostp.recipes import load_recipe

    p = tmp_path / "bomb.yaml"
    p.write_text(f"kind: train\ndata:\n  adapter: synthetic_radar\n  args:\n{_indent(BOMB, 4)}"
                 f"model: {{name: tau}}\noutput: {{dir: {tmp_path / 'out'}}}\n")
    assert len(p.read_bytes()) < 600
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_recipe(p)
    assert "bomb.yaml: line 5" in str(err.value) and "anchors and aliases" in str(err.value)
    assert "not allowed" in str(err.value) and time.monotonic() - t0 < 5
    proc = subprocess.run([sys.executable, "-m", "geostp.cli", "run", str(p), "--check"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.startswith("geostp: error: bomb.yaml: line 5")
    assert proc.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("yaml_text", [
    "base: &base {n_times: 4}\nkind: train\n",
    "base: &b {n_times: 4}\nkind: train\ndata: {adapter: synthetic_radar, args: {<<: *b}}\n",
    "kind: train\ndata: {adapter: synthetic_radar, args: {<<: *b}}\n",
    "kind: &k train\n"])
def test_any_anchor_in_a_recipe_is_refused(tmp_path, yaml_text):
    from geostp.recipes import load_recipe

    p = tmp_path / "r.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=r"r.yaml: (line \d+, column \d+: YAML anchors and aliases .* are not "
                                          r"allowed|not valid YAML .*undefined alias)"):
        load_recipe(p)


def test_a_catalog_with_an_alias_bomb_is_refused(tmp_path, capsys):
    from geostp.data.catalog import open_catalog

    p = tmp_path / "bombs.yaml"
    p.write_text(f"sources:\n  s:\n    adapter: synthetic_radar\n    args:\n{_indent(BOMB, 6)}")
    with pytest.raises(ConfigError, match=r"bombs.yaml: line 5, .*anchors and aliases .* not allowed"):
        open_catalog(p)
    out = tmp_path / "x.zarr"
    assert main(["ingest", "s", "--catalog", str(p), "-o", str(out), "--quiet"]) == 2
    assert "bombs.yaml: line 5" in capsys.readouterr().err and not out.exists()


def test_set_and_arg_values_with_anchors_are_refused_and_plain_globs_still_work(tmp_path, capsys):
    from geostp.cli import _parse_adapter_args
    from geostp.recipes import load_recipe

    p = _write(tmp_path / "r.yaml", _train(str(tmp_path / "run")))
    with pytest.raises(ConfigError, match=r"r.yaml: --set data.args: line 1, column 5: YAML anchors and aliases"):
        load_recipe(p, ["data.args={a: &x [1, 2], b: *x}"])
    out = tmp_path / "x.zarr"
    assert main(["ingest", "radar_small", "--catalog", "synthetic", "--arg", "ny=&y 16", "-o", str(out)]) == 2
    assert "--arg ny: line 1, column 1: YAML anchors and aliases" in capsys.readouterr().err and not out.exists()
    assert _parse_adapter_args(["pattern=*.gif", "fn_pattern=%Y%m%d"]) == {"pattern": "*.gif", "fn_pattern": "%Y%m%d"}


# ----------------------------------------------------------------------------- 6. reproducible recipe training


def test_recipe_training_depends_on_the_seed_alone(tmp_path):
    import torch

    from geostp.forecast import load_forecaster

    def run(name: str, **training):
        torch.rand(1000)  # whatever ran before in the process must not matter
        res = _quiet_run(_write(tmp_path / f"{name}.yaml", _train(str(tmp_path / name), **training)), progress=False)
        history = json.loads((res.out_dir / "history.json").read_text())
        return [h["loss"] for h in history["steps"]], load_forecaster(res.checkpoint).model.state_dict()

    losses_a, weights_a = run("a")
    losses_b, weights_b = run("b")
    assert len(losses_a) == 3 and losses_a == losses_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    losses_c, weights_c = run("c", seed=1)
    assert losses_c != losses_a or any(not torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


# ----------------------------------------------------------------------------- 7. the dask scheduler is trusted


def test_dask_scheduler_help_and_docs_say_the_scheduler_is_trusted_with_pickles():
    from geostp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in ("ingest", "run", "nowcast"):
        (option,) = [a for a in sub.choices[command]._actions if "--dask-scheduler" in a.option_strings]
        assert "pickles" in option.help and "run any code" in option.help, command
    doc = (REPO / "docs" / "scale-out.md").read_text()
    assert "pickles" in doc and "tls://" in doc
