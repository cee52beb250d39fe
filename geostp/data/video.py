"""Video as lazy cubes with dims ``sequence, time, y, x``: Moving MNIST ``.npy``, frame folders and video files.

Every video cube holds intensities scaled to [0, 1] (``units '1'``): one
variable ``intensity`` for grey, or three, ``red``, ``green``, ``blue``, for
colour (in that order, the channel order of the model tensor).  ``time`` is
the frame index within a clip and ``y``/``x`` are pixel indices (row 0 at the
top of the picture, as images are stored).  A ``sequence`` is one clip;
long recordings are cut into clips of ``n_frames`` frames every ``stride``
frames.  Frames are read when computed: opening lists the files and reads one
frame (or the header of each video) for the shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from geostp.checks import as_path
from geostp.conventions import resolve_files
from geostp.errors import ConfigError, DataError

__all__ = ["open_moving_mnist_npy", "open_frame_folders", "open_video_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".gif", ".mpg", ".mpeg")
MODES = ("grey", "rgb")
RGB = ("red", "green", "blue")


def _intensity_attrs(name: str) -> dict[str, Any]:
    long = "pixel intensity" if name == "intensity" else f"{name} channel intensity"
    return {"long_name": long, "units": "1", "valid_range": [0.0, 1.0]}


# ----------------------------------------------------------------------------- Moving MNIST .npy


def _mnist_block(path: str, layout: str, block_info=None) -> np.ndarray:
    (s0, s1), (t0, t1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    raw = np.load(path, mmap_mode="r")
    part = raw[t0:t1, s0:s1] if layout == "TNHW" else raw[s0:s1, t0:t1]
    part = np.asarray(part[..., y0:y1, x0:x1])
    if layout == "TNHW":
        part = part.transpose(1, 0, 2, 3)
    return part.astype(np.float32) / np.float32(255.0)


def open_moving_mnist_npy(
    path: str | os.PathLike[str],
    *,
    layout: str = "TNHW",
    chunk: int = 256,
) -> xr.Dataset:
    """Moving MNIST in the standard ``mnist_test_seq.npy`` layout as a lazy cube.

    Parameters
    ----------
    path
        The ``.npy`` file: uint8 of shape ``(T, N, H, W)`` (the standard file
        is ``(20, 10000, 64, 64)``).
    layout
        ``'TNHW'`` (the standard file) or ``'NTHW'``.
    chunk
        Sequences per dask chunk.

    Returns
    -------
    xarray.Dataset
        ``intensity`` in [0, 1] with dims ``sequence, time, y, x``; the file is
        memory-mapped per chunk when computed.
    """
    p = as_path(path, "path", expected="a Moving MNIST .npy file")
    if not p.is_file():
        raise DataError(f"Moving MNIST file {p} does not exist; expected mnist_test_seq.npy "
                        "(uint8, T x N x 64 x 64)")
    if layout not in ("TNHW", "NTHW"):
        raise ConfigError(f"layout={layout!r}; expected 'TNHW' (mnist_test_seq.npy) or 'NTHW'")
    try:
        raw = np.load(p, mmap_mode="r")
    except Exception as exc:  # not .npy, truncated: numpy raises ValueError or OSError
        raise DataError(f"{p} could not be read as a .npy array ({type(exc).__name__}: {exc}); expected "
                        "mnist_test_seq.npy: uint8, shape (T, N, H, W)") from None
    if not isinstance(raw, np.ndarray) or raw.ndim != 4 or raw.dtype != np.uint8:
        raise DataError(f"{p} holds {getattr(raw, 'dtype', type(raw).__name__)} of shape "
                        f"{getattr(raw, 'shape', '?')}; expected uint8 of shape (T, N, H, W) like mnist_test_seq.npy")
    if layout == "TNHW":
        nt, ns, ny, nx = raw.shape
    else:
        ns, nt, ny, nx = raw.shape
    del raw
    chunks = (tuple(min(chunk, ns - i) for i in range(0, ns, chunk)), (nt,), (ny,), (nx,))
    data = da.map_blocks(_mnist_block, str(p), layout, chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0), np.float32))
    return xr.Dataset(
        {"intensity": (("sequence", "time", "y", "x"), data, _intensity_attrs("intensity"))},
        coords={"sequence": np.arange(ns), "time": np.arange(nt), "y": np.arange(ny), "x": np.arange(nx)},
        attrs={"title": "Moving MNIST", "source": str(p), "geostp_adapter": "moving_mnist_npy",
               "source_layout": layout, "comment": "uint8 / 255"},
    )


# ----------------------------------------------------------------------------- shared frame handling


def _check_mode(mode: str) -> str:
    m = {"gray": "grey", "l": "grey", "color": "rgb", "colour": "rgb"}.get(mode.lower(), mode.lower())
    if m not in MODES:
        raise ConfigError(f"mode={mode!r}; expected 'grey' (one variable 'intensity') or 'rgb' (red, green, blue)")
    return m


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size={size!r}; expected (height, width) in pixels or one int for a square") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"size={size!r}; expected positive height and width")
    return h, w


def _to_planes(frame: np.ndarray, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One frame (H, W) or (H, W, C) of any integer or float dtype -> (C, h, w) float32 in [0, 1]."""
    import cv2

    f = np.asarray(frame)
    if np.issubdtype(f.dtype, np.integer):
        f = f.astype(np.float32) / np.float32(np.iinfo(f.dtype).max)
    else:
        f = f.astype(np.float32)
    if f.ndim == 3 and f.shape[2] == 1:
        f = f[..., 0]
    if f.ndim == 3:
        f = f[..., :3]  # drop alpha
        if mode == "grey":
            f = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)  # ITU-R BT.601 luma: 0.299 R + 0.587 G + 0.114 B
    elif mode == "rgb":
        f = np.repeat(f[..., None], 3, axis=2)
    if size is not None and f.shape[:2] != size:
        f = cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)  # area averaging: no aliasing
    if f.ndim == 2:
        return f[None]
    return np.moveaxis(f, 2, 0)


def _clip_starts(n_available: int, n_frames: int, stride: int) -> list[int]:
    return list(range(0, n_available - n_frames + 1, stride))


def _video_cube(data: da.Array, mode: str, n_frames: int, shape: tuple[int, int], seq_coords: dict[str, Any],
                attrs: dict[str, Any]) -> xr.Dataset:
    names = ("intensity",) if mode == "grey" else RGB
    data_vars = {v: (("sequence", "time", "y", "x"), data[:, :, c], _intensity_attrs(v))
                 for c, v in enumerate(names)}
    n_seq = data.shape[0]
    coords: dict[str, Any] = {"sequence": np.arange(n_seq), "time": np.arange(n_frames),
                              "y": np.arange(shape[0]), "x": np.arange(shape[1])}
    coords.update({k: ("sequence", v) for k, v in seq_coords.items()})
    return xr.Dataset(data_vars, coords=coords, attrs={**attrs, "channels": ", ".join(names)})


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


# ----------------------------------------------------------------------------- frame folders


@dataclass(frozen=True)
class _Clip:
    frames: tuple[str, ...]


def _read_image(p: str) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(p))
    except Exception as exc:  # imageio and its plugins raise many kinds
        raise DataError(f"{p} could not be read as an image ({type(exc).__name__}: {exc}); expected an image "
                        f"file ({', '.join(IMAGE_SUFFIXES)})") from None


def _folder_block(clips: list[_Clip], mode: str, size: tuple[int, int] | None, nc: int, shape: tuple[int, int],
                  block_info=None) -> np.ndarray:
    (s0, s1), (t0, t1) = block_info[None]["array-location"][:2]
    out = np.empty((s1 - s0, t1 - t0, nc, *shape), np.float32)
    for k, s in enumerate(range(s0, s1)):
        for j, t in enumerate(range(t0, t1)):
            planes = _to_planes(_read_image(clips[s].frames[t]), mode, size)
            if planes.shape[1:] != shape:
                raise DataError(f"{clips[s].frames[t]} is {planes.shape[1]} x {planes.shape[2]} pixels; expected "
                                f"{shape[0]} x {shape[1]} like the first frame (pass size=(h, w) to resize all)")
            out[k, j] = planes
    return out


# Over 80 lines: a third is its parameter docstring.
def open_frame_folders(
    root: str | os.PathLike[str],
    *,
    depth: int = 2,
    n_frames: int | None = None,
    stride: int | None = None,
    mode: str = "grey",
    size: Any = None,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> xr.Dataset:
    """Folders of image frames (the KTH layout ``root/action/person_sequence/frame_0001.png``) as a lazy cube.

    Parameters
    ----------
    root
        The top folder.
    depth
        How deep below ``root`` the sequence folders are (2 for
        ``action/sequence``; 1 for ``sequence``). The first path component is
        kept as the ``label`` coordinate of each clip.
    n_frames, stride
        Cut every sequence folder into clips of ``n_frames`` frames, one every
        ``stride`` frames (default ``n_frames``: no overlap); frames left over
        at the end are dropped (counted in ``attrs``). Without ``n_frames``,
        each folder is one clip and all must have the same number of frames.
    mode
        ``'grey'`` (variable ``intensity``) or ``'rgb'`` (``red``, ``green``,
        ``blue``); colour frames become grey by ITU-R BT.601 luma, grey frames
        become RGB by repetition.
    size
        ``(height, width)`` to resize every frame to (area averaging).
    suffixes
        File endings counted as frames; frames sort in natural order
        (``img2`` before ``img10``).
    """
    mode = _check_mode(mode)
    size = _check_size(size)
    top = as_path(root, "root", expected="a folder of frame folders")
    if not top.is_dir():
        raise DataError(f"frame folder root {top} does not exist; expected folders of image frames "
                        f"{'/'.join(['*'] * depth)}/<frames> below it")
    folders = sorted(d for d in top.glob("/".join(["*"] * depth)) if d.is_dir())
    sequences = []
    for d in folders:
        frames = sorted((f for f in d.iterdir() if f.is_file() and f.suffix.lower() in suffixes), key=_natural_key)
        if frames:
            sequences.append((d, frames))
    if not sequences:
        raise DataError(f"no folder {depth} level(s) below {top} holds image frames ({', '.join(suffixes)}); "
                        f"expected the KTH layout {top}/{'/'.join(['<name>'] * depth)}/<frames>")
    lengths = [len(f) for _, f in sequences]
    if n_frames is None:
        if len(set(lengths)) > 1:
            raise ConfigError(f"sequence folders below {top} have different numbers of frames "
                              f"({min(lengths)}..{max(lengths)}); pass n_frames=N (and stride) to cut clips")
        n_frames = lengths[0]
    stride = int(stride or n_frames)
    if n_frames <= 0 or stride <= 0:
        raise ConfigError(f"n_frames={n_frames}, stride={stride}; expected positive numbers")
    clips, names, labels, starts, dropped = [], [], [], [], 0
    for d, frames in sequences:
        cut = _clip_starts(len(frames), n_frames, stride)
        dropped += len(frames) - (cut[-1] + n_frames if cut else 0)
        for s in cut:
            clips.append(_Clip(tuple(str(f) for f in frames[s: s + n_frames])))
            rel = d.relative_to(top)
            names.append(rel.as_posix())
            labels.append(rel.parts[0])
            starts.append(s)
    if not clips:
        raise ConfigError(f"no sequence below {top} has n_frames={n_frames} frames (longest: {max(lengths)})")
    first = _to_planes(_read_image(clips[0].frames[0]), mode, size)  # the one frame read at open time
    nc, shape = first.shape[0], first.shape[1:]
    chunks = ((1,) * len(clips), (n_frames,), (nc,), (shape[0],), (shape[1],))
    data = da.map_blocks(_folder_block, clips, mode, size, nc, shape, chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0, 0), np.float32))
    return _video_cube(data, mode, n_frames, shape,
                       {"sequence_name": np.array(names, dtype=object), "label": np.array(labels, dtype=object),
                        "clip_start": np.array(starts)},
                       {"title": "frame folders", "source": str(top), "geostp_adapter": "frame_folders",
                        "n_frames_dropped": int(dropped), "stride": stride})


# ----------------------------------------------------------------------------- video files


def _count_frames(p: Path) -> tuple[int, tuple[int, ...]]:
    """Frame count and frame shape of a video, from its header (ffmpeg counts packets when the header has no count)."""
    import imageio.v3 as iio

    try:
        props = iio.improps(p)
    except Exception as exc:
        raise DataError(f"{p} could not be opened as a video ({type(exc).__name__}: {exc}); expected a video "
                        f"file ({', '.join(VIDEO_SUFFIXES)})") from None
    n = props.n_images
    shape = tuple(int(s) for s in props.shape[1:]) if props.is_batch else tuple(int(s) for s in props.shape)
    if n is None or not np.isfinite(n):
        import imageio_ffmpeg

        try:
            n, _ = imageio_ffmpeg.count_frames_and_secs(str(p))
        except Exception as exc:
            raise DataError(f"{p}: ffmpeg could not count its frames ({type(exc).__name__}: {exc})") from None
    if not props.is_batch and n is None:
        n = 1
    return int(n), shape


def _video_block(videos: list[str], clip_video: np.ndarray, clip_start: np.ndarray, n_frames: int, mode: str,
                 size: tuple[int, int] | None, nc: int, shape: tuple[int, int], block_info=None) -> np.ndarray:
    import imageio.v3 as iio

    (s0, s1) = block_info[None]["array-location"][0]
    out = np.empty((s1 - s0, n_frames, nc, *shape), np.float32)
    video = videos[clip_video[s0]]  # a block holds clips of one video: decode it once, in order
    first, last = int(clip_start[s0]), int(clip_start[s1 - 1]) + n_frames
    try:
        frames = []
        for i, frame in enumerate(iio.imiter(video)):
            if i >= last:
                break
            if i >= first:
                frames.append(_to_planes(frame, mode, size))
    except Exception as exc:
        raise DataError(f"{video} could not be decoded ({type(exc).__name__}: {exc})") from None
    if len(frames) < last - first:
        raise DataError(f"{video} ended after {first + len(frames)} frames; expected at least {last}")
    for k, s in enumerate(range(s0, s1)):
        o = int(clip_start[s]) - first
        out[k] = np.stack(frames[o: o + n_frames])
    return out


def open_video_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    n_frames: int | None = None,
    stride: int | None = None,
    mode: str = "grey",
    size: Any = None,
    clips_per_chunk: int = 16,
) -> xr.Dataset:
    """Video files (anything imageio reads: AVI, MP4, MKV, animated GIF, ...) as a lazy cube.

    Parameters
    ----------
    paths
        A file, a folder, a glob pattern, or a list of them.
    n_frames, stride
        Cut every video into clips of ``n_frames`` frames every ``stride``
        frames (default: no overlap); without ``n_frames`` each video is one
        clip and all must have the same length.
    mode, size
        As for :func:`open_frame_folders`.
    clips_per_chunk
        Clips of one video decoded together (a dask chunk never spans two videos).
    """
    mode = _check_mode(mode)
    size = _check_size(size)
    files = resolve_files(paths, what="video file", suffixes=VIDEO_SUFFIXES, argument="paths")
    counts = []
    shape0 = None
    for p in files:
        n, shape = _count_frames(p)
        counts.append(n)
        if shape0 is None:
            shape0 = shape
        elif size is None and shape[:2] != shape0[:2]:
            raise DataError(f"{p} has frames of {shape[:2]} pixels; expected {shape0[:2]} like {files[0]} "
                            "(pass size=(h, w) to resize all)")
    if n_frames is None:
        if len(set(counts)) > 1:
            raise ConfigError(f"the videos have different numbers of frames ({min(counts)}..{max(counts)}); "
                              "pass n_frames=N (and stride) to cut clips")
        n_frames = counts[0]
    stride = int(stride or n_frames)
    if n_frames <= 0 or stride <= 0:
        raise ConfigError(f"n_frames={n_frames}, stride={stride}; expected positive numbers")
    clip_video, clip_start, chunk_sizes, dropped = [], [], [], 0
    for v, n in enumerate(counts):
        cut = _clip_starts(n, n_frames, stride)
        dropped += n - (cut[-1] + n_frames if cut else 0)
        clip_video.extend([v] * len(cut))
        clip_start.extend(cut)
        chunk_sizes.extend(min(clips_per_chunk, len(cut) - i) for i in range(0, len(cut), clips_per_chunk))
    if not clip_video:
        raise ConfigError(f"no video is {n_frames} frames long (longest: {max(counts)})")
    assert shape0 is not None
    out_shape = size if size is not None else shape0[:2]
    nc = 1 if mode == "grey" else 3
    chunks = (tuple(chunk_sizes), (n_frames,), (nc,), (out_shape[0],), (out_shape[1],))
    cv, cs = np.array(clip_video), np.array(clip_start)
    data = da.map_blocks(_video_block, [str(f) for f in files], cv, cs, n_frames, mode, size, nc,
                         tuple(out_shape), chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0, 0), np.float32))
    return _video_cube(data, mode, n_frames, tuple(out_shape),
                       {"sequence_name": np.array([files[v].name for v in clip_video], dtype=object),
                        "clip_start": cs},
                       {"title": "video files", "source": str(paths) if isinstance(paths, (str, os.PathLike))
                        else f"{len(files)} files", "geostp_adapter": "video_files",
                        "n_frames_dropped": int(dropped), "stride": stride})
