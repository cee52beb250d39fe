"""Advection-aware nowcasting: motion, warps, the Lagrangian wrapper, the corpus and the baselines beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geostp
import geostp.models as models
from geostp.advection import (
    MotionCache,
    advect,
    displacements,
    estimate_motion,
    probability_match,
    to_dbr,
    to_lagrangian,
)
from geostp.errors import ConfigError
from geostp.testing import small_cube

pytest.importorskip("pysteps")


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return small_cube(30, 48, 48, seed=5, backend="numpy")


def _blob(ny: int = 64, nx: int = 64, cy: float = 30.0, cx: float = 28.0) -> np.ndarray:
    yy, xx = np.mgrid[0:ny, 0:nx]
    return (8.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))).astype(np.float32)


def test_motion_follows_a_moving_blob_in_pixels_per_step():
    frames = np.stack([_blob(cx=20.0 + 2.0 * k) for k in range(3)])  # 2 px/step towards +x
    v = estimate_motion(frames)
    core = _blob() > 2.0
    assert v.shape == (2, 64, 64)
    assert np.median(v[0][core]) == pytest.approx(2.0, abs=0.4)
    assert np.median(np.abs(v[1][core])) < 0.4


def test_warping_forward_then_back_restores_a_smooth_field():
    field = _blob()
    velocity = np.zeros((2, 64, 64), np.float32)
    velocity[0], velocity[1] = 1.3, -0.7  # a uniform flow, not a whole number of pixels
    n = 4
    fwd = advect(field, displacements(velocity, n))[-1]
    back = advect(fwd, displacements(-velocity, n))[-1]
    inner = np.s_[12:-12, 12:-12]  # away from what came in from outside the domain
    err = np.abs(back[inner] - field[inner])
    assert np.nanmax(err) < 0.05 * field.max()  # linear interpolation only, twice
    assert np.nanmax(np.abs(fwd[inner] - field[inner])) > 0.5  # it did move


def test_to_lagrangian_keeps_the_newest_frame_and_aligns_moving_rain():
    frames = np.stack([_blob(cx=18.0 + 2.0 * k) for k in range(7)])
    v = np.zeros((2, 64, 64), np.float32)
    v[0] = 2.0
    lag_in, lag_out = to_lagrangian(frames[:4], frames[4:], v)
    np.testing.assert_array_equal(lag_in[-1], frames[3])
    inner = np.s_[:, 10:-10, 10:-10]
    # in the moving frame nothing moves: every frame is (nearly) the newest one
    assert np.nanmax(np.abs(lag_in[inner] - frames[3][10:-10, 10:-10])) < 0.05
    assert np.nanmax(np.abs(lag_out[inner] - frames[3][10:-10, 10:-10])) < 0.05


def test_an_untrained_advection_aware_model_is_the_extrapolation_nowcast(cube):
    fitted = geostp.fit(cube, "tau", advection=True, max_iterations=1, max_minutes=None, batch_size=2, patch_size=32,
                        use_store=False, progress=False, device="cpu")
    assert fitted.model.name == "lagrangian"
    fresh = models.get("lagrangian", **fitted.model.config)  # untrained: its output layer is zero
    fitted.model = fresh.eval()
    rain = cube["precipitation"].fillna(0).sum(("y", "x")).values
    ref = cube["time"].values[4 + int(np.argmax(rain[4:-1]))]  # the rainiest reference time
    learned = fitted.predict(cube, 8, reference_times=[ref])
    extrapolation = geostp.fit(cube, "optical_flow", model_args={"input_steps": 3}).predict(
        cube, 8, reference_times=[ref])
    ok = np.isfinite(extrapolation.values)
    assert ok.mean() > 0.5 and float(np.nanmax(extrapolation.values)) > 1.0
    np.testing.assert_allclose(learned.values[ok], extrapolation.values[ok], atol=1e-4, rtol=1e-4)
    assert "newest observation" in learned.attrs["advection"]
    # a trained one is not: training moved it
    trained = geostp.fit(cube, "tau", advection=True, max_iterations=3, max_minutes=None, batch_size=2, patch_size=32,
                         lr=1e-2, use_store=False, progress=False, device="cpu")
    moved = trained.predict(cube, 8, reference_times=[ref])
    assert float(np.nanmax(np.abs(moved.values - extrapolation.values))) > 1e-3


def test_an_untrained_sprog_based_model_is_the_sprog_nowcast(cube):
    fitted = geostp.fit(cube, "tau", advection="sprog", max_iterations=1, max_minutes=None, batch_size=2, patch_size=32,
                        use_store=False, progress=False, device="cpu")
    assert fitted.model.base == "sprog"
    fitted.model = models.get("lagrangian", **fitted.model.config).eval()  # untrained: output layer zero
    rain = cube["precipitation"].fillna(0).sum(("y", "x")).values
    ref = cube["time"].values[4 + int(np.argmax(rain[4:-1]))]
    learned = fitted.predict(cube, 6, reference_times=[ref])
    sprog = geostp.fit(cube, "sprog", model_args={"input_steps": 3}).predict(cube, 6, reference_times=[ref])
    assert float(np.nanmax(sprog.values)) > 1.0
    err = np.abs(learned.values - sprog.values)
    # the same S-PROG; pysteps advects in dBR and the model in mm/h, so they differ by interpolation only
    assert float(np.nanmean(err)) < 0.01 * float(np.nanmean(sprog.values))
    assert float(np.nanpercentile(err, 99)) < 0.1 * float(np.nanmax(sprog.values))
    assert "S-PROG" in learned.attrs["advection"]
    # and it is not the extrapolation nowcast: the base matters
    flow = geostp.fit(cube, "optical_flow", model_args={"input_steps": 3}).predict(cube, 6, reference_times=[ref])
    assert float(np.nanmean(np.abs(learned.values - flow.values))) > 5 * float(np.nanmean(err))


def test_a_sprog_based_corpus_carries_the_base_after_the_inputs_computed_once(cube, tmp_path):
    from geostp.pipeline import pooled_statistics
    from geostp.stream.lagrangian import LagrangianCorpus

    norm = pooled_statistics([cube], "precipitation")

    def corpus(cache):
        return LagrangianCorpus([cube], "precipitation", input_steps=4, output_steps=3, normalizer=norm,
                                identities=["cube-b"], motion_cache=cache, patch_size=32, batch_size=2,
                                batches_per_epoch=2, base="sprog", augment=False, progress=False)

    first = MotionCache(tmp_path)
    a = corpus(first)
    assert first.computed_bases == a.n_windows > 0
    again = MotionCache(tmp_path)
    corpus(again)
    assert again.computed_bases == 0 and again.computed == 0  # read back from disk
    batch = next(iter(a))
    assert batch["x"].shape == (2, 4 + 3, 1, 32, 32) and batch["y"].shape == (2, 3, 1, 32, 32)
    net = models.get("lagrangian", model="tau", model_config=models.model_class("lagrangian").quick_settings[
        "model_config"], input_steps=4, output_steps=3, loss="mse", base="sprog")
    loss, _ = net.training_loss(batch["x"], batch["y"], mask=batch["mask_y"])
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="S-PROG base frames"):
        net(batch["x"][:, :4], 3)  # the base is missing


def test_the_motion_is_computed_once_per_window_and_cached_on_disk(cube, tmp_path):
    from geostp.pipeline import pooled_statistics
    from geostp.stream.lagrangian import LagrangianCorpus

    norm = pooled_statistics([cube], "precipitation")

    def corpus(cache):
        return LagrangianCorpus([cube], "precipitation", input_steps=4, output_steps=3, normalizer=norm,
                                identities=["cube-a"], motion_cache=cache, patch_size=32, batch_size=2,
                                batches_per_epoch=2, progress=False)

    first = MotionCache(tmp_path)
    a = corpus(first)
    assert first.computed == a.n_windows > 0
    assert len(list(tmp_path.glob("*.npy"))) == a.n_windows
    corpus(first)  # a second epoch / run in the same process: nothing recomputed
    assert first.computed == a.n_windows
    again = MotionCache(tmp_path)  # a later process: read from disk
    corpus(again)
    assert again.computed == 0
    batch = next(iter(a))
    assert batch["x"].shape == (2, 4, 1, 32, 32) and batch["y"].shape == (2, 3, 1, 32, 32)
    assert torch.isfinite(batch["x"]).all() and batch["mask_y"].dtype == torch.bool


def test_mixing_cubes_of_other_units_or_steps_needs_resampling(cube):
    from geostp.stream.lagrangian import harmonise

    other_units = cube.copy()
    other_units["precipitation"] = cube["precipitation"].assign_attrs(units="mm")
    with pytest.raises(ConfigError, match="units|is in 'mm'"):
        harmonise([cube, other_units], "precipitation")
    ten_min = cube.isel(time=slice(None, None, 2)).assign_attrs(time_step="10min")
    with pytest.raises(ConfigError, match="time step"):
        harmonise([cube, ten_min], "precipitation")
    with pytest.raises(ConfigError, match="time step"):  # the one training pipeline checks it too
        geostp.fit([cube, ten_min], "tau", advection=True, max_iterations=1, max_minutes=None, use_store=False,
                   progress=False)
    same = harmonise([cube, ten_min], "precipitation", step="10min")
    assert all(int(c["time"].diff("time").values[0] / np.timedelta64(1, "m")) == 10 for c in same)
    coarse = harmonise([cube], "precipitation", pixel=2000.0)[0]
    assert coarse.sizes["y"] == cube.sizes["y"] // 2
    with pytest.raises(ConfigError, match="pixel size"):
        harmonise([cube], "precipitation", pixel=1500.0)


def test_standard_extrapolation_is_pysteps_lucas_kanade_on_dbr(cube):
    from pysteps import extrapolation, motion

    frames = cube["precipitation"].values[10:13].astype(np.float64)
    x = torch.from_numpy(np.nan_to_num(frames, nan=0.0)[None, :, None].astype(np.float32))
    out = models.get("optical_flow", input_steps=3, output_steps=4)(x)[0, :, 0].numpy()
    dbr = to_dbr(np.nan_to_num(frames, nan=0.0))
    v = motion.get_method("LK")(np.where(np.isfinite(dbr), dbr, -15.0), verbose=False)
    ref = extrapolation.get_method("semilagrangian")(np.nan_to_num(frames[-1], nan=0.0), v, 4, outval=0.0)
    np.testing.assert_allclose(out, np.nan_to_num(ref, nan=0.0), atol=1e-3)


def test_sprog_forecasts_rain_and_keeps_the_observed_distribution(cube):
    x = torch.from_numpy(np.nan_to_num(cube["precipitation"].values[10:13], nan=0.0)[None, :, None])
    out = models.get("sprog", input_steps=3, output_steps=3, cascade_levels=4)(x)[0, :, 0].numpy()
    assert out.shape == (3, 48, 48) and np.isfinite(out).all() and out.min() >= 0.0
    assert out.max() > 0.5
    with pytest.raises(ConfigError, match="input_steps >= 3"):
        models.get("sprog", input_steps=2)


def test_probability_matching_gives_the_observed_values():
    rng = np.random.default_rng(0)
    obs = rng.gamma(0.5, 2.0, (32, 32)).astype(np.float32)
    fc = (obs * 0.3 + 0.1).astype(np.float32)[:, ::-1]
    out = probability_match(fc, obs)
    np.testing.assert_allclose(np.sort(out.ravel()), np.sort(obs.ravel()), rtol=1e-5)
    assert np.argmax(out) == np.argmax(fc)  # the ranks are the forecast's


def test_the_rain_weight_is_capped():
    net = models.get("lagrangian", model="tau", model_config=models.model_class("tau").quick_config(),
                     input_steps=3, output_steps=2, decoder={"kind": "log10", "offset": 0.01, "mean": 0.0, "std": 1.0})
    rain = torch.tensor([0.0, 1.0, 50.0, 500.0])
    y = torch.log10(rain + 0.01)
    w = net.rain_weight(y)
    np.testing.assert_allclose(w.numpy(), [1.0, 2.0, 24.0, 24.0], rtol=1e-4)
    with pytest.raises(ConfigError, match="decoder"):
        models.get("lagrangian", model="tau", loss="weighted")
    with pytest.raises(ConfigError, match="learned model"):
        models.get("lagrangian", model="persistence", loss="mse")


def _gate_net(steps: int = 3):
    net = models.get("lagrangian", model="tau", model_config=models.model_class("tau").quick_config(),
                     input_steps=3, output_steps=steps, loss="mse")
    torch.manual_seed(0)
    with torch.no_grad():  # a "trained" change: the output layer is no longer zero
        net.output_layer().weight.normal_(0, 0.5)
    return net.eval()


def test_the_lead_gate_keeps_of_the_change_what_held_out_windows_support():
    net = _gate_net()
    x = torch.randn(4, 3, 1, 16, 16)
    with torch.no_grad():
        change = net.inner(x - x[:, -1:], 3)
    assert float(change.abs().mean()) > 1e-3
    # the truth holds half of lead 1's change, none of lead 2's (pure noise), and more than all of lead 3's
    noise = torch.randn_like(change[:, 1])
    truth = x[:, -1:] + change * torch.tensor([0.5, 0.0, 2.0]).view(1, 3, 1, 1, 1)
    truth[:, 1] += noise * float(change[:, 1].std())
    report = net.calibrate_lead_gate([{"x": x, "y": truth}])
    gate = report["lead_gate"]
    assert gate[0] == pytest.approx(0.5, abs=1e-3)
    assert gate[1] < 0.2 and gate[2] == 1.0  # clipped to [0, 1]
    for k in range(3):
        assert report["gated_error"][k] <= report["ungated_error"][k] + 1e-9
        assert report["gated_error"][k] <= report["base_error"][k] + 1e-9
    assert report["gated_error"][0] < report["ungated_error"][0] and report["gated_error"][0] < report["base_error"][0]
    with torch.no_grad():  # the forecast applies it, and the config (so every checkpoint) carries it
        out = net(x, 3)
    np.testing.assert_allclose(out.numpy(), (x[:, -1:] + change * torch.tensor(gate).view(1, 3, 1, 1, 1)).numpy(),
                               atol=1e-5)
    rebuilt = models.get("lagrangian", **net.config)
    assert rebuilt.lead_gate == gate
    with pytest.raises(ConfigError, match="lead_gate"):
        models.get("lagrangian", **{**net.config, "lead_gate": [0.5, 1.5]})
    with pytest.raises(ConfigError, match="no batch"):
        net.calibrate_lead_gate([])


def test_fit_calibrates_the_lead_gate_on_the_validation_windows_and_the_checkpoint_keeps_it(cube, tmp_path):
    fitted = geostp.fit(cube, "tau", advection=True, max_iterations=4, max_minutes=None, batch_size=2, patch_size=32,
                        output_steps=4, validation_fraction=0.4, lr=1e-2, use_store=False, progress=False,
                        device="cpu")
    meta = fitted.metadata["lead_gate"]
    assert meta["calibrated"] is True and meta["validation_windows"] > 0
    gate = fitted.model.lead_gate
    assert len(gate) == 4 and all(0.0 <= g <= 1.0 for g in gate)
    assert all(g <= u + 1e-9 for g, u in zip(meta["gated_error"], meta["ungated_error"]))
    fitted.save(tmp_path / "m.pt")
    assert geostp.load_forecaster(tmp_path / "m.pt").model.lead_gate == gate
    # without validation windows the change is kept whole, and the metadata says why
    whole = geostp.fit(cube, "tau", advection=True, max_iterations=1, max_minutes=None, batch_size=2, patch_size=32,
                       validation_fraction=0.0, use_store=False, progress=False, device="cpu")
    assert whole.model.lead_gate is None and "no validation" in whole.metadata["lead_gate"]["why"]
