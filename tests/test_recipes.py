"""Recipes: the strict schema (errors name the key path), --set overrides, and every example recipe run on a tiny budget."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from geostp.errors import ConfigError
from geostp.recipes.bundled import example_recipes as _example_recipes

REPO = Path(__file__).resolve().parents[1]
# the example recipes are package data (geostp/recipes/examples; the checkout's recipes/ links to them)
RECIPES = [Path(str(f)) for f in _example_recipes().values()]

TINY_TAU = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2}



def _write(tmp_path: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(recipe))
    return p


def _with_changes(recipe: dict, changes: dict) -> dict:
    """``recipe`` with each dotted key (``"data.patches"``) set to its value."""
    for key, value in changes.items():
        node = recipe
        *head, last = key.split(".")
        for part in head:
            node = node[part]
        node[last] = value
    return recipe


def _synthetic_train(tmp_path: Path, **changes) -> dict:
    r = {
        "kind": "train",
        "data": {"catalog": "synthetic", "source": "radar_small", "args": {"n_times": 24, "ny": 32, "nx": 32},
                 "variables": ["precipitation"], "splits": {"train": 0.7, "test": 0.3},
                 "windows": {"input_steps": 3, "output_steps": 2}, "patches": {"size": 16, "random": 1}},
        "model": {"name": "tau", "args": dict(TINY_TAU)},
        "training": {"max_iterations": 2, "batch_size": 2, "progress": False},
        "evaluation": {"steps": 2, "metrics": ["mse", "csi"], "thresholds": [0.5], "baselines": ["persistence"],
                       "max_cases": 2},
        "output": {"dir": str(tmp_path / "run")},
    }
    return _with_changes(r, changes)


# ----------------------------------------------------------------------------- schema


def _load(tmp_path, recipe, overrides=None):
    from geostp.recipes import load_recipe

    return load_recipe(_write(tmp_path, recipe), overrides)


def test_valid_recipe_resolves_defaults(tmp_path):
    recipe = _load(tmp_path, _synthetic_train(tmp_path))
    assert recipe.kind == "train" and recipe.name == "recipe"
    assert recipe.training.epochs == 10 and recipe.training.batch_size == 2  # TrainSettings defaults kept
    assert recipe.data.windows.input_steps == 3


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"data.colour": 1}, "data.colour", "unknown key"),
        ({"model.args": {**TINY_TAU, "hidden_channel": 8}}, "model.args.hidden_channel",
         "unknown argument; model 'tau' accepts"),
        ({"model.args": {**TINY_TAU, "spatial_blocks": "two"}}, "model.args.spatial_blocks", "expected int"),
        ({"model.args": {**TINY_TAU, "spatial_hidden_channels": 5}}, "model.args.spatial_hidden_channels",
         "even"),
        ({"model.args": {**TINY_TAU, "input_steps": 4}}, "data.windows.input_steps",
         "differs from model.args.input_steps"),
        ({"model.name": "taux"}, "model.name", "unknown model 'taux'"),
        ({"training.max_iterations": "many"}, "training.max_iterations", "integer"),
        ({"training.optimiser": "sgd"}, "training.optimiser", "unknown key"),
        ({"data.patches": {"size": 15}}, "data.patches.size", "multiple of 2"),
        ({"data.crop": {"size": 12}}, "data.patches.size", "larger than the grid (12 x 12 after data.crop)"),
        ({"evaluation.split": "validation"}, "evaluation.split", "not one of data.splits"),
        ({"evaluation.baselines": ["tau"]}, "evaluation.baselines[0].name", "learned model"),
        ({"nowcast": {"steps": 3}}, "nowcast", "not used by kind 'train'"),
        ({"data.adapter": "synthetic_radar"}, "data.adapter", "not both"),
        ({"model.args": {**TINY_TAU, "channels": 2}}, "model.args.channels", "differs from the 1 data.variables"),
        ({"model.transform": "db"}, "model.transform", "only for baselines"),
        ({"evaluation.baselines": [{"name": "optical_flow", "args": {"input_steps": 1}}]},
         "evaluation.baselines[0].args.input_steps", "input_steps >= 2"),
        # YAML's true/false where a number is expected is a mistake, not 1 or 0 (pydantic's lax mode took them)
        ({"training.batch_size": True}, "training.batch_size", "true is a bool; expected an integer >= 1"),
        ({"training.lr": False}, "training.lr", "false is a bool; expected a finite number > 0"),
        ({"data.windows.input_steps": True}, "data.windows.input_steps", "is a bool; expected an integer"),
        ({"evaluation.max_cases": True}, "evaluation.max_cases", "is a bool; expected an integer"),
    ],
)
def test_errors_name_the_key_path(tmp_path, change, path, words):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _synthetic_train(tmp_path, **change))
    msg = str(err.value)
    assert msg.startswith(f"recipe.yaml: {path}:"), msg
    assert words in msg, msg


def test_kind_nowcast_needs_a_checkpoint_for_a_learned_model(tmp_path):
    r = {"kind": "nowcast", "data": {"adapter": "netcdf", "args": {"path": "x/*.nc"}, "variables": ["p"]},
         "model": {"name": "tau", "args": TINY_TAU}}
    with pytest.raises(ConfigError, match=r"recipe.yaml: model.checkpoint: kind 'nowcast' .* needs a trained"):
        _load(tmp_path, r)
    r["model"] = {"checkpoint": str(tmp_path / "none.pt")}
    with pytest.raises(ConfigError, match=r"recipe.yaml: model.checkpoint: file .* does not exist"):
        _load(tmp_path, r)
    r["model"] = {}
    with pytest.raises(ConfigError, match=r"recipe.yaml: model.checkpoint: required"):
        _load(tmp_path, r)


def test_overrides_are_yaml_and_checked(tmp_path):
    from geostp.recipes import load_recipe

    p = _write(tmp_path, _synthetic_train(tmp_path))
    recipe = load_recipe(p, ["training.max_iterations=7", "model.args.temporal_blocks=3",
                             "evaluation.thresholds=[1, 2]", "data.patches=null"])
    assert recipe.training.max_iterations == 7 and recipe.model.args["temporal_blocks"] == 3
    assert recipe.evaluation.thresholds == [1.0, 2.0] and recipe.data.patches is None
    with pytest.raises(ConfigError, match=r"recipe.yaml: training.max_step: unknown key"):
        load_recipe(p, ["training.max_step=7"])
    with pytest.raises(ConfigError, match="not KEY.PATH=VALUE"):
        load_recipe(p, ["training.max_iterations"])


def test_the_deprecated_max_steps_key_is_read_and_stored_as_max_iterations(tmp_path):
    """``training.max_steps`` (before ``steps`` meant lead times only) still works for a release, with a warning."""
    from geostp.recipes import load_recipe, recipe_to_yaml

    old = _synthetic_train(tmp_path)
    old["training"] = {"max_steps": 2, "batch_size": 2, "progress": False}
    p = _write(tmp_path, old)
    with pytest.warns(DeprecationWarning, match=r"recipe.yaml: training.max_steps is deprecated.*"
                                                r"training.max_iterations"):
        recipe = load_recipe(p)
    assert recipe.training.max_iterations == 2
    # what a run writes (recipe.yaml, the checkpoint's metadata) names the new key only
    saved = yaml.safe_load(recipe_to_yaml(recipe))["training"]
    assert saved["max_iterations"] == 2 and "max_steps" not in saved
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # read back without a warning
        assert load_recipe(_write(tmp_path, {**old, "training": saved}, "again.yaml")).training.max_iterations == 2
    # an override under either name replaces the value under the other; the old one still warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert load_recipe(p, ["training.max_iterations=5"]).training.max_iterations == 5
    with pytest.warns(DeprecationWarning, match="training.max_steps"):
        assert load_recipe(_write(tmp_path, _synthetic_train(tmp_path), "new.yaml"),
                           ["training.max_steps=6"]).training.max_iterations == 6
    # errors name the key as written; both names in one section is an error
    with pytest.raises(ConfigError, match=r"recipe.yaml: training.max_steps: .*integer"), \
            pytest.warns(DeprecationWarning):
        load_recipe(p, {"training.max_steps": "many"})
    both = _synthetic_train(tmp_path)
    both["training"]["max_steps"] = 3
    with pytest.raises(ConfigError, match="max_steps is the deprecated name of max_iterations"):
        load_recipe(_write(tmp_path, both, "both.yaml"))


def test_cli_check_prints_resolved_recipe(tmp_path, capsys):
    from geostp.cli import main

    p = _write(tmp_path, _synthetic_train(tmp_path))
    assert main(["run", str(p), "--check", "--set", "training.lr=0.01"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["training"]["lr"] == 0.01 and printed["training"]["schedule"] == "onecycle"
    assert main(["run", str(p), "--set", "model.args.colour=1"]) == 2
    assert "recipe.yaml: model.args.colour: unknown argument" in capsys.readouterr().err


# ----------------------------------------------------------------------------- runs


def test_train_saves_recipe_beside_outputs_and_in_checkpoints(tmp_path):
    from geostp.recipes import load_recipe, run_recipe
    from geostp.train.checkpoint import load_checkpoint

    recipe = load_recipe(_write(tmp_path, _synthetic_train(tmp_path)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_recipe(recipe, progress=False)
    out = tmp_path / "run"
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved == recipe.model_dump(mode="json")
    for ck in (out / "model.pt", out / "checkpoints" / "last.pt"):
        assert load_checkpoint(ck)["metadata"]["recipe"] == saved
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["scores"]) == {"tau", "persistence"} and scores["lead_times"] == ["5min", "10min"]
    assert result.scores["mse"].sizes == {"model": 2, "lead_time": 2}

    # evaluate the checkpoint just written, in a recipe of its own
    ev = _synthetic_train(tmp_path)
    ev["kind"] = "evaluate"
    del ev["training"]
    ev["model"] = {"checkpoint": str(out / "model.pt")}
    ev["output"] = {"dir": str(tmp_path / "eval")}
    again = run_recipe(load_recipe(_write(tmp_path, ev, "ev.yaml")), progress=False)
    assert float(again.scores["mse"].sel(model="tau")[0]) == pytest.approx(float(result.scores["mse"].sel(
        model="tau")[0]), rel=1e-5)


def test_a_recipe_places_predrnn_sampling_marks_for_its_own_run(tmp_path):
    from geostp.models.schedules import schedule_marks_for
    from geostp.recipes import load_recipe, run_recipe
    from geostp.train.checkpoint import load_checkpoint

    small = {"hidden_channels": 4, "num_layers": 1, "patch_size": 4}
    recipe = _synthetic_train(tmp_path, **{"model.args": small, "model.name": "predrnn_v2",
                                           "training.max_iterations": 10, "evaluation.baselines": []})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_recipe(load_recipe(_write(tmp_path, recipe)), progress=False)
    config = load_checkpoint(tmp_path / "run" / "model.pt")["model_config"]
    assert {k: config[k] for k in schedule_marks_for(10)} == schedule_marks_for(10)
    # marks written in the recipe stay as written
    mine = _synthetic_train(tmp_path, **{"model.args": {**small, "sampling_start_iteration": 4,
                                                         "sampling_end_iteration": 9},
                                         "model.name": "predrnn_v2", "training.max_iterations": 1,
                                         "evaluation.baselines": [], "output.dir": str(tmp_path / "mine")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_recipe(load_recipe(_write(tmp_path, mine, "mine.yaml")), progress=False)
    config = load_checkpoint(tmp_path / "mine" / "model.pt")["model_config"]
    assert config["sampling_end_iteration"] == 9 and config["sampling_start_iteration"] == 4


#: Per-source --set values: a short stretch of time (splits to match) so a run reads a few dozen frames.
SPLITS_20 = "data.splits={train: 0.5, validation: 0.2, test: 0.3}"  # of 20 frames: 10, 4, 6
SMALL_DATA = {
    "mch": ["data.time={start: '2016-07-11T20:45', end: '2016-07-11T21:55'}",
            "data.splits={train: [['2016-07-11T20:45', '2016-07-11T21:20']], "
            "test: [['2016-07-11T21:20', '2016-07-11T22:00']]}"],
    "knmi": ["data.time={start: '2010-08-26T00:00', end: '2010-08-26T01:35'}", SPLITS_20],
    "bom": ["data.time={start: '2020-10-31T00:00', end: '2020-10-31T03:10'}", SPLITS_20],
    "rmi": ["data.time={start: '2021-07-04T15:50', end: '2021-07-04T17:25'}", SPLITS_20],
    "taxinyc": ["data.time={start: '2012-10-31T12:00', end: '2012-12-01T06:00'}"],
    "moving_mnist_train": ["data.args={n_sequences: 40}"],
}


def _tiny_overrides(recipe: dict) -> list[str]:
    """--set values that shrink an example recipe to a few seconds while keeping its wiring."""
    sets = ["training.max_iterations=1", "training.batch_size=2", "training.progress=false", "training.workers=0",
            f"model.args={json.dumps(TINY_TAU)}", "data.windows={input_steps: 2, output_steps: 2}",
            "evaluation.max_cases=1", "evaluation.steps=2"]
    if recipe["data"].get("patches"):
        sets += ["data.patches={size: 32, random: 1}", "data.rain=null"]
    return sets + SMALL_DATA.get(recipe["data"]["source"], [])


def _is_corpus(path: Path) -> bool:
    return "sources" in yaml.safe_load(path.read_text())["data"]


@pytest.mark.realdata
@pytest.mark.parametrize("path", [p for p in RECIPES if yaml.safe_load(p.read_text())["kind"] != "nowcast"
                                  and not _is_corpus(p)], ids=lambda p: p.stem)
def test_example_recipe_runs(path, shared_data, tmp_path, monkeypatch):
    from geostp.cli import main
    from geostp.data.catalog import _load_builtin_adapters, adapters, open_catalog

    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    raw = yaml.safe_load(path.read_text())
    _load_builtin_adapters()
    adapter = open_catalog(raw["data"]["catalog"]).entry(raw["data"]["source"]).adapter
    assert adapter in adapters, f"adapter {adapter!r} that {path.name} needs is not registered"
    out = tmp_path / "out"
    args = ["run", str(path), "--quiet", "--set", f"output.dir={out}", *sum((["--set", s] for s in
                                                                         _tiny_overrides(raw)), [])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    assert (out / "model.pt").exists() and (out / "scores.json").exists()
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["training"]["max_iterations"] == 1 and saved["name"] == path.stem
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores["lead_times"]) == 2 and scores["cases"] >= 1
    for model, table in scores["scores"].items():
        for name, values in table.items():
            assert all(v is None or v == v for v in values), (model, name)


# ----------------------------------------------------------------------------- corpus (advection-aware)


def _corpus_recipe(tmp_path: Path, **changes) -> dict:
    small = {"n_times": 24, "ny": 32, "nx": 32}
    r = {
        "kind": "train",
        "data": {"catalog": "synthetic", "variables": ["precipitation"],
                 "sources": [{"source": "radar_small", "args": {**small, "seed": 1}},
                             {"source": "radar_small", "args": {**small, "seed": 2},
                              "time": {"start": "2021-01-01", "end": None}}],
                 "windows": {"input_steps": 4, "output_steps": 2}, "patches": {"size": 16}},
        "model": {"name": "tau", "args": dict(TINY_TAU), "advection": "sprog", "loss": "mse"},
        "training": {"max_iterations": 2, "batch_size": 2, "progress": False, "batches_per_epoch": 2},
        "evaluation": {"steps": 2, "metrics": ["mse"], "baselines": ["persistence"], "max_cases": 2,
                       "source": {"source": "radar_small", "args": {**small, "seed": 3}}},
        "output": {"dir": str(tmp_path / "corpus")},
    }
    return _with_changes(r, changes)


def test_a_corpus_recipe_trains_advection_aware_on_every_source_and_verifies_on_its_event(tmp_path):
    import geostp
    from geostp.recipes import run_recipe

    res = run_recipe(_load(tmp_path, _corpus_recipe(tmp_path)), progress=False)
    fitted = geostp.load_forecaster(res.checkpoint)
    assert fitted.model.name == "lagrangian" and fitted.model.base == "sprog"
    assert fitted.metadata["corpus"]["cubes"] == 2 and fitted.metadata["iterations"] == 2
    assert set(res.scores["model"].values) == {"tau", "persistence"}
    assert res.scores.attrs["cases"] == 2 and np.isfinite(res.scores["mse"].values).all()


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"model.advection": False}, "model.advection", "advection-aware"),
        ({"data.source": "radar_small"}, "data.sources", "not both"),
        ({"evaluation.source": None}, "evaluation.source", "required with data.sources"),
        ({"data.splits": {"train": 0.5}}, "data.splits", "only validation"),
        ({"data.crop": {"size": 16}}, "data.crop", "not used with data.sources"),
        ({"kind": "evaluate", "training": None}, "data.sources", "kind: train"),
    ],
)
def test_corpus_recipe_errors_name_the_key(tmp_path, change, path, words):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, _corpus_recipe(tmp_path, **change))
    assert f"recipe.yaml: {path}:" in str(err.value) and words in str(err.value)


def test_advection_on_a_baseline_is_refused(tmp_path):
    r = _synthetic_train(tmp_path, **{"kind": "evaluate", "training": None, "model": {"name": "optical_flow",
                                                                                       "advection": True}})
    with pytest.raises(ConfigError, match="model.advection: only for learned models"):
        _load(tmp_path, r)


def test_a_recipe_of_one_source_trains_advection_aware_on_its_training_split(tmp_path):
    import geostp
    from geostp.recipes import run_recipe

    r = _synthetic_train(tmp_path, **{"model.advection": True, "data.windows": {"input_steps": 4, "output_steps": 2},
                                      "data.patches": {"size": 16}, "training.batches_per_epoch": 2})
    res = run_recipe(_load(tmp_path, r), progress=False)
    fitted = geostp.load_forecaster(res.checkpoint)
    assert fitted.model.name == "lagrangian" and fitted.model.base == "extrapolation"
    # 70 % of 24 frames train: the windows of 6 frames start only there (stride 1, the last 15 % validate)
    assert 0 < fitted.metadata["corpus"]["train_windows"] <= 17 - 6 + 1
    assert set(res.scores["model"].values) == {"tau", "persistence"} and res.scores.attrs["split"] == "test"


@pytest.mark.realdata
@pytest.mark.parametrize("path", [p for p in RECIPES if _is_corpus(p)], ids=lambda p: p.stem)
def test_example_corpus_recipe_runs(path, shared_data, tmp_path, monkeypatch):
    """A corpus recipe's wiring on real radar: two of its sources cut to 8 frames, one evaluation case."""
    from geostp.cli import main

    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / "store"))  # the motion cache goes beside it
    raw = yaml.safe_load(path.read_text())
    short = json.dumps([{"source": "mch", "time": {"start": "2015-05-15T15:45", "end": "2015-05-15T16:20"}},
                        {"source": "knmi", "time": {"start": "2010-08-26T00:00", "end": "2010-08-26T00:35"}}])
    sets = ["training.max_iterations=1", "training.batch_size=2", "training.progress=false",
            "training.batches_per_epoch=1", f"model.args={json.dumps(TINY_TAU)}",
            "data.windows={input_steps: 4, output_steps: 2}", f"data.sources={short}",
            "evaluation.max_cases=1", "evaluation.steps=2"]
    out = tmp_path / "out"
    args = ["run", str(path), "--quiet", "--set", f"output.dir={out}", *sum((["--set", s] for s in sets), [])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["cases"] == 1 and len(scores["lead_times"]) == 2
    assert set(scores["scores"]) >= {"tau", "sprog", "optical_flow"}
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["model"]["advection"] == raw["model"]["advection"] and len(saved["data"]["sources"]) == 2
