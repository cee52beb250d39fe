"""geostp as a real package: catalogs and example recipes as package data, the command line's help, CRS
descriptions, CF-complete forecast files written with one encoding, and lead times given as timedeltas."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from geostp.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
CATALOGS = sorted(p.name for p in (REPO / "geostp" / "catalogs").glob("*.yaml"))
EXAMPLES = sorted(p.name for p in (REPO / "geostp" / "recipes" / "examples").glob("*.yaml"))


# ----------------------------------------------------------------------------- package data


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of geostp built from a copy of the sources (the checkout gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO / "geostp", src / "geostp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    # without build isolation where setuptools is at hand (quicker, and no index needed)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                             "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = (tmp / "dist").glob("geostp-*.whl")
    return path


def test_the_wheel_holds_every_catalog_and_example_recipe(wheel):
    assert CATALOGS and "synthetic.yaml" in CATALOGS and "mch_tau.yaml" in EXAMPLES
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"geostp/catalogs/{n}" for n in CATALOGS} <= names
    assert {f"geostp/recipes/examples/{n}" for n in EXAMPLES} <= names
    assert {"geostp/weights/tau_radar.pt", "geostp/weights/tau_radar.json"} <= names


#: Names in this environment's site-packages that are geostp itself (the editable install): a fresh environment
#: must not see them, only the wheel.
_OWN = ("geostp", "__editable__", "__editable___geostp")


@pytest.fixture(scope="module")
def wheel_env(wheel, tmp_path_factory) -> dict:
    """A fresh virtual environment outside the checkout with the wheel installed, as a user gets it.

    Installing the dependencies again would download gigabytes (torch) and need the network, so the new
    environment sees this one's third-party packages through a ``.pth`` file that names a folder of links to
    them, geostp's own editable install left out. pip then installs the wheel with the CPU constraints and
    resolves its declared dependencies against those packages: every one must already be satisfied (nothing
    is downloaded), so the test runs offline and checks that the wheel's requirements agree with the
    constraints.
    """
    import sysconfig
    import time

    tmp = tmp_path_factory.mktemp("wheel-env")
    started = time.perf_counter()
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    ours = Path(sysconfig.get_paths()["purelib"])
    deps = tmp / "deps"
    deps.mkdir()
    for entry in ours.iterdir():
        if not entry.name.startswith(_OWN) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    rel = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    purelib = env_dir / rel
    assert purelib.is_dir(), purelib
    (purelib / "geostp_test_dependencies.pth").write_text(f"{deps}\n")
    python = env_dir / "bin" / "python"
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-cache-dir",
                             "-c", str(REPO / "constraints" / "cpu.txt"), str(wheel)],
                            cwd=tmp, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "Successfully installed geostp-" in log, log
    assert "Downloading" not in log and "Collecting torch" not in log, log  # every dependency was satisfied
    env = {k: v for k, v in os.environ.items() if k not in ("GEOSTP_CATALOGS", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env["GEOSTP_MODEL_STORE"] = str(tmp / "model-store")
    return {"dir": env_dir, "python": python, "geostp": env_dir / "bin" / "geostp", "purelib": purelib,
            "env": env, "cwd": tmp, "seconds": time.perf_counter() - started}


def _run_in(wheel_env: dict, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=wheel_env["cwd"], env={**wheel_env["env"], **env},
                          capture_output=True, text=True, timeout=timeout)


def test_an_installed_wheel_finds_its_catalogs_and_recipes_away_from_the_checkout(wheel_env):
    purelib = str(wheel_env["purelib"])
    code = (
        "import geostp\n"
        "from geostp.data.catalog import catalog_dirs, open_catalog\n"
        "cat = open_catalog('synthetic')\n"
        "print(geostp.__file__, cat.path, [str(d) for d in catalog_dirs()], sep='\\n')\n"
    )
    result = _run_in(wheel_env, wheel_env["python"], "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr
    module, catalog, dirs = result.stdout.splitlines()
    assert module.startswith(purelib) and catalog.startswith(purelib), (module, catalog)
    assert dirs == str([f"{purelib}/geostp/catalogs"])
    result = _run_in(wheel_env, wheel_env["geostp"], "catalogs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synthetic:" in result.stdout and "radar_small" in result.stdout and purelib in result.stdout
    result = _run_in(wheel_env, wheel_env["geostp"], "run", "mch_tau", "--check")
    assert result.returncode == 0 and "name: mch_tau" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_the_demo_runs_from_an_installed_wheel(wheel_env):
    out = wheel_env["cwd"] / "demo-out"
    result = _run_in(wheel_env, wheel_env["geostp"], "demo", "--quiet", "--out", out, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("[1/4] ingested", "[2/4] tau: the pretrained", "[3/4] verification", "[4/4] wrote"):
        assert stage in result.stdout, result.stdout
    assert "its lead gate set on the newest 6 windows of the history" in result.stdout, result.stdout
    (nc,) = out.glob("nowcast_*.nc")
    assert (out / "synthetic_radar.zarr").is_dir() and nc.stat().st_size > 10_000


@pytest.mark.realdata
@pytest.mark.slow
def test_an_example_recipe_runs_from_an_installed_wheel(wheel_env, shared_data):
    """moving_mnist_tau, by name, shrunk to one iteration of a tiny TAU (the same --set values as
    tests/test_recipes.py)."""
    out = wheel_env["cwd"] / "recipe-out"
    tiny = "{spatial_hidden_channels: 4, temporal_hidden_channels: 8, spatial_blocks: 2, temporal_blocks: 2}"
    sets = [f"output.dir={out}", "training.max_iterations=1", "training.batch_size=2", "training.progress=false",
            f"model.args={tiny}", "data.windows={input_steps: 2, output_steps: 2}", "data.args={n_sequences: 40}",
            "evaluation.max_cases=1", "evaluation.steps=2"]
    result = _run_in(wheel_env, wheel_env["geostp"], "run", "moving_mnist_tau", "--quiet",
                     *sum((["--set", s] for s in sets), []), GEOSTP_DATA=str(shared_data))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "model.pt").is_file() and (out / "scores.json").is_file()
    assert f"wrote {out / 'model.pt'}" in result.stdout


def test_the_catalogs_come_through_importlib_resources(monkeypatch, tmp_path):
    from importlib.resources import files

    from geostp.data import catalog

    monkeypatch.delenv("GEOSTP_CATALOGS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert str(catalog.builtin_catalog_dir()) == str(files("geostp") / "catalogs")
    assert sorted(catalog.catalog_files()) == [n[: -len(".yaml")] for n in CATALOGS]
    # a user's folder in $GEOSTP_CATALOGS comes first, and wins over a built-in catalog of the same name
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "synthetic.yaml").write_text("description: mine\nsources:\n  a: {adapter: synthetic_radar}\n")
    monkeypatch.setenv("GEOSTP_CATALOGS", str(mine))
    assert catalog.open_catalog("synthetic").description == "mine"
    assert catalog.open_catalog("radar").path.name == "radar.yaml"


def test_geostp_catalogs_says_where_it_looked_when_it_finds_none(monkeypatch, tmp_path, capsys):
    from geostp.data import catalog

    monkeypatch.setenv("GEOSTP_CATALOGS", str(tmp_path / "nothing"))
    monkeypatch.setattr(catalog, "builtin_catalog_dir", lambda: tmp_path / "empty")
    assert main(["catalogs"]) == 1
    err = capsys.readouterr().err
    assert "no catalog found" in err and str(tmp_path / "nothing") in err and str(tmp_path / "empty") in err


def test_run_takes_an_example_recipe_by_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "mch_nowcast.yaml", "--check"]) == 0
    assert "kind: nowcast" in capsys.readouterr().out
    assert main(["run", "recipes/not_there.yaml", "--check"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "mch_tau" in err
    # the checkout's recipes/ is the same folder as the package's examples
    assert sorted(p.name for p in (REPO / "recipes").glob("*.yaml")) == EXAMPLES


# ----------------------------------------------------------------------------- command line


def test_every_command_has_a_one_line_help_listed_by_geostp_help(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"demo", "ingest", "info", "catalogs", "models", "run", "nowcast"}
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name in sub.choices:
        assert helps.get(name) and "\n" not in helps[name] and len(helps[name]) <= 64, name
        assert f"    {name}" in text and helps[name] in " ".join(text.split()), name


def test_info_names_a_projection_without_an_epsg_code():
    import pyproj

    from geostp.cube import crs_summary

    knmi = pyproj.CRS.from_proj4("+proj=stere +lat_0=90 +lat_ts=60 +lon_0=0 +x_0=0 +y_0=0 +a=6378137 "
                                 "+rf=298.252840776245 +units=m +no_defs")
    text = crs_summary(knmi)
    assert text.startswith("Polar Stereographic (variant B), no EPSG code (+proj=stere +lat_0=90 +lat_ts=60")
    assert "+a=6378137 +rf=298.253" in text and "unknown" not in text
    mch = pyproj.CRS.from_proj4("+proj=somerc +lat_0=46.9524055555556 +lon_0=7.43958333333333 +k_0=1 "
                                "+x_0=600000 +y_0=200000 +ellps=bessel +towgs84=674.374,15.056,405.346,0,0,0,0 "
                                "+units=m +no_defs")
    assert crs_summary(mch).startswith("Hotine Oblique Mercator (variant B), no EPSG code (+proj=somerc")
    assert "towgs84" not in crs_summary(mch)
    assert crs_summary(pyproj.CRS(21781)).startswith("CH1903 / LV03 [Hotine Oblique Mercator (variant B)], "
                                                     "EPSG:21781 (+proj=somerc")


@pytest.mark.realdata
def test_geostp_info_on_a_knmi_store(shared_data, tmp_path, monkeypatch, capsys):
    import warnings

    from geostp.data.catalog import open_catalog
    from geostp.store import ingest

    monkeypatch.setenv("GEOSTP_DATA", str(shared_data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = open_catalog("radar").open("knmi").isel(time=slice(0, 2))
        store = ingest(cube, tmp_path / "knmi.zarr", progress=False)
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "crs: Polar Stereographic (variant B), no EPSG code (+proj=stere" in out and "unknown" not in out


# ----------------------------------------------------------------------------- lead times on maps and in tables


def _tiny_forecast():
    import numpy as np
    import pandas as pd
    import xarray as xr

    leads = pd.to_timedelta([5, 10, 15], unit="min")
    return xr.DataArray(np.arange(3 * 8 * 6, dtype=np.float32).reshape(3, 8, 6), dims=("lead_time", "y", "x"),
                        coords={"lead_time": leads, "y": np.arange(8.0), "x": np.arange(6.0)},
                        name="precipitation", attrs={"units": "mm h-1"})


def test_a_lead_time_may_be_any_timedelta():
    import datetime

    import numpy as np
    import pandas as pd

    from geostp.errors import GeostpError
    from geostp.plot import select_field

    fc = _tiny_forecast()
    forms = [fc.lead_time.values[-1], np.timedelta64(15, "m"), np.timedelta64(900, "s"),
             np.timedelta64(900_000, "ms"), np.timedelta64(15 * 60 * 10**9, "ns"), pd.Timedelta("15min"),
             datetime.timedelta(minutes=15), fc.lead_time[-1], fc.lead_time.isel(lead_time=-1).values,
             "15min", "PT15M", 15, 15.0]
    for lead in forms:
        field = select_field(fc, lead)
        assert field.lead_time.values == np.timedelta64(15, "m"), lead
    with pytest.raises(GeostpError, match="no such lead time; available: 5 min, 10 min, 15 min"):
        select_field(fc, np.timedelta64(20, "m"))
    with pytest.raises(GeostpError, match="not a lead time"):
        select_field(fc, np.timedelta64("NaT"))


def test_plot_map_takes_the_forecasts_own_lead_time():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geostp.plot import plot_map

    fc = _tiny_forecast()
    for lead in (fc.lead_time.values[-1], fc.lead_time[-1]):
        ax = plot_map(fc, lead, colorbar=False)
        assert "+15 min" in ax.get_title()
        plt.close(ax.figure)


def test_the_score_table_header_is_readable():
    import numpy as np
    import pandas as pd
    import xarray as xr

    from geostp.evaluate import format_table

    leads = pd.to_timedelta([5, 10, 60], unit="min")
    scores = xr.Dataset({"mse": (("model", "lead_time"), np.ones((2, 3))), "csi": (("model", "lead_time"),
                                                                                    np.zeros((2, 3)))},
                        coords={"model": ["tau", "sprog"], "lead_time": leads})
    header, *rows = format_table(scores).splitlines()
    assert header.split() == ["model", "score", "5", "min", "10", "min", "60", "min"]
    assert len(rows) == 4 and all(len(r) == len(header) for r in rows)
    assert rows[0].split() == ["tau", "mse", "1", "1", "1"]


# ----------------------------------------------------------------------------- CF forecast files


CF_VERSION = "cf:1.8"
# compliance-checker 6.1's CF-1.7+ table asks oblique_mercator for 'azimuth'; CF Appendix F names the
# attribute azimuth_of_central_line, which the file has (cf-conventions pull request 86)
CHECKER_TYPO = "azimuth is a required attribute for grid mapping oblique_mercator"


@pytest.fixture(scope="module")
def forecasts():
    """A one-reference-time and a three-reference-time persistence forecast of the synthetic radar."""
    import warnings

    from geostp.api import forecast
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = synthetic_radar(n_times=8, ny=24, nx=20, seed=0).load()
        one = forecast(cube, "persistence", 3, progress=False)
        many = forecast(cube, "persistence", 3, reference_times=cube.time.values[-3:], progress=False)
    return one, many


def _polar_stereographic(fc):
    """The same forecast on KNMI's polar stereographic grid (a projection without an EPSG code), its grid
    mapping an int64 scalar as numpy makes one."""
    import pyproj
    import xarray as xr

    from geostp.conventions import crs_attrs

    crs = pyproj.CRS.from_proj4("+proj=stere +lat_0=90 +lat_ts=60 +lon_0=0 +x_0=0 +y_0=0 +a=6378137 "
                                "+rf=298.252840776245 +units=m +no_defs")
    return fc.assign_coords({fc.attrs["grid_mapping"]: xr.DataArray(0, attrs=crs_attrs(crs))})


def test_forecast_files_carry_the_cf_times(forecasts, tmp_path):
    import numpy as np
    import xarray as xr

    from geostp.writers import CONVENTIONS, write_forecast

    one, many = forecasts
    assert CONVENTIONS == "CF-1.8"
    with xr.open_dataset(write_forecast(one, tmp_path / "one.nc")) as ds:
        assert ds["lead_time"].attrs["standard_name"] == "forecast_period"
        assert ds["forecast_reference_time"].attrs["standard_name"] == "forecast_reference_time"
        assert ds["valid_time"].attrs["standard_name"] == "time"
        assert (ds["valid_time"].values == ds["forecast_reference_time"].values + ds["lead_time"].values).all()
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["geostp_model"] == "persistence"
        assert ds.attrs["geostp_version"] and "written by geostp" in ds.attrs["history"]
    with xr.open_dataset(write_forecast(many, tmp_path / "many.nc")) as ds:
        # the reference times are a dimension of their own, never 'time' (which CF tools read as valid time)
        assert "time" not in ds.dims and "time" not in ds.variables
        assert ds["precipitation"].dims == ("lead_time", "forecast_reference_time", "y", "x")
        np.testing.assert_array_equal(ds["forecast_reference_time"].values, many["time"].values)
        assert ds["forecast_reference_time"].attrs["standard_name"] == "forecast_reference_time"
        np.testing.assert_array_equal(ds["valid_time"].transpose("forecast_reference_time", "lead_time").values,
                                      many["valid_time"].values)
        np.testing.assert_array_equal(ds["precipitation"].transpose("forecast_reference_time", ...).values,
                                      many.values)
        assert ds.attrs["forecast_reference_time"] == (f"{many.time.values[0]}"[:19] + "/"
                                                       + f"{many.time.values[-1]}"[:19])
    assert "time" in many.dims and "forecast_reference_time" in many.coords  # the forecast itself is unchanged


def test_cf_xarray_finds_the_forecast_times(forecasts, tmp_path):
    cf_xarray = pytest.importorskip("cf_xarray")  # noqa: F841  (registers the .cf accessor)
    import xarray as xr

    from geostp.writers import write_forecast

    one, many = forecasts
    assert one.cf["forecast_period"].name == "lead_time" and one.cf["time"].name == "valid_time"
    assert one.cf["forecast_reference_time"].name == "forecast_reference_time"
    for fc in (one, many):
        with xr.open_dataset(write_forecast(fc, tmp_path / f"{fc.ndim}.nc")) as ds:
            assert ds.cf["forecast_period"].name == "lead_time"
            assert ds.cf["forecast_reference_time"].name == "forecast_reference_time"
            assert ds.cf["time"].name == "valid_time" and ds.cf.axes["T"] == ["valid_time"]
            assert ds.cf.standard_names["lwe_precipitation_rate"] == ["precipitation"]


def test_a_cf_checker_finds_no_error_or_warning_in_a_forecast_file(forecasts, tmp_path):
    pytest.importorskip("compliance_checker")
    from compliance_checker.runner import CheckSuite

    from geostp.writers import write_forecast

    suite = CheckSuite()
    suite.load_all_available_checkers()
    one, many = forecasts
    for name, fc in (("one", one), ("many", many), ("stereographic", _polar_stereographic(one))):
        path = write_forecast(fc, tmp_path / f"{name}.nc")
        results, errors = suite.run_all(suite.load_dataset(str(path)), [CF_VERSION], skip_checks=[])[CF_VERSION]
        assert not errors, (name, errors)
        failed = [(r.name, [m for m in r.msgs if m != CHECKER_TYPO]) for r in results if r.weight >= 2
                  and (r.value[0] < r.value[1] if isinstance(r.value, tuple) else not r.value)]
        assert [f for f in failed if f[1]] == [], name  # high (must: errors) and medium (should: warnings)


def test_every_writer_shares_the_one_encoding(forecasts, tmp_path):
    """netCDF and zarr: chunked one map per lead time, compressed in netCDF, the same global attributes."""
    import xarray as xr

    from geostp.writers import write_forecasts

    one, many = forecasts
    nc, zarr = write_forecasts(many, [("netcdf", tmp_path / "f.nc"), ("zarr", tmp_path / "f.zarr")],
                               attrs={"input_files": "a.gif"})
    with xr.open_dataset(nc) as a, xr.open_zarr(zarr) as b:
        enc = a["precipitation"].encoding
        assert enc["zlib"] and enc["complevel"] == 1 and enc["shuffle"] and enc["chunksizes"] == (1, 1, 24, 20)
        assert b["precipitation"].encoding["chunks"] == (1, 1, 24, 20)
        assert {k: v for k, v in a.attrs.items() if k != "history"} == \
            {k: v for k, v in b.attrs.items() if k != "history"}
        assert "_FillValue" not in a["x"].encoding and a["lead_time"].encoding["dtype"] == "int32"
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs().load())
    # a dask-backed forecast keeps its own chunks in zarr (zarr chunks straddling dask's would be refused)
    (lazy,) = write_forecasts(one.chunk({"y": 7}), [("zarr", tmp_path / "lazy.zarr")])
    with xr.open_zarr(lazy) as z:
        assert z["precipitation"].encoding["chunks"] == (3, 7, 20)
