"""geostp.forecast / fit / evaluate: labelled output, round trips, scores, the model store and clear errors."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import xarray as xr

import geostp
from geostp.data.synthetic import synthetic_radar
from geostp.errors import CheckpointError, ConfigError, CubeError, UnknownNameError
from geostp.evaluate import evaluate, format_table
from geostp.fit import fit
from geostp.forecast import FittedForecaster, load_forecaster
from geostp.metrics import align_observations, csi, fss

TINY_TAU = dict(spatial_hidden_channels=8, temporal_hidden_channels=16, spatial_blocks=2, temporal_blocks=2,
                input_steps=4, output_steps=4)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return synthetic_radar(n_times=48, ny=32, nx=48, seed=3).load()


@pytest.fixture(scope="module")
def fitted(cube, tmp_path_factory) -> FittedForecaster:
    store = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOSTP_MODEL_STORE", str(store))
    try:
        return fit(cube, "tau", model_args=TINY_TAU, patch_size=16, batch_size=4, max_iterations=3,
                   max_minutes=None, progress=False, device="cpu")
    finally:
        mp.undo()


def test_persistence_forecast_is_labelled_like_the_cube(cube):
    fc = geostp.forecast(cube, model="persistence", steps=5, progress=False)
    assert fc.dims == ("lead_time", "y", "x")
    assert fc.sizes["lead_time"] == 5
    np.testing.assert_array_equal(fc["x"].values, cube["x"].values)
    np.testing.assert_array_equal(fc["y"].values, cube["y"].values)
    step = cube["time"].values[1] - cube["time"].values[0]
    np.testing.assert_array_equal(fc["lead_time"].values, np.arange(1, 6) * step)
    assert fc["forecast_reference_time"].values == cube["time"].values[-1]
    np.testing.assert_array_equal(fc["valid_time"].values, cube["time"].values[-1] + np.arange(1, 6) * step)
    assert fc.attrs["units"] == cube["precipitation"].attrs["units"]
    assert fc.attrs["model"] == "persistence"
    last = cube["precipitation"].isel(time=-1).values
    for k in range(5):
        np.testing.assert_allclose(fc.isel(lead_time=k).values, last, equal_nan=True)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_forecast_round_trips_through_netcdf_and_zarr_with_its_cf_grid(cube, tmp_path, fmt):
    fc = geostp.forecast(cube, model="persistence", steps=3, progress=False)
    path = tmp_path / ("fc.nc" if fmt == "netcdf" else "fc.zarr")
    ds = fc.to_dataset(name="forecast")
    if fmt == "netcdf":
        ds.to_netcdf(path)
        back = xr.open_dataset(path)
    else:
        ds.to_zarr(path)
        back = xr.open_zarr(path)
    got = back["forecast"]
    np.testing.assert_allclose(got.values, fc.values, equal_nan=True)
    np.testing.assert_array_equal(got["valid_time"].values, fc["valid_time"].values)
    gm = got.attrs.get("grid_mapping") or got.encoding.get("grid_mapping")
    assert gm and gm in back.variables
    crs = pyproj.CRS.from_cf(back[gm].attrs)
    assert crs.equals(pyproj.CRS.from_cf(cube[cube["precipitation"].attrs["grid_mapping"]].attrs))
    assert got.attrs["units"] == "mm h-1" or got.attrs["units"] == cube["precipitation"].attrs["units"]


def test_scores_run_on_a_multi_reference_forecast(cube):
    refs = cube["time"].values[[10, 20, 30]]
    fc = geostp.forecast(cube, model="persistence", steps=4, reference_times=refs, progress=False)
    assert fc.dims == ("time", "lead_time", "y", "x")
    obs = align_observations(fc, cube["precipitation"])
    c = csi(fc, obs, 1.0)
    f = fss(fc, obs, 1.0, 4)
    assert c.dims == ("lead_time",) and f.dims == ("lead_time",)
    assert np.all((c.values >= 0) & (c.values <= 1))
    # persistence degrades with lead time on moving rain
    assert c.values[0] > c.values[-1]
    assert f.values[0] >= f.values[-1]


def test_the_scores_package_runs_on_forecast_output_without_renaming(cube):
    import scores.categorical
    import scores.spatial

    refs = cube["time"].values[[10, 20, 30]]
    fc = geostp.forecast(cube, model="persistence", steps=4, reference_times=refs, progress=False)
    obs = align_observations(fc, cube["precipitation"])
    box = dict(y=slice(8, 24), x=slice(12, 36))  # a rectangle inside radar range: scores' FSS takes no NaN
    f, o = fc.isel(box), obs.isel(box)
    assert np.isfinite(f).all() and np.isfinite(o).all() and float((o >= 1.0).mean()) > 0.02
    table = scores.categorical.BinaryContingencyManager(f >= 1.0, o >= 1.0).transform(preserve_dims=["lead_time"])
    np.testing.assert_allclose(table.critical_success_index().values, csi(f, o, 1.0).values, rtol=1e-10)
    theirs = scores.spatial.fss_2d(f, o, event_threshold=1.0, window_size=(4, 4), spatial_dims=("y", "x"),
                                   preserve_dims=["lead_time"], threshold_operator=np.greater_equal)
    np.testing.assert_allclose(theirs.values, fss(f, o, 1.0, 4).values, rtol=1e-8)


def test_evaluate_compares_models_on_the_same_times(cube, capsys):
    refs = cube["time"].values[[12, 24]]
    scores = evaluate(cube, ["persistence", "optical_flow"], steps=3, reference_times=refs,
                      metrics=["mse", "csi"], thresholds=[1.0], progress=False)
    assert list(scores["model"].values) == ["persistence", "optical_flow"]
    assert scores["mse"].dims == ("model", "lead_time")
    assert np.isfinite(scores["mse"].values).all()
    out = capsys.readouterr().out
    assert "persistence" in out and "csi_1" in out
    assert format_table(scores).count("\n") == 4  # header + 2 models x 2 scores


def test_fitted_model_forecasts_beyond_its_training_length_and_round_trips(cube, fitted, tmp_path):
    assert fitted.checkpoint is not None and fitted.checkpoint.exists()
    assert fitted.metadata["fitted"] is True and fitted.metadata["iterations"] == 3
    assert fitted.metadata["steps"] == 3  # deprecated (one release): the same count under its old name
    fc = geostp.forecast(cube, model=fitted, steps=10, progress=False)  # trained for 4
    assert fc.sizes["lead_time"] == 10
    assert np.isfinite(fc.values[np.isfinite(cube["precipitation"].isel(time=-1).values)[None].repeat(10, 0)]).all()
    assert float(fc.min()) >= 0.0  # rain is clipped at zero after decoding
    # the checkpoint holds weights, config, normalisation and schema: a reload forecasts the same
    again = load_forecaster(fitted.checkpoint)
    assert again.schema == fitted.schema and again.variables == ["precipitation"]
    fc2 = geostp.forecast(cube, model=str(fitted.checkpoint), steps=10, progress=False)
    np.testing.assert_allclose(fc2.values, fc.values, rtol=1e-5, atol=1e-6)
    assert fc2.attrs["checkpoint"] == str(fitted.checkpoint)


def test_the_model_store_returns_the_same_fit_without_training(cube, fitted, monkeypatch):
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(fitted.checkpoint.parent))
    import geostp.train.trainer as trainer

    def refuse(*a, **k):
        raise AssertionError("trained again instead of loading from the store")

    monkeypatch.setattr(trainer.Trainer, "fit", refuse)
    again = fit(cube, "tau", model_args=TINY_TAU, patch_size=16, batch_size=4, max_iterations=3,
                max_minutes=None, progress=False, device="cpu")
    assert again.checkpoint == fitted.checkpoint
    # other settings are another model: the store does not hand back the wrong one
    with pytest.raises(AssertionError, match="trained again"):
        fit(cube, "tau", model_args=TINY_TAU, patch_size=16, batch_size=4, max_iterations=4,
            max_minutes=None, progress=False, device="cpu")


def test_no_data_in_the_newest_frame_stays_no_data(cube, fitted):
    holed = cube.copy(deep=True)
    holed["precipitation"][-1, :5, :7] = np.nan
    fc = geostp.forecast(holed, model=fitted, steps=2, progress=False)
    assert np.isnan(fc.values[:, :5, :7]).all()
    # everywhere else no data is where the newest frame has none (outside radar range), and nowhere more
    expected = np.isfinite(holed["precipitation"].isel(time=-1).values)
    assert expected.sum() > 0.5 * expected.size
    for k in range(2):
        np.testing.assert_array_equal(np.isfinite(fc.values[k]), expected)


def test_bad_forecast_requests_get_clear_errors(cube, fitted):
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        geostp.forecast(cube, model="persistence", steps=0)
    with pytest.raises(UnknownNameError, match="persistence"):
        geostp.forecast(cube, model="persistance", steps=3)
    with pytest.raises(ConfigError, match="needs 4 input frames"):
        geostp.forecast(cube, model=fitted, steps=3, reference_times=cube["time"].values[[1]], progress=False)
    with pytest.raises(CheckpointError, match="grid"):
        geostp.forecast(cube.isel(x=slice(0, 40)), model=fitted, steps=2, progress=False)
    with pytest.raises(CheckpointError, match="lacks"):
        geostp.forecast(cube.rename(precipitation="rain"), model=fitted, steps=2, progress=False)
    coarse = cube.isel(time=slice(None, None, 2))
    coarse.attrs = {k: v for k, v in coarse.attrs.items() if k != "time_step"}  # a 10-min cube
    with pytest.raises(CheckpointError, match="time step"):
        geostp.forecast(coarse, model=fitted, steps=2, progress=False)
    other_units = cube.copy()
    other_units["precipitation"] = other_units["precipitation"].assign_attrs(units="mm/h")  # a spelling geostp knows, not the one trained on
    with pytest.raises(CheckpointError, match="units"):
        geostp.forecast(other_units, model=fitted, steps=2, progress=False)
    gappy = cube.drop_isel(time=[44])
    with pytest.raises(CubeError, match="gap"):
        geostp.forecast(gappy, model=fitted, steps=2, progress=False)
    with pytest.raises(ConfigError, match="registered name, a checkpoint path"):
        geostp.forecast(cube, model=3, steps=2)


def test_transfer_applies_a_model_to_another_grid_and_step_and_says_so(cube, fitted):
    coarse = cube.isel(time=slice(None, None, 2), x=slice(0, 40))
    coarse.attrs = {k: v for k, v in coarse.attrs.items() if k != "time_step"}  # 10-min steps, narrower grid
    with pytest.raises(CheckpointError, match="transfer=True"):
        geostp.forecast(coarse, model=fitted, steps=3, progress=False)
    fc = geostp.forecast(coarse, model=fitted, steps=3, transfer=True, progress=False)
    assert fc.sizes == {"lead_time": 3, "y": 32, "x": 40}
    # lead times follow the data's own step, not the training step
    np.testing.assert_array_equal(fc["lead_time"].values, np.arange(1, 4) * np.timedelta64(10, "m"))
    assert "trained on a 32 x 48 grid with a step of 300.0 s" in fc.attrs["transfer"]
    has_data = np.isfinite(coarse["precipitation"].values[-1])
    assert np.array_equal(np.isfinite(fc.values), np.broadcast_to(has_data, fc.shape))
    # variables are still checked under transfer
    with pytest.raises(CheckpointError, match="lacks"):
        geostp.forecast(coarse.rename(precipitation="rain"), model=fitted, steps=2, transfer=True, progress=False)


def test_forecasts_stay_in_the_training_range_however_wild_the_model(cube, fitted):
    """A model pushed far outside its data is clamped to the training range as it produces frames."""
    import copy

    import torch

    wild = copy.deepcopy(fitted)
    with torch.no_grad():
        wild.model.output_layer().bias.fill_(50.0)  # 50 std above the mean in log space: ~1e20 mm/h once decoded
    low, high = wild.output_bounds()
    stats = wild.normalizer.extra["precipitation"]
    rmax = 10 ** stats["max"] - 0.01  # the largest rain rate the model was trained on
    fc = geostp.forecast(cube, model=wild, steps=9, progress=False)  # 9 > output_steps: fed back twice
    assert float(fc.max()) == pytest.approx(rmax, rel=1e-3)
    assert float(cube["precipitation"].max()) == pytest.approx(rmax, rel=1e-3)
    # without the bounds the same model is absurd: the clamp is what keeps it sane
    x = torch.from_numpy(wild.normalizer.encode(cube["precipitation"].values[-4:, None]).astype("float32"))[None]
    raw = wild.model.predict(torch.nan_to_num(x), 9)
    assert float(raw.max()) > high[0] + 10
    clamped = wild.model.predict(torch.nan_to_num(x), 9, bounds=(low, high))
    assert float(clamped.max()) <= high[0] + 1e-5 and float(clamped.min()) >= low[0] - 1e-5


@pytest.mark.parametrize("name", ["predrnn_v2", "tau"])
def test_bounds_clamp_the_frames_that_are_fed_back(name):
    """Clamping happens inside the rollout: a step fed a clamped frame differs from one fed a wild frame."""
    import torch

    from geostp import models

    torch.manual_seed(0)
    args = dict(input_steps=2, output_steps=2, channels=1)
    args.update(dict(hidden_channels=8, num_layers=2, patch_size=2) if name.startswith("predrnn") else
                dict(spatial_hidden_channels=4, temporal_hidden_channels=8, spatial_blocks=2, temporal_blocks=2))
    net = models.get(name, **args)
    x = torch.randn(1, 2, 1, 16, 16) * 3
    free = net.predict(x, 6, bf16=False)
    low, high = float(free.min()) / 4, float(free.max()) / 4
    bounded = net.predict(x, 6, bf16=False, bounds=([low], [high]))
    assert float(bounded.max()) <= high + 1e-6 and float(bounded.min()) >= low - 1e-6
    # not a mere clip of the free run: later frames were computed from clamped feedback
    assert not torch.allclose(bounded[:, 3:], free[:, 3:].clamp(low, high), atol=1e-4)
    assert net._bounds is None  # bounds only hold during predict
    with pytest.raises(ConfigError, match="bounds must be"):
        net.predict(x, 2, bounds=([1.0], [0.0]))


def test_fit_scales_predrnn_sampling_schedule_to_its_own_budget(cube, monkeypatch):
    """The papers' marks (25k/50k iterations) would leave a short run's decoder teacher-forced throughout."""
    import importlib

    from geostp.models.schedules import schedule_marks_for

    fit_module = importlib.import_module("geostp.pipeline")  # where the timing lives
    small = dict(hidden_channels=4, num_layers=1, patch_size=4, input_steps=4, output_steps=4)
    by_iterations = fit(cube, "predrnn", model_args=small, advection=False, patch_size=16, batch_size=4,
                        max_iterations=40, max_minutes=None, use_store=False, progress=False, device="cpu")
    marks = schedule_marks_for(40)
    with pytest.raises(ConfigError, match="total_iterations must be a positive integer"):
        schedule_marks_for(0)
    assert by_iterations.metadata["sampling_schedule"] == {"planned_iterations": 40, **marks}
    assert by_iterations.model.config["sampling_end_iteration"] == marks["sampling_end_iteration"] == 16
    # by the end of the run the decoder reads its own predictions, as it will at inference
    assert by_iterations.model.teacher_forcing_probabilities(39)[1] == 0.0
    # under a time budget the iterations that fit are timed first (here: pretend 300 fit)
    monkeypatch.setattr(fit_module, "_iterations_in_minutes", lambda net, batch, minutes, device: 300)
    by_time = fit(cube, "predrnn_v2", model_args=small, advection=False, patch_size=16, batch_size=4, max_minutes=0.02,
                  use_store=False, progress=False, device="cpu")
    assert by_time.metadata["sampling_schedule"]["planned_iterations"] == 300
    assert by_time.model.config["sampling_start_iteration"] == schedule_marks_for(300)["sampling_start_iteration"]
    # marks the user chose are kept
    mine = fit(cube, "predrnn", model_args={**small, "sampling_start_iteration": 3, "sampling_end_iteration": 7},
               advection=False, patch_size=16, batch_size=4,
               max_iterations=2, max_minutes=None, use_store=False, progress=False, device="cpu")
    assert mine.model.config["sampling_end_iteration"] == 7 and mine.metadata["sampling_schedule"] is None


def test_the_pace_probe_trains_a_copy_and_counts_iterations(cube):
    import importlib

    import torch

    from geostp import models
    from geostp.stream import CubeDataset, WindowSpec

    fit_module = importlib.import_module("geostp.pipeline")
    net = models.get("predrnn", hidden_channels=4, num_layers=1, patch_size=4, input_steps=4, output_steps=4,
                     channels=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = cube.fillna(0)
    batch = next(iter(CubeDataset(data, ["precipitation"], WindowSpec(4, 4, patch_size=16), batch_size=2)))
    n = fit_module._iterations_in_minutes(net, batch, 0.5, "cpu")
    assert 1 <= n < 30 * 60 / 1e-4  # at least one iteration; not faster than 0.1 ms an iteration
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the probe changed the model"


def test_tiles_run_in_batches_with_the_same_result(cube, fitted, monkeypatch):
    import importlib

    fc = importlib.import_module("geostp.forecast")  # the module, not the function geostp.forecast

    batched = geostp.forecast(cube, model=fitted, steps=3, tile=16, overlap=4, progress=False)
    monkeypatch.setattr(fc, "TILE_BATCH", 1)
    single = geostp.forecast(cube, model=fitted, steps=3, tile=16, overlap=4, progress=False)
    np.testing.assert_allclose(np.nan_to_num(batched.values), np.nan_to_num(single.values), rtol=2e-2, atol=2e-2)
    assert np.isfinite(batched.values).any()


def test_tiles_apply_to_learned_models_and_baselines_run_whole(cube, fitted):
    whole = geostp.forecast(cube, model=fitted, steps=3, progress=False)
    tiled = geostp.forecast(cube, model=fitted, steps=3, tile=16, overlap=4, progress=False)
    assert tiled.shape == whole.shape
    assert not np.allclose(np.nan_to_num(tiled.values), np.nan_to_num(whole.values))  # tiles were used
    flow = geostp.fit(cube, "optical_flow", model_args={"input_steps": 3})
    a = geostp.forecast(cube, model=flow, steps=3, progress=False)
    b = geostp.forecast(cube, model=flow, steps=3, tile=16, overlap=4, progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    scores = evaluate(cube, {"tau": fitted, "persistence": "persistence"}, steps=2,
                      reference_times=cube["time"].values[[20, 30]], tile=16, overlap=4, progress=False,
                      print_table=False)
    assert np.isfinite(scores["mse"].values).all()
