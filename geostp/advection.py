"""Motion and semi-Lagrangian advection of rain fields: what extrapolation nowcasts and advection-aware models share.

One home for the motion behind every nowcast in geostp (pysteps does the work):

- :func:`estimate_motion`: pysteps' standard recipe, Lucas-Kanade on the three
  newest frames in dBR (threshold 0.1 mm/h, -15 dBR below it), or another of
  pysteps' methods by name (:data:`MOTION_METHODS`: VET, DARTS, Proesmans);
- :func:`motion` (``geostp.motion``): the same on a cube, as a labelled
  DataArray ``(component, y, x)`` on the cube's grid, in m/s along the grid's
  x and y axes; :func:`motion_pixels` turns it back into pysteps' array;
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
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import RATE_PER_HOUR_UNITS, format_step
from geostp.cube import grid_mapping_name_safe, is_precipitation, time_step
from geostp.errors import ConfigError

__all__ = [
    "DBR_THRESHOLD",
    "DBR_ZERO",
    "MOTION_FRAMES",
    "to_dbr",
    "from_dbr",
    "MOTION_METHODS",
    "MOTION_UNITS",
    "motion_frame_count",
    "motion_method",
    "estimate_motion",
    "motion",
    "motion_pixels",
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


class MotionMethod(NamedTuple):
    """One of pysteps' motion methods as geostp runs it."""

    pysteps: str  #: the name ``pysteps.motion.get_method`` takes
    title: str  #: how descriptions name it
    frames: int  #: the newest frames it is given by default (pysteps' examples)
    min_frames: int  #: the fewest it works with
    max_frames: int | None  #: the most it accepts (None: any number)


#: The motion methods by name. LK, VET: the three newest frames (pysteps' examples); DARTS: ten (its
#: spectral fit in time needs a longer sequence; pysteps requires more than ``N_t + 1 = 5``); Proesmans: two.
MOTION_METHODS: dict[str, MotionMethod] = {
    "LK": MotionMethod("LK", "Lucas-Kanade", MOTION_FRAMES, 2, None),
    "VET": MotionMethod("VET", "VET (variational echo tracking)", MOTION_FRAMES, 2, 3),
    "DARTS": MotionMethod("DARTS", "DARTS", 10, 6, None),
    "proesmans": MotionMethod("proesmans", "Proesmans (anisotropic diffusion)", 2, 2, 2),
}


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


def motion_method(name: Any) -> str:
    """The canonical name of a motion method (``"LK"``, ``"VET"``, ``"DARTS"``, ``"proesmans"``; any case).

    Raises
    ------
    ConfigError
        For a name that is not one of :data:`MOTION_METHODS`.
    """
    if isinstance(name, str):
        for known in MOTION_METHODS:
            if name.strip().lower() == known.lower():
                return known
    raise ConfigError(f"unknown motion method {name!r}; known: {', '.join(MOTION_METHODS)} (pysteps' methods)")


def motion_frame_count(method: str, available: int, n_frames: int | None = None) -> int:
    """How many of ``available`` newest frames ``method`` runs on: ``n_frames`` (default: the method's own
    count) or fewer where fewer are there; a ConfigError where that is too few (or too many) for the method."""
    spec = MOTION_METHODS[motion_method(method)]
    want = spec.frames if n_frames is None else n_frames
    n = min(want, available)
    if n < spec.min_frames:
        raise ConfigError(f"motion method {method!r} needs at least {spec.min_frames} frames; got {n}"
                          + (f" (of {available} available)" if n_frames is not None and available > n else ""))
    if spec.max_frames is not None and n > spec.max_frames:
        raise ConfigError(f"motion method {method!r} takes at most {spec.max_frames} frames; got n_frames={n}")
    return n


def _method_args(method: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """pysteps' defaults, except where they cannot work: DARTS keeps 50 DFT coefficients per axis, fewer on a
    field of 50 pixels or less (as many as the axis resolves)."""
    if method != "DARTS":
        return {}
    ny, nx = shape[-2:]
    return {"N_y": 50 if ny > 50 else max(1, (ny - 1) // 2), "N_x": 50 if nx > 50 else max(1, (nx - 1) // 2)}


def estimate_motion(frames: np.ndarray, *, n_frames: int | None = None, rain: bool = True,
                    method: str = "LK") -> np.ndarray:
    """Motion ``[2, y, x]`` (pixels per step; x then row component) from the newest frames of ``frames``.

    Parameters
    ----------
    frames
        ``[T, y, x]``, oldest first; NaN marks no data.
    n_frames
        How many of the newest frames the estimate uses (default: the method's own count,
        :data:`MOTION_METHODS`; pysteps' recipe for LK: 3); fewer where fewer are given.
    rain
        ``frames`` are rain rates (mm/h): the estimate runs on dBR (threshold
        0.1 mm/h). ``False``: on the values as they are.
    method
        ``"LK"`` (Lucas-Kanade, default), ``"VET"``, ``"DARTS"`` or ``"proesmans"``: pysteps'
        ``motion.get_method``.  NaN counts as no rain (-15 dBR) for each of them.

    Raises
    ------
    ConfigError
        For an unknown method, or fewer frames than the method needs (DARTS: 6).
    """
    method = motion_method(method)
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ConfigError(f"motion needs frames [T >= 2, y, x]; got shape {frames.shape}")
    sub = frames[-motion_frame_count(method, frames.shape[0], n_frames):]
    sub = to_dbr(sub) if rain else sub.copy()
    finite = np.isfinite(sub)
    if not finite.any():
        return np.zeros((2, *sub.shape[1:]), np.float32)
    floor = DBR_ZERO if rain else float(np.nanmin(sub))
    sub = np.where(finite, sub, floor)
    if method != "LK" and float(np.ptp(sub)) == 0.0:
        return np.zeros((2, *sub.shape[1:]), np.float32)  # featureless: no motion to see
    pysteps_motion, _ = _pysteps()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Featureless frames (no echo) make LK warn and return zero motion: the right answer for them.
        warnings.simplefilter("ignore")
        velocity = pysteps_motion.get_method(MOTION_METHODS[method].pysteps)(sub, verbose=False,
                                                                             **_method_args(method, sub.shape))
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


def motion_description(method: str = "LK", n_frames: int | None = None) -> str:
    """The attrs text naming the motion behind a nowcast: ``method`` on ``n_frames`` (default: its own count).

    The default (Lucas-Kanade on the three newest frames) is the text the motion cache's keys were made with.
    """
    return _motion_recipe(method, n_frames) + "; semi-Lagrangian advection (pysteps scheme, linear interpolation)"


def _motion_recipe(method: str, n_frames: int | None = None, rain: bool = True) -> str:
    spec = MOTION_METHODS[motion_method(method)]
    n = spec.frames if n_frames is None else n_frames
    space = f"in dBR (threshold {DBR_THRESHOLD} mm/h)" if rain else "on the values as they are"
    return f"pysteps {spec.title} on the {n} newest frames {space}"


# ----------------------------------------------------------------------------- the motion of a cube

#: The units :func:`motion` gives its field in.
MOTION_UNITS = ("m s-1", "pixels per step")
_METRES = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0,
           "km": 1000.0, "kilometre": 1000.0, "kilometres": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0}
_SIGNS = ("u: along increasing x (east on a north-up grid), v: along increasing y (north on a north-up grid); "
          "pysteps' second component runs along the row index, so v = -pysteps v where y falls with the row")


def _motion_variable(cube: Any, variable: str | None) -> tuple[xr.DataArray, bool]:
    """The ``(time, y, x)`` variable motion is estimated from (with its grid mapping), and whether it is rain."""
    if isinstance(cube, xr.Dataset):
        gm = grid_mapping_name_safe(cube)
        gridded = [str(v) for v in cube.data_vars if v != gm and {"time", "y", "x"} <= set(cube[v].dims)]
        if variable is None:
            if len(gridded) != 1:
                raise ConfigError(f"motion: the cube has {len(gridded)} gridded (time, y, x) variables {gridded}; "
                                  "choose one with variable=...")
            if not is_precipitation(cube[gridded[0]]):
                raise ConfigError(
                    f"motion: the cube's variable {gridded[0]!r} is not a rain rate (standard_name "
                    f"{cube[gridded[0]].attrs.get('standard_name')!r}); pass variable={gridded[0]!r} to estimate "
                    "the motion of its values as they are")
            variable = gridded[0]
        if variable not in gridded:
            raise ConfigError(f"motion: variable={variable!r} is not a gridded (time, y, x) variable of the cube; "
                              f"it has {gridded}")
        da = cube[variable]
        if gm and gm in cube.variables and gm not in da.coords:
            da = da.assign_coords({gm: cube[gm]})
    elif isinstance(cube, xr.DataArray):
        if variable is not None and variable != cube.name:
            raise ConfigError(f"motion: variable={variable!r} was given with a DataArray ({cube.name!r}); "
                              "pass the cube (Dataset) to choose a variable")
        da = cube
    else:
        raise ConfigError(f"motion: expected a cube (xarray Dataset) or one of its variables, got {type(cube).__name__}")
    if not {"time", "y", "x"} <= set(da.dims) or da.ndim != 3:
        raise ConfigError(f"motion: {da.name!r} has dims {tuple(da.dims)}; expected (time, y, x) (select one "
                          "value of any other dim first, e.g. cube.isel(sequence=0))")
    rain = is_precipitation(da)
    if rain and str(da.attrs.get("units", "")).strip() not in RATE_PER_HOUR_UNITS:
        raise ConfigError(f"motion: {da.name!r} is precipitation in {da.attrs.get('units')!r}; the dBR transform "
                          f"(threshold {DBR_THRESHOLD} mm/h) needs rain rates in mm h-1")
    return da, rain


def _time_index(times: np.ndarray, time: Any) -> int:
    try:
        if np.issubdtype(times.dtype, np.datetime64):
            target = pd.Timestamp(time).to_datetime64().astype("datetime64[ns]")
            hits = np.nonzero(times.astype("datetime64[ns]") == target)[0]
        else:
            hits = np.nonzero(times == time)[0]
    except (TypeError, ValueError):
        hits = np.array([], int)
    if hits.size == 0:
        raise ConfigError(f"motion: time={time!r} is not a time of the cube ({times[0]} .. {times[-1]}, "
                          f"{times.size} frames)")
    return int(hits[0])


def _motion_window(ds: xr.Dataset, time: Any, method: str, frames: int | None) -> tuple[int, int, Any]:
    """The newest frame's index, the number of frames and the time step (checked: no gap among them)."""
    times = ds["time"].values
    end = times.size - 1 if time is None else _time_index(times, time)
    spec = MOTION_METHODS[method]
    if frames is not None:
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise ConfigError(f"motion: frames={frames!r}; expected a number of frames (>= {spec.min_frames})")
        if frames > end + 1:
            raise ConfigError(f"motion: frames={frames} but the cube has {end + 1} frame(s) up to {times[end]}")
    if end + 1 < spec.min_frames:
        raise ConfigError(f"motion: method {method!r} needs at least {spec.min_frames} frames; the cube has "
                          f"{end + 1} up to {times[end]}")
    n = motion_frame_count(method, end + 1, frames)
    step = time_step(ds)
    diffs = np.diff(times[end - n + 1: end + 1])
    if step is not None and diffs.size and (diffs != step).any():
        raise ConfigError(f"motion: the {n} frames up to {times[end]} are not one time step ({step}) apart "
                          f"(steps {sorted({str(d) for d in diffs})}); motion across a gap is not motion per step: "
                          "choose a time= with regular frames before it")
    return end, n, step


def _axis_scale(coord: xr.DataArray | None, seconds: float | None, metric: bool) -> float:
    """Factor from pysteps' component along the axis (pixels per step) to the component along the coordinate."""
    values = np.asarray(coord.values, float) if coord is not None else np.arange(2.0)
    spacing = float(values[1] - values[0]) if values.size > 1 else 1.0
    if not metric:
        return 1.0 if spacing >= 0 else -1.0
    return spacing * _METRES[str(coord.attrs.get("units", "")).strip().lower()] / seconds


def _metric(da: xr.DataArray, step: Any) -> str | None:
    """Why the field cannot be in m/s, or None when it can (metre or km axes, regular, a datetime axis)."""
    if not isinstance(step, np.timedelta64):
        return "the time axis has no time step in seconds"
    for d in ("x", "y"):
        if d not in da.coords:
            return f"the cube has no {d} coordinate"
        units = str(da[d].attrs.get("units", "")).strip().lower()
        if units not in _METRES:
            return f"its {d} coordinate is in {units or 'no units'!r}, not metres"
        values = np.asarray(da[d].values, float)
        if values.size > 1 and not np.allclose(np.diff(values), values[1] - values[0], rtol=1e-6, atol=0):
            return f"its {d} coordinate is not regularly spaced"
    return None


def motion(cube: xr.Dataset | xr.DataArray, time: Any = None, *, method: str = "LK", variable: str | None = None,
           frames: int | None = None, units: str | None = None) -> xr.DataArray:
    """The motion of a cube's rain: a labelled DataArray ``(component, y, x)`` on the cube's grid (``geostp.motion``).

    The field is :func:`estimate_motion`'s (pysteps' method on the newest frames up to ``time``, in dBR for
    rain rates), turned to the cube's axes and units.

    Parameters
    ----------
    cube
        A cube (``time, y, x``) or one of its variables.
    time
        The newest frame used (default: the cube's last time); the frames before it must be one time step
        apart.
    method
        ``"LK"`` (Lucas-Kanade, pysteps' default), ``"VET"``, ``"DARTS"`` or ``"proesmans"``.
    variable
        The variable of a cube with several, or one that is not a rain rate (then the motion is estimated on
        its values as they are, not in dBR).
    frames
        How many frames (default: the method's own count, :data:`MOTION_METHODS`: LK and VET 3, DARTS 10,
        Proesmans 2; fewer where the cube has fewer, down to the method's least).
    units
        ``"m s-1"`` (default where the grid's x/y are in metres or km and time has a step) or
        ``"pixels per step"`` (grid cells per time step; the default otherwise).

    Returns
    -------
    xarray.DataArray
        ``component = ["u", "v"]``: u along increasing x, v along increasing y (east and north on a
        north-up projected grid), whatever way y runs with the row index (pysteps' second component
        runs along the row index). Coordinates ``y``, ``x`` (and ``lat``/``lon``, the grid-mapping
        variable) of the cube, and ``time``, the newest frame used; attrs ``units``, ``grid_mapping``,
        ``method``, ``motion_frames`` (the times used), ``time_step``, ``description`` and
        ``to_pixels_per_step``, the factor per component back to pysteps' array
        (:func:`motion_pixels`).

    Raises
    ------
    ConfigError
        For an unknown method or units, a cube with several variables (or one that is not rain) without
        ``variable``, a time not in the cube, too few frames up to it, or a gap among them.
    """
    method = motion_method(method)
    if units is not None and units not in MOTION_UNITS:
        raise ConfigError(f"motion: units={units!r}; expected one of {MOTION_UNITS}")
    da, rain = _motion_variable(cube, variable)
    ds = cube if isinstance(cube, xr.Dataset) else da.to_dataset(name=da.name or "value")
    end, n, step = _motion_window(ds, time, method, frames)
    why = _metric(da, step)
    if units == "m s-1" and why is not None:
        raise ConfigError(f"motion: units='m s-1' but {why}; use units='pixels per step'")
    units = units or ("m s-1" if why is None else "pixels per step")
    window = da.isel(time=slice(end - n + 1, end + 1)).transpose("time", "y", "x")
    velocity = estimate_motion(np.asarray(window.values, np.float64), n_frames=n, rain=rain, method=method)
    metric = units == "m s-1"
    seconds = step / np.timedelta64(1, "s") if metric else None
    scale = [_axis_scale(da.coords.get(d), seconds, metric) for d in ("x", "y")]
    times = window["time"].values
    attrs: dict[str, Any] = {
        "long_name": f"motion of {da.attrs.get('long_name') or da.name or 'the field'}",
        "units": units, "method": method, "component_directions": _SIGNS,
        "motion_frames": [str(pd.Timestamp(t)) if np.issubdtype(times.dtype, np.datetime64) else str(t)
                          for t in times],
        "time_step": format_step(step) if isinstance(step, np.timedelta64) else str(step),
        "description": _motion_recipe(method, n, rain), "to_pixels_per_step": [1.0 / s for s in scale],
    }
    gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if gm and gm in da.coords:
        attrs["grid_mapping"] = gm
    coords: dict[str, Any] = {"component": ("component", ["u", "v"])}
    coords.update({k: c for k, c in da.coords.items() if set(c.dims) <= {"y", "x"}})
    coords["time"] = times[-1]
    values = (velocity.astype(np.float64) * np.asarray(scale)[:, None, None]).astype(np.float32)
    return xr.DataArray(values, dims=("component", "y", "x"), coords=coords, name="motion", attrs=attrs)


def motion_pixels(field: xr.DataArray) -> np.ndarray:
    """pysteps' motion array ``[2, y, x]`` (pixels per step, x then row component) of :func:`motion`'s field,
    for :func:`displacements`, :func:`advect` or pysteps itself."""
    factor = field.attrs.get("to_pixels_per_step") if isinstance(field, xr.DataArray) else None
    if factor is None or "component" not in field.dims:
        raise ConfigError("motion_pixels: expected the DataArray geostp.motion returns (component, y, x) with its "
                          "to_pixels_per_step attribute")
    values = np.asarray(field.transpose("component", "y", "x").values, np.float64)
    return (values * np.asarray(factor, np.float64)[:, None, None]).astype(np.float32)


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

        with atomic_path(path) as tmp:  # creates the folder; an OSError becomes a WriteError naming the file
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
