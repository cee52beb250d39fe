"""Streaming windows x patches: index rules, splits, rain filter, normalisation, dataset order, sharding, memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from geostp.errors import ConfigError, GeostpError
from geostp.store import ingest, open_cube
from geostp.stream import (
    CubeDataset,
    Normalizer,
    RainFilter,
    Split,
    Transform,
    WindowSpec,
    compute_statistics,
    make_loader,
    split_cube,
    window_index,
)
from geostp.testing import as_backend

STEP = np.timedelta64(5, "m")


def make_cube(nt: int = 40, ny: int = 24, nx: int = 20, gap: tuple[int, int] | None = (17, 19),
              seed: int = 0, variables: tuple[str, ...] = ("precipitation",)) -> xr.Dataset:
    """A small rain-like cube: sparse exponential rain, NaN outside a 'radar range' and in a few pixels.

    ``gap`` removes frames ``[a, b)`` of a regular 5-minute axis, leaving a gap.
    """
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-07-01T12:00", periods=nt, freq="5min").values.astype("datetime64[ns]")
    if gap is not None:
        times = np.delete(times, np.arange(*gap))
    n = times.size
    data = {}
    for k, v in enumerate(variables):
        field = np.where(rng.random((n, ny, nx)) < 0.35, rng.exponential(2.0, (n, ny, nx)), 0.0).astype(np.float32)
        field[:, :3, :4] = np.nan  # outside range
        field[rng.random((n, ny, nx)) < 0.01] = np.nan  # failed pixels
        attrs = ({"standard_name": "lwe_precipitation_rate", "units": "mm h-1"} if k == 0
                 else {"long_name": f"field {v}", "units": "1"})
        data[v] = (("time", "y", "x"), field if k == 0 else field * 3 + 1, attrs)
    return xr.Dataset(
        data,
        coords={"time": ("time", times), "y": ("y", 1000.0 * np.arange(ny)[::-1], {"units": "m"}),
                "x": ("x", 1000.0 * np.arange(nx), {"units": "m"})},
        attrs={"time_step": "5min"},
    )


def make_sequence_cube(ns: int = 6, nt: int = 12, size: int = 16) -> xr.Dataset:
    rng = np.random.default_rng(1)
    values = rng.random((ns, nt, size, size)).astype(np.float32)
    return xr.Dataset({"intensity": (("sequence", "time", "y", "x"), values, {"long_name": "intensity", "units": "1"})},
                      coords={"sequence": np.arange(ns), "time": np.arange(nt), "y": np.arange(size),
                              "x": np.arange(size)})


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return make_cube()


@pytest.fixture(scope="module")
def store(tmp_path_factory, cube) -> str:
    path = tmp_path_factory.mktemp("stream") / "cube.zarr"
    return str(ingest(cube, path, time_chunk=8, spatial_chunk=8, progress=False))


def keys(samples: np.ndarray) -> list[tuple[int, int, int, int]]:
    return list(zip(samples["sequence"].tolist(), samples["time"].tolist(), samples["y0"].tolist(),
                    samples["x0"].tolist(), strict=True))


def batch_keys(batch: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int]]:
    return list(zip(batch["sequence_index"].tolist(), batch["time_index"].tolist(), batch["y0"].tolist(),
                    batch["x0"].tolist(), strict=True))


def epoch_keys(ds: CubeDataset, num_workers: int = 0, **kw) -> list[list[tuple[int, int, int, int]]]:
    return [batch_keys(b) for b in make_loader(ds, num_workers, **kw)]


# ----------------------------------------------------------------------------- windows and patches


def brute_force_windows(times: np.ndarray, length: int, stride: int, mask: np.ndarray | None = None) -> list[int]:
    """Window starts by the documented rule, the slow way."""
    mask = np.ones(times.size, bool) if mask is None else mask
    starts, run_start = [], None
    for t in range(times.size):
        if not mask[t]:
            run_start = None
            continue
        if run_start is None or times[t] - times[t - 1] != STEP:
            run_start = t
        if (t - run_start) % stride:
            continue
        end = t + length
        if end <= times.size and mask[t:end].all() and np.all(np.diff(times[t:end]) == STEP):
            starts.append(t)
    return starts


@pytest.mark.parametrize("stride", [1, 3])
def test_windows_never_cross_a_gap_and_stay_in_bounds(cube, stride):
    spec = WindowSpec(3, 2, stride=stride, patch_size=8, patch_stride=4)
    idx = window_index(cube, spec)
    times = cube["time"].values
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    assert len(idx) > 0
    for t in np.unique(idx["time"]):
        span = times[t: t + 5]
        assert span.size == 5 and np.all(np.diff(span) == STEP), f"window at {t} spans a gap"
    assert idx["y0"].min() >= 0 and (idx["y0"] + 8).max() <= ny and (idx["x0"] + 8).max() <= nx
    assert set(idx["y0"].tolist()) == {0, 4, 8, 12, 16} and set(idx["x0"].tolist()) == {0, 4, 8, 12}
    assert sorted(set(idx["time"].tolist())) == brute_force_windows(times, 5, stride)
    # the gap after frame 16 is skipped: windows start before it and again right after it
    assert 17 in idx["time"] and 13 not in idx["time"]


def test_whole_domain_and_random_patches(cube, backend):
    cube = as_backend(cube, backend)
    whole = window_index(cube, WindowSpec(2, 2))
    assert set(whole["y0"].tolist()) == {0} and set(whole["x0"].tolist()) == {0}
    spec = WindowSpec(2, 2, patch_size=(16, 8), random_patches=3)
    a = window_index(cube, spec, seed=1, epoch=0)
    b = window_index(cube, spec, seed=1, epoch=0)
    c = window_index(cube, spec, seed=1, epoch=1)
    assert len(a) == 3 * len(whole)
    assert keys(a) == keys(b)
    assert keys(a) != keys(c)
    assert (a["y0"] + 16).max() <= cube.sizes["y"] and (a["x0"] + 8).max() <= cube.sizes["x"]
    assert np.all(a["y0"] % 2 == 0) and len(set(a["y0"].tolist())) > 2  # random lattice step: 16 // 8 = 2


def test_splits_do_not_leak(cube):
    splits = split_cube(cube, train=0.6, validation=0.2, test=0.2)
    spec = WindowSpec(3, 2, patch_size=8)
    frames = {}
    for name, sp in splits.items():
        idx = window_index(cube, spec, split=sp)
        mask = sp.time_mask(cube)
        covered = {t + k for t in idx["time"].tolist() for k in range(5)}
        assert all(mask[f] for f in covered), f"a {name} window uses a frame outside its split"
        frames[name] = covered
    assert not frames["train"] & frames["validation"]
    assert not frames["validation"] & frames["test"]
    assert not frames["train"] & frames["test"]
    # explicit half-open time ranges; the window at the boundary is left out
    t = cube["time"].values
    sp = split_cube(cube, train=(t[0], t[25]), test=[(t[25], None)])
    last_train = window_index(cube, spec, split=sp["train"])["time"].max()
    assert last_train + 5 <= 25
    with pytest.raises(ConfigError, match="overlap"):
        split_cube(cube, train=(t[0], t[25]), test=(t[20], None))
    assert Split.from_dict(json.loads(json.dumps(sp["train"].to_dict()))).time_mask(cube).tolist() == \
        sp["train"].time_mask(cube).tolist()


def test_sequence_splits_and_windows_stay_within_sequences():
    cube = make_sequence_cube()
    splits = split_cube(cube, train=0.5, test=0.5)
    assert splits["train"].sequences == (0, 1, 2) and splits["test"].sequences == (3, 4, 5)
    spec = WindowSpec(4, 4, stride=2, patch_size=8)
    tr = window_index(cube, spec, split=splits["train"])
    te = window_index(cube, spec, split=splits["test"])
    assert set(tr["sequence"].tolist()) == {0, 1, 2} and set(te["sequence"].tolist()) == {3, 4, 5}
    assert set(tr["time"].tolist()) == {0, 2, 4} and (tr["time"] + 8).max() <= 12


# ----------------------------------------------------------------------------- rain filter


def rain_fraction(values: np.ndarray, t: int, y0: int, x0: int, t_in: int, p: int, thr: float) -> float:
    window = values[t: t + t_in, y0: y0 + p, x0: x0 + p]
    return float(np.mean(np.nan_to_num(window, nan=-1.0) > thr))


def test_rain_filter_keeps_only_patches_meeting_the_rule(store):
    cube = open_cube(store)  # dask-backed: the statistics are a chunked reduction
    values = cube["precipitation"].values
    rule = RainFilter(threshold=1.0, min_fraction=0.22, keep_dry=0.0)
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=4, rain=rule)
    everything = window_index(cube, WindowSpec(3, 2, patch_size=8, patch_stride=4))
    kept = window_index(cube, spec)
    expected = {k for k, s in zip(keys(everything), everything, strict=True)
                if rain_fraction(values, s["time"], s["y0"], s["x0"], 3, 8, 1.0) >= 0.22}
    assert 0 < len(kept) < len(everything)
    assert set(keys(kept)) == expected
    for s in kept[:50]:
        assert s["rain"] == pytest.approx(rain_fraction(values, s["time"], s["y0"], s["x0"], 3, 8, 1.0), abs=1e-6)
    # dry patches survive with probability keep_dry, reproducibly by (seed, epoch)
    lucky = WindowSpec(3, 2, patch_size=8, patch_stride=4, rain=RainFilter(1.0, 0.22, keep_dry=0.3))
    a, b = window_index(cube, lucky, seed=5), window_index(cube, lucky, seed=5)
    c = window_index(cube, lucky, seed=5, epoch=1)
    assert keys(a) == keys(b)
    dry = a[a["rain"] < 0.22]
    n_dry = len(everything) - len(expected)
    assert 0.15 * n_dry < len(dry) < 0.45 * n_dry
    assert set(keys(kept)) <= set(keys(a)) and set(keys(a)) != set(keys(c))


def test_a_loader_whose_epochs_differ_in_length_does_not_warn(cube):
    """Random patches through the rain filter give each epoch its own count of batches."""
    import warnings

    spec = WindowSpec(3, 2, patch_size=8, random_patches=2, rain=RainFilter(1.0, 0.22, keep_dry=0.3))
    dset = CubeDataset(cube, None, spec, batch_size=2, shuffle=True, seed=1)
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "Length of IterableDataset ... was reported to be" included
        loader = make_loader(dset, 0)
        len(loader)  # as a training loop asks once, before its first epoch
        for epoch in range(4):
            dset.set_epoch(epoch)
            counts.append(sum(1 for _ in loader))
            assert counts[-1] == dset.batches_per_epoch(epoch)
    assert len(set(counts)) > 1, f"the epochs should differ in length for this test to mean anything: {counts}"


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("transform", ["none", "log10", "db"])
def test_statistics_match_numpy_over_the_training_split(store, transform):
    cube = open_cube(store)
    splits = split_cube(cube, train=0.5, validation=0.5)
    norm = compute_statistics(cube, ["precipitation"], split=splits["train"], transforms={"precipitation": transform})
    raw = cube["precipitation"].values[splits["train"].time_mask(cube)].astype(np.float64)
    t = Transform(transform)
    ref = t.forward(raw)
    ref = ref[np.isfinite(ref)]
    assert norm.mean["precipitation"] == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
    assert norm.std["precipitation"] == pytest.approx(ref.std(), rel=1e-9)
    assert norm.extra["precipitation"]["count"] == ref.size
    whole = compute_statistics(cube, ["precipitation"], transforms={"precipitation": transform})
    assert whole.mean["precipitation"] != pytest.approx(norm.mean["precipitation"], rel=1e-9)


def test_auto_transform_is_log10_for_rain_rate(backend):
    norm = compute_statistics(as_backend(make_cube(variables=("precipitation", "other")), backend))
    assert norm.transforms["precipitation"] == Transform("log10", offset=0.01)
    assert norm.transforms["other"].kind == "none"


def test_encode_decode_round_trip_numpy_and_torch():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((2, 3, 2, 5, 5)) < 0.5, rng.exponential(3.0, (2, 3, 2, 5, 5)), 0.0).astype(np.float32)
    x[0, 0, 0, 0, 0] = np.nan
    norm = Normalizer(["rain", "wind"], {"rain": Transform("log10"), "wind": Transform("none")},
                      {"rain": -0.7, "wind": 1.2}, {"rain": 0.9, "wind": 2.5}, fill_value=-3.0)
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    z = again.encode(x)
    assert z.shape == x.shape and np.isnan(z[0, 0, 0, 0, 0])
    np.testing.assert_allclose(z[:, :, 1], (x[:, :, 1] - 1.2) / 2.5, rtol=1e-6)
    np.testing.assert_allclose(z[:, :, 0], (np.log10(x[:, :, 0] + 0.01) + 0.7) / 0.9, rtol=1e-5)
    np.testing.assert_allclose(again.decode(z), x, rtol=1e-5, atol=1e-5)
    zt = norm.encode(torch.from_numpy(x))
    assert isinstance(zt, torch.Tensor)
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.decode(zt).numpy(), x, rtol=1e-5, atol=1e-5)
    # dB: exact at or above the threshold, 0 below it
    db = Normalizer(["rain"], {"rain": Transform("db", threshold=0.1)}, {"rain": 5.0}, {"rain": 4.0})
    r = np.array([0.0, 0.05, 0.1, 1.0, 42.0], np.float32)[None, :, None, None]
    back = db.decode(db.encode(r, channel_axis=0), channel_axis=0)
    np.testing.assert_allclose(back.ravel(), [0.0, 0.0, 0.1, 1.0, 42.0], rtol=1e-5)
    back_t = db.decode(db.encode(torch.from_numpy(r), channel_axis=0), channel_axis=0)
    np.testing.assert_allclose(back_t.numpy().ravel(), [0.0, 0.0, 0.1, 1.0, 42.0], rtol=1e-5)


# ----------------------------------------------------------------------------- the dataset


@pytest.mark.parametrize("source", ["store", "cube"])
def test_batches_hold_the_right_pixels_and_masks(store, cube, source):
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=6)
    ds = CubeDataset(store if source == "store" else cube, ["precipitation"], spec, batch_size=7, fill_value=-9.0)
    assert ds.reader_kind == ("zarr" if source == "store" else "xarray")
    values = cube["precipitation"].values
    seen = []
    for batch in make_loader(ds, 0):
        assert batch["x"].shape[1:] == (3, 1, 8, 8) and batch["y"].shape[1:] == (2, 1, 8, 8)
        assert batch["x"].dtype == torch.float32 and batch["mask_x"].dtype == torch.bool
        for b, (_, t, y0, x0) in enumerate(batch_keys(batch)):
            window = values[t: t + 5, y0: y0 + 8, x0: x0 + 8]
            full = torch.cat([batch["x"][b], batch["y"][b]])[:, 0].numpy()
            mask = torch.cat([batch["mask_x"][b], batch["mask_y"][b]])[:, 0].numpy()
            np.testing.assert_array_equal(mask, ~np.isnan(window))
            np.testing.assert_array_equal(full, np.where(np.isnan(window), -9.0, window))
        seen += batch_keys(batch)
    assert sorted(seen) == sorted(keys(window_index(cube, spec)))
    assert not any(np.isnan(values).all(axis=(1, 2)))  # the masks above were not all trivially true
    assert np.isnan(values).any()


def test_normalised_batches_match_the_normalizer(store, cube):
    norm = compute_statistics(open_cube(store), ["precipitation"], fill_value=0.0)
    spec = WindowSpec(2, 1, patch_size=8, patch_stride=8)
    batch = next(iter(make_loader(CubeDataset(store, None, spec, normalizer=norm, batch_size=4), 0)))
    _, t, y0, x0 = batch_keys(batch)[0]
    raw = cube["precipitation"].values[t: t + 2, None, y0: y0 + 8, x0: x0 + 8]
    want = np.nan_to_num(norm.encode(raw), nan=0.0)
    np.testing.assert_allclose(batch["x"][0].numpy(), want, rtol=1e-5, atol=1e-5)
    assert batch["mask_x"][0].numpy().tolist() == np.isfinite(raw).tolist()


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_sharding_two_workers_two_ranks_covers_each_sample_once(store, cube):
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=4)
    everything = keys(window_index(cube, spec))
    seen = []
    for rank in (0, 1):
        ds = CubeDataset(store, None, spec, batch_size=5, rank=rank, world_size=2, seed=3)
        ds.set_epoch(1)
        two = epoch_keys(ds, 2)
        assert two == epoch_keys(ds, 0) == epoch_keys(ds, 3), "order must not depend on num_workers"
        assert [len(b) for b in two[:-1]] == [5] * (len(two) - 1)
        seen += [k for b in two for k in b]
    assert len(seen) == len(everything) and set(seen) == set(everything)


def test_order_is_a_function_of_seed_and_epoch(store):
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=4)
    a = CubeDataset(store, None, spec, batch_size=6, seed=7)
    b = CubeDataset(store, None, spec, batch_size=6, seed=7)
    for ds in (a, b):
        ds.set_epoch(3)
    first = epoch_keys(a)
    assert first == epoch_keys(b, 2)
    a.set_epoch(4)
    assert epoch_keys(a) != first
    c = CubeDataset(store, None, spec, batch_size=6, seed=8)
    c.set_epoch(3)
    assert epoch_keys(c) != first
    assert sorted(k for bt in epoch_keys(c) for k in bt) == sorted(k for bt in first for k in bt)
    # batches mix several read blocks and several times
    assert len({t for _, t, _, _ in first[0]}) > 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_start_batch_gives_the_rest_of_the_epoch(store, num_workers):
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=4)
    ds = CubeDataset(store, None, spec, batch_size=8, seed=1, block_megabytes=0.01)
    ds.set_epoch(2)
    full = [b for b in make_loader(ds, num_workers)]
    ds.set_epoch(2, start_batch=5)
    assert len(ds) == len(full) - 5
    rest = list(make_loader(ds, num_workers))
    assert len(rest) == len(full) - 5
    for a, b in zip(full[5:], rest, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_persistent_workers_follow_set_epoch(store):
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=8)
    ds = CubeDataset(store, None, spec, batch_size=8, seed=2)
    loader = make_loader(ds, 2, persistent_workers=True)
    got = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got.append([batch_keys(b) for b in loader])
    ref = CubeDataset(store, None, spec, batch_size=8, seed=2)
    for epoch in (0, 1):
        ref.set_epoch(epoch)
        assert got[epoch] == epoch_keys(ref)
    assert got[0] != got[1]


def test_drop_last_gives_every_rank_the_same_full_batches(store):
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=4)
    counts = []
    for rank in range(3):
        ds = CubeDataset(store, None, spec, batch_size=7, rank=rank, world_size=3, drop_last=True)
        sizes = [len(b) for b in epoch_keys(ds)]
        assert set(sizes) == {7}
        counts.append(len(sizes))
    assert len(set(counts)) == 1


def test_sequence_cube_dataset(tmp_path):
    cube = make_sequence_cube()
    store = ingest(cube, tmp_path / "seq.zarr", progress=False)
    spec = WindowSpec(5, 5, stride=2, patch_size=None)
    sp = split_cube(cube, train=[0, 2, 4], test=[1, 3, 5], by="sequence")
    ds = CubeDataset(store, None, spec, split=sp["test"], batch_size=4)
    assert ds.reader_kind == "zarr" and ds.block[0] > 1  # several clips per read
    values = cube["intensity"].values
    n = 0
    for batch in make_loader(ds, 0):
        assert batch["x"].shape[1:] == (5, 1, 16, 16)
        for b, (s, t, _, _) in enumerate(batch_keys(batch)):
            assert s in (1, 3, 5)
            np.testing.assert_array_equal(batch["y"][b, :, 0].numpy(), values[s, t + 5: t + 10])
            assert batch["mask_y"][b].all()
            n += 1
    assert n == 3 * 2  # windows start at 0 and 2 in each of the 3 sequences


def test_reference_times_label_the_forecast(store, cube):
    ds = CubeDataset(store, None, WindowSpec(3, 2, patch_size=8), batch_size=4, shuffle=False)
    batch = next(iter(ds))
    t = batch["time_index"].numpy()
    np.testing.assert_array_equal(ds.reference_times(batch), cube["time"].values[t + 2])


# ----------------------------------------------------------------------------- errors


def test_impossible_settings_raise_clear_errors(cube):
    with pytest.raises(ConfigError, match=r"input_steps \+ output_steps = 30 frames does not fit.*longest run of "
                                          r"consecutive frames is 21"):
        window_index(cube, WindowSpec(20, 10))
    with pytest.raises(ConfigError, match=r"patch_size 32x8 .* larger than the grid 24x20"):
        window_index(cube, WindowSpec(2, 2, patch_size=(32, 8)))
    with pytest.raises(ConfigError, match=r"unknown variable 'rainrate'.*\['precipitation'\]"):
        CubeDataset(cube, ["rainrate"], WindowSpec(2, 2))
    empty = Split("validation", time=(("2030-01-01", None),))
    with pytest.raises(ConfigError, match="split 'validation' selects no frames"):
        window_index(cube, WindowSpec(2, 2), split=empty)
    with pytest.raises(ConfigError, match="selects no frames"):
        split_cube(cube, train=("2024-07-01T12:00", "2024-07-01T13:00"), validation=("2031-01-01", None))
    with pytest.raises(ConfigError, match="input_steps=0"):
        WindowSpec(0, 2)
    with pytest.raises(ConfigError, match="min_fraction=1.5"):
        RainFilter(min_fraction=1.5)
    with pytest.raises(GeostpError, match="no sample.* passes the rain filter"):
        CubeDataset(cube, None, WindowSpec(2, 2, patch_size=8, rain=RainFilter(1e6, 0.5, 0.0))).batches_per_epoch()
    norm = Normalizer(["other"], {"other": Transform()}, {"other": 0.0}, {"other": 1.0})
    with pytest.raises(ConfigError, match="no statistics for variable 'precipitation'"):
        CubeDataset(cube, None, WindowSpec(2, 2), normalizer=norm)


# ----------------------------------------------------------------------------- out of core


def test_streaming_an_epoch_stays_under_a_memory_cap(tmp_path):
    """An epoch over a 377 MB cube is streamed (statistics included) under an address-space cap of +300 MB."""
    import dask.array as da

    nt, n = 640, 384
    t = da.arange(nt, chunks=20, dtype=np.float32)[:, None, None]
    yy = da.arange(n, chunks=n, dtype=np.float32)[None, :, None]
    xx = da.arange(n, chunks=n, dtype=np.float32)[None, None, :]
    # moving bands of rain: cheap to generate and to compress, so the test spends its time streaming
    field = (((xx + 3.0 * t) % 97.0 < 9.0) & (yy % 53.0 < 20.0)).astype(np.float32) * (1.0 + t % 7.0)
    cube = xr.Dataset(
        {"precipitation": (("time", "y", "x"), field,
                           {"standard_name": "lwe_precipitation_rate", "units": "mm h-1"})},
        coords={"time": pd.date_range("2024-01-01", periods=nt, freq="5min").values,
                "y": np.arange(n) * 1000.0, "x": np.arange(n) * 1000.0})
    store = ingest(cube, tmp_path / "big.zarr", progress=False)
    nbytes = nt * n * n * 4
    code = f"""
        import re, resource
        import numpy, torch, xarray, zarr, dask
        from geostp.stream import CubeDataset, WindowSpec, compute_statistics, make_loader, split_cube
        from geostp.store import open_cube
        cube = open_cube({str(store)!r})  # starts zarr's threads: libraries and stacks are not headroom
        vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        headroom = 300 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, vm + headroom))
        train = split_cube(cube, train=0.9, test=0.1)["train"]
        norm = compute_statistics(cube, split=train)
        ds = CubeDataset({str(store)!r}, None, WindowSpec(10, 10, stride=20, patch_size=64), split=train,
                         normalizer=norm, batch_size=16, block_megabytes=16, streams=1, shuffle_blocks=2)
        n = 0
        for batch in make_loader(ds, 0):
            n += batch["x"].shape[0]
            assert torch.isfinite(batch["x"]).all()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(n, ds.batches_per_epoch(), rss, headroom)
    """
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    n, n_batches, rss, headroom = (int(v) for v in out.stdout.split())
    assert nbytes > headroom
    assert n == 28 * 36 and n_batches == 63  # 28 windows of 20 frames in the 576-frame split x 6 x 6 patches


def test_reused_shared_memory_never_overwrites_a_batch_still_held(store, cube):
    """Workers recycle the shared blocks of dropped batches, and only those."""
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=2)
    ds = CubeDataset(store, None, spec, batch_size=16, seed=4)
    reference = [torch.cat([b["x"], b["y"]], 1).clone() for b in make_loader(ds, 0)]
    loader = make_loader(ds, 2, prefetch_factor=2)
    kept = {}
    for j, batch in enumerate(loader):
        if j in (0, 7, 30):  # hold a view only: the block must stay untouched while it lives
            kept[j] = (batch["x"][1:], batch["y"][1:])
        assert torch.equal(torch.cat([batch["x"], batch["y"]], 1), reference[j])
        del batch
    assert len(reference) > 40
    for j, (x, y) in kept.items():
        assert torch.equal(torch.cat([x, y], 1), reference[j][1:]), f"batch {j} was overwritten"
    assert loader.releaser.released > len(reference) // 2, "dropped batches' blocks were not recycled"


def test_derived_dask_cube_streams_through_workers_without_hanging(store, cube):
    """A cube computed from the store is read through xarray/dask (synchronous scheduler) in forked workers."""
    derived = open_cube(store).isel(time=slice(2, None))
    derived = derived.assign(precipitation=derived["precipitation"] * 2.0)
    spec = WindowSpec(2, 2, patch_size=8, patch_stride=8)
    ds = CubeDataset(derived, None, spec, batch_size=6, seed=1)
    assert ds.reader_kind == "xarray"
    values = cube["precipitation"].values[2:] * 2.0
    n = 0
    for batch in make_loader(ds, 2, timeout=60):
        for b, (_, t, y0, x0) in enumerate(batch_keys(batch)):
            want = values[t: t + 2, y0: y0 + 8, x0: x0 + 8]
            np.testing.assert_array_equal(batch["x"][b, :, 0].numpy(), np.nan_to_num(want, nan=0.0))
            n += 1
    assert n == len(window_index(derived, spec))


def test_dataset_applies_the_rain_filter_and_random_patches(store, cube):
    rule = RainFilter(threshold=1.0, min_fraction=0.22, keep_dry=0.0)
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=2, random_patches=4, rain=rule)
    ds = CubeDataset(store, None, spec, batch_size=8, seed=9)
    values = cube["precipitation"].values
    epochs = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = [k for b in make_loader(ds, 0) for k in batch_keys(b)]
        assert got and all(rain_fraction(values, t, y0, x0, 3, 8, 1.0) >= 0.22 for _, t, y0, x0 in got)
        assert all(y0 % 2 == 0 and x0 % 2 == 0 for _, _, y0, x0 in got)
        assert sorted(got) == sorted(keys(window_index(cube, spec, seed=9, epoch=epoch)))
        epochs.append(got)
    assert epochs[0] != epochs[1]


def test_spawned_workers_get_the_same_batches(store):
    """With 'spawn' (and forkserver, Python 3.14's default) the dataset is pickled into the workers."""
    spec = WindowSpec(3, 2, patch_size=8, patch_stride=8)
    ds = CubeDataset(store, None, spec, batch_size=8, seed=6)
    ds.set_epoch(3, start_batch=2)
    want = epoch_keys(ds)
    assert epoch_keys(ds, 2, multiprocessing_context="spawn") == want
