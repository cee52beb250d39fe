"""Embedded data: synthetic radar and Moving MNIST (on the real shared MNIST digits)."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest

from geostp.cube import validate_cube
from geostp.data.synthetic import (
    MNIST_TEST_DIGITS,
    MNIST_TRAIN_DIGITS,
    load_mnist_digits,
    moving_mnist,
    read_idx,
    synthetic_radar,
)
from geostp.errors import DataError


def test_synthetic_radar_is_a_valid_deterministic_lazy_cube():
    a = synthetic_radar(30, 64, 64, seed=7)
    b = synthetic_radar(30, 64, 64, seed=7)
    c = synthetic_radar(30, 64, 64, seed=8)
    assert a["precipitation"].chunks is not None
    info = validate_cube(a)
    assert info.step == np.timedelta64(5, "m")
    va, vb, vc = (d["precipitation"].values for d in (a, b, c))
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(va, vc, equal_nan=True)
    # rain that exists, moves and has a no-data area outside the radar range
    wet = np.nan_to_num(va) > 0.1
    assert 0.02 < wet.mean() < 0.9
    assert np.isnan(va[0]).any() and not np.isnan(va[0, 32, 32])
    assert (np.nanmin(va) >= 0) and np.nanmax(va) > 1.0
    assert not np.array_equal(va[0], va[10], equal_nan=True)


def test_synthetic_radar_frames_are_independent_of_chunking():
    a = synthetic_radar(25, 32, 32, seed=4, time_chunk=5)["precipitation"].values
    b = synthetic_radar(25, 32, 32, seed=4, time_chunk=25)["precipitation"].values
    np.testing.assert_array_equal(a, b)


def test_synthetic_radar_georeferencing_round_trips():
    ds = synthetic_radar(2, 16, 16)
    crs = pyproj.CRS.from_cf(dict(ds["crs"].attrs))
    # pixel-centre lon/lat agree with an independent transform from the EPSG definition
    t = pyproj.Transformer.from_crs("EPSG:21781", "EPSG:4326", always_xy=True)
    lon, lat = t.transform(ds.x.values[3], ds.y.values[5])
    assert abs(float(ds.lon[5, 3]) - lon) < 1e-4 and abs(float(ds.lat[5, 3]) - lat) < 1e-4
    t2 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon2, lat2 = t2.transform(ds.x.values[3], ds.y.values[5])
    assert abs(lon2 - lon) < 1e-5 and abs(lat2 - lat) < 1e-5
    # north up: y decreases down the rows; the domain is in Switzerland
    assert ds.y.values[0] > ds.y.values[-1]
    assert 45.8 < float(ds.lat.min()) < float(ds.lat.max()) < 47.9
    assert 5.9 < float(ds.lon.min()) < float(ds.lon.max()) < 10.5


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "x.idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(bad)
    trunc = tmp_path / "t.idx"
    trunc.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(DataError, match="truncated"):
        read_idx(trunc)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing.gz")


def test_real_mnist_digits_and_split(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    train = load_mnist_digits(mnist_dir, "train")
    test = load_mnist_digits(mnist_dir, "test")
    assert len(train) == MNIST_TRAIN_DIGITS.stop and len(test) == 10000 - MNIST_TEST_DIGITS.start
    np.testing.assert_array_equal(test[0], images[MNIST_TEST_DIGITS.start])


def test_moving_mnist_clips(mnist_dir):
    ds = moving_mnist(6, mnist_dir=mnist_dir, seed=1, chunk=4)
    info = validate_cube(ds)
    assert info.dims == ("sequence", "time", "y", "x")
    v = ds["intensity"].values
    assert v.shape == (6, 20, 64, 64) and v.min() >= 0 and v.max() <= 1
    # two digits of about 100-200 lit pixels each, moving between frames
    lit = (v > 0.5).sum(axis=(2, 3))
    assert lit.min() > 50
    assert not np.array_equal(v[0, 0], v[0, 1])
    # clip i depends on (seed, i) only
    again = moving_mnist(3, mnist_dir=mnist_dir, seed=1, chunk=1)["intensity"].values
    np.testing.assert_array_equal(again, v[:3])
    # test clips come from other digits and another seed stream
    test = moving_mnist(3, mnist_dir=mnist_dir, seed=1, split="test")["intensity"].values
    assert not np.array_equal(test[0], v[0])


def test_moving_mnist_digits_only_from_their_split(mnist_dir):
    """Every lit pixel pattern of a test clip's first frame comes from held-back digits only."""
    train = load_mnist_digits(mnist_dir, "train")
    used = moving_mnist(1, digits=train[:1], seed=0)["intensity"].values[0, 0]
    # a single-digit pool: the frame holds at most that digit's pixels (twice, possibly overlapping)
    assert np.isclose(used.max(), train[0].max() / 255.0)
