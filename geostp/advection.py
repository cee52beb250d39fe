"""Motion and semi-Lagrangian advection of rain fields: what extrapolation nowcasts and advection-aware models share.

One home for the motion behind every nowcast in geostp (pysteps does the work):

- :func:`estimate_motion`: pysteps' standard recipe, Lucas-Kanade on the three
  newest frames in dBR (threshold 0.1 mm/h, -15 dBR below it);
- :func:`displacements`: the semi-Lagrangian trajectories of pysteps'
  ``extrapolate`` for leads 1..n, computed once and reused for every field
  advected along them (pysteps' extrapolation of a field by ``k`` steps is the
  field sampled at the ``k``-th displacement, so ``advect(f, D)[k-1]`` equals
  ``extrapolate(f, V, n)[k-1]`` exactly);
- :func:`to_lagrangian`: inputs carried forward and targets carried backward
  into the frame of the newest observation (L-CNN, Ritvanen et al. 2023);
- :func:`probability_match`: a forecast's values given the distribution of the
  newest observation (pysteps' CDF matching, as in S-PROG);
- :func:`sprog_nowcast`: pysteps' S-PROG along a motion field, and
  :func:`lagrangian_sprog`, the same in the frame of the newest observation
  (the base an advection-aware model can learn its change from);
- :class:`MotionCache`: motion fields (and S-PROG bases) on disk, computed once per window.

Arrays are plain numpy, ``[..., y, x]``; velocities are ``[2, y, x]`` (x then
y component) in pixels per time step, as pysteps has them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from geostp.errors import ConfigError

__all__ = [
    "DBR_THRESHOLD",
    "DBR_ZERO",
    "MOTION_FRAMES",
    "to_dbr",
    "from_dbr",
    "estimate_motion",
    "displacements",
    "advect",
    "to_lagrangian",
    "probability_match",
    "sprog_nowcast",
    "lagrangian_sprog",
    "MotionCache",
    "motion_description",
]

#: pysteps' standard recipe: rain below 0.1 mm/h is "no rain", -15 dBR in the dB transform.
DBR_THRESHOLD = 0.1
DBR_ZERO = -15.0
#: Frames the motion is estimated from (the newest ones).
MOTION_FRAMES = 3


def _pysteps():
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pysteps prints where it found its config file
            from pysteps import extrapolation, motion
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConfigError("motion estimation and advection need pysteps; install geostp[radar]") from err
    return motion, extrapolation


def to_dbr(rain: np.ndarray, threshold: float = DBR_THRESHOLD, zerovalue: float = DBR_ZERO) -> np.ndarray:
    """``10 log10(R)`` for ``R >= threshold``, ``zerovalue`` below it; NaN stays NaN."""
    rain = np.asarray(rain, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(rain >= threshold, 10.0 * np.log10(np.maximum(rain, threshold)), zerovalue)
    return np.where(np.isnan(rain), np.nan, out)


def from_dbr(dbr: np.ndarray, threshold: float = DBR_THRESHOLD) -> np.ndarray:
    """Rain rate from dBR: 0 below ``10 log10(threshold)``."""
    dbr = np.asarray(dbr, dtype=np.float64)
    lo = 10.0 * np.log10(threshold) - 1e-6
    out = np.where(dbr >= lo, np.power(10.0, dbr / 10.0), 0.0)
    return np.where(np.isnan(dbr), np.nan, out)


def estimate_motion(frames: np.ndarray, *, n_frames: int = MOTION_FRAMES, rain: bool = True) -> np.ndarray:
    """Lucas-Kanade motion ``[2, y, x]`` (pixels per step) from the newest ``n_frames`` of ``frames``.

    Parameters
    ----------
    frames
        ``[T, y, x]``, oldest first; NaN marks no data.
    n_frames
        How many of the newest frames the estimate uses (pysteps' recipe: 3).
    rain
        ``frames`` are rain rates (mm/h): the estimate runs on dBR (threshold
        0.1 mm/h). ``False``: on the values as they are.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ConfigError(f"motion needs frames [T >= 2, y, x]; got shape {frames.shape}")
    sub = frames[-min(n_frames, frames.shape[0]):]
    sub = to_dbr(sub) if rain else sub.copy()
    finite = np.isfinite(sub)
    if not finite.any():
        return np.zeros((2, *sub.shape[1:]), np.float32)
    floor = DBR_ZERO if rain else float(np.nanmin(sub))
    sub = np.where(finite, sub, floor)
    motion, _ = _pysteps()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Featureless frames (no echo) make LK warn and return zero motion: the right answer for them.
        warnings.simplefilter("ignore")
        velocity = motion.get_method("LK")(sub, verbose=False)
    velocity = np.nan_to_num(np.asarray(velocity, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return velocity.astype(np.float32)


def displacements(velocity: np.ndarray, n: int) -> np.ndarray:
    """The semi-Lagrangian displacement ``[n, 2, y, x]`` after 1..n steps along ``velocity`` (pysteps' scheme)."""
    if n < 1:
        return np.zeros((0, *np.shape(velocity)), np.float32)
    _, extrapolation = _pysteps()
    extrapolate = extrapolation.get_method("semilagrangian")
    v = np.asarray(velocity, dtype=np.float64)
    out = np.empty((n, *v.shape), np.float32)
    d = None
    for k in range(n):
        _, d = extrapolate(None, v, 1, displacement_prev=d, return_displacement=True)
        out[k] = d
    return out


def advect(field: np.ndarray, displacement: np.ndarray, outval: float = np.nan) -> np.ndarray:
    """``field`` ``[y, x]`` (or one field per displacement, ``[n, y, x]``) carried along ``displacement`` ``[n, 2, y, x]``.

    Linear interpolation, ``outval`` where the trajectory starts outside the
    domain; NaN in the field spreads to the pixels interpolated from it.
    """
    from scipy.ndimage import map_coordinates

    field = np.asarray(field)
    disp = np.asarray(displacement)
    if disp.ndim == 3:
        disp = disp[None]
    n, _, ny, nx = disp.shape
    fields = np.broadcast_to(field, (n, ny, nx)) if field.ndim == 2 else field
    if fields.shape != (n, ny, nx):
        raise ConfigError(f"advect: {fields.shape[0]} field(s) of {fields.shape[1:]} for {n} displacement(s) "
                          f"of {(ny, nx)}")
    yy, xx = np.mgrid[0:ny, 0:nx]
    out = np.empty((n, ny, nx), np.float32)
    for k in range(n):
        coords = [yy + disp[k, 1], xx + disp[k, 0]]
        out[k] = map_coordinates(np.asarray(fields[k], np.float64), coords, mode="constant", cval=outval,
                                 order=1, prefilter=False)
    return out


def to_lagrangian(inputs: np.ndarray, targets: np.ndarray | None, velocity: np.ndarray,
                  *, outval: float = np.nan) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs ``[T_in, y, x]`` and targets ``[T_out, y, x]`` in the frame of the newest input.

    The input ``j`` steps before the newest is carried ``j`` steps forward along
    ``velocity``; the target ``k`` steps after it ``k`` steps backward (along
    ``-velocity``).  The newest input is unchanged.  Advecting a Lagrangian
    target ``k`` steps forward (:func:`advect` with :func:`displacements`)
    brings it back to where it was observed, up to interpolation.
    """
    t_in = inputs.shape[0]
    lag_in = np.empty(inputs.shape, np.float32)
    lag_in[-1] = inputs[-1]
    if t_in > 1:
        fwd = displacements(velocity, t_in - 1)  # fwd[j-1]: j steps forward
        lag_in[:-1] = advect(inputs[:-1], fwd[::-1], outval)
    if targets is None:
        return lag_in, None
    back = displacements(-np.asarray(velocity), targets.shape[0])
    return lag_in, advect(targets, back, outval)


def probability_match(forecast: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``forecast`` ``[y, x]`` with the values of ``observed``, rank for rank (pysteps' empirical CDF matching).

    NaN pixels of either field are left out and stay NaN in the output.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        from pysteps.postprocessing.probmatching import nonparam_match_empirical_cdf
    fc = np.asarray(forecast, np.float64)
    obs = np.asarray(observed, np.float64)
    ok = np.isfinite(fc) & np.isfinite(obs)
    if ok.sum() < 2:
        return fc.astype(np.float32)
    out = np.full(fc.shape, np.nan)
    out[ok] = nonparam_match_empirical_cdf(fc[ok], obs[ok])
    return out.astype(np.float32)


def sprog_nowcast(frames: np.ndarray, velocity: np.ndarray, steps: int, *, levels: int = 8,
                  probability_matching: str | None = "cdf") -> np.ndarray:
    """pysteps' S-PROG of rain rates: ``[steps, y, x]`` mm/h from the 3 newest of ``frames`` ``[T >= 3, y, x]``.

    The cascade (``levels`` scales, AR(2) per scale) runs on dBR (threshold
    0.1 mm/h, as in pysteps' examples); ``probability_matching`` is pysteps'
    (``"cdf"``, ``"mean"`` or ``None``).  NaN inputs count as no rain; a newest
    frame without rain gives zeros, and an older frame without rain (S-PROG's
    lag correlations are then undefined) gives the extrapolation of the newest.
    """
    dbr = to_dbr(np.asarray(frames, np.float64)[-3:])
    return _sprog_dbr(np.where(np.isfinite(dbr), dbr, DBR_ZERO), velocity, steps, levels, probability_matching)


def _sprog_dbr(dbr: np.ndarray, velocity: np.ndarray, steps: int, levels: int,
               probability_matching: str | None) -> np.ndarray:
    rain_floor = 10.0 * np.log10(DBR_THRESHOLD)
    if not (dbr[-1] > rain_floor).any():
        return np.zeros((steps, *dbr.shape[1:]), np.float32)
    out = None
    if all(bool((f > rain_floor).any()) for f in dbr):
        with contextlib.redirect_stdout(io.StringIO()):
            from pysteps import nowcasts

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    out = nowcasts.get_method("sprog")(
                        dbr, np.asarray(velocity, np.float64), steps, precip_thr=rain_floor,
                        n_cascade_levels=levels, probmatching_method=probability_matching,
                    )
                except ValueError:  # degenerate statistics (a scale without variance): no AR model to fit
                    out = None
    if out is None or not np.isfinite(np.asarray(out, np.float64)).any():
        # Rain in the newest frame but not in an older one: S-PROG's lag correlations are undefined, and what
        # is left is the newest frame carried along the motion (the extrapolation nowcast).
        _, extrapolation = _pysteps()
        out = extrapolation.get_method("semilagrangian")(dbr[-1], np.asarray(velocity, np.float64), steps,
                                                         outval=DBR_ZERO)
    return np.nan_to_num(from_dbr(np.asarray(out, np.float64)), nan=0.0).astype(np.float32)


def lagrangian_sprog(frames: np.ndarray, velocity: np.ndarray, steps: int, *, levels: int = 8) -> np.ndarray:
    """S-PROG in the frame of the newest observation: ``[steps, y, x]`` mm/h.

    ``frames`` ``[T >= 3, y, x]`` are the observed rain rates (mm/h) and
    ``velocity`` their motion.  As pysteps' S-PROG does, the two older of the
    three newest frames are carried to the newest in dBR; the cascade then runs
    with the motion removed.  Advecting lead ``k`` ``k`` steps forward
    (:func:`advect`) gives pysteps' S-PROG nowcast up to interpolation.
    """
    dbr = to_dbr(np.asarray(frames, np.float64)[-3:])
    dbr = np.where(np.isfinite(dbr), dbr, DBR_ZERO)
    carried, _ = to_lagrangian(dbr, None, velocity, outval=DBR_ZERO)
    return _sprog_dbr(carried.astype(np.float64), np.zeros((2, *dbr.shape[1:])), steps, levels, "cdf")


def motion_description() -> str:
    """The attrs text naming the motion behind a nowcast."""
    return (f"pysteps Lucas-Kanade on the {MOTION_FRAMES} newest frames in dBR (threshold {DBR_THRESHOLD} mm/h); "
            "semi-Lagrangian advection (pysteps scheme, linear interpolation)")


class MotionCache:
    """Motion fields on disk, one ``.npy`` per window, keyed by what determines them.

    The key is a hash of the cube's identity (a data fingerprint), the newest
    input time and the recipe (:func:`motion_description`), so a field is
    computed once per training window and reused by every later epoch and run.
    ``directory=None`` keeps them in memory only.
    """

    _shared: dict[str, MotionCache] = {}

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, np.ndarray] = {}
        self._windows: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self.computed = 0  # how many fields this cache had to compute (the tests count them)
        self.computed_bases = 0  # how many S-PROG bases it had to compute

    @classmethod
    def shared(cls, directory: str | os.PathLike[str] | None) -> MotionCache:
        """One cache per folder in this process, so that later runs reuse the windows already carried."""
        key = str(Path(directory).resolve()) if directory is not None else ""
        if key not in cls._shared:
            cls._shared[key] = cls(directory)
        return cls._shared[key]

    def lagrangian(self, identity: Any, time: Any, frames: np.ndarray, input_steps: int,
                   *, rain: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """:func:`to_lagrangian` of one window (inputs, targets) with its cached motion, kept in memory (float16)."""
        key = (self.key(identity, time), int(input_steps), int(frames.shape[0]))
        if key not in self._windows:
            velocity = self.get(identity, time, frames[max(0, input_steps - MOTION_FRAMES):input_steps], rain=rain)
            lag_in, lag_out = to_lagrangian(frames[:input_steps], frames[input_steps:], velocity)
            self._windows[key] = (lag_in.astype(np.float16), lag_out.astype(np.float16))
        lag_in, lag_out = self._windows[key]
        return lag_in.astype(np.float32), lag_out.astype(np.float32)

    def sprog_base(self, identity: Any, time: Any, frames: np.ndarray, steps: int, *, levels: int = 8) -> np.ndarray:
        """:func:`lagrangian_sprog` of the window whose newest input is at ``time`` (``frames``: its inputs), on
        disk (float16) beside its motion (which must be in this cache already)."""
        key = self.key(identity, time) + f"-sprog{levels}-{steps}"
        path = self.directory / f"{key}.npy" if self.directory is not None else None
        want = (steps, *frames.shape[1:])
        if key in self._memory and self._memory[key].shape == want:
            return self._memory[key].astype(np.float32)
        if path is not None and path.exists():
            try:
                b = np.load(path, allow_pickle=False)
                if b.shape == want:
                    self._memory[key] = b
                    return b.astype(np.float32)
            except (OSError, ValueError):
                pass  # a damaged entry is recomputed and rewritten
        velocity = self.get(identity, time, frames[-MOTION_FRAMES:])
        b = lagrangian_sprog(frames, velocity, steps, levels=levels).astype(np.float16)
        self.computed_bases += 1
        self._memory[key] = b
        if path is not None:
            self._save(path, b)
        return b.astype(np.float32)

    @staticmethod
    def _save(path: Path, array: np.ndarray) -> None:
        from geostp.writers import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)

    def key(self, identity: Any, time: Any) -> str:
        text = json.dumps({"id": identity, "t": str(time), "how": motion_description()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, identity: Any, time: Any, frames: np.ndarray, *, rain: bool = True) -> np.ndarray:
        """The motion for the window ending at ``time``: from the cache, or estimated from ``frames`` and stored."""
        key = self.key(identity, time)
        if key in self._memory:
            return self._memory[key]
        path = self.directory / f"{key}.npy" if self.directory is not None else None
        if path is not None and path.exists():
            try:
                v = np.load(path, allow_pickle=False)
                if v.shape == (2, *frames.shape[1:]):
                    self._memory[key] = v
                    return v
            except (OSError, ValueError):
                pass  # a damaged entry is recomputed and rewritten
        v = estimate_motion(frames, rain=rain)
        self.computed += 1
        self._memory[key] = v
        if path is not None:
            self._save(path, v)
        return v
