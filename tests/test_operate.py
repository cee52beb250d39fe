"""The operational feed reads what an adapter declares (FeedSupport); it never inspects argument names."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from geostp.data.adapters import adapters
from geostp.data.feed_support import FeedSupport, feed_support, serves_file_feed
from geostp.errors import ConfigError, GeostpError


def test_an_adapter_without_a_declaration_cannot_serve_a_feed():
    from geostp.operate import FileFeed

    with pytest.raises(GeostpError, match="adapter 'synthetic_radar' cannot serve a file feed"):
        FileFeed("synthetic_radar", {}, files="x/*.nc", time_pattern="f_%Y%m%d%H%M", time_step="5min")
    with pytest.raises(ConfigError, match="cannot serve a file feed"):
        feed_support(lambda **kw: None, "mine")


def test_the_builtin_file_adapters_declare_their_arguments():
    from geostp.operate import FileFeed

    radar = FileFeed("radar", {"importer": "mch_gif", "root": "/archive", "path_fmt": "%Y", "pattern": "old/*.gif",
                               "fn_pattern": "AQC%y%j%H%M?_00005.801", "fn_ext": "gif", "timestep": 5},
                     files="incoming/AQC*.gif")
    assert radar.file_arg == "pattern" and radar.time_pattern == "AQC%y%j%H%M?_00005.801"
    assert radar.extension == "gif" and radar.step == np.timedelta64(5, "m")
    assert set(radar.args) == {"importer", "fn_pattern", "fn_ext", "timestep"}  # the archive's arguments dropped
    nc = FileFeed("netcdf", {"path": "in/*.nc", "variable": "p", "time_step": "10min", "start": "2020"},
                  time_pattern="f_%Y%m%d%H%M", extension="nc")
    assert nc.files == "in/*.nc" and nc.file_arg == "path" and nc.step == np.timedelta64(10, "m")
    assert nc.args == {"variable": "p", "time_step": "10min"}
    with pytest.raises(ConfigError, match="receives the files through its argument 'path'"):
        FileFeed("netcdf", {"path": "in/*.nc", "time_step": 5}, time_pattern="f_%Y%m%d%H%M", file_arg="pattern")
    with pytest.raises(ConfigError, match="time_pattern: required"):
        FileFeed("netcdf", {"path": "in/*.nc", "time_step": 5})


def test_a_declared_third_party_adapter_serves_a_feed_whatever_its_signature(tmp_path, monkeypatch):
    """An adapter taking ``**kwargs`` has no argument names to sniff: its declaration is all the feed reads."""
    from geostp.data.synthetic import synthetic_radar
    from geostp.operate import FileFeed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = synthetic_radar(n_times=2, ny=16, nx=16, seed=1).load()
    seen = []

    @serves_file_feed(FeedSupport(files_arg="inputs", step_arg="every"))
    def my_reader(**kwargs):
        seen.append(kwargs)
        (path,) = kwargs["inputs"]
        t = np.datetime64(pd.Timestamp(path.split("_")[-1].split(".")[0]).to_datetime64(), "ns")
        return cube.isel(time=[0]).assign_coords(time=[t])

    monkeypatch.setitem(adapters._entries, "test_feed_reader", my_reader)  # registered for this test only
    (tmp_path / "obs_202401010005.bin").write_bytes(b"")
    feed = FileFeed("test_feed_reader", {"every": "5min", "inputs": "ignored"}, files=f"{tmp_path}/obs_*.bin",
                    time_pattern="obs_%Y%m%d%H%M", extension="bin")
    files, _ = feed.scan()
    (t,) = files
    frame = feed.read(files[t], t)
    assert frame.data.sizes["time"] == 1 and frame.grid["shape"] == [16, 16]
    assert seen == [{"every": "5min", "inputs": [str(files[t])]}]
    assert feed_support(my_reader) == FeedSupport(files_arg="inputs", step_arg="every")
