"""Motion as a first-class output: ``geostp.motion`` on real MeteoSwiss radar against pysteps called directly,
each of pysteps' methods by name, the sign and units of the labelled field, the baselines' ``motion=`` and
the motion vectors drawn over a map."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import geostp
import geostp.models as models
from geostp.advection import MOTION_METHODS, estimate_motion, motion_pixels
from geostp.cube import cube_crs
from geostp.errors import ConfigError
from geostp.testing import small_cube

pytest.importorskip("pysteps")

EVENT_TIME = "2016-07-11 22:00"
METHODS = ("LK", "VET", "DARTS", "proesmans")


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def mch(shared_data) -> xr.Dataset:
    """MeteoSwiss 2016-07-11, the ten frames up to 22:00 (enough for DARTS), loaded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSTP_DATA", str(shared_data))
        cube = geostp.open_catalog("radar").open("mch_20160711")
    end = pd.Timestamp(EVENT_TIME)
    return cube.sel(time=slice(end - pd.Timedelta("45min"), end)).load()


@pytest.fixture(scope="module")
def mch_crop(mch) -> xr.Dataset:
    """128 x 128 pixels of it, over the rain west of Zurich."""
    return mch.isel(y=slice(220, 348), x=slice(330, 458))


def _blob(ny: int, nx: int, cy: float, cx: float, sigma: float = 8.0) -> np.ndarray:
    yy, xx = np.mgrid[0:ny, 0:nx]
    return (10.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))).astype(np.float32)


@pytest.fixture(scope="module")
def moving() -> xr.Dataset:
    """A blob moving +2 px in x (east) and 1 px up the rows (north: y falls with the row) per 5-min step,
    on a 1-km grid whose y coordinate decreases down the rows, as on a map."""
    cube = small_cube(10, 64, 64, backend="numpy")
    frames = np.stack([_blob(64, 64, 40.0 - 1.0 * k, 14.0 + 2.0 * k) for k in range(10)])
    cube["precipitation"] = cube["precipitation"].copy(data=frames)
    assert cube["y"].values[0] > cube["y"].values[-1]
    return cube


def _pysteps_lk(frames: np.ndarray) -> np.ndarray:
    """pysteps' Lucas-Kanade on rain rates as pysteps' examples call it: dBR, threshold 0.1 mm/h, -15 dBR below."""
    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps.motion.lucaskanade import dense_lucaskanade
        from pysteps.utils import transformation

    dbr, _ = transformation.dB_transform(frames.astype(np.float64), threshold=0.1, zerovalue=-15.0)
    dbr[~np.isfinite(dbr)] = -15.0
    with contextlib.redirect_stdout(io.StringIO()):
        return dense_lucaskanade(dbr, verbose=False)


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_motion_agrees_with_pysteps_lucas_kanade_on_meteoswiss(mch):
    m = geostp.motion(mch, EVENT_TIME)
    frames = mch["precipitation"].sel(time=slice(pd.Timestamp(EVENT_TIME) - pd.Timedelta("10min"), EVENT_TIME))
    assert frames.sizes["time"] == 3
    direct = _pysteps_lk(frames.values)  # [2, y, x]: x then row component, pixels per 5 min
    assert m.dims == ("component", "y", "x") and m.shape == (2, 640, 710)
    np.testing.assert_allclose(motion_pixels(m), direct, rtol=1e-5, atol=1e-5)
    # 1-km pixels, 300-s steps; y falls with the row on the Swiss grid, so v (northward) is minus pysteps' row motion
    np.testing.assert_allclose(m.sel(component="u").values, direct[0] * 1000 / 300, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(m.sel(component="v").values, -direct[1] * 1000 / 300, rtol=1e-5, atol=1e-4)
    assert m.attrs["units"] == "m s-1" and m.attrs["method"] == "LK"
    assert m.attrs["motion_frames"] == ["2016-07-11 21:50:00", "2016-07-11 21:55:00", "2016-07-11 22:00:00"]
    assert pd.Timestamp(m["time"].values) == pd.Timestamp(EVENT_TIME)
    speed = np.hypot(*m.values)
    assert 5 < np.median(speed) < 30  # a summer convective event: tens of km/h
    assert float(m.sel(component="u").median()) > 0  # rain moving east, as it does over Switzerland


@pytest.mark.realdata
def test_motion_carries_the_cubes_grid_and_crs(mch_crop, tmp_path):
    import pyproj

    m = geostp.motion(mch_crop)
    assert list(m["component"].values) == ["u", "v"]
    np.testing.assert_array_equal(m["x"].values, mch_crop["x"].values)
    np.testing.assert_array_equal(m["y"].values, mch_crop["y"].values)
    assert m["y"].attrs["units"] == "m" and "lat" in m.coords and "lon" in m.coords
    assert m.attrs["grid_mapping"] == "crs"
    crs = pyproj.CRS.from_cf(dict(m["crs"].attrs))
    assert crs == cube_crs(mch_crop)
    assert crs.is_projected
    # written and read back as CF netCDF, the CRS still reads
    path = tmp_path / "motion.nc"
    m.to_netcdf(path)
    back = xr.open_dataset(path, decode_coords="all")
    assert pyproj.CRS.from_cf(dict(back["crs"].attrs)) == crs
    assert back["motion"].attrs["units"] == "m s-1"


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["LK", "DARTS", "proesmans"])
def test_each_method_runs_on_the_real_cube(mch_crop, method):
    m = geostp.motion(mch_crop, method=method)
    n = MOTION_METHODS[method].frames
    assert len(m.attrs["motion_frames"]) == n and m.attrs["method"] == method
    assert np.isfinite(m.values).all()
    assert np.abs(m.values).max() > 0.1  # it moved


@pytest.mark.realdata
def test_vet_runs_on_a_small_piece_of_the_real_cube(mch_crop):
    piece = mch_crop.isel(y=slice(32, 96), x=slice(32, 96))
    m = geostp.motion(piece, method="vet")  # any case
    assert m.attrs["method"] == "VET" and m.shape == (2, 64, 64)
    assert np.isfinite(m.values).all()


# ----------------------------------------------------------------------------- methods, signs, units


@pytest.mark.parametrize("method", METHODS)
def test_each_method_follows_a_moving_blob(moving, method):
    m = geostp.motion(moving, method=method)
    core = moving["precipitation"].values[-1] > 2.0
    u, v = (m.sel(component=c).values[core] for c in ("u", "v"))
    assert (u > 0).mean() > 0.9, f"{method}: the blob moves east"
    assert (v > 0).mean() > 0.9, f"{method}: the blob moves north (up the rows)"
    if method in ("LK", "VET", "proesmans"):
        assert np.median(u) == pytest.approx(2 * 1000 / 300, rel=0.15)  # 2 km per 5 min
        assert np.median(v) == pytest.approx(1000 / 300, rel=0.2)


def test_pixel_units_and_the_way_back_to_pysteps(moving):
    m = geostp.motion(moving, units="pixels per step")
    core = moving["precipitation"].values[-1] > 2.0
    assert m.attrs["units"] == "pixels per step"
    assert np.median(m.sel(component="u").values[core]) == pytest.approx(2.0, rel=0.15)
    assert np.median(m.sel(component="v").values[core]) == pytest.approx(1.0, rel=0.2)  # +y: up the rows
    raw = estimate_motion(moving["precipitation"].values)  # pysteps' array: the row component is -1 px
    np.testing.assert_allclose(motion_pixels(m), raw, atol=1e-6)
    np.testing.assert_allclose(motion_pixels(geostp.motion(moving)), raw, rtol=1e-5, atol=1e-5)


def test_estimate_motion_by_name_defaults_to_the_unchanged_lucas_kanade(moving):
    frames = moving["precipitation"].values
    np.testing.assert_array_equal(estimate_motion(frames), estimate_motion(frames, method="lk"))
    np.testing.assert_array_equal(estimate_motion(frames), estimate_motion(frames[-3:], n_frames=3))
    assert not estimate_motion(np.zeros((10, 32, 32)), method="DARTS").any()  # no echo, no motion


def test_motion_frames_time_and_description(moving):
    t = moving["time"].values[6]
    m = geostp.motion(moving.isel(y=slice(16, 48), x=slice(8, 40)), t, method="DARTS")  # small: quick
    assert len(m.attrs["motion_frames"]) == 7  # DARTS' ten where there are ten, else what there is (>= 6)
    assert m.attrs["motion_frames"][-1] == str(pd.Timestamp(t))
    assert "DARTS on the 7 newest frames in dBR" in m.attrs["description"]
    assert m.attrs["time_step"] == "5min"
    p = geostp.motion(moving, method="proesmans", frames=2)
    assert len(p.attrs["motion_frames"]) == 2


# ----------------------------------------------------------------------------- errors


def test_an_unknown_method_is_a_config_error_listing_the_known(moving):
    for call in (lambda: geostp.motion(moving, method="farneback"),
                 lambda: estimate_motion(moving["precipitation"].values, method="optical"),
                 lambda: models.get("optical_flow", motion="LucasKanade")):
        with pytest.raises(ConfigError, match="LK, VET, DARTS, proesmans"):
            call()


def test_clear_errors_for_what_motion_cannot_use(moving):
    two = moving.assign(other=moving["precipitation"] * 2)
    with pytest.raises(ConfigError, match="2 gridded .* variable="):
        geostp.motion(two)
    assert geostp.motion(two, variable="other", method="proesmans").attrs["method"] == "proesmans"
    plain = moving.assign(precipitation=moving["precipitation"].assign_attrs(standard_name="brightness"))
    with pytest.raises(ConfigError, match="not a rain rate .*variable='precipitation'"):
        geostp.motion(plain)
    assert geostp.motion(plain, variable="precipitation").attrs["description"].endswith("as they are")
    with pytest.raises(ConfigError, match="at least 6 frames"):
        geostp.motion(moving, moving["time"].values[3], method="DARTS")
    with pytest.raises(ConfigError, match="frames=5 but the cube has 3"):
        geostp.motion(moving, moving["time"].values[2], frames=5)
    with pytest.raises(ConfigError, match="at most 3"):
        geostp.motion(moving, method="VET", frames=5)
    with pytest.raises(ConfigError, match="not a time of the cube"):
        geostp.motion(moving, "2000-01-01")
    gappy = moving.isel(time=[0, 1, 2, 4, 5, 6])
    with pytest.raises(ConfigError, match="not one time step"):
        geostp.motion(gappy, gappy["time"].values[3])
    with pytest.raises(ConfigError, match="units="):
        geostp.motion(moving, units="km/h")
    no_metres = moving.assign_coords(x=np.arange(64.0), y=np.arange(64.0))
    with pytest.raises(ConfigError, match="not metres"):
        geostp.motion(no_metres, units="m s-1")
    assert geostp.motion(no_metres).attrs["units"] == "pixels per step"


# ----------------------------------------------------------------------------- baselines


def test_the_extrapolation_baseline_takes_the_motion_method_by_name(moving):
    import torch

    frames = moving["precipitation"].values
    x = torch.from_numpy(frames[7:10][None, :, None].copy())  # [B=1, T=3, C=1, y, x]
    model = models.get("optical_flow", input_steps=3, output_steps=2, motion="VET")
    assert model.config["motion"] == "VET" and model.motion == "VET"
    out = model(x).numpy()[0, :, 0]
    # two steps ahead the blob is where a frame 11 would have it: 4 px east and 2 px north of the newest input's
    peak = np.unravel_index(np.argmax(out[1]), out[1].shape)
    assert abs(peak[1] - (14 + 2 * 11)) <= 1 and abs(peak[0] - (40 - 11)) <= 1
    assert models.get("optical_flow").config["motion"] == "LK"
    with pytest.raises(ConfigError, match="input_steps >= 6"):
        models.get("optical_flow", input_steps=3, motion="DARTS")


def test_the_sprog_baseline_takes_the_motion_method_too(moving):
    import torch

    x = torch.from_numpy(moving["precipitation"].values[4:7][None, :, None].copy())
    model = models.get("sprog", input_steps=3, output_steps=2, motion="proesmans", cascade_levels=4)
    assert model.config["motion"] == "proesmans"
    out = model(x).numpy()
    assert out.shape == (1, 2, 1, 64, 64) and np.isfinite(out).all() and out.max() > 1


# ----------------------------------------------------------------------------- maps


@pytest.mark.realdata
def test_a_map_draws_the_motion_vectors_over_the_rain_in_its_projection(mch_crop, shared_data, tmp_path):
    pytest.importorskip("cartopy")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.quiver import Quiver

    import geostp.plot as gplot

    m = geostp.motion(mch_crop, EVENT_TIME)
    ax = gplot.plot_map(mch_crop, time=EVENT_TIME, motion=m, natural_earth=shared_data / "natural_earth")
    quivers = [c for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == 1
    q = quivers[0]
    assert q.transform == ax.projection  # the map's own projection: no reprojection of the vectors
    assert q.N == 26 * 26  # 128 pixels, one arrow every 5 from the third
    assert np.median(q.U) > 0 and np.median(q.V) > 0  # north-east, as the rain goes
    assert "LK motion" in ax.get_title()
    ax.figure.savefig(tmp_path / "motion.png", dpi=60)
    assert (tmp_path / "motion.png").stat().st_size > 10_000
    plt.close(ax.figure)
    ax = gplot.plot_map(mch_crop, time=EVENT_TIME, natural_earth=False)
    q = gplot.plot_motion(ax, m, every=16, color="white", key=False)
    assert q.N == 8 * 8
    with pytest.raises(geostp.GeostpError, match="component, y, x"):
        gplot.plot_motion(ax, mch_crop["precipitation"])
    plt.close(ax.figure)


def test_motion_vectors_on_a_plain_image(moving):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geostp.plot as gplot

    plain = moving.drop_vars("crs")
    plain["precipitation"].attrs.pop("grid_mapping")
    m = geostp.motion(plain)
    assert "grid_mapping" not in m.attrs and "crs" not in m.coords
    ax = gplot.plot_map(plain, time=plain["time"].values[-1], motion=m)
    q = ax.collections[-1]
    assert q.N == 32 * 32 and not hasattr(ax, "projection")
    plt.close(ax.figure)
