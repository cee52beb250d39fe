"""Bad arguments to the public API (forecast, fit, evaluate, checkpoints, the CLI's --reference-time) are refused
with a GeostpError naming the argument and what was expected; valid but unusual ones simply work.

Every case is on a tiny cube (:func:`geostp.testing.small_cube`, 8 or 12 frames of 16 x 16 pixels) and is refused
before anything is fitted, so that the whole file runs in seconds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import geostp
import geostp.models as models
from geostp import metrics
from geostp.cube import LostGridMappingWarning
from geostp.errors import CheckpointError, ConfigError, CubeError, GeostpError
from geostp.forecast import FittedForecaster, load_forecaster
from geostp.testing import small_cube

VAR = "precipitation"
#: A TAU small enough to build and run in well under a second.
TINY_TAU = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 1,
            "temporal_blocks": 2, "input_steps": 3, "output_steps": 2}


def _cube(n: int = 8):
    return small_cube(n, 16, 16, backend="numpy")


def _refused(exc_type, call, *needles):
    """``call`` raises ``exc_type`` (a GeostpError) whose message holds every needle (case-insensitive)."""
    with pytest.raises(exc_type) as info:
        call()
    assert isinstance(info.value, GeostpError), f"{type(info.value).__name__} is not a GeostpError"
    text = str(info.value).lower()
    for needle in needles:
        assert str(needle).lower() in text, f"{needle!r} not in: {info.value}"
    return info.value


# ----------------------------------------------------------------------------- forecast


FORECAST_CASES = {
    "reference time not a time": (dict(reference_times=["yesterday-ish"]), ConfigError,
                                  ["reference_times[0]", "yesterday-ish", "ISO 8601", "within the cube"]),
    "no reference time": (dict(reference_times=[]), ConfigError, ["reference_times", "empty", "ISO 8601"]),
    "reference time outside the cube": (dict(reference_times="2099-01-01T00:00"), ConfigError,
                                        ["reference_times", "2099-01-01", "within the cube"]),
    "reference time a number": (dict(reference_times=[3.5]), ConfigError, ["reference_times[0]", "3.5", "ISO 8601"]),
    "reference time None": (dict(reference_times=[None]), ConfigError, ["reference_times[0]", "None", "ISO 8601"]),
    "reference time NaT": (dict(reference_times=[np.datetime64("NaT")]), ConfigError,
                           ["reference_times[0]", "NaT", "ISO 8601"]),
    "reference times a set": (dict(reference_times={"2024-07-01T12:30"}), ConfigError,
                              ["reference_times", "list of times"]),
    "variables a number": (dict(variables=5), ConfigError, ["variables=5", "variable name"]),
    "variables not names": (dict(variables=[VAR, 3]), ConfigError, ["variables", "3", "variable name"]),
    "variables empty": (dict(variables=[]), ConfigError, ["variables=[]", "at least one"]),
    "variable twice": (dict(variables=[VAR, VAR]), ConfigError, ["variables", "twice", "expected each"]),
    "variables a set": (dict(variables={VAR}), ConfigError, ["variables", "list of variable names"]),
    "variable not in the cube": (dict(model="tau", variables=["rain"]), ConfigError,
                                 ["variables=['rain']", "not in the cube", "expected names", VAR]),
    "fit_minutes negative": (dict(model="predrnn_v2", fit_minutes=-1), ConfigError,
                             ["forecast", "fit_minutes=-1", "expected a number > 0"]),
    "fit_minutes not a number": (dict(model="predrnn_v2", fit_minutes="long"), ConfigError,
                                 ["fit_minutes='long'", "expected a number"]),
    "fine_tune_minutes nan": (dict(fine_tune_minutes=math.nan), ConfigError,
                              ["fine_tune_minutes=nan", "expected a finite number >= 0"]),
    "fine_tune_minutes negative": (dict(fine_tune_minutes=-2), ConfigError, ["fine_tune_minutes=-2", ">= 0"]),
}


@pytest.mark.parametrize("case", list(FORECAST_CASES))
def test_forecast_refuses_a_bad_argument(case):
    kwargs, exc_type, needles = FORECAST_CASES[case]
    kwargs = {"model": "persistence", **kwargs}
    model = kwargs.pop("model")
    _refused(exc_type, lambda: geostp.forecast(_cube(), model, 2, progress=False, **kwargs), *needles)


@pytest.mark.parametrize("ds, needles", [
    ("radar.zarr", ["ds", "expected a cube", "str", "open_cube"]),
    (None, ["ds", "expected a cube", "NoneType"]),
    (np.zeros((8, 16, 16)), ["ds", "expected a cube", "ndarray"]),
])
def test_forecast_refuses_what_is_not_a_cube(ds, needles):
    _refused(CubeError, lambda: geostp.forecast(ds, "persistence", 2), *needles)


@pytest.mark.parametrize("step", ["5min", "PT5M", "-3", 2.5, 0])
def test_integer_times_with_a_step_that_is_not_a_frame_count_are_refused(step):
    cube = _cube().assign_coords(time=np.arange(8))
    cube.attrs["time_step"] = step
    _refused(CubeError, lambda: geostp.forecast(cube, "persistence", 2), "time coordinate 'time'", "integers",
             f"time_step={step!r}", "expected datetime64 times with a regular step")


# ----------------------------------------------------------------------------- fit


FIT_CASES = {
    "validation_fraction above 1": (dict(validation_fraction=1.5), ["validation_fraction=1.5", ">= 0 and < 1"]),
    "validation_fraction negative": (dict(validation_fraction=-0.5), ["validation_fraction=-0.5", ">= 0 and < 1"]),
    "validation_fraction 1": (dict(validation_fraction=1), ["validation_fraction=1", "< 1"]),
    "output_steps 0": (dict(output_steps=0), ["output_steps=0", "an integer >= 1"]),
    "input_steps negative": (dict(input_steps=-3), ["input_steps=-3", "an integer >= 1"]),
    "input_steps fractional": (dict(input_steps=2.5), ["input_steps=2.5", "an integer"]),
    "batch_size 0": (dict(batch_size=0), ["batch_size=0", "an integer >= 1"]),
    "patch_size 0": (dict(patch_size=0), ["patch_size=0", "an integer >= 1"]),
    "window_stride 0": (dict(window_stride=0), ["window_stride=0", "an integer >= 1"]),
    "max_iterations negative": (dict(max_iterations=-1), ["max_iterations=-1", "an integer >= 1"]),
    "max_minutes 0": (dict(max_minutes=0), ["max_minutes=0", "a number > 0"]),
    "lr nan": (dict(lr=math.nan), ["lr=nan", "a finite number > 0"]),
    "lr inf": (dict(lr=math.inf), ["lr=inf", "a finite number > 0"]),
    "lr negative": (dict(lr=-1e-3), ["lr=-0.001", "> 0"]),
    "epochs 0": (dict(epochs=0), ["epochs=0", "an integer >= 1"]),
    "seed not a number": (dict(seed="abc"), ["seed='abc'", "an integer >= 0"]),
    "seed negative": (dict(seed=-1), ["seed=-1", "an integer >= 0"]),
    "lead_gate not a bool": (dict(lead_gate="maybe"), ["lead_gate='maybe'", "True or False"]),
    "variables a number": (dict(variables=7), ["variables=7", "variable name"]),
    "variables not in the cube": (dict(variables=["rain"]), ["variables=['rain']", "not in the cube", VAR]),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_refuses_a_bad_argument_before_training(case):
    kwargs, needles = FIT_CASES[case]
    _refused(ConfigError, lambda: geostp.fit(_cube(), "tau", use_store=False, progress=False, **kwargs), "fit",
             *needles)


def test_fit_names_the_deprecated_argument_the_caller_used():
    with pytest.warns(DeprecationWarning):
        _refused(ConfigError, lambda: geostp.fit(_cube(), "tau", max_steps=-2, use_store=False), "max_steps=-2",
                 "an integer >= 1")


@pytest.mark.parametrize("ds, needles", [
    ("radar.zarr", ["ds", "expected a cube", "open_cube"]),
    ([], ["ds=[]", "at least one cube"]),
    ([small_cube(8, 16, 16, backend="numpy"), 3], ["ds[1]", "expected a cube", "int"]),
])
def test_fit_refuses_what_is_not_a_cube(ds, needles):
    _refused(GeostpError, lambda: geostp.fit(ds, "persistence"), *needles)


# ----------------------------------------------------------------------------- evaluate


EVALUATE_CASES = {
    "threshold a word": (dict(metrics=["csi"], thresholds=["heavy"]), ["thresholds", "'heavy'", "expected numbers"]),
    "threshold nan": (dict(metrics=["csi"], thresholds=[math.nan]), ["thresholds", "nan", "expected numbers"]),
    "threshold None": (dict(metrics=["pod"], thresholds=None), ["thresholds=None", "a number or a list"]),
    "no threshold": (dict(metrics=["csi"]), ["'csi'", "threshold", "expected thresholds"]),
    "scale 0": (dict(metrics=["fss"], thresholds=[1.0], scales=[0]), ["scales", "0", "integers >= 1"]),
    "scale fractional": (dict(metrics=["fss"], thresholds=[1.0], scales=[2.5]), ["scales", "2.5", "integers >= 1"]),
    "scale a word": (dict(metrics=["fss"], thresholds=[1.0], scales=["big"]), ["scales", "'big'", "integers >= 1"]),
    "no scale": (dict(metrics=["fss"], thresholds=[1.0]), ["'fss'", "scale", "expected scales"]),
    "data_range 0": (dict(metrics=["ssim"], data_range=0), ["data_range=0", "a finite number > 0"]),
    "data_range negative": (dict(metrics=["psnr"], data_range=-1), ["data_range=-1", "> 0"]),
    "data_range a word": (dict(metrics=["ssim"], data_range="1"), ["data_range='1'", "a finite number > 0"]),
    "data_range inf": (dict(metrics=["ssim"], data_range=math.inf), ["data_range=inf", "finite"]),
    "metric unknown": (dict(metrics=["nope"]), ["metrics", "'nope'", "known metrics"]),
    "metric not a name": (dict(metrics=[3]), ["metrics", "3", "metric name"]),
    "no metric": (dict(metrics=[]), ["metrics=[]", "at least one"]),
    "reference time not a time": (dict(reference_times=["garbage"]), ["reference_times[0]", "garbage", "ISO 8601"]),
    "no reference time": (dict(reference_times=[]), ["reference_times", "empty"]),
    "steps 0": (dict(steps=0), ["steps", "0", ">= 1"]),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_refuses_a_bad_argument(case):
    cube = _cube()
    kwargs = {"steps": 1, "reference_times": [cube.time.values[6]], "print_table": False, "progress": False,
              **EVALUATE_CASES[case][0]}
    _refused(ConfigError, lambda: geostp.evaluate(cube, ["persistence"], **kwargs), *EVALUATE_CASES[case][1])


def test_the_metrics_themselves_refuse_a_data_range_that_is_not_positive():
    fc = geostp.forecast(_cube(), "persistence", 2, progress=False)
    obs = fc.copy()
    for fn in (metrics.ssim, metrics.psnr):
        _refused(ConfigError, lambda fn=fn: fn(fc, obs, data_range=0), "data_range=0", "> 0")
    _refused(ConfigError, lambda: metrics.verify(fc, obs, metrics=["hss"], thresholds=["x"]), "thresholds")


# ----------------------------------------------------------------------------- checkpoints


def _tiny_tau() -> FittedForecaster:
    torch.manual_seed(0)
    model = models.get("tau", channels=1, **TINY_TAU)
    return FittedForecaster(model=model, variables=[VAR], normalizer=None, schema=None)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_checkpoint_with_non_finite_weights_is_refused_at_load(tmp_path, bad):
    fitted = _tiny_tau()
    name, tensor = next((k, v) for k, v in fitted.model.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        tensor.view(-1)[0] = bad
    path = fitted.save(tmp_path / "damaged.pt")
    _refused(CheckpointError, lambda: load_forecaster(path), str(path), name, "non-finite", "expected finite weights")
    _refused(CheckpointError, lambda: geostp.forecast(_cube(12), str(path), 2, transfer=True), str(path), name)


def test_absurd_weights_giving_a_non_finite_forecast_are_refused(tmp_path):
    fitted = _tiny_tau()
    with torch.no_grad():
        for p in fitted.model.parameters():
            p.mul_(1e30)
    path = fitted.save(tmp_path / "absurd.pt")  # finite weights: the load accepts them
    loaded = load_forecaster(path)
    _refused(CheckpointError, lambda: loaded.predict(_cube(12), 2), "'tau'", str(path), "non-finite",
             "finite inputs", "expected a finite forecast")


def test_a_model_fitted_on_a_cube_names_the_missing_crs_of_a_dataarray():
    cube = _cube()
    fitted = geostp.fit(cube, "persistence")  # its schema records the cube's CRS
    with pytest.warns(LostGridMappingWarning):
        _refused(CheckpointError, lambda: fitted.predict(cube[VAR], 2), "no CRS", "ds[['precipitation']]",
                 "transfer=True")
    with pytest.warns(LostGridMappingWarning):
        assert fitted.predict(cube[VAR], 2, transfer=True).shape == (2, 16, 16)


# ----------------------------------------------------------------------------- the CLI and recipes


@pytest.mark.parametrize("value", ["garbage", "2024-13-45T99:00", "NaT"])
def test_the_cli_refuses_a_reference_time_that_is_not_a_time(capsys, value):
    from geostp.cli import main

    assert main(["run", "mch_nowcast", "--reference-time", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: --reference-time="), err
    assert value in err and "ISO 8601" in err and "Traceback" not in err


def test_a_recipe_reference_time_that_is_not_a_time_is_refused_on_reading():
    from geostp.recipes.bundled import resolve_recipe
    from geostp.recipes.schema import load_recipe

    _refused(ConfigError, lambda: load_recipe(resolve_recipe("mch_nowcast"), ["nowcast.reference_time=soon"]),
             "nowcast.reference_time", "soon", "ISO 8601")


# ----------------------------------------------------------------------------- valid variants simply work


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values))


def test_a_dataarray_taken_from_a_cube_forecasts_without_its_crs():
    cube = _cube()
    with pytest.warns(LostGridMappingWarning, match=r"ds\[\['precipitation'\]\]"):
        fc = geostp.forecast(cube[VAR], "persistence", 2)
    _same(fc, geostp.forecast(cube, "persistence", 2))
    assert "grid_mapping" not in fc.attrs and "crs" not in fc.coords
    with pytest.warns(LostGridMappingWarning):  # fit and evaluate take it too
        assert geostp.fit(cube[VAR], "persistence").variables == [VAR]
        scores = geostp.evaluate(cube[VAR], "persistence", steps=1, reference_times=cube.time.values[6],
                                 print_table=False, progress=False)
    assert scores["mse"].shape == (1, 1)


def test_a_dataarray_carrying_its_grid_mapping_keeps_the_crs():
    cube = _cube()
    da = cube[VAR].assign_coords(crs=cube["crs"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", LostGridMappingWarning)
        fc = geostp.forecast(da, "persistence", 2)
    assert fc.attrs["grid_mapping"] == "crs" and "crs" in fc.coords
    _same(fc, geostp.forecast(cube, "persistence", 2))


def test_an_unnamed_dataarray_forecasts():
    cube = _cube()
    da = cube[VAR].assign_coords(crs=cube["crs"])
    da.name = None
    assert geostp.forecast(da, "persistence", 2).shape == (2, 16, 16)


def test_a_single_variable_name_is_one_variable_everywhere():
    cube = _cube()
    _same(geostp.forecast(cube, "persistence", 2, variables=VAR),
          geostp.forecast(cube, "persistence", 2, variables=[VAR]))
    assert geostp.fit(cube, "persistence", variables=VAR).variables == [VAR]
    assert geostp.fit(cube, "persistence", variables=(VAR,)).variables == [VAR]


@pytest.mark.parametrize("steps", [np.int64(2), np.int32(2), 2])
def test_numpy_integer_steps_work(steps):
    cube = _cube()
    fc = geostp.forecast(cube, "persistence", steps)
    assert fc.sizes["lead_time"] == 2
    scores = geostp.evaluate(cube, ["persistence"], steps=steps, reference_times=[cube.time.values[5]],
                             print_table=False, progress=False)
    assert scores.sizes["lead_time"] == 2


@pytest.mark.parametrize("given", [
    "2024-07-01T12:30",
    "2024-07-01 12:30:00",
    "2024-07-01T14:30+02:00",  # a zone: converted to UTC
    pd.Timestamp("2024-07-01T12:30"),
    np.datetime64("2024-07-01T12:30"),
    [np.datetime64("2024-07-01T12:30", "s")],
    pd.DatetimeIndex(["2024-07-01T12:30"]),
])
def test_reference_times_in_any_usual_form_work(given):
    fc = geostp.forecast(_cube(), "persistence", 2, reference_times=given)
    assert list(pd.to_datetime(fc["forecast_reference_time"].values)) == [pd.Timestamp("2024-07-01T12:30")]


def test_single_metric_threshold_and_scale_values_work():
    cube = _cube()
    one = geostp.evaluate(cube, "persistence", steps=1, reference_times=cube.time.values[6], metrics="fss",
                          thresholds=1.0, scales=np.int64(3), print_table=False, progress=False)
    many = geostp.evaluate(cube, ["persistence"], steps=1, reference_times=[cube.time.values[6]], metrics=["fss"],
                           thresholds=[1.0], scales=[3], print_table=False, progress=False)
    assert list(one.data_vars) == ["fss_1_3"]
    np.testing.assert_array_equal(one["fss_1_3"].values, many["fss_1_3"].values)


def test_integer_frame_indices_with_an_integer_step_work():
    cube = _cube().assign_coords(time=np.arange(0, 16, 2))
    cube.attrs["time_step"] = 2
    fc = geostp.forecast(cube, "persistence", 2, reference_times=[np.int64(10)])
    assert fc["forecast_reference_time"].values.tolist() == [10]
    _refused(ConfigError, lambda: geostp.forecast(cube, "persistence", 2, reference_times=["10"]),
             "reference_times[0]", "frame index")


# ----------------------------------------------------------------------------- True is not the number 1


@pytest.mark.parametrize("argument", ["batch_size", "patch_size", "input_steps", "output_steps", "window_stride",
                                      "max_iterations", "epochs", "seed", "max_minutes", "lr",
                                      "validation_fraction"])
@pytest.mark.parametrize("flag", [True, False])
def test_fit_refuses_a_bool_for_a_number(tmp_path, monkeypatch, argument, flag):
    monkeypatch.chdir(tmp_path)
    kwargs = {"max_iterations": 1, "patch_size": 16, "input_steps": 3, "output_steps": 2, "progress": False,
              "model_args": TINY_TAU, "log_dir": tmp_path / "logs", "checkpoint_dir": tmp_path / "ckpt",
              argument: flag}
    _refused(ConfigError, lambda: geostp.fit(_cube(12), "tau", **kwargs), f"{argument}={flag}", "is a bool",
             "expected")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argument", ["steps", "tile", "overlap", "fit_minutes", "fine_tune_minutes"])
def test_forecast_refuses_a_bool_for_a_number(argument):
    kwargs = {"steps": 2, argument: True}
    _refused(ConfigError, lambda: geostp.forecast(_cube(), "persistence", **kwargs), argument, "True", "expected")


@pytest.mark.parametrize("argument", ["steps", "tile", "overlap", "data_range"])
def test_evaluate_refuses_a_bool_for_a_number(argument):
    cube = _cube()
    kwargs = {"steps": 2, "reference_times": [cube.time.values[5]], "print_table": False, "progress": False,
              argument: True}
    _refused(ConfigError, lambda: geostp.evaluate(cube, "persistence", **kwargs), argument, "True", "expected")


def test_settings_from_arguments_refuses_bools_only_where_a_number_is_expected():
    from geostp.fit import FitArguments
    from geostp.options import settings_from_arguments

    _refused(ConfigError, lambda: settings_from_arguments(FitArguments, "f", {"batch_size": True}, names={
        "batch_size": "the_batch"}), "f: the_batch=True is a bool", "expected an integer >= 1")
    ok = settings_from_arguments(FitArguments, "f", {"batch_size": np.int64(2), "lead_gate": False,
                                                     "probability_matching": True})
    assert ok.batch_size == 2 and ok.lead_gate is False and ok.probability_matching is True
