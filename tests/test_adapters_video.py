"""Video adapters on tiny files generated here: Moving MNIST .npy, KTH-style frame folders, video files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from geostp.cube import validate_cube
from geostp.data.video import open_frame_folders, open_moving_mnist_npy, open_video_files
from geostp.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- Moving MNIST .npy


def test_moving_mnist_npy_standard_layout(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (6, 5, 16, 16), dtype=np.uint8)  # (T, N, H, W) as mnist_test_seq.npy
    np.save(tmp_path / "mnist_test_seq.npy", raw)
    ds = open_moving_mnist_npy(tmp_path / "mnist_test_seq.npy", chunk=2)
    assert ds["intensity"].dims == ("sequence", "time", "y", "x")
    assert ds.sizes == {"sequence": 5, "time": 6, "y": 16, "x": 16}
    assert ds["intensity"].chunks[0] == (2, 2, 1)
    np.testing.assert_allclose(ds["intensity"].values, raw.transpose(1, 0, 2, 3) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds["intensity"].isel(sequence=3, time=4).values, raw[4, 3] / 255.0, rtol=1e-6)
    info = validate_cube(ds)
    assert info.has_sequence and info.step == 1
    nthw = raw.transpose(1, 0, 2, 3).copy()
    np.save(tmp_path / "nthw.npy", nthw)
    np.testing.assert_array_equal(open_moving_mnist_npy(tmp_path / "nthw.npy", layout="NTHW")["intensity"].values,
                                  ds["intensity"].values)


def test_moving_mnist_npy_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"Moving MNIST file .*absent.npy does not exist"):
        open_moving_mnist_npy(tmp_path / "absent.npy")
    np.save(tmp_path / "three.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"three.npy holds uint8 of shape \(4, 8, 8\); expected uint8 of shape "
                                        r"\(T, N, H, W\)"):
        open_moving_mnist_npy(tmp_path / "three.npy")
    np.save(tmp_path / "float.npy", np.zeros((2, 2, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"float.npy holds float32"):
        open_moving_mnist_npy(tmp_path / "float.npy")
    np.save(tmp_path / "cut.npy", np.zeros((20, 10, 64, 64), np.uint8))
    raw = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match=r"cut.npy could not be read as a .npy array"):
        open_moving_mnist_npy(tmp_path / "cut.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match=r"text.npy could not be read as a .npy array"):
        open_moving_mnist_npy(tmp_path / "text.npy")
    with pytest.raises(ConfigError, match="layout='HWTN'"):
        open_moving_mnist_npy(tmp_path / "three.npy", layout="HWTN")


# ----------------------------------------------------------------------------- frame folders


def _frames_value(seq: int, t: int) -> int:
    return 10 * seq + 2 * t  # encodes the sequence and frame in every pixel


@pytest.fixture
def kth(tmp_path):
    """root/action/person_sequence/image_N.png, grey, with 12, 12 and 7 frames; names unpadded (natural order)."""
    import imageio.v3 as iio

    root = tmp_path / "kth"
    layout = [("boxing", "person01_boxing_d1", 12), ("boxing", "person02_boxing_d1", 12),
              ("walking", "person01_walking_d1", 7)]
    for s, (action, seq, n) in enumerate(layout):
        d = root / action / seq
        d.mkdir(parents=True)
        for t in range(n):
            img = np.full((12, 16), _frames_value(s, t), np.uint8)
            img[0, 0] = 255  # a bright corner: the picture's top-left stays at row 0, column 0
            iio.imwrite(d / f"image_{t + 1}.png", img)
        (d / "notes.txt").write_text("not a frame")
    return root


def test_frame_folders_cut_into_clips(kth):
    ds = open_frame_folders(kth, n_frames=5)
    # 12 frames -> clips at 0 and 5 (2 frames left over); 7 frames -> one clip (2 left over)
    assert ds.sizes == {"sequence": 5, "time": 5, "y": 12, "x": 16}
    assert list(ds["label"].values) == ["boxing"] * 4 + ["walking"]
    assert list(ds["clip_start"].values) == [0, 5, 0, 5, 0]
    assert ds["sequence_name"].values[2] == "boxing/person02_boxing_d1"
    assert ds.attrs["n_frames_dropped"] == 6
    v = ds["intensity"].values
    for k, (seq, start) in enumerate([(0, 0), (0, 5), (1, 0), (1, 5), (2, 0)]):
        for t in range(5):
            assert v[k, t, 5, 5] == pytest.approx(_frames_value(seq, start + t) / 255.0)  # natural frame order
    assert (v[:, :, 0, 0] == 1.0).all()
    validate_cube(ds)
    overlapping = open_frame_folders(kth, n_frames=5, stride=2)
    assert overlapping.sizes["sequence"] == 4 + 4 + 2
    # the clip labels survive a zarr ingest (variable-length strings, which zarr v3 specifies)
    from geostp.store import ingest, open_cube

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = ingest(ds, kth.parent / "kth.zarr", progress=False)
    back = open_cube(store)
    assert list(back["label"].values) == list(ds["label"].values)
    np.testing.assert_array_equal(back["intensity"].values, v)


def test_frame_folders_open_lazily(kth, monkeypatch):
    from geostp.data import video

    read: list[str] = []
    original = video._read_image

    def counting(path):
        read.append(path)
        return original(path)

    monkeypatch.setattr(video, "_read_image", counting)
    ds = open_frame_folders(kth, n_frames=5)
    assert len(read) == 1, "opening reads one frame, for the shape"
    assert ds["intensity"].chunks[0] == (1, 1, 1, 1, 1)
    ds["intensity"].isel(sequence=3).compute()
    assert len(read) == 1 + 5 and all("person02_boxing_d1" in p for p in read[1:])


def test_frame_folders_rgb_and_resize(tmp_path):
    import cv2
    import imageio.v3 as iio

    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (2, 3, 8, 12, 3), dtype=np.uint8)  # 2 sequences x 3 frames, RGB
    for s in range(2):
        d = tmp_path / f"seq{s}"
        d.mkdir()
        for t in range(3):
            iio.imwrite(d / f"f{t:03d}.png", frames[s, t])
    ds = open_frame_folders(tmp_path, depth=1, mode="rgb")
    assert list(ds.data_vars) == ["red", "green", "blue"] and ds.attrs["channels"] == "red, green, blue"
    for c, name in enumerate(("red", "green", "blue")):
        np.testing.assert_allclose(ds[name].values, frames[..., c] / 255.0, rtol=1e-6)
    small = open_frame_folders(tmp_path, depth=1, mode="grey", size=(4, 6))
    assert small.sizes == {"sequence": 2, "time": 3, "y": 4, "x": 6}
    grey = cv2.cvtColor(frames[1, 2], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0  # independent: uint8 path
    expected = cv2.resize(grey, (6, 4), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(small["intensity"].values[1, 2], expected, atol=3e-3)
    assert small["intensity"].values[1, 2].mean() == pytest.approx(grey.mean(), abs=3e-3)


def test_frame_folders_bad_inputs(kth, tmp_path):
    with pytest.raises(DataError, match=r"frame folder root .*missing does not exist"):
        open_frame_folders(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"different numbers of frames \(7..12\); pass n_frames=N"):
        open_frame_folders(kth)
    with pytest.raises(DataError, match=r"no folder 3 level\(s\) below .*kth holds image frames"):
        open_frame_folders(kth, depth=3)
    with pytest.raises(ConfigError, match="mode='cmyk'"):
        open_frame_folders(kth, n_frames=5, mode="cmyk")
    bad = kth / "walking" / "person01_walking_d1" / "image_3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    ds = open_frame_folders(kth, n_frames=5)
    with pytest.raises(DataError, match=r"image_3.png could not be read as an image"):
        ds["intensity"].isel(sequence=4).compute()


# ----------------------------------------------------------------------------- video files


def test_video_files_lossless_avi_and_gif(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (9, 16, 24, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.avi", frames, plugin="FFMPEG", codec="ffv1", pixelformat="bgr0",
                macro_block_size=1, fps=10)
    grey = np.repeat(np.arange(0, 250, 25, dtype=np.uint8)[:, None, None], 16 * 24, 1).reshape(10, 16, 24)
    iio.imwrite(tmp_path / "b.gif", np.repeat(grey[..., None], 3, axis=3), loop=0, duration=100)
    ds = open_video_files(tmp_path / "a.avi", n_frames=4, mode="rgb")
    assert ds.sizes == {"sequence": 2, "time": 4, "y": 16, "x": 24} and ds.attrs["n_frames_dropped"] == 1
    np.testing.assert_allclose(ds["green"].values[1], frames[4:8, ..., 1] / 255.0, rtol=1e-6)  # lossless codec
    np.testing.assert_allclose(ds["blue"].values[0], frames[0:4, ..., 2] / 255.0, rtol=1e-6)
    both = open_video_files(str(tmp_path / "*.*"), n_frames=3, stride=3, clips_per_chunk=2)
    assert both.sizes["sequence"] == 3 + 3
    assert list(both["sequence_name"].values) == ["a.avi"] * 3 + ["b.gif"] * 3
    assert both["intensity"].chunks[0] == (2, 1, 2, 1), "a chunk never spans two videos"
    np.testing.assert_allclose(both["intensity"].values[4, :, 3, 3], grey[3:6, 3, 3] / 255.0, atol=1 / 255)
    validate_cube(both)


def test_video_files_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"pattern .*\*.mp4 matched no video file"):
        open_video_files(str(tmp_path / "*.mp4"))
    (tmp_path / "broken.avi").write_bytes(b"RIFF0000AVI garbage")
    with pytest.raises(DataError, match=r"broken.avi could not be opened as a video"):
        open_video_files(tmp_path / "broken.avi")
    with pytest.raises(ConfigError, match=r"size=\(0, 4\)"):
        open_video_files(tmp_path / "broken.avi", size=(0, 4))
