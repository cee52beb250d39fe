"""The TaxiBJ-layout adapter: the real TaxiNYC files (hourly, repeated and missing hours) and generated 30-min files."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
import pytest

from geostp.cube import find_gaps, validate_cube
from geostp.data.catalog import open_catalog
from geostp.data.crowdflow import open_taxibj
from geostp.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- the real TaxiNYC files


def _independent_index(files):
    """Times, file and row of every slot, counted with h5py and pandas only."""
    rows = []
    for f in files:
        with h5py.File(f, "r") as h:
            for i, d in enumerate(h["date"][...]):
                s = d.decode()
                rows.append((pd.Timestamp(s[:8]) + pd.Timedelta(hours=int(s[8:])), f, i))
    return pd.DataFrame(rows, columns=["time", "file", "row"])


@pytest.fixture(scope="module")
def taxinyc(shared_data):
    files = sorted((shared_data / "crowdflow" / "taxinyc").glob("NYC1?_Taxi_M16x8_T60_InOut.h5"))
    assert len(files) == 3
    return files


def test_taxinyc_regular_hourly_axis_gaps_and_duplicates(taxinyc, shared_data):
    old = os.environ.get("GEOSTP_DATA")
    os.environ["GEOSTP_DATA"] = str(shared_data)
    try:
        cat = open_catalog("crowdflow")
        ds = cat.open("taxinyc")
    finally:
        if old is None:
            os.environ.pop("GEOSTP_DATA")
        else:
            os.environ["GEOSTP_DATA"] = old
    idx = _independent_index(taxinyc)
    counts = idx.groupby("time").size()
    full = pd.date_range(counts.index.min(), counts.index.max(), freq="h")
    n_missing = len(full) - len(counts)
    # what the files hold, counted independently
    assert len(idx) == 24384 and len(counts) == 24216
    assert (counts > 1).sum() == 168 and counts.max() == 2 and n_missing == 2088

    info = validate_cube(ds, source="taxinyc")
    assert set(info.variables) == {"inflow", "outflow"} and info.sizes == {"time": 24216, "y": 16, "x": 8}
    assert pd.Timedelta(info.step) == pd.Timedelta("1h") and ds.attrs["time_step"] == "1h"
    np.testing.assert_array_equal(ds["time"].values, counts.index.values.astype("datetime64[ns]"))
    assert np.all(np.diff(ds["time"].values) % np.timedelta64(1, "h") == np.timedelta64(0, "ns"))
    gaps = find_gaps(ds)
    missing_days = full.difference(counts.index).normalize().unique()
    assert len(missing_days) == 3 * 29 and sum(g.missing for g in gaps) == n_missing
    assert [(str(pd.Timestamp(g.after)), g.missing) for g in gaps] == [
        (f"{y}-09-01 23:00:00", 696) for y in (2010, 2011, 2012)]
    assert ds.attrs["n_missing_steps"] == 2088 and ds.attrs["n_duplicate_slots"] == 168
    assert ds.attrs["n_duplicate_slots_differing"] == 168 and ds.attrs["duplicate_policy"] == "sum"
    assert ds.attrs["slots_per_day"] == 24 and ds.attrs["first_slot"] == 0

    # the catalog's policy adds the copies of a duplicated hour; a single hour is read as it is
    dup_time = counts.index[counts > 1][5]
    single_time = counts.index[counts == 1][1000]
    with h5py.File(taxinyc[0], "r") as h10:
        data = h10["data"][...]
    copies = idx[(idx.time == dup_time) & (idx.file == taxinyc[0])].row.to_numpy()
    assert copies.size == 2
    got_in = ds["inflow"].sel(time=dup_time).values
    got_out = ds["outflow"].sel(time=dup_time).values
    np.testing.assert_allclose(got_in, data[copies[0], 0] + data[copies[1], 0])
    np.testing.assert_allclose(got_out, data[copies[0], 1] + data[copies[1], 1])
    (row,) = idx[idx.time == single_time].row.to_numpy()
    np.testing.assert_array_equal(ds["outflow"].sel(time=single_time).values, data[row, 1])
    # the artefact the policy repairs: one copy of a quarter's first day has no channel-0 flow at all
    day = idx[(idx.file == taxinyc[0]) & (idx.time.dt.normalize() == pd.Timestamp("2010-04-01"))].row.to_numpy()
    assert day.size == 48 and data[day[:24], 0].sum() == 0 and data[day[24:], 0].sum() > 1e5


def test_taxinyc_default_refuses_differing_duplicates(taxinyc):
    with pytest.raises(DataError, match=r"NYC10_Taxi_M16x8_T60_InOut.h5: slot 2010-04-01 00:00:00 occurs 2 times "
                                        r"with different values \(one of 168 duplicated slots.*choose "
                                        r"duplicates='first', 'last' or 'sum'"):
        open_taxibj(taxinyc)
    first = open_taxibj(taxinyc, duplicates="first")
    last = open_taxibj(taxinyc, duplicates="last")
    t = np.datetime64("2010-04-01T08:00")
    with h5py.File(taxinyc[0], "r") as h:
        dates = [d.decode() for d in h["date"][...]]
        rows = [i for i, d in enumerate(dates) if d == "2010040108"]
        data = h["data"][rows]
    np.testing.assert_array_equal(first["inflow"].sel(time=t).values, data[0, 0])
    np.testing.assert_array_equal(last["inflow"].sel(time=t).values, data[1, 0])
    assert first.attrs["n_duplicate_rows_dropped"] == 168 and first.sizes["time"] == 24216


# ----------------------------------------------------------------------------- generated 30-minute files


def _write(path, dates: list[str], data: np.ndarray, chunks=None):
    with h5py.File(path, "w") as h:
        h.create_dataset("data", data=data, chunks=chunks)
        h.create_dataset("date", data=np.array([d.encode() for d in dates], dtype="S10"))


def _half_hour_file(path, day: str, slots, rng, extra=()):
    dates = [f"{day}{s:02d}" for s in slots] + [d for d, _ in extra]
    data = rng.integers(0, 50, (len(dates), 2, 4, 3)).astype(np.float64)
    for k, (_, row) in enumerate(extra):
        data[len(slots) + k] = row
    _write(path, dates, data)
    return dates, data


def test_half_hour_layout_several_files(tmp_path):
    rng = np.random.default_rng(1)
    d1, x1 = _half_hour_file(tmp_path / "BJ13.h5", "20130301", range(1, 49), rng)
    slots2 = [s for s in range(1, 49) if s not in (10, 11, 12)]  # 3 missing slots
    d2, x2 = _half_hour_file(tmp_path / "BJ14.h5", "20130302", slots2, rng,
                             extra=[("2013030220", None)])  # a repeated slot ...
    with h5py.File(tmp_path / "BJ14.h5", "r+") as h:  # ... holding the same values as its first copy
        h["data"][len(slots2)] = h["data"][slots2.index(20)]
    ds = open_taxibj(str(tmp_path / "BJ1?.h5"))
    assert ds.attrs["slots_per_day"] == 48 and ds.attrs["first_slot"] == 1 and ds.attrs["time_step"] == "30min"
    assert ds.sizes["time"] == 48 + 45
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2013-03-01 00:00")  # slot 01 starts the day
    assert pd.Timestamp(ds["time"].values[47]) == pd.Timestamp("2013-03-01 23:30")  # slot 48 ends it
    (gap,) = find_gaps(ds)
    assert gap.missing == 3 and pd.Timestamp(gap.after) == pd.Timestamp("2013-03-02 04:00")
    assert ds.attrs["n_duplicate_slots"] == 1 and ds.attrs["n_duplicate_slots_equal"] == 1
    assert ds.attrs["n_duplicate_slots_differing"] == 0 and ds.attrs["n_duplicate_rows_dropped"] == 1
    np.testing.assert_array_equal(ds["inflow"].values[:48], x1[:, 0])
    np.testing.assert_array_equal(ds["outflow"].values[48:], x2[:45, 1])
    assert ds["inflow"].dtype == np.float32 and ds["inflow"].attrs["units"] == "1"
    assert validate_cube(ds).crs_wkt is None and list(ds["y"].values) == [0, 1, 2, 3]


def test_differing_duplicate_policies(tmp_path):
    rng = np.random.default_rng(2)
    a = np.full((2, 4, 3), 5.0)
    _, x = _half_hour_file(tmp_path / "f.h5", "20150101", range(1, 5), rng, extra=[("2015010102", a)])
    # only slots 01-04: nothing tells half hours from hours, so the layout is said explicitly
    with pytest.raises(DataError, match=r"f.h5: slot 2015-01-01 00:30:00 occurs 2 times with different values"):
        open_taxibj(tmp_path / "f.h5", slots_per_day=48)
    assert open_taxibj(tmp_path / "f.h5", duplicates="first").attrs["time_step"] == "1h"  # the inferred default
    t = np.datetime64("2015-01-01T00:30")
    sel = {p: open_taxibj(tmp_path / "f.h5", duplicates=p, slots_per_day=48)["inflow"].sel(time=t).values
           for p in ("first", "last", "sum")}
    np.testing.assert_array_equal(sel["first"], x[1, 0])
    np.testing.assert_array_equal(sel["last"], a[0])
    np.testing.assert_array_equal(sel["sum"], x[1, 0] + a[0])
    with pytest.raises(ConfigError, match="duplicates='mean' is not a policy; expected one of raise, first"):
        open_taxibj(tmp_path / "f.h5", duplicates="mean")


def test_opening_reads_no_flow_values(tmp_path, monkeypatch):
    from geostp.data import crowdflow

    rng = np.random.default_rng(3)
    _, x = _half_hour_file(tmp_path / "f.h5", "20150101", range(1, 49), rng)
    reads = []
    original = crowdflow._read_block

    def counting(*args, block_info=None, **kwargs):
        reads.append(block_info[None]["array-location"][0])
        return original(*args, block_info=block_info, **kwargs)

    monkeypatch.setattr(crowdflow, "_read_block", counting)
    ds = open_taxibj(tmp_path / "f.h5", time_chunk=12)
    assert reads == [] and ds["inflow"].chunks[0] == (12, 12, 12, 12)
    np.testing.assert_array_equal(ds["outflow"].isel(time=30).values, x[30, 1])
    assert reads == [(24, 36)]


def test_bad_crowdflow_inputs(tmp_path):
    with pytest.raises(DataError, match=r"crowd-flow file .*nope.h5 does not exist"):
        open_taxibj(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DataError, match=r"text.h5 is not an HDF5 file \(starts with b'hello'\); expected the "
                                        r"TaxiBJ layout"):
        open_taxibj(tmp_path / "text.h5")
    with h5py.File(tmp_path / "nodate.h5", "w") as h:
        h["data"] = np.zeros((2, 2, 3, 3))
    with pytest.raises(DataError, match=r"nodate.h5 has no dataset 'date' \(it has 'data'\); expected"):
        open_taxibj(tmp_path / "nodate.h5")
    _write(tmp_path / "shape.h5", ["2015010101"], np.zeros((1, 3, 4, 4)))
    with pytest.raises(DataError, match=r"shape.h5: 'data' has shape \(1, 3, 4, 4\); expected \(T, 2, H, W\)"):
        open_taxibj(tmp_path / "shape.h5")
    _write(tmp_path / "date.h5", ["2015010101", "2015-01-01"], np.zeros((2, 2, 4, 4)))
    with pytest.raises(DataError, match=r"date.h5: date #1 is '2015-01-01'; expected 10 digits YYYYMMDDSS"):
        open_taxibj(tmp_path / "date.h5")
    _write(tmp_path / "day.h5", ["2015023101"], np.zeros((1, 2, 4, 4)))
    with pytest.raises(DataError, match=r"day.h5: date #0 '2015023101' is not a valid day"):
        open_taxibj(tmp_path / "day.h5")
    _write(tmp_path / "slot.h5", ["2015010101", "2015010149"], np.zeros((2, 2, 4, 4)))
    with pytest.raises(DataError, match=r"slot.h5: slot 49 \(date #1\) is outside 01..48"):
        open_taxibj(tmp_path / "slot.h5")
    truncated = tmp_path / "trunc.h5"
    _write(truncated, ["2015010101"] * 1, np.zeros((1, 2, 64, 64)), chunks=None)
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"trunc.h5 could not be read as HDF5 \(.*truncated"):
        open_taxibj(truncated)
