"""Embedded data: a georeferenced synthetic radar generator and the Moving MNIST generator.

Both are deterministic by seed and lazy: every frame (radar) or clip (Moving
MNIST) is computed from the seed and its own index alone, inside dask, so a
cube larger than memory can be generated, ingested and sampled piecewise.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from geostp.checks import check_fits, count
from geostp.conventions import crs_attrs, parse_step
from geostp.errors import ConfigError, DataError

__all__ = [
    "synthetic_radar",
    "RadarGrid",
    "SWISS_GRID",
    "read_idx",
    "load_mnist_digits",
    "moving_mnist",
    "MNIST_TRAIN_DIGITS",
    "MNIST_TEST_DIGITS",
]


@dataclass(frozen=True)
class RadarGrid:
    """A regular projected grid: EPSG code, the domain centre (metres) and the pixel size."""

    epsg: int
    centre_x: float
    centre_y: float
    resolution: float


# Swiss LV03 (EPSG:21781), 1 km pixels, centred on Bern (600 km E, 200 km N), so that
# the synthetic radar plots over a real map.
SWISS_GRID = RadarGrid(epsg=21781, centre_x=600_000.0, centre_y=200_000.0, resolution=1000.0)


def _cells(seed: int, n_times: int, ny: int, nx: int, res: float, rate: float):
    """Draw every rain cell of the whole series up front (a few numbers per cell)."""
    rng = np.random.default_rng(seed)
    # One steering wind for the event, 20-60 km/h, plus a small per-cell spread.
    speed = rng.uniform(20.0, 60.0) / 3.6  # m/s
    direction = rng.uniform(0, 2 * np.pi)
    u, v = speed * np.cos(direction), speed * np.sin(direction)
    lifetime_frames = 36.0
    n = max(1, int(rate * (n_times + lifetime_frames)))
    born = rng.uniform(-lifetime_frames, n_times, n)
    life = rng.uniform(0.4, 1.0, n) * lifetime_frames
    # Cells are born anywhere in a domain enlarged upwind, so rain keeps entering.
    margin = 0.6
    cx = rng.uniform(-margin, 1 + margin, n) * nx * res
    cy = rng.uniform(-margin, 1 + margin, n) * ny * res
    cu = u + rng.normal(0, 1.5, n)
    cv = v + rng.normal(0, 1.5, n)
    peak = rng.lognormal(np.log(6.0), 0.8, n).clip(0.5, 120.0)  # mm/h
    radius = rng.uniform(4.0, 14.0, n) * 1000.0  # metres
    return born, life, cx, cy, cu, cv, peak, radius


def _radar_block(block: np.ndarray, cells, ny: int, nx: int, res: float, dt: float,
                 range_mask: np.ndarray, block_info=None) -> np.ndarray:
    born, life, cx, cy, cu, cv, peak, radius = cells
    t_start = block_info[None]["array-location"][0][0]
    nt = block.shape[0]
    xs = (np.arange(nx) + 0.5) * res
    ys = (np.arange(ny) + 0.5) * res
    out = np.zeros((nt, ny, nx), np.float32)
    for k in range(nt):
        t = t_start + k
        age = t - born
        active = np.nonzero((age >= 0) & (age <= life))[0]
        frame = np.zeros((ny, nx), np.float64)
        for i in active:
            # grow, mature, decay: a sine envelope over the cell's life
            strength = peak[i] * np.sin(np.pi * age[i] / life[i]) ** 1.5
            px = cx[i] + cu[i] * age[i] * dt
            py = cy[i] - cv[i] * age[i] * dt  # rows run north to south
            gx = np.exp(-0.5 * ((xs - px) / radius[i]) ** 2)
            gy = np.exp(-0.5 * ((ys - py) / radius[i]) ** 2)
            frame += strength * np.outer(gy, gx)
        frame[frame < 0.1] = 0.0  # below a radar's detection threshold
        frame[~range_mask] = np.nan
        out[k] = frame
    return out


def _number(value: object, argument: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite real number ``>= minimum`` (``> minimum`` when ``strict``), or a ConfigError naming ``argument``."""
    import math
    import numbers

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) and \
        (float(value) > minimum if strict else float(value) >= minimum)
    if not ok:
        raise ConfigError(f"{argument}={value!r:.80}; expected a finite number {'>' if strict else '>='} {minimum:g}")
    return float(value)


#: Bytes held at once per pixel of the grid while the synthetic radar is set up and a block of it is made: the
#: pixel index grids, the distance and range mask, the projected and lon/lat coordinates, one frame being summed.
_RADAR_BYTES_PER_PIXEL = 120
#: Bytes per rain cell drawn up front (eight float64 numbers: birth, life, position, motion, peak, radius).
_RADAR_BYTES_PER_CELL = 64


def _check_radar_arguments(n_times: object, ny: object, nx: object, seed: object, start: object, step: object,
                           grid: object, cells_per_frame: object, radar_range_km: object,
                           time_chunk: object) -> tuple[pd.Timedelta, pd.DatetimeIndex]:
    """Refuse arguments of :func:`synthetic_radar` that are of the wrong type, impossible, or too large for this
    machine's memory (what is set up at once: the time axis, the rain cells, the grids and one block), naming the
    argument; returns the step and the time axis."""
    fn = "synthetic_radar"
    n = count(n_times, f"{fn}: n_times", what="frames")
    h, w = count(ny, f"{fn}: ny", what="rows of pixels"), count(nx, f"{fn}: nx", what="columns of pixels")
    chunk = count(time_chunk, f"{fn}: time_chunk", what="frames per dask chunk")
    count(seed, f"{fn}: seed", minimum=0)
    rate = _number(cells_per_frame, f"{fn}: cells_per_frame")
    if radar_range_km is not None:
        _number(radar_range_km, f"{fn}: radar_range_km", strict=True)
    if not isinstance(grid, RadarGrid):
        raise ConfigError(f"{fn}: grid={grid!r:.80} is a {type(grid).__name__}; expected a RadarGrid")
    dt = parse_step(step, what=f"{fn}: step")
    cells = max(1, int(rate * (n + 36.0)))
    need = 8.0 * n + _RADAR_BYTES_PER_CELL * cells + float(h) * w * (_RADAR_BYTES_PER_PIXEL + 4 * min(chunk, n))
    check_fits(need, f"{fn}: n_times={n}, ny={h}, nx={w} (a time axis of {n} frames, {cells} rain cells, a "
               f"{h} x {w} grid and blocks of {min(chunk, n)} frames)",
               expected="fewer frames or a smaller grid (the cube itself is made block by block)")
    try:
        first = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{fn}: start={start!r:.80} is not a time ({exc}); expected an ISO 8601 time such as "
                          "'2024-07-01T12:00'") from None
    if pd.isna(first):
        raise ConfigError(f"{fn}: start={start!r}; expected a time, not NaT")
    try:  # cubes hold datetime64[ns]: the last time must be one (pandas itself would go on in microseconds)
        last = first.as_unit("ns").value + (n - 1) * dt.as_unit("ns").value
        if not pd.Timestamp.min.value <= last <= pd.Timestamp.max.value:
            raise OverflowError("past the nanosecond time range")
        times = pd.date_range(first, periods=n, freq=dt)
    except (OverflowError, ValueError) as exc:  # pandas' OutOfBoundsDatetime is a ValueError
        raise ConfigError(f"{fn}: {n} frames of {dt} from {first} leave the times a cube can hold "
                          f"({pd.Timestamp.min} .. {pd.Timestamp.max}: {exc}); expected fewer frames, a shorter "
                          "step or another start") from None
    return dt, times


# Over 80 lines: the cell simulation is one sequence of physical steps, documented inline.
def synthetic_radar(
    n_times: int = 96,
    ny: int = 128,
    nx: int = 128,
    *,
    seed: int = 0,
    start: str = "2024-07-01T12:00",
    step: str = "5min",
    grid: RadarGrid = SWISS_GRID,
    cells_per_frame: float = 0.5,
    radar_range_km: float | None = None,
    time_chunk: int = 20,
) -> xr.Dataset:
    """A lazy, georeferenced cube of synthetic rain rate (mm/h) from advecting, growing and decaying cells.

    Parameters
    ----------
    n_times, ny, nx
        Frames and grid size (pixels of ``grid.resolution`` metres).
    seed
        Everything is a function of the seed: the same seed gives the same cube.
    start, step
        The time axis.
    grid
        The projected grid (default: a 1-km piece of the Swiss LV03 grid).
    cells_per_frame
        How many new rain cells are born per frame (sets how rainy it is).
    radar_range_km
        Pixels farther than this from the domain centre are NaN (no data), as
        outside a radar's range. Default: 0.55 of the smaller domain side.
    time_chunk
        Frames per dask chunk.

    Returns
    -------
    xarray.Dataset
        Variable ``precipitation`` (``lwe_precipitation_rate``, ``mm h-1``)
        with dims ``time, y, x``, projection coordinates ``x``/``y`` in metres
        at pixel centres, 2-D ``lat``/``lon`` and a CF grid mapping ``crs``.

    Raises
    ------
    ConfigError
        Naming the argument: a count that is not an integer >= 1 (``n_times``, ``ny``, ``nx``, ``time_chunk``),
        a step that is not a positive interval, a start that is not a time, and sizes whose set-up (the time
        axis, the rain cells, the grids, one block of frames) cannot fit in this machine's memory (the message
        says how much it would need).
    """
    import pyproj

    step_td, time_axis = _check_radar_arguments(n_times, ny, nx, seed, start, step, grid, cells_per_frame,
                                                radar_range_km, time_chunk)
    n_times, ny, nx, time_chunk = int(n_times), int(ny), int(nx), int(time_chunk)
    res = grid.resolution
    dt = step_td.total_seconds()
    cells = _cells(seed, n_times, ny, nx, res, cells_per_frame)
    rr = radar_range_km if radar_range_km is not None else 0.55 * min(ny, nx) * res / 1000.0
    jj, ii = np.mgrid[0:ny, 0:nx]
    dist = np.hypot((ii + 0.5 - nx / 2) * res, (jj + 0.5 - ny / 2) * res) / 1000.0
    range_mask = dist <= rr

    template = da.empty((n_times, ny, nx), chunks=(time_chunk, ny, nx), dtype=np.float32)
    data = da.map_blocks(_radar_block, template, cells, ny, nx, res, dt, range_mask,
                         dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))

    # pixel centres, rows from north to south
    x = grid.centre_x + (np.arange(nx) - (nx - 1) / 2) * res
    y = grid.centre_y - (np.arange(ny) - (ny - 1) / 2) * res
    crs = pyproj.CRS.from_epsg(grid.epsg)
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xx, yy = np.meshgrid(x, y)
    lon, lat = to_lonlat.transform(xx, yy)
    times = time_axis.values.astype("datetime64[ns]")

    ds = xr.Dataset(
        {
            "precipitation": (
                ("time", "y", "x"),
                data,
                {
                    "standard_name": "lwe_precipitation_rate",
                    "long_name": "synthetic radar rain rate",
                    "units": "mm h-1",
                    "grid_mapping": "crs",
                },
            ),
            "crs": ((), np.int32(0), crs_attrs(crs)),
        },
        coords={
            "time": ("time", times, {"standard_name": "time"}),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}),
            "lat": (("y", "x"), lat.astype(np.float32), {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("y", "x"), lon.astype(np.float32), {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={
            "title": "geostp synthetic radar",
            "source": f"geostp.data.synthetic.synthetic_radar(seed={seed})",
            "Conventions": "CF-1.8",
            "time_step": step,
        },
    )
    return ds


# ----------------------------------------------------------------------------- Moving MNIST

#: The shared folder has the 10,000 MNIST *test* digits. Training clips draw their
#: digits from the first 7,000 of them, test clips from the last 3,000, so a test
#: clip never shows a digit image that a training clip used.
MNIST_TRAIN_DIGITS = slice(0, 7000)
MNIST_TEST_DIGITS = slice(7000, 10000)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzip-compressed or not, into a numpy array."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"MNIST file {p} not found; point GEOSTP_MNIST_DIR (or mnist_dir=) at the folder "
                        "holding t10k-images-idx3-ubyte.gz")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{p} could not be read as an IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p} is not an IDX file: bad magic number {raw[:4]!r}; expected 0x0000 then type and rank")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise DataError(f"{p}: unknown IDX element type 0x{raw[2]:02x}")
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{p}: header says shape {shape} but holds {data.size} values; the file is truncated")
    return data.reshape(shape)


def load_mnist_digits(mnist_dir: str | os.PathLike[str] | None = None, split: str = "train") -> np.ndarray:
    """The 28x28 uint8 digit images of one split (``train``: 7,000, ``test``: 3,000)."""
    if mnist_dir is None:
        mnist_dir = os.environ.get("GEOSTP_MNIST_DIR") or (
            Path(os.environ["GEOSTP_DATA"]) / "mnist" if "GEOSTP_DATA" in os.environ else None
        )
    if mnist_dir is None:
        raise DataError("no MNIST folder given: pass mnist_dir= or set GEOSTP_MNIST_DIR / GEOSTP_DATA")
    images = read_idx(Path(mnist_dir) / "t10k-images-idx3-ubyte.gz")
    if split not in ("train", "test"):
        raise DataError(f"unknown Moving MNIST split {split!r}; expected 'train' or 'test'")
    return images[MNIST_TRAIN_DIGITS if split == "train" else MNIST_TEST_DIGITS]


def _moving_mnist_clip(rng: np.random.Generator, digits: np.ndarray, n_frames: int, size: int,
                       n_digits: int, step_length: float) -> np.ndarray:
    """One clip: ``n_digits`` digits bouncing off the walls of a ``size`` square canvas."""
    clip = np.zeros((n_frames, size, size), np.float32)
    room = size - digits.shape[-1]
    for _ in range(n_digits):
        img = digits[rng.integers(len(digits))].astype(np.float32) / 255.0
        theta = rng.uniform(0, 2 * np.pi)
        vy, vx = np.sin(theta), np.cos(theta)
        py, px = rng.uniform(0, 1), rng.uniform(0, 1)
        for t in range(n_frames):
            top, left = int(round(py * room)), int(round(px * room))
            patch = clip[t, top: top + 28, left: left + 28]
            np.maximum(patch, img, out=patch)  # overlapping digits: brighter pixel wins
            py += vy * step_length
            px += vx * step_length
            if py < 0:
                py, vy = -py, -vy
            if py > 1:
                py, vy = 2 - py, -vy
            if px < 0:
                px, vx = -px, -vx
            if px > 1:
                px, vx = 2 - px, -vx
    return clip


def _mnist_block(block: np.ndarray, digits: np.ndarray, seed: int, n_frames: int, size: int,
                 n_digits: int, step_length: float, block_info=None) -> np.ndarray:
    first = block_info[None]["array-location"][0][0]
    out = np.empty(block.shape, np.float32)
    for k in range(block.shape[0]):
        rng = np.random.default_rng([seed, first + k])
        out[k] = _moving_mnist_clip(rng, digits, n_frames, size, n_digits, step_length)
    return out


def moving_mnist(
    n_sequences: int = 10_000,
    *,
    split: str = "train",
    n_frames: int = 20,
    size: int = 64,
    n_digits: int = 2,
    step_length: float = 0.1,
    seed: int = 0,
    mnist_dir: str | os.PathLike[str] | None = None,
    digits: np.ndarray | None = None,
    chunk: int = 256,
) -> xr.Dataset:
    """Moving MNIST as a lazy cube with dims ``sequence, time, y, x``.

    The standard generator (Srivastava et al., 2015): ``n_digits`` real MNIST
    digits move in straight lines at ``step_length`` of the free canvas per
    frame and bounce off the edges; overlaps keep the brighter pixel.  Clip
    ``i`` is a function of ``(seed, i)`` alone.  ``split`` chooses the digits
    (see ``MNIST_TRAIN_DIGITS``/``MNIST_TEST_DIGITS``); test clips use a
    different seed stream too, so they never repeat a training clip.
    """
    fn = "moving_mnist"
    n_sequences, n_frames = count(n_sequences, f"{fn}: n_sequences"), count(n_frames, f"{fn}: n_frames")
    size, chunk = count(size, f"{fn}: size", what="pixels per side"), count(chunk, f"{fn}: chunk")
    n_digits, seed = count(n_digits, f"{fn}: n_digits", minimum=0), count(seed, f"{fn}: seed", minimum=0)
    step_length = _number(step_length, f"{fn}: step_length")
    if split not in ("train", "test"):
        raise ConfigError(f"{fn}: split={split!r}; expected 'train' or 'test'")
    check_fits(8.0 * n_sequences + 8.0 * min(chunk, n_sequences) * n_frames * size * size,
               f"{fn}: n_sequences={n_sequences}, chunk={chunk}, n_frames={n_frames}, size={size} (blocks of "
               f"{min(chunk, n_sequences)} clips)", expected="a smaller chunk, fewer frames or a smaller canvas")
    if digits is None:
        digits = load_mnist_digits(mnist_dir, split)
    if getattr(digits, "ndim", 0) != 3 or size < digits.shape[-1] or size < digits.shape[-2]:
        raise ConfigError(f"{fn}: size={size} with digit images of shape {getattr(digits, 'shape', None)}; expected "
                          "images (n, h, w) no larger than the canvas")
    stream_seed = seed * 2 + (1 if split == "test" else 0)
    template = da.empty((n_sequences, n_frames, size, size), chunks=(chunk, n_frames, size, size),
                        dtype=np.float32)
    data = da.map_blocks(_mnist_block, template, digits, stream_seed, n_frames, size, n_digits,
                         step_length, dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))
    return xr.Dataset(
        {"intensity": (("sequence", "time", "y", "x"), data,
                       {"long_name": "pixel intensity", "units": "1", "valid_range": [0.0, 1.0]})},
        coords={"sequence": np.arange(n_sequences), "time": np.arange(n_frames),
                "y": np.arange(size), "x": np.arange(size)},
        attrs={"title": f"Moving MNIST ({split} digits)", "source": "geostp.data.synthetic.moving_mnist",
               "mnist_digits": f"{split}: t10k images {MNIST_TRAIN_DIGITS if split == 'train' else MNIST_TEST_DIGITS}"},
    )
