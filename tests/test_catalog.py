"""Catalogs, the registry and the command line."""

from __future__ import annotations

import numpy as np
import pytest

from geostp.cli import main
from geostp.data.catalog import open_catalog
from geostp.errors import ConfigError, UnknownNameError
from geostp.registry import Registry


def test_registry_lists_names_on_unknown():
    reg: Registry[int] = Registry("widget")
    reg.register("b", 2)

    @reg.register("A")
    def a():
        return 1

    assert reg.names() == ["a", "b"] and "A" in reg and reg.get("a") is a
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; registered widgets are: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("b", 3)


def test_builtin_catalog_opens_a_source():
    cat = open_catalog("synthetic")
    assert "radar_small" in cat.names()
    ds = cat.open("radar_small", n_times=5, ny=16, nx=16)
    assert ds.sizes == {"time": 5, "y": 16, "x": 16}


def test_unknown_catalog_and_source():
    with pytest.raises(UnknownNameError, match="no catalog named 'nope'; available catalogs: .*synthetic"):
        open_catalog("nope")
    with pytest.raises(UnknownNameError, match="source 'nope' is not in catalog .* available sources: .*radar_small"):
        open_catalog("synthetic").open("nope")


def test_malformed_catalogs(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("sources:\n  a:\n    adapter: zarr_cube\n    argz: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed catalog: sources.a.argz: Extra inputs"):
        open_catalog(p)
    p.write_text("sources: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        open_catalog(p)
    p.write_text("sources:\n  a:\n    adapter: no_such_adapter\n")
    with pytest.raises(UnknownNameError, match="unknown adapter 'no_such_adapter'; registered adapters are: .*synthetic_radar"):
        open_catalog(p).open("a")


def test_environment_variables_expand(tmp_path, monkeypatch, radar_cube):
    from geostp.store import ingest

    ingest(radar_cube, tmp_path / "c.zarr", progress=False)
    p = tmp_path / "env.yaml"
    p.write_text("sources:\n  c:\n    adapter: zarr_cube\n    args: {path: '${MYROOT}/c.zarr'}\n"
                 "  d:\n    adapter: zarr_cube\n    args: {path: '${UNSET_VAR_XYZ}/c.zarr'}\n")
    monkeypatch.setenv("MYROOT", str(tmp_path))
    cat = open_catalog(p)
    assert cat.open("c").sizes["time"] == 24
    with pytest.raises(ConfigError, match="UNSET_VAR_XYZ is not set"):
        cat.open("d")


def test_cli_demo_runs_the_nowcast_with_the_pretrained_model(tmp_path, capsys, monkeypatch):
    import xarray as xr

    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / "store"))
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "time=192, y=128, x=128" in out and "synthetic_radar.zarr" in out
    assert "tau: the pretrained advection-aware model shipped with geostp" in out
    for model in ("tau", "persistence", "optical_flow", "sprog"):
        assert any(line.split()[:2] == [model, "csi_1"] for line in out.splitlines())
    written = sorted(tmp_path.glob("nowcast_*.nc"))
    assert len(written) == 1
    with xr.open_dataset(written[0]) as fc:
        assert fc["precipitation"].sizes["lead_time"] == 12
        assert fc["precipitation"].attrs["model"] == "lagrangian"
        assert "newest observation" in fc["precipitation"].attrs["advection"]
    assert not list((tmp_path / "store").glob("*.pt"))  # nothing was trained
    assert main(["info", str(tmp_path / "synthetic_radar.zarr")]) == 0
    assert "precipitation [mm h-1]" in capsys.readouterr().out


def test_cli_demo_says_when_a_model_is_too_short_to_be_reused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEOSTP_MODEL_STORE", str(tmp_path / "store"))
    with pytest.warns(UserWarning, match="not cached"):
        assert main(["demo", "--out", str(tmp_path), "--quiet", "--model", "predrnn_v2", "--minutes", "0.03"]) == 0
    out = capsys.readouterr().out
    assert "predrnn_v2: trained:" in out and "NOT cached" in out
    assert not list((tmp_path / "store").glob("*.pt"))


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geostp: error: no cube store at") and "Traceback" not in err
    assert main(["ingest", "nope", "--catalog", "synthetic", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "available sources" in capsys.readouterr().err


def test_cli_ingest(tmp_path, capsys):
    cat = tmp_path / "c.yaml"
    cat.write_text("sources:\n  tiny:\n    adapter: synthetic_radar\n    args: {n_times: 7, ny: 8, nx: 8}\n")
    assert main(["ingest", "tiny", "--catalog", str(cat), "--out", str(tmp_path / "t.zarr"), "--quiet"]) == 0
    from geostp.store import open_cube

    assert np.isfinite(open_cube(tmp_path / "t.zarr")["precipitation"].values).any()
