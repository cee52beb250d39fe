"""Colour scales for maps: rain-rate classes in mm/h, reflectivity in dBZ, and a continuous fallback.

Every scale shows missing data (NaN: outside radar range, failed frames) in
light grey, distinct from "no rain", which is left transparent (white on a
plain background), so that a dry map and a map with no data never look alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geostp.errors import ConfigError
from geostp.registry import Registry

__all__ = [
    "ColourScale",
    "RAIN_RATE",
    "REFLECTIVITY",
    "CONTINUOUS",
    "colour_scales",
    "colour_scale",
    "NO_DATA_COLOUR",
]

#: Colour of missing values (NaN) on every scale.
NO_DATA_COLOUR = "#d4d4d4"
_TRANSPARENT = (1.0, 1.0, 1.0, 0.0)


@dataclass(frozen=True)
class ColourScale:
    """A named colour scale: discrete classes (``levels`` + ``colours``) or a continuous colour map.

    Parameters
    ----------
    name
        Registry name.
    label
        What the scale shows, for colour-bar labels (units are added from the data).
    levels
        Class boundaries, increasing; values below ``levels[0]`` get ``under``,
        values at or above ``levels[-1]`` get ``over``. ``None`` for a continuous scale.
    colours
        One colour per class (``len(levels) - 1``) for a discrete scale.
    cmap_name
        A matplotlib colour map for a continuous scale.
    under, over, bad
        Colours below the first class, above the last, and of NaN.
    units
        The units the classes are in (``None``: any).
    """

    name: str
    label: str
    levels: tuple[float, ...] | None = None
    colours: tuple[str, ...] | None = None
    cmap_name: str = "viridis"
    under: Any = _TRANSPARENT
    over: Any = None
    bad: Any = NO_DATA_COLOUR
    units: str | None = None
    ticks: tuple[float, ...] | None = field(default=None)

    @property
    def discrete(self) -> bool:
        return self.levels is not None

    def cmap(self):
        """The matplotlib colour map, with its under/over/bad colours set."""
        import matplotlib as mpl
        from matplotlib.colors import ListedColormap

        if self.discrete:
            assert self.colours is not None
            cmap = ListedColormap(list(self.colours), name=self.name)
            cmap = cmap.with_extremes(under=self.under, over=self.over or self.colours[-1], bad=self.bad)
        else:
            cmap = mpl.colormaps[self.cmap_name].with_extremes(bad=self.bad)
        return cmap

    def norm(self, values: Any = None, *, vmin: float | None = None, vmax: float | None = None):
        """The matplotlib norm; a continuous scale takes its range from ``vmin``/``vmax`` or ``values``."""
        from matplotlib.colors import BoundaryNorm, Normalize

        if self.discrete:
            assert self.levels is not None
            return BoundaryNorm(list(self.levels), ncolors=len(self.levels) - 1, clip=False)
        if vmin is None or vmax is None:
            lo, hi = _robust_range(values)
            vmin = lo if vmin is None else vmin
            vmax = hi if vmax is None else vmax
        if vmax <= vmin:
            vmax = vmin + 1.0
        return Normalize(vmin=vmin, vmax=vmax)

    @property
    def extend(self) -> str:
        """Colour-bar extension: discrete scales show the over-range class."""
        return "max" if self.discrete else "neither"

    def __post_init__(self) -> None:
        if self.levels is not None:
            if self.colours is None or len(self.colours) != len(self.levels) - 1:
                raise ConfigError(f"colour scale {self.name!r}: {len(self.levels)} levels need "
                                  f"{len(self.levels) - 1} colours, got {len(self.colours or ())}")
            if any(b <= a for a, b in zip(self.levels, self.levels[1:], strict=False)):
                raise ConfigError(f"colour scale {self.name!r}: levels must increase, got {self.levels}")


def _robust_range(values: Any) -> tuple[float, float]:
    if values is None:
        return 0.0, 1.0
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi)


#: Rain rate in mm/h: classes 0.1, 0.5, 1, 2, 5, 10, 20, 50, 100 (and above);
#: below 0.1 mm/h counts as dry and is transparent.
RAIN_RATE = ColourScale(
    name="rain_rate",
    label="rain rate",
    levels=(0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
    colours=("#c9e4f5", "#8cc4e8", "#3f8fd1", "#2a9d4b", "#f2d43d", "#f39325", "#d9342b", "#9c2a8f"),
    over="#4b1461",
    units="mm h-1",
)

#: Radar reflectivity in dBZ, 5 dB classes from 5 to 65 dBZ; below 5 dBZ is transparent.
REFLECTIVITY = ColourScale(
    name="reflectivity",
    label="reflectivity",
    levels=tuple(float(v) for v in range(5, 70, 5)),
    colours=("#d7eef7", "#a6d8ee", "#5fb3e0", "#2f7fc1", "#3aa655", "#7cc24a", "#f4e04d",
             "#f5a623", "#e8602c", "#c9252d", "#a11d5c", "#6e1a7a"),
    over="#f2f2f2",
    units="dBZ",
)

#: Anything else: viridis over the data's 1st-99th percentile range, NaN in grey.
CONTINUOUS = ColourScale(name="continuous", label="value", cmap_name="viridis", under=None)

colour_scales: Registry[ColourScale] = Registry("colour scale")
for _scale in (RAIN_RATE, REFLECTIVITY, CONTINUOUS):
    colour_scales.register(_scale.name, _scale)

_RAIN_UNITS = {"mmh-1", "mm/h", "mmhr-1", "mm/hr", "mmh**-1", "mmh^-1", "mm.h-1", "mmperhour"}
_DBZ_UNITS = {"dbz"}


def _normalise_units(units: Any) -> str:
    return "".join(str(units).split()).lower()


def colour_scale(spec: str | ColourScale = "auto", *, units: Any = None,
                 standard_name: Any = None) -> ColourScale:
    """Choose a colour scale.

    Parameters
    ----------
    spec
        ``"auto"`` (from ``units``), a registered name (``"rain_rate"``,
        ``"reflectivity"``, ``"continuous"``), or a :class:`ColourScale`.
    units
        The data's ``units`` attribute: ``mm h-1`` (and spellings such as
        ``mm/h``) chooses the rain-rate classes, ``dBZ`` the reflectivity
        classes, anything else the continuous scale.
    standard_name
        The data's CF standard name; reflectivity standard names choose the
        reflectivity scale even without units.

    Raises
    ------
    UnknownNameError
        For a name that is not registered, listing the registered ones.
    """
    if isinstance(spec, ColourScale):
        return spec
    if spec != "auto":
        return colour_scales.get(spec)
    u = _normalise_units(units) if units is not None else ""
    if u in _RAIN_UNITS:
        return RAIN_RATE
    if u in _DBZ_UNITS or (standard_name and "reflectivity" in str(standard_name)):
        return REFLECTIVITY
    return CONTINUOUS


def legend_ticks(scale: ColourScale) -> Sequence[float] | None:
    """Colour-bar ticks: the class boundaries of a discrete scale."""
    if scale.ticks is not None:
        return scale.ticks
    return scale.levels
