"""Maps, panels, comparisons, animations and score curves, drawn from real MeteoSwiss radar frames.

The radar frames come from the catalog's ``radar`` source when that adapter is
there, else straight from pysteps' MeteoSwiss importer with the known Swiss
LV03 grid attached. Every picture is written to PNG and checked for content,
for its extent against the data's lat/lon, and for coastlines read from the
local Natural Earth folder with the network made to fail.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import urllib.request
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import geostp.plot as gplot  # noqa: E402
from geostp.cube import forecast_to_dataarray  # noqa: E402
from geostp.errors import CubeError, DataError, GeostpError, UnknownNameError  # noqa: E402
from geostp.plot import basemap  # noqa: E402

pytest.importorskip("cartopy")

EVENT = "20160711"
N_FRAMES = 10
REF_INDEX = 3


# ----------------------------------------------------------------------------- real data


def _mch_from_catalog(shared_data: Path) -> xr.Dataset | None:
    """The catalog's MeteoSwiss source, if the radar adapter and catalog exist (else None)."""
    try:
        import geostp.data.radar  # noqa: F401
        from geostp.data import open_catalog

        old = os.environ.get("GEOSTP_DATA")
        os.environ["GEOSTP_DATA"] = str(shared_data)
        try:
            cube = open_catalog("radar").open(f"mch_{EVENT}")
        finally:
            if old is None:
                os.environ.pop("GEOSTP_DATA", None)
            else:
                os.environ["GEOSTP_DATA"] = old
    except Exception:  # adapter not written yet, or a different catalog layout
        return None
    day = pd.Timestamp(EVENT)
    cube = cube.sel(time=slice(day, day + pd.Timedelta(days=1)))
    if cube.sizes.get("time", 0) < N_FRAMES:
        return None
    return cube.isel(time=slice(0, N_FRAMES)).load()


def _mch_from_pysteps(shared_data: Path) -> xr.Dataset:
    pytest.importorskip("pysteps")
    import pyproj
    from pysteps.io import import_mch_gif
    from pysteps.utils import conversion

    from geostp.conventions import crs_attrs

    files = sorted((shared_data / "radar" / "mch" / EVENT).glob("AQC*.gif"))[:N_FRAMES]
    assert len(files) == N_FRAMES, f"expected MeteoSwiss frames in {shared_data / 'radar/mch' / EVENT}"
    frames, times = [], []
    for f in files:
        rain, _, meta = import_mch_gif(str(f), product="AQC", unit="mm", accutime=5.0)
        rain, meta = conversion.to_rainrate(rain, meta)
        frames.append(rain.astype(np.float32))
        times.append(dt.datetime.strptime(f.name[3:12], "%y%j%H%M"))
    res = meta["xpixelsize"]
    x = np.arange(meta["x1"] + res / 2, meta["x2"], res)
    y = np.arange(meta["y2"] - res / 2, meta["y1"], -res)  # rows from north to south ("upper" origin)
    crs = pyproj.CRS.from_epsg(21781)
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(*np.meshgrid(x, y))
    return xr.Dataset(
        {
            "precipitation": (("time", "y", "x"), np.stack(frames),
                              {"units": "mm h-1", "standard_name": "lwe_precipitation_rate",
                               "long_name": "rain rate", "grid_mapping": "crs"}),
            "crs": ((), np.int32(0), crs_attrs(crs)),
        },
        coords={"time": pd.DatetimeIndex(times).values, "y": ("y", y, {"units": "m"}),
                "x": ("x", x, {"units": "m"}), "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)},
    )


@pytest.fixture(scope="module")
def mch(shared_data: Path) -> xr.Dataset:
    """Ten real MeteoSwiss rain-rate frames, 640 x 710 at 1 km, on the LV03 grid."""
    cube = _mch_from_catalog(shared_data)
    if cube is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cube = _mch_from_pysteps(shared_data)
    return cube


@pytest.fixture(scope="module")
def forecast(mch: xr.Dataset) -> xr.DataArray:
    """A labelled 6-step forecast from the 4th frame: the last observation shifted east 3 km a step."""
    last = mch["precipitation"].values[REF_INDEX]
    values = np.stack([np.roll(last, 3 * k, axis=1) for k in range(1, 7)])[:, None]
    return forecast_to_dataarray(values, mch, reference_time=mch["time"].values[REF_INDEX],
                                 variables=["precipitation"], step=np.timedelta64(5, "m"),
                                 attrs={"model": "shifted persistence"})


@pytest.fixture(scope="module")
def natural_earth(shared_data: Path) -> Path:
    folder = shared_data / "natural_earth"
    assert (folder / "shapefiles" / "natural_earth" / "physical").is_dir()
    return folder


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No network, an empty cartopy data dir, fresh one-time warnings, and closed figures afterwards."""
    import cartopy
    import cartopy.io

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(cartopy.io.Downloader, "acquire_resource", refuse)
    monkeypatch.setattr(cartopy.io.Downloader, "_urlopen", refuse, raising=False)
    monkeypatch.setitem(cartopy.config, "data_dir", str(tmp_path / "cartopy_data"))
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", str(tmp_path / "cartopy_pre"))
    monkeypatch.delenv("GEOSTP_NATURAL_EARTH", raising=False)
    monkeypatch.delenv("GEOSTP_DATA", raising=False)
    basemap._WARNED.clear()
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- picture checks


def _png(fig, path: Path) -> np.ndarray:
    fig.savefig(path, dpi=72)
    assert path.stat().st_size > 5_000
    return plt.imread(path)[..., :3]


def _assert_not_empty(rgb: np.ndarray) -> None:
    assert rgb.std() > 0.05, "picture is (nearly) uniform"
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    coloured = (saturation > 0.25).mean()
    assert coloured > 0.005, f"only {coloured:.4f} of the pixels are coloured: no rain drawn"


def _grey_fraction(rgb: np.ndarray) -> float:
    grey = np.array(matplotlib.colors.to_rgb(gplot.colours.NO_DATA_COLOUR))
    return float((np.abs(rgb - grey).max(axis=-1) < 0.02).mean())


def _feature_artists(ax) -> dict[str, str]:
    out = {}
    for artist in ax.artists + ax.collections:
        label = artist.get_label() or ""
        if label.startswith("natural_earth:"):
            _, feature, path = label.split(":", 2)
            out[feature] = path
    return out


def _projection_method(ax) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyproj: "you will likely lose projection information"
        return ax.projection.to_dict()["proj"]


# ----------------------------------------------------------------------------- maps


def test_map_of_a_real_radar_forecast_is_drawn_in_its_projection(forecast, mch, natural_earth, tmp_path):
    import cartopy.crs as ccrs

    ax = gplot.plot_map(forecast, "10min", natural_earth=natural_earth)
    rgb = _png(ax.figure, tmp_path / "map.png")
    _assert_not_empty(rgb)
    assert _grey_fraction(rgb) > 0.02, "no-data pixels outside radar range are not drawn grey"

    # native projection: the axes cover exactly the pixel edges of the grid
    x0, x1, y0, y1 = ax.get_extent()
    assert (x0, x1, y0, y1) == pytest.approx((255_000, 965_000, -160_000, 480_000), abs=1.0)
    assert _projection_method(ax) == "somerc"  # Swiss oblique Mercator, from the data's grid mapping
    # in lon/lat the map covers the data's lat/lon range (cartopy's extent joins corners by
    # straight lines, so allow 0.15 degrees of the grid's curvature)
    lon0, lon1, lat0, lat1 = ax.get_extent(ccrs.PlateCarree())
    lat, lon = mch["lat"].values, mch["lon"].values
    assert lon0 == pytest.approx(float(lon.min()), abs=0.15)
    assert lon1 == pytest.approx(float(lon.max()), abs=0.15)
    assert lat0 == pytest.approx(float(lat.min()), abs=0.15)
    assert lat1 == pytest.approx(float(lat.max()), abs=0.15)

    title = ax.get_title()
    assert "mm h-1" in title and "+10 min" in title and "valid 2016-07-11 21:10" in title
    assert "shifted persistence" in title
    # the image is the chosen lead time, north up
    shown = np.asarray(ax.images[0].get_array(), dtype=float)
    expected = forecast.sel(lead_time=np.timedelta64(10, "m")).values
    np.testing.assert_array_equal(np.isnan(shown), np.isnan(expected))
    np.testing.assert_allclose(np.nan_to_num(shown), np.nan_to_num(expected))


def test_coastlines_and_borders_come_from_the_local_folder_without_network(forecast, natural_earth, monkeypatch,
                                                                           tmp_path):
    import shapely
    from cartopy.io import shapereader

    opened: list[str] = []
    real_reader = shapereader.Reader

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_reader(path, *args, **kwargs)

    monkeypatch.setattr(shapereader, "Reader", spy)
    basemap.clear_cache()  # read the shapefiles again, through the spy
    monkeypatch.setenv("GEOSTP_NATURAL_EARTH", str(natural_earth))
    ax = gplot.plot_map(forecast, "5min")  # the folder comes from the environment variable
    _png(ax.figure, tmp_path / "coast.png")

    root = natural_earth.resolve()
    assert opened, "no shapefile was opened"
    assert all(Path(p).resolve().is_relative_to(root) for p in opened), opened
    features = _feature_artists(ax)
    assert {"coastline", "borders", "lakes"} <= set(features)
    assert all(Path(p).name.startswith("ne_50m_") for p in features.values())  # a ~700 km map: 50m scale
    # the borders cross the map: Switzerland's border lies inside its own radar composite
    borders = [a for a in ax.artists + ax.collections if a.get_label().startswith("natural_earth:borders")][0]
    switzerland = shapely.box(6.0, 45.9, 10.4, 47.8)
    assert any(g.intersects(switzerland) for g in borders._feature.geometries())


def test_map_without_natural_earth_draws_and_warns_once(forecast, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ax1 = gplot.plot_map(forecast, "5min")
        ax2 = gplot.plot_map(forecast, "15min")
    map_warnings = [w for w in caught if issubclass(w.category, gplot.MapWarning)]
    assert len(map_warnings) == 1
    assert "GEOSTP_NATURAL_EARTH" in str(map_warnings[0].message)
    assert not _feature_artists(ax1) and not _feature_artists(ax2)
    _assert_not_empty(_png(ax2.figure, tmp_path / "bare.png"))


def test_a_natural_earth_folder_without_shapefiles_is_an_error(forecast, tmp_path):
    with pytest.raises(DataError, match="natural_earth=.*holds no Natural Earth shapefiles"):
        gplot.plot_map(forecast, natural_earth=tmp_path)


def test_observation_map_from_a_cube_dataset(mch, natural_earth, tmp_path):
    t = mch["time"].values[1]
    ax = mch.geostp.map(time=t, natural_earth=natural_earth)  # Dataset accessor: crs comes along
    assert hasattr(ax, "projection")
    assert "observed 2016-07-11 20:50" in ax.get_title()
    _assert_not_empty(_png(ax.figure, tmp_path / "obs.png"))
    # a bare variable has lost the grid-mapping variable: a clear error says what to pass
    with pytest.raises(CubeError, match="grid_mapping='crs'.*pass the Dataset"):
        gplot.plot_map(mch["precipitation"])
    ax = gplot.plot_map(mch["precipitation"], crs="EPSG:21781", natural_earth=False)
    assert ax.projection.to_epsg() == 21781


def test_panel_of_lead_times(forecast, natural_earth, tmp_path):
    fig = forecast.geostp.panel(["5min", "15min", 30], natural_earth=natural_earth)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 3
    assert [ax.get_title().split(",")[0] for ax in maps] == ["+5 min", "+15 min", "+30 min"]
    assert "valid 21:30" in maps[-1].get_title()
    assert "mm h-1" in fig.get_suptitle() and "2016-07-11 21:00" in fig.get_suptitle()
    # one colour scale for all maps
    assert len({id(ax.images[0].norm) for ax in maps}) == 1
    _assert_not_empty(_png(fig, tmp_path / "panel.png"))


def test_observation_beside_forecast_matches_valid_times(forecast, mch, natural_earth, tmp_path):
    fig = gplot.plot_comparison(forecast, mch, ["5min", "20min"], natural_earth=natural_earth)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 4
    obs_axes, fc_axes = maps[:2], maps[2:]
    for ax, lead in zip(obs_axes, (5, 20), strict=True):
        valid = mch["time"].values[REF_INDEX] + np.timedelta64(lead, "m")
        assert ax.get_title().startswith("observed")
        np.testing.assert_allclose(np.nan_to_num(np.asarray(ax.images[0].get_array(), dtype=float)),
                                   np.nan_to_num(mch["precipitation"].sel(time=valid).values))
    assert fc_axes[1].get_title().startswith("shifted persistence")
    _assert_not_empty(_png(fig, tmp_path / "compare.png"))
    # a valid time the observations do not cover is named
    with pytest.raises(GeostpError, match="observed: no frame at valid time 2016-07-11 21:30"):
        gplot.plot_comparison(forecast, mch.isel(time=slice(0, 8)), "30min")


# ----------------------------------------------------------------------------- animations


def test_gif_animation_over_lead_times(forecast, natural_earth, tmp_path):
    import imageio.v3 as iio

    path = forecast.geostp.animate(tmp_path / "nowcast.gif", fps=5, natural_earth=natural_earth, dpi=50)
    frames = iio.imread(path)
    assert frames.shape[0] == forecast.sizes["lead_time"]
    assert frames.shape[1] > 100 and frames.shape[2] > 100
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.5, "frames do not change"
    _assert_not_empty(frames[-1][..., :3] / 255.0)


def test_mp4_animation_or_a_clear_refusal(forecast, tmp_path, monkeypatch):
    animate_module = sys.modules["geostp.plot.animate"]  # the package exports the function of that name

    if gplot.ffmpeg_executable() is None:
        with pytest.raises(GeostpError, match="imageio-ffmpeg"):
            gplot.animate(forecast, tmp_path / "nowcast.mp4")
        pytest.skip("MP4 not tested: imageio-ffmpeg (which ships ffmpeg) is not installed; "
                    "the refusal was checked instead")
    import imageio.v2 as iio2

    path = gplot.animate(forecast.isel(lead_time=slice(0, 3)), tmp_path / "nowcast.mp4", natural_earth=False,
                         dpi=40)
    reader = iio2.get_reader(path)
    try:
        assert sum(1 for _ in reader) == 3
    finally:
        reader.close()
    monkeypatch.setattr(animate_module, "ffmpeg_executable", lambda: None)
    with pytest.raises(GeostpError, match="MP4 needs ffmpeg"):
        gplot.animate(forecast, tmp_path / "again.mp4")


def test_animation_rejects_unknown_formats(forecast, tmp_path):
    with pytest.raises(GeostpError, match="path=.*unknown animation format '.avi'"):
        gplot.animate(forecast, tmp_path / "x.avi")


# ----------------------------------------------------------------------------- verification curves


def test_score_curves_for_several_models(forecast, mch, tmp_path):
    from geostp import metrics

    observed = metrics.align_observations(forecast.isel(lead_time=slice(0, 2)), mch["precipitation"])
    persistence = xr.concat([mch["precipitation"].isel(time=REF_INDEX).drop_vars("time")] * 2, "lead_time")
    persistence = persistence.assign_coords(lead_time=observed["lead_time"])
    fc = forecast.isel(lead_time=slice(0, 2))
    table = xr.concat(
        [metrics.verify(f, observed, metrics=["csi", "mse"], thresholds=[1.0]) for f in (fc, persistence)],
        dim=pd.Index(["shifted persistence", "persistence"], name="model"),
    )
    ax = table.geostp.scores("csi_1")
    lines = ax.get_lines()
    assert len(lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["shifted persistence", "persistence"]
    np.testing.assert_allclose(lines[0].get_xdata(), [5, 10])
    np.testing.assert_allclose(lines[1].get_ydata(), table["csi_1"].sel(model="persistence").values)
    assert ax.get_xlabel() == "lead time [min]" and "csi_1" in ax.get_ylabel()
    assert ax.figure.savefig(tmp_path / "csi.png") is None and (tmp_path / "csi.png").stat().st_size > 5_000

    # a metric dim, as in scores.sel(metric="csi")
    stacked = xr.concat([table["csi_1"], table["mse"]], dim=pd.Index(["csi", "mse"], name="metric"))
    ax = gplot.plot_scores(stacked.sel(metric="csi"))
    assert "csi" in ax.get_ylabel()
    with pytest.raises(GeostpError, match="choose one with metric="):
        gplot.plot_scores(table)
    with pytest.raises(GeostpError, match="metric='fss' is not in scores"):
        gplot.plot_scores(stacked, "fss")
    with pytest.raises(GeostpError, match="expected a 'lead_time' dim"):
        gplot.plot_scores(table["mse"].isel(lead_time=0))
    with pytest.raises(GeostpError, match=r"models=\['tau'\] are not in scores"):
        gplot.plot_scores(table["mse"], models=["tau"])


# ----------------------------------------------------------------------------- plain images and errors


def test_data_without_grid_mapping_is_a_plain_image(tmp_path):
    rng = np.random.default_rng(0)
    video = xr.DataArray(rng.random((4, 32, 48)).astype(np.float32), dims=("time", "y", "x"),
                         coords={"time": np.arange(4)}, attrs={"units": "1", "long_name": "intensity"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", gplot.MapWarning)  # no basemap is looked for
        ax = video.geostp.map(time=2)
    assert not hasattr(ax, "projection")
    assert ax.images[0].cmap.name.startswith("viridis")
    assert ax.get_xlim() == (-0.5, 47.5)
    assert ax.get_ylim() == (31.5, -0.5)  # an image: its first row at the top
    np.testing.assert_array_equal(ax.images[0].get_array(), video.isel(time=2).values)
    assert "intensity [1]" in ax.get_title() and "observed 2" in ax.get_title()
    _assert_not_empty(_png(ax.figure, tmp_path / "video.png"))
    fig = gplot.plot_panel(video, times=[0, 3])
    assert len([a for a in fig.axes if a.images]) == 2


def test_synthetic_swiss_radar_without_shared_data(radar_cube, tmp_path):
    ax = gplot.plot_map(radar_cube, time=radar_cube["time"].values[10], natural_earth=False)
    assert _projection_method(ax) == "somerc"
    assert ax.get_extent() == pytest.approx(
        (float(radar_cube.x.min()) - 500, float(radar_cube.x.max()) + 500,
         float(radar_cube.y.min()) - 500, float(radar_cube.y.max()) + 500), abs=1.0)
    assert ax.figure.savefig(tmp_path / "synthetic.png") is None


def test_errors_name_the_argument(forecast, mch):
    with pytest.raises(CubeError, match=r"da: DataArray has dims \('lead_time', 'points'\), missing \['y', 'x'\]"):
        gplot.plot_map(xr.DataArray(np.zeros((2, 3)), dims=("lead_time", "points")))
    with pytest.raises(GeostpError, match=r"lead_time='7min': no such lead time; available: 5 min, 10 min"):
        gplot.plot_map(forecast, "7min")
    with pytest.raises(GeostpError, match="lead_time='soon' is not a lead time"):
        gplot.plot_map(forecast, "soon")
    with pytest.raises(GeostpError, match="lead_time=.*has no 'lead_time' dim"):
        gplot.plot_map(mch, "5min")
    with pytest.raises(GeostpError, match="time='2016-07-12': no such time; available: 2016-07-11 20:45"):
        gplot.plot_map(mch, time="2016-07-12")
    with pytest.raises(GeostpError, match=r"lead_times='1h': no such lead time"):
        gplot.plot_panel(forecast, "1h")
    two_vars = mch.assign(other=mch["precipitation"])
    with pytest.raises(GeostpError, match="choose one with variable="):
        gplot.plot_map(two_vars)
    with pytest.raises(GeostpError, match="dims \\['sequence'\\] are left"):
        gplot.plot_map(forecast.expand_dims(sequence=2))
    with pytest.raises(GeostpError, match="ax: the data is georeferenced but ax is a plain"):
        gplot.plot_map(forecast, ax=plt.figure().add_subplot())
    with pytest.raises(UnknownNameError, match="unknown colour scale 'rainbow'"):
        gplot.plot_map(forecast, scale="rainbow")


# ----------------------------------------------------------------------------- colours


def test_colour_scales_keep_no_data_apart_from_dry():
    scale = gplot.colour_scale(units="mm h-1")
    assert scale is gplot.RAIN_RATE
    assert scale.levels == (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100)
    cmap, norm = scale.cmap(), scale.norm()
    nan, dry, light, heavy, extreme = cmap(norm(np.ma.masked_invalid([np.nan, 0.0, 0.3, 30.0, 150.0])))
    assert nan[3] == 1.0 and matplotlib.colors.to_hex(nan) == gplot.colours.NO_DATA_COLOUR
    assert dry[3] == 0.0  # dry pixels are transparent
    assert light[3] == 1.0 and not np.allclose(light, heavy) and not np.allclose(heavy, extreme)
    assert gplot.colour_scale(units="mm/h") is gplot.RAIN_RATE
    assert gplot.colour_scale(units="dBZ") is gplot.REFLECTIVITY
    assert gplot.colour_scale(units="K") is gplot.CONTINUOUS
    assert gplot.colour_scale("reflectivity") is gplot.REFLECTIVITY
    refl = gplot.REFLECTIVITY
    assert matplotlib.colors.to_hex(refl.cmap()(np.ma.masked_invalid([np.nan]))[0]) == gplot.colours.NO_DATA_COLOUR
    with pytest.raises(GeostpError, match="need 2 colours"):
        gplot.ColourScale(name="bad", label="x", levels=(0.0, 1.0, 2.0), colours=("red",))
