"""Motion vectors over a map: the field :func:`geostp.motion` returns, drawn as thinned arrows.

The arrows are matplotlib's ``quiver`` in the map's own projection (cartopy's
``transform`` from the field's CF grid mapping), so they point where the rain
goes on the map: ``u`` along increasing x, ``v`` along increasing y, as
:func:`geostp.motion` gives them. A key arrow gives the scale in the field's
units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from geostp.errors import GeostpError
from geostp.plot import basemap

__all__ = ["plot_motion"]

#: Arrows along the longer side of the field by default (pysteps' examples: one every 25 of 710 pixels).
DEFAULT_ARROWS = 28


def _check_motion(motion: Any) -> xr.DataArray:
    if not isinstance(motion, xr.DataArray) or set(motion.dims) != {"component", "y", "x"}:
        dims = tuple(motion.dims) if isinstance(motion, xr.DataArray) else type(motion).__name__
        raise GeostpError(f"motion: expected the DataArray geostp.motion returns (component, y, x), got {dims}")
    if list(motion["component"].values) != ["u", "v"]:
        raise GeostpError(f"motion: expected components ['u', 'v'], got {list(motion['component'].values)}")
    return motion.transpose("component", "y", "x")


def _nice(value: float) -> float:
    """1, 2 or 5 times a power of ten, at most ``value`` (the key arrow's length)."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** np.floor(np.log10(value))
    return float(max(m for m in (1.0, 2.0, 5.0) if m * power <= value * (1 + 1e-9)) * power)


def _transform(ax, motion: xr.DataArray, crs: Any):
    """The cartopy projection the arrows' positions and components are in (None on plain axes)."""
    if not hasattr(ax, "projection"):
        return None
    pcrs = basemap.grid_crs(motion, crs, argname="motion")
    if pcrs is None:
        return ax.projection  # no grid mapping of its own: on the map's grid
    own = basemap.map_projection(pcrs, basemap.data_extent(motion, in_metres=pcrs.is_projected))
    return ax.projection if getattr(ax.projection, "proj4_init", None) == own.proj4_init else own


def _positions(sub: xr.DataArray, georeferenced: bool) -> tuple[np.ndarray, np.ndarray]:
    """The arrows' x/y, in metres on a map whose coordinates say km (as the map's extent is)."""
    axes = []
    for d in ("x", "y"):
        values = np.asarray(sub[d].values, float)
        if georeferenced:
            values = values * basemap._LENGTH_TO_METRES.get(str(sub[d].attrs.get("units", "m")).strip().lower(), 1.0)
        axes.append(values)
    return np.meshgrid(*axes)


def _spacing(xx: np.ndarray, yy: np.ndarray) -> float:
    """The distance between neighbouring arrows, in the positions' units."""
    gaps = [abs(float(xx[0, 1] - xx[0, 0]))] if xx.shape[1] > 1 else []
    gaps += [abs(float(yy[1, 0] - yy[0, 0]))] if yy.shape[0] > 1 else []
    return min(gaps) if gaps else 0.0


def plot_motion(ax, motion: xr.DataArray, *, every: int | None = None, color: str = "black", key: bool = True,
                crs: Any = None, **quiver: Any):
    """Draw a motion field as arrows, one every ``every`` pixels, on ``ax`` (a map of rain, say).

    Parameters
    ----------
    ax
        The axes: a cartopy GeoAxes of a map (:func:`~geostp.plot.plot_map`'s), or plain axes for data
        without a grid mapping.
    motion
        The field :func:`geostp.motion` returns: ``(component, y, x)``, ``u`` along increasing x and
        ``v`` along increasing y, with its grid mapping.
    every
        One arrow every so many pixels in x and y (default: about 28 along the longer side).
    color
        The arrows' colour.
    key
        Draw a key arrow with its length in the field's units (lower right).
    crs
        Overrides the field's grid mapping (pyproj CRS, ``"EPSG:..."``, WKT).
    **quiver
        Passed to matplotlib's ``quiver`` (``scale``, ``width``, ``alpha``, ...).

    Returns
    -------
    matplotlib.quiver.Quiver
    """
    motion = _check_motion(motion)
    ny, nx = motion.sizes["y"], motion.sizes["x"]
    if every is None:
        every = max(1, int(round(max(ny, nx) / DEFAULT_ARROWS)))
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise GeostpError(f"every={every!r}; expected a whole number of pixels >= 1")
    sub = motion.isel(y=slice(every // 2, None, every), x=slice(every // 2, None, every))
    u, v = (np.asarray(sub.sel(component=c).values, float) for c in ("u", "v"))
    transform = _transform(ax, motion, crs)
    xx, yy = _positions(sub, georeferenced=transform is not None)
    kwargs: dict[str, Any] = {"color": color, "angles": "xy", "pivot": "middle", "zorder": 5, "width": 0.0025}
    if transform is not None:
        kwargs["transform"] = transform
    speed = np.hypot(u, v)
    fast = float(np.nanpercentile(speed, 90)) if np.isfinite(speed).any() else 0.0
    spacing = _spacing(xx, yy)
    if fast > 0 and spacing > 0:  # the fastest arrows (90th percentile) nearly reach the next one
        kwargs.update(scale_units="xy", scale=fast / (0.9 * spacing))
    arrows = ax.quiver(xx, yy, u, v, **{**kwargs, **quiver})
    if key:
        length = _nice(fast)
        units = str(motion.attrs.get("units", ""))
        label = f"{length:g} {'m/s' if units == 'm s-1' else units}".strip()
        ax.quiverkey(arrows, 0.9, 0.03, length, label, labelpos="N", coordinates="axes", color=color,
                     fontproperties={"size": 7})
    return arrows
