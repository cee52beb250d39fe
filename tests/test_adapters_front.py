"""The adapter front: names, third-party adapters from the ``geostp.adapters`` entry points, one open_source."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import geostp.data.adapters as front
import geostp.registry as registry
from geostp.data.adapters import (
    AdapterArgumentsError,
    Source,
    UnknownAdapterError,
    get_adapter,
    names,
    open_source,
)
from geostp.data.catalog import open_catalog
from geostp.errors import ConfigError, UnknownNameError


@pytest.fixture
def plugins(monkeypatch):
    """Two installed packages' entry points: one that loads, one whose module is missing."""
    declared = [
        EntryPoint(name="Plugin_Radar", value="geostp.data.synthetic:synthetic_radar", group=front.ENTRY_POINT_GROUP),
        EntryPoint(name="broken", value="no_such_module_xyz:open_it", group=front.ENTRY_POINT_GROUP),
        EntryPoint(name="radar", value="no_such_module_xyz:shadowed", group=front.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep for ep in declared if ep.group == group])
    # a loaded plugin registers itself: keep the registry as it was for the other tests
    monkeypatch.setattr(front.adapters, "_entries", dict(front.adapters._entries))
    return declared


def test_builtin_names_and_one_open_for_adapters_and_catalog_sources():
    assert {"radar", "netcdf", "synthetic_radar", "zarr_cube", "taxibj"} <= set(names())
    a = open_source("synthetic_radar", {"n_times": 4, "ny": 8, "nx": 8})
    source = open_catalog("synthetic").source("radar_small")
    assert isinstance(source, Source) and source.adapter == "synthetic_radar" and source.label == "synthetic:radar_small"
    b = open_source(source, {"n_times": 4, "ny": 8, "nx": 8})  # the given arguments override the catalog's
    assert a.sizes == b.sizes == {"time": 4, "y": 8, "x": 8}


def test_errors_say_what_was_wrong():
    with pytest.raises(UnknownNameError, match="unknown adapter 'radr'; registered adapters are: .*radar"):
        open_source("radr")
    with pytest.raises(UnknownAdapterError):
        get_adapter("")
    with pytest.raises(AdapterArgumentsError, match=r"rejected the arguments \['colour', 'n_times'\]: "
                                                    r"unknown argument colour \(it takes n_times, "):
        open_source("synthetic_radar", {"n_times": 3, "colour": "red"})
    with pytest.raises(ConfigError, match="missing required argument paths"):
        open_source("taxibj", {})
    with pytest.raises(ConfigError, match=r"an adapter name or a catalog.s Source; got 3 \(int\)"):
        open_source(3)  # type: ignore[arg-type]


def test_installed_packages_add_adapters_through_entry_points(plugins):
    assert {"plugin_radar", "broken"} <= set(names())
    cube = open_source("plugin_radar", {"n_times": 3, "ny": 8, "nx": 8})
    assert cube.sizes["time"] == 3
    assert "plugin_radar" in front.adapters._entries  # loaded once, then registered
    assert get_adapter("radar") is front.adapters.get("radar")  # a built-in name wins over an entry point
    with pytest.raises(ConfigError, match="adapter 'broken' .*no_such_module_xyz:open_it.* could not be loaded: "
                                          "ModuleNotFoundError"):
        open_source("broken")
