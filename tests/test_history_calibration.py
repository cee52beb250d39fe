"""The lead gate set again on a cube's own history (geostp.pretrained.calibrate_to_history): it scores the
change in mm/h, uses only frames up to the reference time, and geostp.forecast does it for the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geostp
from geostp.errors import ConfigError
from geostp.models.lagrangian import Lagrangian
from geostp.pretrained import calibrate_to_history, load_pretrained, pretrained_path
from geostp.testing import assert_refused, small_cube

pytest.importorskip("pysteps")

DECODER = {"kind": "log10", "offset": 0.01, "mean": -1.0, "std": 0.8}


class _FixedChange(torch.nn.Module):
    """Stands in for the inner model: the same change whatever the inputs."""

    def __init__(self, change: torch.Tensor) -> None:
        super().__init__()
        self.change = change

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        return self.change


def _wrapped(change: torch.Tensor) -> Lagrangian:
    net = Lagrangian(model="tau", model_config={"spatial_hidden_channels": 8, "temporal_hidden_channels": 16,
                                                "spatial_blocks": 2, "temporal_blocks": 2},
                     input_steps=4, output_steps=3, base="sprog", decoder=DECODER)
    net.inner = _FixedChange(change)
    return net


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_rain_rate_objective_finds_the_share_of_the_change_that_the_targets_hold(share):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 3, 1, 16, 16, generator=g)
    change = 0.5 * torch.randn(4, 3, 1, 16, 16, generator=g)
    inputs = torch.randn(4, 4, 1, 16, 16, generator=g)
    net = _wrapped(change)
    y = base + share * change
    report = net.calibrate_lead_gate([{"x": torch.cat([inputs, base], 1), "y": y, "mask_y": torch.ones_like(y)}],
                                     objective="rain_mse")
    assert net.lead_gate == [share] * 3
    assert report["objective"] == "rain_mse"
    assert max(report["gated_error"]) < 1e-9  # the targets are exactly base + share * change
    worst = report["ungated_error"] if share < 1 else report["base_error"]
    assert min(worst) > 1e-3


def test_the_rain_rate_objective_refuses_a_model_without_decoder_and_an_unknown_objective():
    net = _wrapped(torch.zeros(1, 3, 1, 8, 8))
    batch = {"x": torch.zeros(1, 7, 1, 8, 8), "y": torch.zeros(1, 3, 1, 8, 8)}
    assert_refused(ConfigError,
                   lambda: net.calibrate_lead_gate([batch], objective="nonsense"),
                   "nonsense", expected="'model' or 'rain_mse'")
    net.decoder = None
    assert_refused(ConfigError,
                   lambda: net.calibrate_lead_gate([batch], objective="rain_mse"),
                   "decoder", expected="mm/h")


@pytest.fixture(scope="module")
def shipped():
    assert pretrained_path("tau") is not None
    return load_pretrained("tau")


@pytest.fixture()
def motion(tmp_path):
    return tmp_path / "motion"


def test_calibration_uses_only_the_history_up_to_the_reference_time(shipped, motion):
    cube = small_cube(26, 32, 32, seed=4, backend="numpy")
    before = cube["time"].values[17]
    out, report = calibrate_to_history(shipped, cube, before=before, windows=2, motion_dir=motion, progress=False)
    assert report["calibrated"] and report["windows"] == 2
    assert report["history_end"] == np.datetime_as_string(before, unit="m")
    assert out.model.lead_gate == report["lead_gate"] and len(report["lead_gate"]) == 12
    assert all(0.0 <= g <= 1.0 for g in out.model.lead_gate)
    assert shipped.model.lead_gate == report["lead_gate_before"]  # the given forecaster is left as it was
    assert out.metadata["history_calibration"] is report
    # what follows the reference time changes nothing (nothing after it was used)
    later = cube.copy(deep=True)
    later["precipitation"][18:] = later["precipitation"][18:] * 3.0 + 1.0
    _, again = calibrate_to_history(shipped, later, before=before, windows=2, motion_dir=motion, progress=False)
    assert again["lead_gate"] == report["lead_gate"] and again["gated_error"] == report["gated_error"]
    # while the history itself does
    earlier = cube.copy(deep=True)
    earlier["precipitation"][:18] = earlier["precipitation"][:18] * 3.0
    _, other = calibrate_to_history(shipped, earlier, before=before, windows=2, motion_dir=motion, progress=False)
    assert other["base_error"] != report["base_error"]


def test_a_history_shorter_than_a_window_keeps_the_trained_gate(shipped, motion):
    cube = small_cube(20, 40, 40, seed=4, backend="numpy")
    out, report = calibrate_to_history(shipped, cube, before=cube["time"].values[12], motion_dir=motion,
                                       progress=False)
    assert not report["calibrated"] and "16 consecutive frames" in report["why"]
    assert out.model is shipped.model and out.model.lead_gate == report["lead_gate"]


def test_calibration_refuses_what_it_cannot_use(shipped, motion):
    cube = small_cube(20, 40, 40, seed=4, backend="numpy")
    persistence = geostp.fit(cube, "persistence")
    assert_refused(ConfigError,
                   lambda: calibrate_to_history(persistence, cube, motion_dir=motion),
                   "persistence", expected="advection-aware")
    assert_refused(ConfigError,
                   lambda: calibrate_to_history(shipped, cube, before="2001-01-01", motion_dir=motion),
                   "before", expected="one of its times")
    assert_refused(ConfigError,
                   lambda: calibrate_to_history(shipped, cube, windows=0, motion_dir=motion),
                   "windows", expected=">= 1")
    assert_refused(ConfigError,
                   lambda: calibrate_to_history(shipped, cube.rename(precipitation="rain"), motion_dir=motion),
                   "precipitation", expected="rain")


def test_forecast_calibrates_the_shipped_weights_on_the_cube_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / "models"))
    cube = small_cube(24, 40, 40, seed=2, backend="numpy")
    fc = geostp.forecast(cube, model="tau", steps=3, progress=False)
    assert "newest 6 whole windows" in fc.attrs["history_calibration"]
    assert fc.attrs["lead_gate"].startswith("[")
    off = geostp.forecast(cube, model="tau", steps=3, calibrate=False, progress=False)
    assert "history_calibration" not in off.attrs
    assert off.attrs["lead_gate"] == str(load_pretrained("tau").model.lead_gate).replace("'", '"')
    # evaluate passes its first reference time: the history stops there
    from geostp.api import resolve_forecaster

    t = cube["time"].values[18]
    cal = resolve_forecaster(cube, "tau", history_end=t, progress=False).metadata["history_calibration"]
    assert cal["calibrated"] and cal["history_end"] == np.datetime_as_string(t, unit="m")
    # a reference time without a whole window of history before it: the trained gate, and the attrs say why
    early = geostp.forecast(cube, model="tau", steps=3, reference_times=[cube["time"].values[10]], progress=False)
    assert early.attrs["history_calibration"].startswith("not done")
    assert_refused(ConfigError,
                   lambda: geostp.forecast(cube, model="persistence", steps=3, calibrate=True, progress=False),
                   "calibrate", expected="'auto' or False")
    assert_refused(ConfigError,
                   lambda: geostp.forecast(cube, model="tau", steps=3, calibrate="sometimes", progress=False),
                   "calibrate", expected="auto")


def test_a_lead_the_windows_cannot_score_keeps_its_factor():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 3, 1, 8, 8, generator=g)
    change = 0.5 * torch.randn(2, 3, 1, 8, 8, generator=g)
    change[:, 1] = 0.0  # lead 2: every factor gives the same forecast
    net = _wrapped(change)
    net.set_lead_gate([0.3, 0.7, 0.9])
    y = base.clone()
    net.calibrate_lead_gate([{"x": torch.cat([torch.zeros(2, 4, 1, 8, 8), base], 1), "y": y,
                              "mask_y": torch.ones_like(y)}], objective="rain_mse")
    assert net.lead_gate == [0.0, 0.7, 0.0]
