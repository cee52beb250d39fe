"""TensorBoard logs of a training run: event files written by geostp.fit and by a recipe, read back with
TensorBoard's own EventAccumulator (losses per iteration, validation MSE per lead time, forecast maps)."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from geostp.errors import ConfigError  # noqa: E402

TINY_TAU = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2}


def _read(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _cube():
    from geostp.data.synthetic import synthetic_radar

    return synthetic_radar(n_times=36, ny=16, nx=16, seed=3).load()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: two spinning OpenMP threads make tiny fits many times slower on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted_with_logs(tmp_path_factory, one_thread):
    """A tiny Eulerian TAU fitted for two epochs with log_dir; the model store in a folder of its own."""
    import geostp

    tmp = tmp_path_factory.mktemp("tensorboard")
    store = tmp / "store"
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOSTP_MODEL_STORE", str(store))
    # 27 training frames: 20 windows of 4 + 4, 3 batches of 8 an epoch; 9 validation frames: one window
    args = dict(model_args=dict(TINY_TAU), input_steps=4, output_steps=4, patch_size=None, batch_size=8,
                max_minutes=None, max_iterations=6, epochs=2, validation_fraction=0.25, advection=False,
                progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = geostp.fit(_cube(), "tau", log_dir=tmp / "logs", **args)
    yield fitted, tmp / "logs", args, store
    mp.undo()


def test_fit_writes_losses_validation_per_lead_and_forecast_maps(fitted_with_logs):
    fitted, log_dir, _, _ = fitted_with_logs
    assert list(log_dir.glob("events.out.tfevents.*")), "no event file"
    events = _read(log_dir)
    tags = events.Tags()
    iterations = fitted.metadata["iterations"]
    epochs = fitted.metadata["epochs"]
    assert iterations == 6 and len(epochs) == 2
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, iterations + 1))
    assert all(math.isfinite(e.value) and e.value > 0 for e in losses)
    assert len(events.Scalars("train/lr")) == iterations
    # one value per epoch, at the iteration it ended on, equal to what the run recorded
    val = events.Scalars("epoch/val_mse")
    assert [e.value for e in val] == pytest.approx([e["val_mse"] for e in epochs], rel=1e-6)
    leads = sorted(t for t in tags["scalars"] if t.startswith("validation/mse_lead_"))
    assert leads == [f"validation/mse_lead_{k:02d}" for k in range(1, 5)]  # output_steps = 4
    per_lead = np.array([[e.value for e in events.Scalars(t)] for t in leads])  # [lead, epoch]
    assert per_lead.shape == (4, 2) and np.isfinite(per_lead).all()
    # the radar's range mask is the same at every lead: the mean over leads is the epoch's validation MSE
    assert per_lead.mean(axis=0) == pytest.approx([e["val_mse"] for e in epochs], rel=1e-4)
    images = sorted(t for t in tags["images"])
    assert images == ["forecast/lead_01", "forecast/lead_03", "forecast/lead_04"]  # first, middle, last
    first = events.Images("forecast/lead_01")
    assert len(first) == 2 and first[0].width > first[0].height == 16  # observed | forecast, side by side


def test_where_the_logs_go_is_not_part_of_the_model_store_key(fitted_with_logs, tmp_path, monkeypatch):
    import geostp

    fitted, _, args, store = fitted_with_logs
    assert fitted.metadata.get("cached") is True
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(store))
    again = geostp.fit(_cube(), "tau", log_dir=tmp_path / "elsewhere", **args)
    assert again.metadata.get("from_store") is True
    assert not (tmp_path / "elsewhere").exists()  # loaded, not trained: nothing to log


def test_a_recipe_takes_training_log_dir(tmp_path, one_thread):
    from geostp.recipes.run import run_recipe
    from geostp.recipes.schema import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
kind: train
data:
  catalog: synthetic
  source: radar_small
  args: {{n_times: 40, ny: 32, nx: 32}}
  windows: {{input_steps: 3, output_steps: 2}}
  splits: {{train: 0.6, validation: 0.2, test: 0.2}}
model: {{name: tau, args: {TINY_TAU}, advection: false}}
training: {{epochs: 1, batch_size: 8, progress: false, log_dir: {tmp_path / 'tb'}}}
evaluation: {{metrics: [mse], max_cases: 1}}
output: {{dir: {tmp_path / 'out'}}}
""")
    loaded = load_recipe(recipe)
    assert loaded.training.log_dir == str(tmp_path / "tb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_recipe(loaded, progress=False)
    events = _read(tmp_path / "tb")
    assert len(events.Scalars("train/loss")) == len(events.Scalars("train/lr")) >= 2  # one epoch of 24 frames
    assert len(events.Scalars("epoch/val_mse")) == 1
    assert {"validation/mse_lead_01", "validation/mse_lead_02", "epoch/val_mse"} <= set(events.Tags()["scalars"])


def test_log_dir_without_tensorboard_says_how_to_install_it(monkeypatch, tmp_path):
    from geostp.train.tensorboard import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install 'geostp\[tensorboard\]'"):
        TensorBoardLogger(tmp_path / "logs")
    assert not (tmp_path / "logs").exists()


def test_the_forecast_image_puts_observed_beside_forecast_on_one_scale():
    import torch

    from geostp.train.tensorboard import _side_by_side, forecast_leads_to_draw

    observed = torch.zeros(4, 6)
    forecast = torch.full((4, 6), 2.0)
    forecast[0, 0] = float("nan")
    image = _side_by_side(observed, forecast)
    assert image.shape == (4, 6 + 1 + 6)
    assert float(image[:, :6].max()) == 0.0 and float(image[1, -1]) == 1.0 and float(image[0, 7]) == 0.0
    assert forecast_leads_to_draw(12) == [0, 6, 11] and forecast_leads_to_draw(2) == [0, 1]
