"""How a map looks: :class:`MapStyle`, the one object for the style keywords the plot functions share.

:func:`~geostp.plot.plot_map`, :func:`~geostp.plot.plot_panel`, :func:`~geostp.plot.plot_comparison`,
:func:`~geostp.plot.render_frames` / :func:`~geostp.plot.animate` and (for its title and size)
:func:`~geostp.plot.plot_scores` take ``style=MapStyle(...)`` besides their keywords, so that one house
style is written once::

    house = MapStyle(scale="rain_rate", natural_earth=False, figsize=(6, 5))
    plot_map(forecast, "30min", style=house)
    plot_panel(forecast, style=house)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geostp.errors import ConfigError, UnknownNameError
from geostp.plot.basemap import _RESOLUTIONS, FEATURES
from geostp.plot.colours import ColourScale, colour_scales

__all__ = ["MapStyle", "DEFAULT_FEATURES"]

#: The basemap features drawn unless told otherwise.
DEFAULT_FEATURES = ("coastline", "borders", "lakes")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MapStyle:
    """The look of a map, shared by the plot functions (``style=``); each field is the keyword of that name.

    Attributes
    ----------
    scale
        ``"auto"`` (from the units), a registered colour scale name, or a :class:`ColourScale`.
    vmin, vmax
        The range of a continuous scale (default: 1st-99th percentile).
    crs
        Overrides the data's grid mapping (pyproj CRS, ``"EPSG:..."``, WKT).
    natural_earth
        The Natural Earth folder for coastlines and borders (``None``: looked up; ``False``: none).
    features
        Which of ``"coastline"``, ``"borders"``, ``"lakes"`` to draw.
    resolution
        Natural Earth scale: ``"auto"``, ``"10m"``, ``"50m"`` or ``"110m"``.
    colorbar
        Draw the colour bar.
    title
        Replaces the automatic title.
    figsize
        Size of a new figure, in inches (``None``: from the map's shape).
    """

    scale: str | ColourScale = "auto"
    vmin: float | None = None
    vmax: float | None = None
    crs: Any = None
    natural_earth: str | os.PathLike[str] | bool | None = None
    features: Sequence[str] = DEFAULT_FEATURES
    resolution: str = "auto"
    colorbar: bool = True
    title: str | None = None
    figsize: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scale, ColourScale):
            if not isinstance(self.scale, str):
                raise ConfigError(f"MapStyle scale={self.scale!r}; expected 'auto', a scale name or a ColourScale")
            if self.scale != "auto":
                try:
                    colour_scales.get(self.scale)
                except UnknownNameError as exc:
                    raise UnknownNameError(f"MapStyle scale={self.scale!r}: {exc}") from None
        for name in ("vmin", "vmax"):
            value = getattr(self, name)
            if value is not None and not (_number(value) and np.isfinite(value)):
                raise ConfigError(f"MapStyle {name}={value!r}; expected None or a finite number")
        if self.vmin is not None and self.vmax is not None and not self.vmin < self.vmax:
            raise ConfigError(f"MapStyle vmin={self.vmin!r} is not below vmax={self.vmax!r}")
        if not (self.natural_earth is None or isinstance(self.natural_earth, (bool, str, os.PathLike))):
            raise ConfigError(f"MapStyle natural_earth={self.natural_earth!r}; expected a folder, None or False")
        features = (self.features,) if isinstance(self.features, str) else self.features
        if not isinstance(features, Sequence) or any(f not in FEATURES for f in features):
            raise ConfigError(f"MapStyle features={self.features!r}; expected some of {sorted(FEATURES)}")
        object.__setattr__(self, "features", tuple(features))
        if self.resolution not in ("auto", *_RESOLUTIONS):
            raise ConfigError(f"MapStyle resolution={self.resolution!r}; expected 'auto' or one of {_RESOLUTIONS}")
        if not isinstance(self.colorbar, (bool, np.bool_)):
            raise ConfigError(f"MapStyle colorbar={self.colorbar!r}; expected True or False")
        if self.title is not None and not isinstance(self.title, str):
            raise ConfigError(f"MapStyle title={self.title!r}; expected None or a string")
        if self.figsize is not None:
            size = tuple(self.figsize) if isinstance(self.figsize, Sequence) else ()
            if len(size) != 2 or not all(_number(v) and v > 0 for v in size):
                raise ConfigError(f"MapStyle figsize={self.figsize!r}; expected (width, height) in inches")
            object.__setattr__(self, "figsize", tuple(float(v) for v in size))
