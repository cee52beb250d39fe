"""Option groups (ForecastOptions, MapStyle, LoaderOptions): frozen, validated per field, the same result as the
keywords they stand for, and a ConfigError when an object and a keyword say different things."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import geostp
from geostp.errors import ConfigError
from geostp.forecast import FittedForecaster, ForecastOptions
from geostp.testing import small_cube


@pytest.fixture(scope="module")
def cube():
    return small_cube(n_times=12, backend="numpy")


# ----------------------------------------------------------------------------- ForecastOptions


@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny TAU: deterministic, trainable (so tiles apply), no fitting."""
    import torch

    import geostp.models as models

    torch.manual_seed(0)
    net = models.get("tau", input_steps=4, output_steps=4, channels=1, spatial_hidden_channels=4,
                     temporal_hidden_channels=8, spatial_blocks=2, temporal_blocks=2)
    return FittedForecaster(model=net.eval(), variables=["precipitation"])


def test_forecast_options_are_frozen_and_exported():
    opts = ForecastOptions(tile=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tile = 32  # type: ignore[misc]
    assert geostp.ForecastOptions is ForecastOptions and "ForecastOptions" in geostp.__all__


@pytest.mark.parametrize("field, value", [("device", "gpu please"), ("tile", 0), ("tile", 1.5), ("overlap", -1),
                                          ("transfer", "yes"), ("progress", None)])
def test_forecast_options_name_a_bad_field(field, value):
    with pytest.raises(ConfigError, match=f"ForecastOptions {field}="):
        ForecastOptions(**{field: value})


def test_forecast_options_give_what_the_keywords_give(cube, tiny):
    refs = cube["time"].values[[6, 9]]
    by_keywords = geostp.forecast(cube, tiny, 3, reference_times=refs, device="cpu", tile=16, overlap=4,
                                  progress=False)
    opts = ForecastOptions(device="cpu", tile=16, overlap=4)
    assert by_keywords.identical(geostp.forecast(cube, tiny, 3, reference_times=refs, options=opts))
    assert by_keywords.identical(tiny.predict(cube, 3, reference_times=refs, options=opts))
    assert not by_keywords.identical(tiny.predict(cube, 3, reference_times=refs, device="cpu"))  # tiles were used
    scores = geostp.evaluate(cube, {"tau": tiny}, steps=2, reference_times=refs, device="cpu", tile=16, overlap=4,
                             progress=False, print_table=False)
    assert scores.identical(geostp.evaluate(cube, {"tau": tiny}, steps=2, reference_times=refs, options=opts,
                                            print_table=False))


def test_forecast_options_and_a_conflicting_keyword_refuse(cube, tiny):
    opts = ForecastOptions(device="cpu", tile=16, overlap=4)
    with pytest.raises(ConfigError, match=r"options= and conflicting keyword\(s\) overlap=8"):
        geostp.forecast(cube, tiny, 2, overlap=8, options=opts)
    with pytest.raises(ConfigError, match="tile=32"):
        tiny.predict(cube, 2, tile=32, options=opts)
    with pytest.raises(ConfigError, match="device='cuda'"):
        geostp.evaluate(cube, ["persistence"], steps=2, reference_times=cube["time"].values[[6]], device="cuda",
                        options=opts, print_table=False)
    with pytest.raises(ConfigError, match="must be a ForecastOptions"):
        geostp.forecast(cube, tiny, 2, options={"tile": 16})
    # a keyword that repeats the object's value, or is left at its default, is no conflict
    assert tiny.predict(cube, 2, tile=16, device="cpu", options=opts).sizes["lead_time"] == 2


# ----------------------------------------------------------------------------- MapStyle


def test_map_style_is_frozen_and_names_a_bad_field():
    pytest.importorskip("matplotlib")
    from geostp.plot import MapStyle

    style = MapStyle(features=["coastline"])
    assert style.features == ("coastline",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        style.vmin = 0.0  # type: ignore[misc]
    for field, value in [("scale", "rainbow"), ("vmax", float("nan")), ("features", ("rivers",)),
                         ("resolution", "5m"), ("colorbar", "no"), ("figsize", (4,)), ("natural_earth", 3)]:
        with pytest.raises(ConfigError, match=f"MapStyle {field}="):
            MapStyle(**{field: value})
    with pytest.raises(ConfigError, match="vmin=2.0 is not below vmax=1.0"):
        MapStyle(vmin=2.0, vmax=1.0)


def test_map_style_gives_what_the_keywords_give(cube):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geostp.plot as gplot

    keywords = dict(scale="rain_rate", vmin=None, natural_earth=False, title="rain", figsize=(4.0, 3.0))
    a = gplot.plot_map(cube, time=cube["time"].values[5], **keywords)
    b = gplot.plot_map(cube, time=cube["time"].values[5], style=gplot.MapStyle(**keywords))
    assert a.get_title() == b.get_title() == "rain"
    assert np.array_equal(a.images[0].get_array(), b.images[0].get_array(), equal_nan=True)
    assert a.images[0].norm.boundaries.tolist() == b.images[0].norm.boundaries.tolist()
    assert tuple(a.figure.get_size_inches()) == tuple(b.figure.get_size_inches()) == (4.0, 3.0)
    fig = gplot.plot_panel(cube, times=cube["time"].values[:2], style=gplot.MapStyle(natural_earth=False,
                                                                                      colorbar=False))
    assert len(fig.axes) == 2  # no colour bar axes
    ax = gplot.plot_scores(geostp.evaluate(cube, ["persistence"], steps=2, reference_times=cube["time"].values[[6]],
                                           progress=False, print_table=False), "mse",
                           style=gplot.MapStyle(title="house", figsize=(5.0, 3.0)))
    assert ax.get_title() == "house" and tuple(ax.figure.get_size_inches()) == (5.0, 3.0)
    plt.close("all")


def test_map_style_and_a_conflicting_keyword_refuse(cube):
    pytest.importorskip("matplotlib")
    import geostp.plot as gplot

    style = gplot.MapStyle(scale="rain_rate", natural_earth=False)
    with pytest.raises(ConfigError, match=r"style= and conflicting keyword\(s\) scale='continuous'"):
        gplot.plot_map(cube, scale="continuous", style=style)
    with pytest.raises(ConfigError, match="resolution='10m'"):
        gplot.plot_panel(cube, resolution="10m", style=style)


# ----------------------------------------------------------------------------- LoaderOptions


def test_loader_options_are_frozen_and_name_a_bad_field():
    from geostp.stream import LoaderOptions

    opts = LoaderOptions(batch_size=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.batch_size = 8  # type: ignore[misc]
    for field, value in [("batch_size", 0), ("shard", "rows"), ("reader", "hdf5"), ("block_megabytes", 0),
                         ("num_workers", -1), ("shuffle", "yes"), ("world_size", 0)]:
        with pytest.raises(ConfigError, match=f"LoaderOptions {field}="):
            LoaderOptions(**{field: value})


def test_loader_options_give_what_the_keywords_give(cube):
    from geostp.stream import CubeDataset, LoaderOptions, WindowSpec, make_loader

    spec = WindowSpec(2, 2, patch_size=16, random_patches=2)
    keywords = dict(batch_size=3, seed=5, streams=1, shuffle_blocks=1, block_megabytes=0.05)
    a = CubeDataset(cube, "precipitation", spec, **keywords)
    opts = LoaderOptions(**keywords, num_workers=0)
    b = CubeDataset(cube, "precipitation", spec, loader=opts)
    assert b.loader_options is opts and a.loader_options == dataclasses.replace(opts, num_workers=2)
    assert [s.tobytes() for s in a.batch_samples(1)] == [s.tobytes() for s in b.batch_samples(1)]  # NaN fields
    first_a, first_b = next(iter(make_loader(a, 0))), next(iter(make_loader(b, loader=opts)))
    assert make_loader(b, loader=opts).num_workers == 0
    assert first_a.keys() == first_b.keys() and all(bool((first_a[k] == first_b[k]).all()) for k in first_a)


def test_loader_options_and_a_conflicting_keyword_refuse(cube):
    from geostp.stream import CubeDataset, LoaderOptions, WindowSpec, make_loader

    spec = WindowSpec(2, 2)
    opts = LoaderOptions(batch_size=4, num_workers=0)
    with pytest.raises(ConfigError, match=r"loader= and conflicting keyword\(s\) batch_size=8"):
        CubeDataset(cube, "precipitation", spec, batch_size=8, loader=opts)
    ds = CubeDataset(cube, "precipitation", spec, batch_size=4, loader=opts)  # the same value: no conflict
    with pytest.raises(ConfigError, match="num_workers=1"):
        make_loader(ds, 1, loader=opts)
