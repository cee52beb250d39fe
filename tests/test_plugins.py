"""Third-party models through the ``geostp.models`` entry-point group: a tiny plugin distribution is built and
installed (into a folder of its own, put on the path), then used by name from ``geostp.forecast``,
``geostp.fit``, a checkpoint, a recipe and the command line, without being imported first."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import geostp.models as models
from geostp.errors import ConfigError, UnknownNameError

PLUGIN_MODULE = '''
"""A tiny geostp model from another package: each lead time is a per-pixel mix of the input frames."""

import torch

from geostp.models import Forecaster
from geostp.models.base import autoregressive_rollout
from geostp.models.objectives import masked_mse


class FrameMix(Forecaster):  # registered by its entry point, not by the decorator
    trainable = True

    def __init__(self, *, input_steps: int = 3, output_steps: int = 3, channels: int = 1) -> None:
        super().__init__(input_steps=input_steps, output_steps=output_steps, channels=channels)
        self.mix = torch.nn.Conv2d(input_steps * channels, output_steps * channels, kernel_size=1)
        self._remember_config(input_steps=input_steps, output_steps=output_steps, channels=channels)

    def _block(self, x):
        b, t, c, h, w = x.shape
        return self.mix(x.reshape(b, t * c, h, w)).reshape(b, self.output_steps, c, h, w)

    def forward(self, x, steps=None):
        steps = self.check_input(x, steps)
        return autoregressive_rollout(self._block, x, steps)

    def training_loss(self, x, y, *, iteration=0, mask=None):
        self.check_target(x, y, mask)
        mse = masked_mse(self.forward(x, y.shape[1]), y, mask)
        return mse, {"mse": float(mse.detach())}
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "geostp-frame-mix"
version = "0.1"

[project.entry-points."geostp.models"]
frame_mix = "geostp_frame_mix:FrameMix"

[tool.setuptools]
py-modules = ["geostp_frame_mix"]
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin distribution built from its sources and installed with pip into a folder of its own."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "geostp_frame_mix.py").write_text(PLUGIN_MODULE)
    site = tmp / "site"
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *isolation, "-q", "--target",
                             str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "geostp_frame_mix-0.1.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture
def on_path(plugin_site, monkeypatch):
    """The plugin's folder on sys.path for one test; the registry and the module are put back after it."""
    before = dict(models.MODEL_REGISTRY._entries)
    monkeypatch.syspath_prepend(str(plugin_site))
    importlib.invalidate_caches()
    yield plugin_site
    models.MODEL_REGISTRY._entries.clear()
    models.MODEL_REGISTRY._entries.update(before)
    sys.modules.pop("geostp_frame_mix", None)


def _cube():
    """A small cube of a variable that is not rain (so that fitting stays Eulerian: no motion to estimate)."""
    from geostp.testing import small_cube

    cube = small_cube().load()
    return cube.rename({"precipitation": "intensity"}).assign(
        intensity=lambda d: d["intensity"].assign_attrs(standard_name="", long_name="intensity", units="1"))


def test_a_plugin_model_is_listed_then_loaded_by_name(on_path):
    assert "frame_mix" in models.names() and "frame_mix" in models.MODEL_REGISTRY
    assert "geostp_frame_mix" not in sys.modules  # listed from its entry point, not imported
    cls = models.model_class("frame_mix")
    assert cls.__name__ == "FrameMix" and cls.name == "frame_mix" and cls.__module__ == "geostp_frame_mix"
    net = models.get("frame_mix", input_steps=2, output_steps=2)
    assert net.config == {"input_steps": 2, "output_steps": 2, "channels": 1}
    with pytest.raises(ConfigError, match="unknown argument"):
        models.get("frame_mix", hidden=3)


def test_forecast_fit_and_a_checkpoint_take_the_plugin_by_name(on_path, tmp_path, monkeypatch):
    import geostp
    from geostp.forecast import load_forecaster

    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / "store"))
    cube = _cube()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = geostp.forecast(cube, "frame_mix", steps=4, model_args={"input_steps": 3, "output_steps": 2},
                             fit_minutes=0.05, progress=False)
        assert fc.attrs["model"] == "frame_mix"
        assert dict(fc.sizes) == {"lead_time": 4, "y": cube.sizes["y"], "x": cube.sizes["x"]}
        fitted = geostp.fit(cube, "frame_mix", model_args={"input_steps": 3, "output_steps": 2},
                            max_minutes=None, max_iterations=2, epochs=1, batch_size=2, patch_size=None,
                            use_store=False, progress=False)
    assert fitted.metadata["iterations"] >= 1 and fitted.model.name == "frame_mix"
    fitted.save(tmp_path / "frame_mix.pt")
    again = load_forecaster(tmp_path / "frame_mix.pt")
    assert type(again.model).__name__ == "FrameMix"


def test_a_recipe_names_the_plugin_on_the_command_line(plugin_site, tmp_path):
    """In a fresh process (the plugin found through PYTHONPATH only): geostp run trains it from a recipe."""
    out = tmp_path / "out"
    recipe = tmp_path / "frame_mix.yaml"
    recipe.write_text(textwrap.dedent(f"""
        kind: train
        data:
          catalog: synthetic
          source: radar_small
          args: {{n_times: 40, ny: 32, nx: 32}}
          windows: {{input_steps: 3, output_steps: 2}}
          splits: {{train: 0.6, validation: 0.2, test: 0.2}}
        model: {{name: frame_mix, advection: false}}
        training: {{max_iterations: 2, batch_size: 4, progress: false}}
        evaluation: {{metrics: [mse], max_cases: 1, baselines: [persistence]}}
        output: {{dir: {out}}}
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "geostp", "run", str(recipe), "--quiet"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "model.pt").is_file()
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["scores"]) >= {"frame_mix", "persistence"}
    result = subprocess.run([sys.executable, "-m", "geostp", "models"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "learned" in lines["frame_mix"] and "[geostp_frame_mix]" in lines["frame_mix"]
    assert "baseline" in lines["persistence"] and "learned" in lines["tau"]
    # without the plugin on the path the name is unknown, and the message lists the models there are
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-m", "geostp", "run", str(recipe), "--check"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "frame_mix" in result.stderr and "tau" in result.stderr, result.stderr


def _fake_distribution(folder: Path, name: str, entry: str) -> None:
    """A dist-info that declares ``bad = <entry>`` in geostp.models (what pip leaves, without the build)."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[geostp.models]\nbad = {entry}\n")


@pytest.mark.parametrize(("entry", "words"), [
    ("json:dumps", "expected a subclass of geostp.models.Forecaster"),
    ("geostp_no_such_module:Model", "could not be loaded: ModuleNotFoundError"),
])
def test_a_broken_plugin_is_named_in_the_error(entry, words, tmp_path, monkeypatch, capsys):
    before = dict(models.MODEL_REGISTRY._entries)
    _fake_distribution(tmp_path, "broken_plugin", entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        assert "bad" in models.names()
        with pytest.raises(ConfigError) as err:
            models.get("bad")
        message = str(err.value)
        assert words in message and "broken_plugin" in message and "'geostp.models'" in message
        assert "bad" not in models.MODEL_REGISTRY._entries
        from geostp.cli import main

        assert main(["models"]) == 1  # geostp models lists the others and says which one is not usable
        out = capsys.readouterr().out
        assert "bad              (not usable:" in out and words in out and "tau" in out
    finally:
        models.MODEL_REGISTRY._entries.clear()
        models.MODEL_REGISTRY._entries.update(before)
    with pytest.raises(UnknownNameError, match="registered models are: .*tau"):
        models.get("frame_mix_not_installed")


def test_a_built_in_name_wins_over_an_entry_point_of_the_same_name(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "shadowing_plugin", "json:dumps")
    (tmp_path / "shadowing_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[geostp.models]\ntau = json:dumps\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert models.model_class("tau").__module__ == "geostp.models.tau"
    assert models.names().count("tau") == 1
