"""What a variable can physically hold: default value bounds by CF standard name and units, the units geostp
knows for them, and the checks that refuse impossible values (an undecoded fill value, an overflow, a
scale factor not applied) and irregular spatial grids.  :mod:`geostp.cube` uses them to validate cubes and
re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.errors import CubeError, CubeValueError

_PER_HOUR = ("mm h-1", "mm/h", "mm hr-1", "mm/hr", "mm h**-1", "mm h^-1", "mm hour-1", "mm/hour", "kg m-2 h-1")
_PER_SECOND = ("mm s-1", "mm/s", "kg m-2 s-1", "kg m**-2 s**-1", "kg/m2/s")
_AMOUNT = ("mm", "kg m-2", "kg/m2", "kg m**-2", "kg.m-2", "millimeter", "millimetre", "millimeters", "millimetres")
_AMOUNT_M = ("m", "metre", "meter", "metres", "meters")  # ERA5's total precipitation
_DBZ = ("dbz",)
#: The largest rain rate geostp accepts by default, mm/h: above the world record for one minute (31.2 mm,
#: about 1870 mm/h), so anything larger is a fill value or a decoding error, not rain.
MAX_RAIN_RATE_MM_H = 2000.0
#: The most negative rain rate (mm/h) or amount (mm) accepted: providers' processing leaves small negatives (BoM's
#: Rainfields holds -0.1 mm in 10 minutes, -0.6 mm/h), which forecasts clip to 0; fill values (-1 undecoded, -99,
#: -999, -9999) lie below it.
MIN_RAIN = -1.0
_RATE = {_PER_HOUR: (MIN_RAIN, MAX_RAIN_RATE_MM_H), _PER_SECOND: (MIN_RAIN / 3600.0, MAX_RAIN_RATE_MM_H / 3600.0)}
#: Default bounds of what a variable can physically hold, by CF ``standard_name``, then by a tuple of unit
#: spellings (compared without case): ``low <= value <= high``.  A variable's own CF ``valid_range`` (or
#: ``valid_min``/``valid_max``) takes precedence; add or change entries here to change the defaults.
#: Precipitation is never negative (down to :data:`MIN_RAIN`, a provider's rounding); rates stay below
#: :data:`MAX_RAIN_RATE_MM_H`, amounts below 10000 mm (above
#: the wettest month on record, 9300 mm), reflectivity within -100 .. 100 dBZ (radars measure about -35 .. 80).
VALUE_BOUNDS: dict[str, dict[tuple[str, ...], tuple[float, float]]] = {
    "lwe_precipitation_rate": _RATE,
    "rainfall_rate": _RATE,
    "precipitation_flux": _RATE,
    "precipitation_amount": {_AMOUNT: (MIN_RAIN, 10000.0)},
    "lwe_thickness_of_precipitation_amount": {_AMOUNT: (MIN_RAIN, 10000.0), _AMOUNT_M: (MIN_RAIN / 1e3, 10.0)},
    "thickness_of_rainfall_amount": {_AMOUNT: (MIN_RAIN, 10000.0), _AMOUNT_M: (MIN_RAIN / 1e3, 10.0)},
    "rainfall_amount": {_AMOUNT: (MIN_RAIN, 10000.0)},
    "equivalent_reflectivity_factor": {_DBZ: (-100.0, 100.0)},
}
#: Any variable without bounds of its own: its magnitude stays below this (1e20 and netCDF's default float fill,
#: 9.97e36, are fill values, not data).
GENERIC_MAGNITUDE = 1e20


@dataclass(frozen=True)
class ValueBounds:
    """What a variable can physically hold: ``low <= value <= high``, and where the bounds come from."""

    low: float
    high: float
    origin: str

    def describe(self, units: str = "") -> str:
        unit = f" {units}" if units else ""
        return f"between {self.low:g}{unit} and {self.high:g}{unit} ({self.origin})"


def value_bounds(da: xr.DataArray) -> ValueBounds:
    """The bounds :func:`check_value_range` holds ``da`` to: its CF ``valid_range`` / ``valid_min`` /
    ``valid_max`` when it has them, else :data:`VALUE_BOUNDS` for its standard name and units, else
    ``|value| < GENERIC_MAGNITUDE``."""
    attrs = da.attrs
    if "valid_range" in attrs or "valid_min" in attrs or "valid_max" in attrs:
        try:
            rng = np.asarray(attrs.get("valid_range", [attrs.get("valid_min", -np.inf),
                                                       attrs.get("valid_max", np.inf)]), float).ravel()
            low, high = float(rng[0]), float(rng[1])
        except (TypeError, ValueError, IndexError):
            raise CubeError(f"variable {da.name!r} has valid_range={attrs.get('valid_range')!r} / "
                            f"valid_min={attrs.get('valid_min')!r} / valid_max={attrs.get('valid_max')!r}; "
                            "expected numbers (CF: valid_range = [min, max])") from None
        return ValueBounds(low, high, "the variable's CF valid_range")
    name, units = str(attrs.get("standard_name", "")), _unit_key(attrs.get("units", ""))
    for spellings, (low, high) in VALUE_BOUNDS.get(name, {}).items():
        if units in spellings:
            return ValueBounds(low, high, f"geostp's bounds of {name} in {attrs.get('units')}; a CF valid_range "
                                          "on the variable overrides them")
    return ValueBounds(-GENERIC_MAGNITUDE, GENERIC_MAGNITUDE,
                       "geostp's bound on any variable without its own; a CF valid_range on the variable "
                       "overrides it")


def _unit_key(units: Any) -> str:
    """A units string as :data:`VALUE_BOUNDS` spells it: lower case, single spaces."""
    return " ".join(str(units).lower().split())


def _check_known_units(da: xr.DataArray, source: str | None) -> None:
    """Refuse a variable whose standard name has bounds in :data:`VALUE_BOUNDS` but whose units are none of the
    spellings they are given in (``units="bananas"`` on rain): its values could not be checked, nor its thresholds
    (mm/h) be meant.  A CF ``valid_range`` (or ``valid_min``/``valid_max``) on the variable gives its own bounds
    and lifts the check."""
    name = str(da.attrs.get("standard_name", ""))
    known = VALUE_BOUNDS.get(name)
    if not known or any(k in da.attrs for k in ("valid_range", "valid_min", "valid_max")):
        return
    if any(_unit_key(da.attrs.get("units", "")) in spellings for spellings in known):
        return
    accepted = ", ".join(repr(u) for spellings in known for u in spellings)
    raise CubeError(
        f"{_name(source)}variable {da.name!r} ({name}) has units {da.attrs.get('units')!r}, which geostp does not "
        f"know for {name}; expected one of {accepted} (convert the data, or fix the attribute), or a CF "
        "valid_range on the variable giving the bounds its values must lie within in its own units")


def _check_regular_axis(d: str, vals: np.ndarray, source: str | None) -> None:
    """Refuse a spatial coordinate whose spacing is not constant: motion and patches are measured in pixels,
    which must all be the same size.  Rounding (float32 coordinates) is tolerated."""
    v = vals.astype(float)
    dv = np.diff(v)
    step = float(np.median(dv))
    tol = max(1e-3 * abs(step), 8 * float(np.finfo(vals.dtype).eps if vals.dtype.kind == "f" else 0.0)
              * float(np.max(np.abs(v))))
    bad = np.flatnonzero(np.abs(dv - step) > tol)
    if bad.size:
        i = int(bad[0])
        raise CubeError(
            f"{_name(source)}coordinate {d!r} is not a regular grid: its spacing is {step:g} between most "
            f"neighbours but {dv[i]:g} between {d}[{i}]={v[i]:g} and {d}[{i + 1}]={v[i + 1]:g} ({bad.size} "
            f"irregular step(s)); expected a regular grid, equally spaced pixel centres (motion and patches are "
            "measured in pixels): regrid the data onto a regular grid first")


def check_value_range(values: Any, da: xr.DataArray, *, source: str | None = None, times: Any = None,
                      where: str = "") -> None:
    """Refuse values ``da``'s variable cannot hold: infinities, and anything outside :func:`value_bounds`.

    ``values`` is an array of ``da``'s values (any shape; ``times`` labels its first axis, to say which frame
    holds the bad value); NaN (no data) is allowed.  Raises :class:`~geostp.errors.CubeValueError` naming
    ``source``, the variable, the value, where it is and what was expected.
    """
    a = np.asarray(values)
    if a.size == 0 or a.dtype.kind not in "fiu":
        return
    bounds = value_bounds(da)
    name = f"{_name(source)}variable {da.name!r}"
    units = da.attrs.get("units", "")
    with np.errstate(invalid="ignore"):
        if a.dtype.kind == "f":
            inf = np.isinf(a)
            if inf.any():
                first = tuple(int(i[0]) for i in np.nonzero(inf))
                raise CubeValueError(
                    f"{name} holds {a[first]} at {int(inf.sum())} pixel(s){_frame_of(first, times)}{where}; "
                    "expected finite values, NaN where there is no data (an overflow, or an undecoded fill value?)")
        low, high = np.fmin.reduce(a, axis=None), np.fmax.reduce(a, axis=None)
        if not (np.isnan(low) or (low >= bounds.low and high <= bounds.high)):
            bad = (a < bounds.low) | (a > bounds.high)
            first = tuple(int(i[0]) for i in np.nonzero(bad))
            raise CubeValueError(
                f"{name} holds {a[first]:g} {units} at {int(bad.sum())} pixel(s){_frame_of(first, times)}{where}; "
                f"expected values {bounds.describe(units)} (an undecoded fill value or scale factor? decode it, e.g. with "
                "xarray's mask_and_scale, or mark it as missing with NaN)")


def _frame_of(index: tuple[int, ...], times: Any) -> str:
    if times is None or not index:
        return ""
    times = np.asarray(times)
    return f" (first in the frame at {_fmt_time(times[index[0]])})" if index[0] < times.size else ""


def _fmt_time(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(pd.Timestamp(value))
    return str(value)


def _name(source: str | None) -> str:
    return f"{source}: " if source else ""
