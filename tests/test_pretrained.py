"""The pretrained radar TAU that ships with geostp: it loads safely, reproduces its recorded score, and
``geostp.forecast`` uses it where it suits the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import geostp
from geostp.pretrained import load_pretrained, pretrained_path, suits_pretrained
from geostp.testing import small_cube

pytest.importorskip("pysteps")


@pytest.fixture(scope="module")
def weights():
    path = pretrained_path("tau")
    assert path is not None, "geostp/weights/tau_radar.pt is part of the package (benchmarks/radar_skill.py)"
    return path


def test_the_shipped_weights_load_with_weights_only(weights):
    raw = torch.load(weights, weights_only=True, map_location="cpu")  # no pickled code can run
    assert isinstance(raw, dict)
    fitted = load_pretrained("tau", "rain")
    assert fitted.name == "lagrangian" and fitted.model.inner.name == "tau"
    assert fitted.variables == ["rain"] and fitted.normalizer.variables == ("rain",)
    assert weights.stat().st_size < 20e6  # a few MB


def test_the_shipped_weights_reproduce_their_recorded_score(weights):
    record = json.loads(weights.with_suffix(".json").read_text())["record"]
    cube = small_cube(record["n_times"], record["ny"], record["nx"], seed=record["seed"], backend="numpy")
    fitted = load_pretrained("tau")
    i, steps = record["reference_index"], record["steps"]
    fc = fitted.predict(cube, steps, reference_times=[cube["time"].values[i]])
    obs = cube["precipitation"].isel(time=slice(i + 1, i + 1 + steps)).values
    mse = [float(np.nanmean((f - o) ** 2)) for f, o in zip(fc.values[0], obs, strict=True)]
    np.testing.assert_allclose(mse, record["mse"], rtol=1e-3, atol=1e-5)


def test_forecast_uses_the_pretrained_model_where_it_suits(weights, monkeypatch, tmp_path):
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path))
    cube = small_cube(24, 40, 40, seed=2, backend="numpy")  # rain rate, 1 km, 5 min
    assert suits_pretrained(cube, "tau")
    assert not suits_pretrained(cube.isel(time=slice(None, None, 2)).assign_attrs(time_step="10min"), "tau")
    assert not suits_pretrained(cube, "predrnn_v2")
    fc = geostp.forecast(cube, model="tau", steps=3, progress=False)
    assert fc.attrs["model"] == "lagrangian" and "newest observation" in fc.attrs["advection"]
    assert not list(tmp_path.glob("*.pt"))  # nothing was trained or stored
    from geostp.api import resolve_forecaster

    assert resolve_forecaster(cube, "tau", calibrate=False, progress=False).metadata["pretrained"] == weights.name


def test_fine_tuning_starts_from_the_shipped_weights(weights, monkeypatch, tmp_path):
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path))
    cube = small_cube(30, 48, 48, seed=7, backend="numpy")
    shipped = load_pretrained("tau", "precipitation")
    tuned = geostp.fit(cube, "tau", init=shipped, max_iterations=2, max_minutes=None, batch_size=2, patch_size=32,
                       use_store=False, progress=False, device="cpu")
    assert tuned.model.config == shipped.model.config
    assert tuned.normalizer.to_dict() == shipped.normalizer.to_dict()
    # parameters only: BatchNorm's running statistics follow the new data at once
    moved = [float((a - b).detach().abs().max()) for a, b in zip(tuned.model.parameters(), shipped.model.parameters(),
                                                        strict=True)]
    assert max(moved) > 0  # it trained from there
    assert max(moved) < 0.05  # two small Adam steps, not a new model
