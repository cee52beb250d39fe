"""The cube: the one data model every adapter produces and every model consumes.

A cube is an :class:`xarray.Dataset` with dims ``time``, ``y``, ``x`` (and an
optional leading ``sequence`` dim for collections of independent clips), CF
units and standard names on every data variable, an optional CF grid mapping,
and a regular time step whose gaps are found and reported, never assumed away.
This module validates cubes, finds their gaps, and moves windows between cubes
and ``[T, C, H, W]`` tensors without losing labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.bounds import (  # noqa: F401 (re-exported)
    GENERIC_MAGNITUDE,
    MAX_RAIN_RATE_MM_H,
    MIN_RAIN,
    VALUE_BOUNDS,
    ValueBounds,
    _check_known_units,
    _check_regular_axis,
    _fmt_time,
    _name,
    check_value_range,
    value_bounds,
)
from geostp.errors import ConfigError, CubeError, CubeValueError

__all__ = [
    "is_precipitation",
    "CubeInfo",
    "OffGridWarning",
    "Gap",
    "SPATIAL_DIMS",
    "validate_cube",
    "find_gaps",
    "time_step",
    "grid_mapping_name",
    "cube_crs",
    "window_to_tensor",
    "forecast_to_dataarray",
    "describe",
    "crs_summary",
    "FORECAST_TIME_ATTRS",
    "ValueBounds",
    "VALUE_BOUNDS",
    "GENERIC_MAGNITUDE",
    "value_bounds",
    "check_value_range",
    "as_cube",
    "LostGridMappingWarning",
    "variable_names",
    "parse_time",
    "reference_time_values",
]

SPATIAL_DIMS = ("y", "x")
#: CF attributes of a forecast's time coordinates: :func:`forecast_to_dataarray` sets them and
#: :mod:`geostp.writers` writes them (where the leading ``time`` of several reference times becomes
#: ``forecast_reference_time``).
FORECAST_TIME_ATTRS: dict[str, dict[str, str]] = {
    "lead_time": {"standard_name": "forecast_period", "long_name": "lead time"},
    "forecast_reference_time": {"standard_name": "forecast_reference_time", "long_name": "forecast reference time"},
    "valid_time": {"standard_name": "time", "long_name": "valid time (forecast reference time + lead time)"},
}
TIME_STEP_ATTR = "time_step"  # optional ISO/pandas timedelta string declaring the nominal step

@dataclass(frozen=True)
class Gap:
    """Missing time steps between two present frames.

    ``missing`` frames are absent between ``after`` and ``before``.
    """

    after: Any
    before: Any
    missing: int

    def __str__(self) -> str:
        return f"{self.missing} missing step(s) between {_fmt_time(self.after)} and {_fmt_time(self.before)}"


@dataclass(frozen=True)
class CubeInfo:
    """What validation learnt about a cube."""

    variables: tuple[str, ...]
    dims: tuple[str, ...]
    sizes: dict[str, int]
    step: Any  # np.timedelta64 for datetime axes, an int for frame indices, None for one frame
    gaps: tuple[Gap, ...] = field(default_factory=tuple)
    crs_wkt: str | None = None
    grid_mapping: str | None = None
    #: pixels whose 2-D ``lat``/``lon`` are not finite: off the grid's Earth (a geostationary satellite's disc)
    n_off_grid: int = 0

    @property
    def has_sequence(self) -> bool:
        return "sequence" in self.dims

    @property
    def n_missing(self) -> int:
        return sum(g.missing for g in self.gaps)


def grid_mapping_name(ds: xr.Dataset) -> str | None:
    """The name of the grid-mapping variable the data variables point to, if any."""
    names = {ds[v].attrs.get("grid_mapping") or ds[v].encoding.get("grid_mapping") for v in ds.data_vars}
    names.discard(None)
    if len(names) > 1:
        raise CubeError(f"data variables point to different grid mappings {sorted(names)}; expected one")
    return names.pop() if names else None


def cube_crs(ds: xr.Dataset):
    """The cube's :class:`pyproj.CRS` from its CF grid mapping, or ``None`` if it has none."""
    import pyproj

    gm = grid_mapping_name(ds)
    if gm is None:
        return None
    if gm not in ds.variables:
        raise CubeError(f"grid_mapping {gm!r} is named by the data variables but no such variable exists")
    try:
        return pyproj.CRS.from_cf(dict(ds[gm].attrs))
    except Exception as exc:  # pyproj raises several kinds
        raise CubeError(
            f"grid mapping variable {gm!r} cannot be read as a CRS by pyproj ({exc}); "
            "expected CF grid-mapping attributes such as pyproj.CRS.to_cf() writes"
        ) from None


def time_step(ds: xr.Dataset, *, source: str | None = None) -> Any:
    """The nominal time step: the ``time_step`` attr if declared, else the most common difference."""
    times = ds["time"].values
    declared = ds.attrs.get(TIME_STEP_ATTR)
    if np.issubdtype(times.dtype, np.datetime64):
        if declared is not None:
            try:
                return np.timedelta64(pd.Timedelta(declared).to_timedelta64(), "ns")
            except (ValueError, TypeError):
                raise CubeError(
                    f"{_name(source)}attribute {TIME_STEP_ATTR}={declared!r} is not a time interval; "
                    "expected something like '5min' or 'PT5M'"
                ) from None
        if times.size < 2:
            return None
        diffs = np.diff(times.astype("datetime64[ns]"))
        values, counts = np.unique(diffs, return_counts=True)
        return values[np.argmax(counts)]
    if declared is not None:
        return _frame_step(declared, times, source)
    if times.size < 2:
        return None
    diffs = np.diff(times)
    values, counts = np.unique(diffs, return_counts=True)
    return values[np.argmax(counts)].item()


def _frame_step(declared: Any, times: np.ndarray, source: str | None) -> int:
    """The declared step of an integer (frame-index) time axis: a whole number of frames >= 1, or a CubeError."""
    value: int | None = None
    if isinstance(declared, (int, np.integer)) and not isinstance(declared, bool):
        value = int(declared)
    elif isinstance(declared, (float, np.floating)) and float(declared).is_integer():
        value = int(declared)
    elif isinstance(declared, str) and declared.strip().isdigit():
        value = int(declared.strip())
    if value is not None and value >= 1:
        return value
    timed = isinstance(declared, str) and not declared.strip().lstrip("+-").isdigit()
    first = f" ({_fmt_time(times[0])} .. {_fmt_time(times[-1])})" if times.size else ""
    example = f" (pandas.date_range(start, periods=n, freq={declared.strip()!r}))" if timed else ""
    raise CubeError(
        f"{_name(source)}time coordinate 'time' holds integers{first}, not times, but attribute "
        f"{TIME_STEP_ATTR}={declared!r} " + ("is a time interval" if timed else "is not a whole number of frames >= 1")
        + f"; expected datetime64 times with a regular step{example}, or integer frame indices with an integer "
        f"{TIME_STEP_ATTR} (frames per step)")


def find_gaps(ds: xr.Dataset, step: Any = None, *, source: str | None = None) -> list[Gap]:
    """Missing time steps of a cube (within each sequence the time axis is shared).

    Raises :class:`CubeError` if the axis is not strictly increasing or a
    difference is not a whole multiple of the step.
    """
    times = ds["time"].values
    if times.size < 2:
        return []
    if step is None:
        step = time_step(ds, source=source)
    if np.issubdtype(times.dtype, np.datetime64):
        times = times.astype("datetime64[ns]")
    diffs = np.diff(times)
    zero = diffs.dtype.type(0) if not np.issubdtype(diffs.dtype, np.timedelta64) else np.timedelta64(0, "ns")
    bad = np.nonzero(diffs <= zero)[0]
    if bad.size:
        i = int(bad[0])
        what = "duplicated" if diffs[i] == zero else "decreasing"
        raise CubeError(
            f"{_name(source)}time coordinate is not strictly increasing: {what} times at index {i}-{i + 1} "
            f"({_fmt_time(times[i])}, {_fmt_time(times[i + 1])}); expected sorted, unique times"
        )
    ratio = diffs / step
    whole = np.rint(ratio)
    irregular = np.nonzero(np.abs(ratio - whole) > 1e-6)[0]
    if irregular.size:
        i = int(irregular[0])
        raise CubeError(
            f"{_name(source)}irregular time step: {_fmt_delta(diffs[i])} between {_fmt_time(times[i])} and "
            f"{_fmt_time(times[i + 1])}, which is not a multiple of the cube's step {_fmt_delta(step)}; "
            "expected a regular time axis (gaps of whole steps are allowed)"
        )
    return [
        Gap(after=times[i], before=times[i + 1], missing=int(whole[i]) - 1)
        for i in np.nonzero(whole > 1)[0]
    ]


def _fmt_delta(value: Any) -> str:
    if isinstance(value, np.timedelta64):
        return str(pd.Timedelta(value))
    return str(value)


# Over 80 lines: one check after another (dims, sizes, dtypes, time axis, step, gaps, grid mapping, values), each
# with its own message.
def validate_cube(
    ds: xr.Dataset | xr.DataArray,
    *,
    source: str | None = None,
    check_values: bool = True,
    sample_frames: int = 6,
) -> CubeInfo:
    """Check that ``ds`` follows the cube conventions and describe it.

    Parameters
    ----------
    ds
        The dataset (or a single DataArray) to check. It is not loaded: only
        coordinates are read, plus ``sample_frames`` frames per variable when
        ``check_values`` is true.
    source
        A file or source name to put in error messages.
    check_values
        Read a few evenly spaced frames of each variable and refuse a variable
        whose sampled frames hold nothing but NaN, or values it cannot hold
        (:func:`check_value_range`: infinities, values outside :func:`value_bounds`).
    sample_frames
        How many frames to read per variable for the value check.

    Returns
    -------
    CubeInfo
        Variables, dims, sizes, time step, gaps and CRS.

    Raises
    ------
    CubeError
        With a message naming the variable, what was found and what was expected: also for a cube with zero
        frames, a NaT in the time axis, or complex data (:class:`~geostp.errors.CubeValueError`).
    """
    if isinstance(ds, xr.DataArray):  # its grid mapping kept where it carries it, else dropped with a warning
        ds = as_cube(ds, argument=source or "ds")
    if not isinstance(ds, xr.Dataset):
        raise CubeError(f"{_name(source)}expected an xarray Dataset or DataArray, got {type(ds).__name__}")
    variables = [v for v in ds.data_vars if v != grid_mapping_name_safe(ds)]
    variables = [v for v in variables if ds[v].ndim > 0]  # 0-d ones are grid mappings and flags
    if not variables:
        raise CubeError(
            f"{_name(source)}no data variable with dims (time, y, x); found variables "
            f"{ {v: ds[v].dims for v in ds.data_vars} }"
        )
    expected_sets = ({"time", "y", "x"}, {"sequence", "time", "y", "x"})
    dims0: tuple[str, ...] | None = None
    for v in variables:
        dims = ds[v].dims
        if set(dims) not in expected_sets:
            missing = sorted({"time", "y", "x"} - set(dims))
            extra = sorted(set(dims) - {"sequence", "time", "y", "x"})
            detail = []
            if missing:
                detail.append(f"missing dim(s) {missing}")
            if extra:
                detail.append(f"unexpected dim(s) {extra}")
            raise CubeError(
                f"{_name(source)}variable {v!r} has dims {dims} ({', '.join(detail)}); "
                "expected (time, y, x) or (sequence, time, y, x)"
            )
        if dims0 is None:
            dims0 = dims
        elif set(dims) != set(dims0):
            raise CubeError(f"{_name(source)}variable {v!r} has dims {dims} but {variables[0]!r} has {dims0}")
        units = ds[v].attrs.get("units")
        if units is None or (isinstance(units, str) and not units.strip()):
            raise CubeError(
                f"{_name(source)}variable {v!r} has no 'units' attribute; expected CF units "
                "such as 'mm h-1' (rain rate), 'dBZ' or '1' (dimensionless)"
            )
        if not (ds[v].attrs.get("standard_name") or ds[v].attrs.get("long_name")):
            raise CubeError(
                f"{_name(source)}variable {v!r} has neither 'standard_name' nor 'long_name'; expected "
                "a CF standard name such as 'lwe_precipitation_rate'"
            )
        _check_known_units(ds[v], source)
        if np.issubdtype(ds[v].dtype, np.complexfloating):
            raise CubeValueError(f"{_name(source)}variable {v!r} has complex dtype {ds[v].dtype}; expected real "
                                 "numbers (take .real or abs() yourself if that is what you mean)")
        if not np.issubdtype(ds[v].dtype, np.number):
            raise CubeError(f"{_name(source)}variable {v!r} has dtype {ds[v].dtype}; expected a numeric type")
    assert dims0 is not None
    ordered = ("sequence", "time", "y", "x") if "sequence" in dims0 else ("time", "y", "x")

    for d in ("time", "y", "x"):
        if d not in ds.coords:
            raise CubeError(f"{_name(source)}dim {d!r} has no coordinate; expected a 1-D {d!r} coordinate")
        if ds.sizes[d] == 0:
            what = "zero frames (time has length 0)" if d == "time" else f"an empty grid ({d} has length 0)"
            raise CubeError(f"{_name(source)}the cube has {what}; expected at least one frame of at least one "
                            "pixel (a time selection that matched nothing?)")
    for d in SPATIAL_DIMS:
        vals = np.asarray(ds[d].values)
        if np.issubdtype(vals.dtype, np.number) and not np.isfinite(vals).all():
            bad = np.flatnonzero(~np.isfinite(vals.astype(float)))
            raise CubeError(
                f"{_name(source)}coordinate {d!r} holds {bad.size} non-finite value(s) (first at index {bad[0]}: "
                f"{vals[bad[0]]}); expected finite pixel-centre coordinates along every row and column (a pixel "
                "off the Earth has NaN lat/lon, never a NaN x or y)"
            )
        if vals.size > 1:
            dv = np.diff(vals.astype(float))
            if not (np.all(dv > 0) or np.all(dv < 0)):
                raise CubeError(
                    f"{_name(source)}coordinate {d!r} is not strictly monotonic; expected increasing "
                    "or decreasing pixel-centre coordinates"
                )
            if np.issubdtype(vals.dtype, np.number):
                _check_regular_axis(d, vals, source)
    times = ds["time"].values
    if not (np.issubdtype(times.dtype, np.datetime64) or np.issubdtype(times.dtype, np.integer)):
        raise CubeError(
            f"{_name(source)}time coordinate has dtype {times.dtype}; expected datetime64 "
            "(or integer frame indices for video)"
        )
    if np.issubdtype(times.dtype, np.datetime64) and np.isnat(times).any():
        i = int(np.flatnonzero(np.isnat(times))[0])
        after = f", after {_fmt_time(times[i - 1])}" if i > 0 and not np.isnat(times[i - 1]) else ""
        raise CubeError(f"{_name(source)}time coordinate holds NaT (not a time) at index {i}{after}; expected a "
                        "valid time for every frame (a time the file's encoding could not decode?)")
    step = time_step(ds, source=source)
    gaps = tuple(find_gaps(ds, step, source=source))

    crs = cube_crs(ds)
    n_off_grid = _count_off_grid(ds, source)
    if check_values:
        _check_sampled_values(ds, variables, sample_frames, source)
    return CubeInfo(
        variables=tuple(variables),
        dims=ordered,
        sizes={d: int(ds.sizes[d]) for d in ordered},
        step=step,
        gaps=gaps,
        crs_wkt=crs.to_wkt() if crs is not None else None,
        grid_mapping=grid_mapping_name(ds),
        n_off_grid=n_off_grid,
    )


class OffGridWarning(UserWarning):
    """A cube's ``lat``/``lon`` hold infinite values, where a pixel off the Earth should be NaN."""


def _count_off_grid(ds: xr.Dataset, source: str | None) -> int:
    """Pixels whose 2-D lat/lon are not finite (NaN: off the Earth, as the adapters write it); infinite ones warn."""
    off: np.ndarray | None = None
    infinite = []
    for name in ("lat", "lon"):
        if name not in ds.coords or set(ds[name].dims) != set(SPATIAL_DIMS):
            continue
        values = np.asarray(ds[name].values, float)
        if np.isinf(values).any():
            infinite.append(f"{name} ({int(np.isinf(values).sum())} pixels)")
        bad = ~np.isfinite(values)
        off = bad if off is None else off | bad
    if infinite:
        import warnings

        warnings.warn(
            f"{_name(source)}coordinates {' and '.join(infinite)} are infinite; expected NaN for pixels that lie "
            "off the Earth (geostp's adapters write NaN there)", OffGridWarning, stacklevel=3,
        )
    return int(off.sum()) if off is not None else 0


def grid_mapping_name_safe(ds: xr.Dataset) -> str | None:
    try:
        return grid_mapping_name(ds)
    except CubeError:
        return None


def is_precipitation(da: xr.DataArray) -> bool:
    """Whether a cube variable is a precipitation field (by its CF ``standard_name``): rain rates and
    amounts are never negative, and rainy samples are the ones worth training on."""
    return str(da.attrs.get("standard_name", "")).startswith(("lwe_precipitation", "precipitation"))


def _check_sampled_values(ds: xr.Dataset, variables: Sequence[str], n: int, source: str | None) -> None:
    """Refuse a variable whose sampled frames hold impossible values (:func:`check_value_range`) or only NaN."""
    nt = ds.sizes["time"]
    idx = np.unique(np.linspace(0, nt - 1, num=min(n, nt)).round().astype(int))
    for v in variables:
        da = ds[v].isel(time=idx)
        if "sequence" in da.dims:
            ns = ds.sizes["sequence"]
            da = da.isel(sequence=np.unique(np.linspace(0, ns - 1, num=min(n, ns)).round().astype(int)))
        values = np.asarray(da.transpose("time", ...).values)
        check_value_range(values, ds[v], source=source, times=ds["time"].values[idx],
                          where=f" (of the {len(idx)} frames checked)")
        if not np.issubdtype(da.dtype, np.floating):
            continue
        if not np.isfinite(values).any():
            raise CubeValueError(
                f"{_name(source)}variable {v!r} holds only NaN in the {len(idx)} frames checked; "
                "expected data (missing values as NaN only where there is no data)"
            )


def describe(ds: xr.Dataset, info: CubeInfo | None = None) -> str:
    """A few human-readable lines about a cube."""
    info = info or validate_cube(ds, check_values=False)
    lines = [
        "dims: " + ", ".join(f"{d}={info.sizes[d]}" for d in info.dims),
        "variables: "
        + ", ".join(f"{v} [{ds[v].attrs.get('units')}]" for v in info.variables),
    ]
    if info.sizes["time"]:
        t = ds["time"].values
        lines.append(f"time: {_fmt_time(t[0])} .. {_fmt_time(t[-1])}, step {_fmt_delta(info.step)}")
    lines.append(f"gaps: {len(info.gaps)} ({info.n_missing} missing steps)")
    if info.n_off_grid:
        total = info.sizes["y"] * info.sizes["x"]
        lines.append(f"off the Earth: {info.n_off_grid} of {total} pixels ({100 * info.n_off_grid / total:.1f} %) "
                     "have no lat/lon (NaN)")
    if info.crs_wkt:
        import pyproj

        lines.append(f"crs: {crs_summary(pyproj.CRS.from_wkt(info.crs_wkt))}")
    return "\n".join(lines)


_UNNAMED = {"", "unknown", "undefined", "unnamed"}


def crs_summary(crs: Any) -> str:
    """One line naming a :class:`pyproj.CRS` and its parameters, also for a projection without a name or EPSG
    code (the MeteoSwiss, KNMI, RMI and BoM grids): ``CH1903 / LV03, EPSG:21781 (+proj=somerc +lat_0=46.9524
    ...)`` or ``Polar Stereographic (variant B), no EPSG code (+proj=stere +lat_0=90 ...)``; numbers rounded to 6
    significant digits (no exponents), the datum shift and PROJ's bookkeeping (``+no_defs``, ``+type=crs``) left out."""
    import warnings

    base = crs.source_crs if crs.is_bound and crs.source_crs is not None else crs  # +towgs84 binds a CRS
    name = crs.name if crs.name not in _UNNAMED else base.name if base.name not in _UNNAMED else None
    op = getattr(base, "coordinate_operation", None)
    method = op.method_name if op is not None and op.method_name not in _UNNAMED else None
    head = name or method or ("geographic" if crs.is_geographic else "unnamed projection")
    if name and method and crs.is_projected:
        head = f"{name} [{method}]" if method not in name else name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # to_proj4 warns that PROJ strings lose information; this is a summary
        epsg, proj4 = crs.to_epsg(), crs.to_proj4()
    params = []
    for token in proj4.split():
        key, _, value = token.lstrip("+").partition("=")
        if key in ("no_defs", "type", "towgs84", "wktext"):
            continue
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            value = str(int(number)) if number.is_integer() else f"{number:.6g}" if abs(number) < 1e5 else \
                f"{number:.1f}"
        params.append(f"+{key}={value}" if value else f"+{key}")
    code = f"EPSG:{epsg}" if epsg is not None else "no EPSG code"
    return f"{head}, {code} ({' '.join(params)})"


def window_to_tensor(window: xr.Dataset, variables: Sequence[str], *, fill_value: float = 0.0):
    """Turn a ``(time, y, x)`` window into a float32 ``[T, C, H, W]`` tensor and a validity mask.

    Variables become channels in the order given. NaN becomes ``fill_value``;
    the mask (bool, same shape) is True where the value was finite.
    """
    import torch

    arrays = []
    for v in variables:
        if v not in window.data_vars:
            raise CubeError(f"variable {v!r} is not in the window; it has {list(window.data_vars)}")
        arrays.append(np.asarray(window[v].transpose("time", "y", "x").values, dtype=np.float32))
    data = np.stack(arrays, axis=1)
    mask = np.isfinite(data)
    data = np.where(mask, data, np.float32(fill_value))
    return torch.from_numpy(data), torch.from_numpy(mask)


def forecast_to_dataarray(
    values: Any,
    cube: xr.Dataset,
    *,
    reference_time: Any,
    variables: Sequence[str],
    step: Any = None,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Label a forecast ``[L, C, H, W]`` (or ``[N, L, C, H, W]``) with the cube's coordinates.

    Returns a DataArray with dims ``lead_time, y, x`` (``time`` first when
    several reference times, ``variable`` when several channels), coordinates
    ``valid_time`` and ``forecast_reference_time``, the cube's ``x``/``y`` and
    any 2-D ``lat``/``lon``, the grid mapping, and the units of the variable.
    """
    arr = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
    several = arr.ndim == 5
    if arr.ndim not in (4, 5):
        raise CubeError(f"forecast values must be [L, C, H, W] or [N, L, C, H, W]; got shape {arr.shape}")
    n_lead, n_var = arr.shape[-4], arr.shape[-3]
    if n_var != len(variables):
        raise CubeError(f"forecast has {n_var} channels but {len(variables)} variables were named")
    if arr.shape[-2:] != (cube.sizes["y"], cube.sizes["x"]):
        raise CubeError(f"forecast grid {arr.shape[-2:]} differs from the cube's {(cube.sizes['y'], cube.sizes['x'])}")
    if step is None:
        step = time_step(cube)
    lead = np.arange(1, n_lead + 1) * step
    ref = np.atleast_1d(np.asarray(reference_time))
    dims = ["lead_time", "variable", "y", "x"]
    if several:
        dims = ["time", *dims]
    coords: dict[str, Any] = {"lead_time": lead, "y": cube["y"], "x": cube["x"]}
    for name in ("lat", "lon"):
        if name in cube.coords and set(cube[name].dims) == {"y", "x"}:
            coords[name] = cube[name]
    if several:
        coords["time"] = ref
        coords["valid_time"] = (("time", "lead_time"), ref[:, None] + lead[None, :])
        coords["forecast_reference_time"] = ("time", ref)
    else:
        coords["valid_time"] = ("lead_time", ref[0] + lead)
        coords["forecast_reference_time"] = ref[0]
    coords["variable"] = list(variables)
    da = xr.DataArray(arr, dims=dims, coords=coords)
    for name, cf in FORECAST_TIME_ATTRS.items():
        da[name].attrs.update(cf)
    if several:  # the reference times as a dimension; not the valid time, whatever the name suggests
        da["time"].attrs["long_name"] = "forecast reference time"
    first = cube[variables[0]]
    da.attrs.update({k: first.attrs[k] for k in ("units", "standard_name", "long_name") if k in first.attrs})
    gm = grid_mapping_name(cube)
    if gm is not None:
        da.attrs["grid_mapping"] = gm
        da.coords[gm] = cube[gm]
    if attrs:
        da.attrs.update(attrs)
    if n_var == 1:
        da = da.squeeze("variable", drop=True)
        da.name = variables[0]
    else:
        da.name = "forecast"
    return da


# ----------------------------------------------------------------------------- arguments that name cube parts


class LostGridMappingWarning(UserWarning):
    """A DataArray names a grid mapping (``attrs['grid_mapping']``) that it does not carry: its CRS is lost."""


def as_cube(data: Any, *, argument: str = "ds", name: str = "data") -> xr.Dataset:
    """``data`` as a cube Dataset: a Dataset as it is, a DataArray as a cube of that one variable.

    A DataArray taken from a cube (``ds["precipitation"]``) keeps the cube's coordinates but not its grid-mapping
    variable (a data variable, such as ``crs``): where the grid mapping it names is among its coordinates it is
    kept, otherwise the ``grid_mapping`` reference is dropped with a :class:`LostGridMappingWarning` (the result
    has no CRS; pass ``ds[["precipitation"]]``, a Dataset, to keep it).  ``name`` names an unnamed DataArray.
    Anything else is a :class:`~geostp.errors.CubeError` naming ``argument``.
    """
    if isinstance(data, xr.Dataset):
        return data
    if not isinstance(data, xr.DataArray):
        hint = "; open a store with geostp.open_cube(path) first" if isinstance(data, (str, bytes)) or \
            hasattr(data, "__fspath__") else ""
        raise CubeError(f"{argument}: expected a cube, an xarray Dataset (or a DataArray of one variable), got "
                        f"{type(data).__name__}{hint}")
    gm = data.attrs.get("grid_mapping") or data.encoding.get("grid_mapping")
    label = data.name if data.name is not None else name
    if gm is not None and gm not in data.coords:
        import warnings

        data = data.copy(deep=False)
        data.attrs = {k: v for k, v in data.attrs.items() if k != "grid_mapping"}
        data.encoding = {k: v for k, v in data.encoding.items() if k != "grid_mapping"}
        warnings.warn(f"{argument}: the DataArray {label!r} names grid mapping {gm!r} but does not carry it (a "
                      "variable taken from a cube leaves the cube's grid-mapping variable behind), so it is used "
                      f"without a CRS; pass a Dataset, e.g. ds[[{label!r}]], to keep the CRS",
                      LostGridMappingWarning, stacklevel=3)
    ds = data.to_dataset(name=label)
    if gm is not None and gm in ds.coords and gm not in ds.indexes:  # the cube's layout: a data variable
        ds = ds.reset_coords(gm)
    return ds


def variable_names(variables: Any, *, argument: str = "variables") -> list[str] | None:
    """``variables`` as a list of names: ``None`` stays ``None`` (every variable), a single string is one name, a
    sequence of strings is kept in order.  Anything else (a number, names that are not strings, no name at all, a
    name given twice) is a :class:`~geostp.errors.ConfigError` naming ``argument``."""
    if variables is None:
        return None
    if isinstance(variables, str):
        variables = [variables]
    elif not isinstance(variables, (Sequence, np.ndarray, pd.Index)) or isinstance(variables, bytes):
        raise ConfigError(f"{argument}={variables!r}: expected a variable name or a list of variable names (in "
                          "channel order)")
    names = list(variables)
    bad = [v for v in names if not isinstance(v, str) or not v]
    if bad:
        raise ConfigError(f"{argument}={names!r}: {bad[0]!r} is not a variable name; expected a variable name or a "
                          "list of variable names (strings)")
    if not names:
        raise ConfigError(f"{argument}=[] names no variable; expected a variable name or a list of at least one")
    if len(set(names)) != len(names):
        raise ConfigError(f"{argument}={names!r} names a variable twice; expected each variable once")
    return names


_ISO_EXAMPLE = "ISO 8601 times such as '2024-07-01T12:30'"


def parse_time(value: Any, *, argument: str = "reference_time", within: str = "") -> np.datetime64:
    """One time given by a user (an ISO 8601 string, a datetime, a ``pandas.Timestamp``, a ``numpy.datetime64``)
    as a UTC ``datetime64[ns]``; a time zone is converted to UTC and dropped (cubes hold UTC).  Anything that is
    not a time (``'yesterday-ish'``, a number, NaT) is a :class:`~geostp.errors.ConfigError` naming ``argument``
    and the value (and, after the expected form, ``within``: where the time must lie)."""

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{argument}={value!r} {why}; expected {_ISO_EXAMPLE}{within}")

    if value is None or isinstance(value, (bool, np.bool_, int, float, np.number, bytes)):
        raise refuse("is not a time")
    try:
        stamp = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise refuse(f"is not a time ({str(exc).splitlines()[0][:120]})") from None
    if stamp is pd.NaT or pd.isna(stamp):
        raise refuse("is not a time (NaT)")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return np.datetime64(stamp.to_datetime64(), "ns")


def reference_time_values(times: Any, reference_times: Any, *, argument: str = "reference_times") -> np.ndarray:
    """``reference_times`` (one time or a list) as values of the time axis ``times`` (datetime64 or integer
    frame indices), in the order given.

    Each is read by :func:`parse_time` (on an integer axis it must be an integer frame index); a
    :class:`~geostp.errors.ConfigError` names ``argument`` (and the position) and the bad value where one is not
    a time, is not a time of the axis, or where there is none at all.
    """
    times = np.asarray(times)
    dated = np.issubdtype(times.dtype, np.datetime64)
    if times.size:
        span = f"{_fmt_time(times[0])} .. {_fmt_time(times[-1])}"
        within = f" within the cube, {span}" if dated else f"frame indices of the cube, {span}"
    else:
        within = " within the cube (it has no time)"
    expected = f"expected {_ISO_EXAMPLE}{within}" if dated else "expected integer " + within
    if isinstance(reference_times, (xr.DataArray, pd.Index, pd.Series)):
        reference_times = np.asarray(reference_times)
    single = False
    if isinstance(reference_times, np.ndarray):
        given = list(reference_times.ravel())
    elif isinstance(reference_times, (set, frozenset, dict)):
        raise ConfigError(f"{argument}={reference_times!r}: expected one time or a list of times (in order); "
                          f"{expected}")
    elif hasattr(reference_times, "__iter__") and not isinstance(reference_times, (str, bytes)):
        given = list(reference_times)
    else:
        given, single = [reference_times], True
    if not given:
        raise ConfigError(f"{argument} is empty; {expected} (one or more)")
    out, index = [], pd.Index(times)
    for i, value in enumerate(given):
        where = argument if single else f"{argument}[{i}]"
        if dated:
            t = parse_time(value, argument=where, within=within).astype(times.dtype)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            t = times.dtype.type(value)
        else:
            raise ConfigError(f"{where}={value!r} is not a frame index; {expected}")
        if t not in index:
            raise ConfigError(f"{where}={_fmt_time(t)} is not a time of the cube; {expected}")
        out.append(t)
    return np.asarray(out, dtype=times.dtype)
