"""geostp as a real package: catalogs and example recipes as package data, the command line's help, CRS
descriptions, CF-complete forecast files written with one encoding, and lead times given as timedeltas."""

from __future__ import annotations

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
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
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


def test_an_installed_wheel_finds_its_catalogs_and_recipes_away_from_the_checkout(wheel, tmp_path):
    """The wheel unpacked into a folder ahead of the editable checkout on the path, run from elsewhere."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, geostp\n"
        f"assert geostp.__file__.startswith({str(site)!r}), geostp.__file__\n"
        "from geostp.data.catalog import catalog_dirs, open_catalog\n"
        "cat = open_catalog('synthetic')\n"
        f"assert str(cat.path).startswith({str(site)!r}) and 'radar_small' in cat.names(), cat.path\n"
        "assert [str(d) for d in catalog_dirs()] == [str(geostp.__path__[0]) + '/catalogs']\n"
        "from geostp.cli import main\n"
        "assert main(['catalogs']) == 0\n"
        "assert main(['run', 'mch_tau', '--check']) == 0\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GEOSTP_CATALOGS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synthetic:" in result.stdout and "radar_small" in result.stdout
    assert "name: mch_tau" in result.stdout


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
    assert set(sub.choices) >= {"demo", "ingest", "info", "catalogs", "run", "nowcast"}
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
