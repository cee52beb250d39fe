"""Draw the documentation's gallery with geostp.plot, from the shared real radar data.

The Sphinx build (``docs/conf.py``) runs this before reading the pages; by hand::

    .venv/bin/python docs/gallery.py [OUTDIR]

It writes PNG and GIF files plus ``figures.md`` (the gallery's figures and
captions, included by ``gallery.md``) into OUTDIR, by default
``docs/_generated/gallery`` (ignored by git: the pictures are made by the code,
not kept). The data come from ``$GEOSTP_DATA`` (default ``../shared/data``
beside the checkout); without it the gallery is drawn from the embedded
synthetic radar and says so. A stamp file records what the pictures were made
from, so an unchanged build reuses them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
DEFAULT_OUT = DOCS / "_generated" / "gallery"
STAMP = ".stamp"

MCH_EVENT = "20160711"
REF_INDICES = (15, 25)  # reference times of the verified nowcasts (frame 15 = 2016-07-11 22:00)
N_LEADS = 12  # 5-min steps: one hour


def data_dir() -> Path | None:
    env = os.environ.get("GEOSTP_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if (path / "radar" / "mch" / MCH_EVENT).is_dir() else None


def _stamp(data: Path | None) -> str:
    h = hashlib.sha256()
    sources = [Path(__file__), *sorted((REPO / "geostp" / "plot").glob("*.py")), REPO / "geostp" / "metrics.py",
               REPO / "geostp" / "advection.py",
               *sorted((REPO / "geostp" / "data").glob("*.py")), *sorted((REPO / "geostp" / "catalogs").glob("*.yaml"))]
    for f in sources:
        if f.exists():
            h.update(f.read_bytes())
    h.update(str(data).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- data


def catalog_source(name: str) -> xr.Dataset | None:
    """A source of the ``radar`` catalog as a lazy cube, or None where that catalog or adapter is missing."""
    try:
        from geostp.data import open_catalog

        return open_catalog("radar").open(name)
    except Exception:  # noqa: BLE001 - an older checkout without the radar adapter
        return None


def mch_cube(data: Path) -> xr.Dataset:
    """The MeteoSwiss event of 2016-07-11: the catalog's ``mch_20160711`` source, loaded."""
    cube = catalog_source("mch_20160711")
    if cube is not None:
        return cube.load()
    return _mch_cube_pysteps(data)


def _mch_cube_pysteps(data: Path) -> xr.Dataset:
    """The same event straight from pysteps' importer plus the known Swiss LV03 grid."""
    import pyproj
    from pysteps.io import import_mch_gif
    from pysteps.utils import conversion

    from geostp.data.synthetic import _crs_to_cf

    files = sorted((data / "radar" / "mch" / MCH_EVENT).glob("AQC*.gif"))
    frames, times = [], []
    for f in files:
        rain, _, meta = import_mch_gif(str(f), product="AQC", unit="mm", accutime=5.0)
        rain, meta = conversion.to_rainrate(rain, meta)
        frames.append(rain.astype(np.float32))
        times.append(dt.datetime.strptime(f.name[3:12], "%y%j%H%M"))
    res = meta["xpixelsize"]
    x = np.arange(meta["x1"] + res / 2, meta["x2"], res)
    y = np.arange(meta["y2"] - res / 2, meta["y1"], -res)
    crs = pyproj.CRS.from_epsg(21781)
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(*np.meshgrid(x, y))
    return xr.Dataset(
        {"precipitation": (("time", "y", "x"), np.stack(frames),
                           {"units": "mm h-1", "standard_name": "lwe_precipitation_rate",
                            "long_name": "rain rate", "grid_mapping": "crs"}),
         "crs": ((), np.int32(0), _crs_to_cf(crs))},
        coords={"time": pd.DatetimeIndex(times).values, "y": ("y", y, {"units": "m"}),
                "x": ("x", x, {"units": "m"}), "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)},
        attrs={"institution": "MeteoSwiss", "source": "pysteps example data"},
    )


def synthetic_cube() -> xr.Dataset:
    from geostp.data.synthetic import synthetic_radar

    return synthetic_radar(48, 256, 256, seed=1).load()


def extrapolation_nowcasts(cube: xr.Dataset, refs: tuple[int, ...]) -> xr.DataArray:
    """pysteps' Lucas-Kanade motion and semi-Lagrangian extrapolation, labelled by geostp."""
    from pysteps import motion, nowcasts
    from pysteps.utils import transformation

    from geostp.cube import forecast_to_dataarray

    rain = cube["precipitation"].values.astype(float)
    runs = []
    for i in refs:
        past = rain[i - 2: i + 1]
        db, _ = transformation.dB_transform(np.where(np.isfinite(past), past, 0.0), threshold=0.1,
                                            zerovalue=-15.0)
        velocity = motion.get_method("LK")(db)
        runs.append(nowcasts.get_method("extrapolation")(rain[i], velocity, N_LEADS))
    values = np.stack(runs)[:, :, None].astype(np.float32)  # [N, L, C=1, H, W]
    return forecast_to_dataarray(values, cube, reference_time=cube["time"].values[list(refs)],
                                 variables=["precipitation"], step=np.timedelta64(5, "m"),
                                 attrs={"model": "pysteps extrapolation"})


def persistence(cube: xr.Dataset, forecast: xr.DataArray) -> xr.DataArray:
    last = cube["precipitation"].sel(time=forecast["time"]).drop_vars("time")
    out = last.expand_dims(lead_time=forecast["lead_time"].values).transpose("time", "lead_time", "y", "x")
    return out.assign_coords(time=forecast["time"].values, lead_time=forecast["lead_time"].values)


#: One frame of each radar composite of the shared data: catalog source, time, title.
COMPOSITES = (
    ("mch_20160711", "2016-07-11 22:00", "MeteoSwiss (Swiss oblique Mercator)"),
    ("knmi", "2010-08-26 06:30", "KNMI (polar stereographic)"),
    ("rmi", "2021-07-04 15:50", "RMI Belgium (Lambert conformal)"),
    ("bom", "2020-10-31 06:40", "BoM radar 66, Brisbane (Albers)"),
)


def four_radars(ne):
    """One frame of each composite, each in its own projection, on one figure (None without the catalog)."""
    import matplotlib.pyplot as plt

    import geostp.plot as gplot

    cubes = [(catalog_source(name), when, title) for name, when, title in COMPOSITES]
    if any(c is None for c, _, _ in cubes):
        return None
    fig = plt.figure(figsize=(9.5, 9), layout="constrained")
    for i, (cube, when, title) in enumerate(cubes):
        frame = cube.sel(time=[pd.Timestamp(when)]).load()
        ax = fig.add_subplot(2, 2, i + 1, projection=gplot.projection_for(frame))
        gplot.plot_map(frame, ax=ax, natural_earth=ne, colorbar=(i % 2 == 1),
                       title=f"{title}\n{when}")
    return fig


def motion_figure(cube: xr.Dataset, when, ne, save) -> None:
    """The observed frame with its motion (geostp.motion: pysteps' Lucas-Kanade) as arrows."""
    import geostp
    import geostp.plot as gplot

    motion = geostp.motion(cube, when)
    ax = gplot.plot_map(cube, time=when, motion=motion, natural_earth=ne)
    u, v = (float(motion.sel(component=c).median()) for c in ("u", "v"))
    points = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")
    towards = points[int(round(np.degrees(np.arctan2(u, v)) % 360 / 45)) % 8]
    save(ax.figure, "motion.png",
         f"The same frame with the motion of its rain drawn as arrows in the map's projection. The field is "
         f"`geostp.motion`'s (pysteps' Lucas-Kanade on the three newest frames in dBR), labelled on the cube's "
         f"grid in m/s along the grid's east and north axes: the rain moves {np.hypot(u, v):.0f} m/s towards "
         f"the {towards} (median components).",
         f'motion = geostp.motion(cube, "{pd.Timestamp(when)}")  # method="VET", "DARTS", "proesmans"\n'
         f'gplot.plot_map(cube, time="{pd.Timestamp(when)}", motion=motion)')


# ----------------------------------------------------------------------------- figures


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path``: two builds in one checkout must not draw over each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make(outdir: Path = DEFAULT_OUT, *, force: bool = False, quiet: bool = False) -> list[Path]:
    """Draw every gallery picture into ``outdir`` and write its ``figures.md``; return the files.

    Pictures already made from the same code and data are reused unless ``force``.
    """
    outdir = Path(outdir)
    with _locked(outdir.parent / f".{outdir.name}.lock"):
        return _make(outdir, force=force, quiet=quiet)


def _make(outdir: Path, *, force: bool, quiet: bool) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import geostp.plot as gplot
    from geostp import metrics

    data = data_dir()
    if data is not None:
        os.environ.setdefault("GEOSTP_DATA", str(data))  # the catalogs' sources read it
    stamp = _stamp(data)
    figures_md = outdir / "figures.md"
    if not force and (outdir / STAMP).exists() and (outdir / STAMP).read_text() == stamp and figures_md.exists():
        if not quiet:
            print(f"gallery: up to date in {outdir}")
        return sorted(outdir.iterdir())
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.iterdir():
        if old.is_file():
            old.unlink()
    t0 = time.perf_counter()
    ne = data / "natural_earth" if data is not None else False
    sections: list[str] = []

    def save(fig, name: str, caption: str, code: str) -> None:
        fig.savefig(outdir / name, dpi=90)
        plt.close(fig)
        sections.append(_figure(name, caption, code))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pysteps' and cartopy's deprecation chatter
        if data is not None:
            cube = mch_cube(data)
            where = ("MeteoSwiss radar composite, 2016-07-11 (the pysteps example data; "
                     "provider: MeteoSwiss)")
            fc_all = extrapolation_nowcasts(cube, REF_INDICES)
        else:
            cube = synthetic_cube()
            where = "the embedded synthetic radar (the shared real data folder was not found)"
            fc_all = None
        obs_time = cube["time"].values[REF_INDICES[0]]

        ax = gplot.plot_map(cube, time=obs_time, natural_earth=ne)
        save(ax.figure, "observed.png",
             f"One observed frame of {where}, on its own Swiss LV03 grid, with coastlines, borders "
             "and lakes from the local Natural Earth folder. Grey: no data (outside radar range); "
             "white: dry.",
             f'gplot.plot_map(cube, time="{pd.Timestamp(obs_time)}")')

        if fc_all is not None:
            motion_figure(cube, obs_time, ne, save)
            fc = fc_all.isel(time=0)
            fig = gplot.plot_panel(fc, ["5min", "15min", "30min", "60min"], ncols=2, natural_earth=ne)
            save(fig, "nowcast_panel.png",
                 "A one-hour extrapolation nowcast (pysteps' Lucas-Kanade motion and semi-Lagrangian "
                 "advection, labelled by geostp.cube.forecast_to_dataarray) at four lead times.",
                 'gplot.plot_panel(forecast, ["5min", "15min", "30min", "60min"], ncols=2)')

            fig = gplot.plot_comparison(fc, cube, ["10min", "30min", "60min"], natural_earth=ne)
            save(fig, "observed_vs_nowcast.png",
                 "Observation beside forecast: the observed frame at each forecast's valid time "
                 "(top) above the nowcast (bottom).",
                 'gplot.plot_comparison(forecast, cube, ["10min", "30min", "60min"])')

            gif = gplot.animate(fc, outdir / "nowcast.gif", fps=3, dpi=60, natural_earth=ne)
            sections.append(_figure(gif.name, "The same nowcast as an animation over its twelve lead times.",
                                    'gplot.animate(forecast, "nowcast.gif", fps=3)'))

            observed = metrics.align_observations(fc_all, cube["precipitation"])
            table = xr.concat(
                [metrics.verify(f, observed, metrics=["csi"], thresholds=[1.0, 5.0])
                 for f in (fc_all, persistence(cube, fc_all))],
                dim=pd.Index(["pysteps extrapolation", "persistence"], name="model"),
            )
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained", sharey=True)
            gplot.plot_scores(table, "csi_1", ax=axes[0], ylabel="CSI", title="CSI at 1 mm/h")
            gplot.plot_scores(table, "csi_5", ax=axes[1], ylabel="CSI", title="CSI at 5 mm/h")
            save(fig, "csi.png",
                 f"Verification curves: critical success index against lead time, averaged over "
                 f"{len(REF_INDICES)} reference times of the event, for the extrapolation nowcast "
                 "and persistence (scores from geostp.metrics.verify).",
                 'table = xr.concat([verify(f, observed, metrics=["csi"], thresholds=[1, 5]) for f in runs],\n'
                 '                  dim=pd.Index(["pysteps extrapolation", "persistence"], name="model"))\n'
                 'gplot.plot_scores(table, "csi_1")')

            fig = four_radars(ne)
            if fig is not None:
                save(fig, "four_radars.png",
                     "The four radar composites of the shared data, each opened from the `radar` catalog "
                     "and drawn in its own projection from its CF grid mapping, with rain rate on one "
                     "scale. Data: MeteoSwiss; KNMI; Royal Meteorological Institute of Belgium (not for "
                     "commercial use); © Commonwealth of Australia, Bureau of Meteorology.",
                     'frame = open_catalog("radar").open("knmi").sel(time=["2010-08-26 06:30"])\n'
                     'ax = fig.add_subplot(2, 2, 2, projection=gplot.projection_for(frame))\n'
                     'gplot.plot_map(frame, ax=ax)')

            mnist = data / "mnist"
            if mnist.is_dir():
                from geostp.data.synthetic import moving_mnist

                clip = moving_mnist(1, split="test", mnist_dir=mnist)["intensity"].isel(sequence=0)
                fig = gplot.plot_panel(clip, times=[0, 5, 10, 15], ncols=4, figsize=(9, 2.8))
                save(fig, "moving_mnist.png",
                     "Data without a grid mapping (Moving MNIST, from the MNIST test digits) is drawn as a "
                     "plain image with a continuous colour scale.",
                     'gplot.plot_panel(clip, times=[0, 5, 10, 15], ncols=4)')
        else:
            fc = _synthetic_forecast(cube)
            fig = gplot.plot_panel(fc, natural_earth=ne)
            save(fig, "nowcast_panel.png",
                 "A panel of lead times of a stand-in forecast (the last observed frame, shifted).",
                 "gplot.plot_panel(forecast)")

    header = (f"*Drawn from {where} by `docs/gallery.py` in {time.perf_counter() - t0:.0f} s "
              f"(`import geostp.plot as gplot`).*\n\n")
    figures_md.write_text(header + "\n".join(sections))
    (outdir / STAMP).write_text(stamp)
    if not quiet:
        print(f"gallery: {len(sections)} figures in {outdir} ({time.perf_counter() - t0:.1f} s)")
    return sorted(outdir.iterdir())


def _synthetic_forecast(cube: xr.Dataset) -> xr.DataArray:
    from geostp.cube import forecast_to_dataarray

    last = cube["precipitation"].values[-7]
    values = np.stack([np.roll(last, 2 * k, axis=1) for k in range(1, 7)])[:, None]
    return forecast_to_dataarray(values, cube.isel(time=slice(None, -6)),
                                 reference_time=cube["time"].values[-7], variables=["precipitation"],
                                 attrs={"model": "shifted persistence"})


def _figure(name: str, caption: str, code: str) -> str:
    return (f"```{{figure}} /_generated/gallery/{name}\n:alt: {caption.split('.')[0]}\n\n{caption}\n```\n\n"
            f"```python\n{code}\n```\n")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    make(out, force=True)
