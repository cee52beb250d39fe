"""Maps of cubes and forecasts: one lead time, a panel of lead times, and observation beside forecast.

Georeferenced data (a CF grid mapping, as every radar adapter writes) is drawn
in its own projection with coastlines and borders from a local Natural Earth
folder; data without a grid mapping (video, crowd flows) is drawn as a plain
image. Rain rates use fixed classes in mm/h, reflectivity in dBZ; NaN (no data)
is grey and distinct from dry (transparent) pixels. Titles carry the quantity,
its units, the valid time and the lead time.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import to_timedelta
from geostp.errors import CubeError, GeostpError
from geostp.options import option_group
from geostp.plot import basemap
from geostp.plot.colours import ColourScale, colour_scale, legend_ticks
from geostp.plot.style import DEFAULT_FEATURES, MapStyle

__all__ = ["plot_map", "plot_panel", "plot_comparison", "projection_for", "select_field", "format_lead_time"]

_MAX_DEFAULT_PANELS = 6


# ----------------------------------------------------------------------------- inputs


def _as_dataarray(obj: Any, variable: str | None, argname: str) -> xr.DataArray:
    """A DataArray from a DataArray or a cube Dataset, carrying its grid-mapping variable as a coordinate."""
    if isinstance(obj, xr.DataArray):
        if variable is not None:
            if "variable" in obj.dims:
                return obj.sel(variable=variable)
            raise GeostpError(f"{argname}: variable={variable!r} was given but the DataArray has no 'variable' dim")
        return obj
    if isinstance(obj, xr.Dataset):
        gm_names = {obj[v].attrs.get("grid_mapping") or obj[v].encoding.get("grid_mapping") for v in obj.data_vars}
        candidates = [v for v in obj.data_vars if v not in gm_names and {"y", "x"} <= set(obj[v].dims)]
        if variable is None:
            if len(candidates) != 1:
                raise GeostpError(
                    f"{argname}: the Dataset has {len(candidates)} gridded variables {candidates}; "
                    "choose one with variable=..."
                )
            variable = str(candidates[0])
        if variable not in obj.data_vars:
            raise GeostpError(f"{argname}: variable={variable!r} is not in the Dataset; it has {candidates}")
        da = obj[variable]
        gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
        if gm and gm in obj.variables and gm not in da.coords:
            da = da.assign_coords({gm: obj[gm]})
        return da
    raise GeostpError(f"{argname}: expected an xarray DataArray or Dataset, got {type(obj).__name__}")


def _check_grid(da: xr.DataArray, argname: str) -> None:
    missing = [d for d in ("y", "x") if d not in da.dims]
    if missing:
        raise CubeError(
            f"{argname}: DataArray has dims {tuple(da.dims)}, missing {missing}; expected a cube variable "
            "(time, y, x) or a forecast (lead_time, y, x) with 'y' and 'x' dims"
        )


def _is_timedelta(coord: xr.DataArray) -> bool:
    return np.issubdtype(coord.dtype, np.timedelta64)


def _to_timedelta(value: Any, argname: str) -> pd.Timedelta:
    """Lead times: timedeltas (numpy ``timedelta64`` of any unit, pandas, :class:`datetime.timedelta`, a 0-d
    DataArray of one: a forecast's own ``lead_time`` values), strings such as ``"30min"``/``"PT30M"``, or
    numbers of minutes."""
    if isinstance(value, xr.DataArray) and value.ndim == 0:
        value = value.values[()]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    # before to_timedelta: np.timedelta64 is an np.integer there, which would read it as a number of minutes
    if isinstance(value, (np.timedelta64, pd.Timedelta, _dt.timedelta)):
        td = pd.Timedelta(value)
        if pd.isna(td):
            raise GeostpError(f"{argname}={value!r} is not a lead time (NaT)")
        return td
    try:
        return to_timedelta(value)
    except (TypeError, ValueError):
        raise GeostpError(
            f"{argname}={value!r} is not a lead time; give a timedelta, a string such as '30min', "
            "or a number of minutes"
        ) from None


def format_lead_time(value: Any) -> str:
    """``+30 min`` for a timedelta lead time, ``+3`` for a step count."""
    if isinstance(value, (np.timedelta64, pd.Timedelta, _dt.timedelta)):
        minutes = pd.Timedelta(value).total_seconds() / 60
        return f"+{minutes:g} min"
    return f"+{value}"


def _format_time(value: Any) -> str:
    if isinstance(value, (np.datetime64, pd.Timestamp, _dt.datetime)):
        ts = pd.Timestamp(value)
        return ts.strftime("%Y-%m-%d %H:%M") + (f":{ts.second:02d}" if ts.second else "")
    return str(value)


def _available(coord: xr.DataArray) -> str:
    values = coord.values
    if _is_timedelta(coord):
        shown = [format_lead_time(v).lstrip("+") for v in values]
    else:
        shown = [_format_time(v) for v in values]
    if len(shown) > 8:
        shown = shown[:3] + ["..."] + shown[-3:]
    return ", ".join(shown)


def _index_of(da: xr.DataArray, dim: str, value: Any, argname: str) -> int:
    """Position of ``value`` along ``dim``, or a GeostpError naming the argument and what is available."""
    coord = da[dim]
    values = coord.values
    if isinstance(value, xr.DataArray) and value.ndim == 0:  # e.g. fc.lead_time[-1] or fc.time[0]
        value = value.values[()]
    try:
        if _is_timedelta(coord):
            target = _to_timedelta(value, argname).to_timedelta64()
            hits = np.nonzero(values.astype("timedelta64[ns]") == target.astype("timedelta64[ns]"))[0]
        elif np.issubdtype(coord.dtype, np.datetime64):
            target = pd.Timestamp(value).to_datetime64()
            hits = np.nonzero(values.astype("datetime64[ns]") == target.astype("datetime64[ns]"))[0]
        else:
            hits = np.nonzero(values == value)[0]
    except (TypeError, ValueError):
        hits = np.array([], dtype=int)
    if hits.size == 0:
        what = "lead time" if dim == "lead_time" else dim
        raise GeostpError(f"{argname}={value!r}: no such {what}; available: {_available(coord)} (expected one of these)")
    return int(hits[0])


def select_field(
    da: xr.DataArray,
    lead_time: Any = None,
    *,
    time: Any = None,
    argname: str = "da",
) -> xr.DataArray:
    """One 2-D ``(y, x)`` field of a forecast or cube, keeping its scalar time coordinates.

    Parameters
    ----------
    da
        A forecast (``lead_time, y, x``, optionally ``time``) or a cube variable
        (``time, y, x``).
    lead_time
        The lead time to show (a timedelta of any kind, the forecast's own
        ``lead_time`` values included, ``"30min"``, or minutes as a number);
        default: the first.
    time
        The time to show (observations) or the reference time (a forecast with
        several); default: the first.
    argname
        The name of ``da`` in error messages.

    Raises
    ------
    GeostpError
        For a missing ``y``/``x`` dim, an unknown lead time or time, a lead time
        asked of data without one, or dims left over that the caller must select.
    """
    _check_grid(da, argname)
    if lead_time is not None:
        if "lead_time" not in da.dims:
            raise GeostpError(
                f"lead_time={lead_time!r} was given but {argname} has no 'lead_time' dim (dims {tuple(da.dims)}); "
                "it is not a forecast: choose a frame with time=..."
            )
        da = da.isel(lead_time=_index_of(da, "lead_time", lead_time, "lead_time"))
    elif "lead_time" in da.dims:
        da = da.isel(lead_time=0)
    if time is not None:
        if "time" not in da.dims:
            raise GeostpError(f"time={time!r} was given but {argname} has no 'time' dim (dims {tuple(da.dims)})")
        da = da.isel(time=_index_of(da, "time", time, "time"))
    elif "time" in da.dims:
        da = da.isel(time=0)
    extra = [d for d in da.dims if d not in ("y", "x")]
    if extra:
        raise GeostpError(
            f"{argname}: dims {extra} are left after choosing a lead time and a time; select one value of "
            f"each first (e.g. {argname}.isel({extra[0]}=0) or variable=...)"
        )
    return da.transpose("y", "x")


# ----------------------------------------------------------------------------- style


@dataclass
class _Style:
    """A :class:`MapStyle` resolved for one piece of data: its projection, extent and colours."""

    projection: Any  # a cartopy projection, or None for a plain image
    extent: tuple[float, float, float, float]
    scale: ColourScale
    cmap: Any
    norm: Any
    quantity: str
    units: str | None
    look: MapStyle


def projection_for(da: xr.DataArray | xr.Dataset, *, crs: Any = None, variable: str | None = None):
    """The cartopy projection to draw ``da`` in: its CF grid mapping, with the data's extent as domain.

    Returns ``None`` for data without a grid mapping (drawn as a plain image).
    Use it to make axes for :func:`plot_map`'s ``ax=`` argument::

        ax = plt.axes(projection=geostp.plot.projection_for(forecast))
    """
    da = _as_dataarray(da, variable, "da")
    _check_grid(da, "da")
    pcrs = basemap.grid_crs(da, crs)
    if pcrs is None:
        return None
    return basemap.map_projection(pcrs, basemap.data_extent(da, in_metres=pcrs.is_projected))


def _quantity(da: xr.DataArray) -> str:
    name = da.attrs.get("long_name") or da.attrs.get("standard_name") or da.name or "value"
    return str(name).replace("_", " ")


def _style(da: xr.DataArray, values: Any, look: MapStyle) -> _Style:
    pcrs = basemap.grid_crs(da, look.crs)
    extent = basemap.data_extent(da, in_metres=pcrs is not None and pcrs.is_projected)
    projection = basemap.map_projection(pcrs, extent) if pcrs is not None else None
    units = da.attrs.get("units")
    sc = colour_scale(look.scale, units=units, standard_name=da.attrs.get("standard_name"))
    return _Style(projection=projection, extent=extent, scale=sc, cmap=sc.cmap(),
                  norm=sc.norm(values, vmin=look.vmin, vmax=look.vmax), quantity=_quantity(da),
                  units=str(units) if units is not None else None, look=look)


def _quantity_label(style: _Style) -> str:
    return f"{style.quantity} [{style.units}]" if style.units else style.quantity


def _when(field: xr.DataArray) -> str:
    """Valid time, lead time and reference time of a 2-D field, as far as it has them."""
    coords = field.coords
    if "lead_time" in coords:
        lead = format_lead_time(coords["lead_time"].values[()])
        parts = []
        if "valid_time" in coords:
            parts.append(f"valid {_format_time(coords['valid_time'].values[()])}")
        ref = coords["forecast_reference_time"].values[()] if "forecast_reference_time" in coords else None
        if ref is None and "time" in coords:
            ref = coords["time"].values[()]
        parts.append(f"({lead} from {_format_time(ref)})" if ref is not None else f"({lead})")
        return " ".join(parts)
    if "time" in coords:
        return f"observed {_format_time(coords['time'].values[()])}"
    return ""


def _short_when(field: xr.DataArray) -> str:
    coords = field.coords
    if "lead_time" in coords:
        lead = format_lead_time(coords["lead_time"].values[()])
        if "valid_time" in coords:
            vt = coords["valid_time"].values[()]
            if isinstance(vt, np.datetime64):
                return f"{lead}, valid {pd.Timestamp(vt).strftime('%H:%M')}"
        return lead
    if "time" in coords:
        value = coords["time"].values[()]
        return _format_time(value) if isinstance(value, np.datetime64) else f"time {value}"
    return ""


def _source_name(da: xr.DataArray) -> str | None:
    model = da.attrs.get("model")
    return str(model) if model else None


def _map_title(field: xr.DataArray, da: xr.DataArray, style: _Style) -> str:
    head = _quantity_label(style)
    source = _source_name(da)
    if source:
        head = f"{source}: {head}"
    when = _when(field)
    return f"{head}\n{when}" if when else head


# ----------------------------------------------------------------------------- drawing


def _oriented(field: xr.DataArray, georeferenced: bool = True) -> tuple[np.ndarray, str]:
    """The 2-D values and the imshow origin that put them where their coordinates say.

    Map data goes north up whichever way ``y`` runs; a plain image (video) keeps
    its first row at the top, as images are stored.
    """
    arr = np.asarray(field.values, dtype=float)
    x = np.asarray(field["x"].values)
    y = np.asarray(field["y"].values)
    if x.size > 1 and x[0] > x[-1]:
        arr = arr[:, ::-1]
    if not georeferenced:
        return arr, "upper"
    origin = "upper" if (y.size > 1 and y[0] > y[-1]) else "lower"
    return arr, origin


def _draw(ax, field: xr.DataArray, style: _Style):
    georeferenced = style.projection is not None
    arr, origin = _oriented(field, georeferenced)
    x0, x1, y0, y1 = style.extent
    if not georeferenced:
        y = np.asarray(field["y"].values)
        if not (y.size > 1 and y[0] > y[-1]):
            y0, y1 = y1, y0  # first row at the top: the y axis runs downwards
    kwargs: dict[str, Any] = {"cmap": style.cmap, "norm": style.norm, "extent": (x0, x1, y0, y1),
                              "origin": origin, "interpolation": "nearest"}
    if georeferenced:
        kwargs["transform"] = style.projection
    return ax.imshow(arr, **kwargs)


def _frame_axes(ax, style: _Style) -> list:
    """Extent, basemap (georeferenced) or axis labels (plain image)."""
    if style.projection is not None:
        ax.set_extent(style.extent, crs=style.projection)
        look = style.look
        return basemap.add_basemap(ax, natural_earth=look.natural_earth, features=look.features,
                                   resolution=look.resolution)
    x0, x1, y0, y1 = ax.images[-1].get_extent() if ax.images else style.extent
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_facecolor("white")
    return []


def _no_data_key(ax, fields: Sequence[xr.DataArray], style: _Style) -> None:
    """A small legend patch for the no-data colour, where some pixel is NaN."""
    if not any(bool(np.isnan(np.asarray(f.values, dtype=float)).any()) for f in fields):
        return
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor=style.scale.bad, edgecolor="0.5", linewidth=0.5, label="no data")],
              loc="lower left", fontsize=7, framealpha=0.9, handlelength=1.2, borderpad=0.4)


def _check_axes(ax, style: _Style) -> None:
    if style.projection is not None and not hasattr(ax, "projection"):
        raise GeostpError(
            "ax: the data is georeferenced but ax is a plain matplotlib Axes; make a cartopy GeoAxes with "
            "plt.axes(projection=geostp.plot.projection_for(da)), or leave ax=None"
        )


def _colorbar(fig, image, axes, style: _Style, *, orientation: str = "vertical"):
    cbar = fig.colorbar(image, ax=axes, orientation=orientation, extend=style.scale.extend,
                        shrink=0.85, pad=0.02, aspect=30)
    ticks = legend_ticks(style.scale)
    if ticks is not None:
        cbar.set_ticks(list(ticks))
        cbar.set_ticklabels([f"{t:g}" for t in ticks])
    cbar.set_label(_quantity_label(style))
    return cbar


def _figsize(style: _Style, nrows: int, ncols: int, *, width: float = 3.4) -> tuple[float, float]:
    x0, x1, y0, y1 = style.extent
    aspect = abs(y1 - y0) / max(abs(x1 - x0), 1e-12)
    aspect = min(max(aspect, 0.3), 3.0)
    return (width * ncols + 1.2, width * aspect * nrows + 0.6 * nrows + 0.6)


def _new_figure(style: _Style, nrows: int, ncols: int, *, width: float = 3.4):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=style.look.figsize or _figsize(style, nrows, ncols, width=width), layout="constrained")
    kwargs = {"projection": style.projection} if style.projection is not None else {}
    axes = [fig.add_subplot(nrows, ncols, i + 1, **kwargs) for i in range(nrows * ncols)]
    return fig, axes


# Over 80 lines: more than half is the parameter docstring.
def plot_map(
    da: xr.DataArray | xr.Dataset,
    lead_time: Any = None,
    *,
    time: Any = None,
    variable: str | None = None,
    ax=None,
    scale: str | ColourScale = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    crs: Any = None,
    natural_earth: str | os.PathLike[str] | bool | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    resolution: str = "auto",
    colorbar: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    style: MapStyle | None = None,
    motion: xr.DataArray | None = None,
):
    """Map one field: a forecast at one lead time, or one frame of a cube (with its motion as arrows).

    Parameters
    ----------
    da
        A forecast DataArray (``lead_time, y, x``, as
        :func:`geostp.cube.forecast_to_dataarray` makes it), a cube variable
        (``time, y, x``), or a cube Dataset (choose the variable with
        ``variable=`` if it has several).
    lead_time
        The lead time to show: a timedelta (numpy ``timedelta64`` of any unit,
        :class:`pandas.Timedelta`, :class:`datetime.timedelta`, or a 0-d
        DataArray of one, so ``fc.lead_time.values[-1]`` and
        ``fc.lead_time[-1]`` work), a string such as ``"30min"``, or a number of
        minutes. Default: the first.
    time
        The frame to show (cube) or the reference time (a forecast with
        several). Default: the first.
    variable
        The variable of a Dataset, or of a forecast with a ``variable`` dim.
    ax
        Axes to draw into: a cartopy GeoAxes for georeferenced data (see
        :func:`projection_for`). Default: a new figure.
    scale
        ``"auto"`` (from the units: mm/h classes, dBZ classes, else
        continuous), a registered scale name, or a
        :class:`~geostp.plot.colours.ColourScale`.
    vmin, vmax
        The range of a continuous scale (default: 1st-99th percentile).
    crs
        Overrides the data's grid mapping (pyproj CRS, ``"EPSG:..."``, WKT).
    natural_earth
        The Natural Earth folder for coastlines and borders (default:
        ``$GEOSTP_NATURAL_EARTH``, then ``$GEOSTP_DATA/natural_earth``);
        ``False`` for none. Nothing is ever downloaded.
    features
        Which of ``"coastline"``, ``"borders"``, ``"lakes"`` to draw.
    resolution
        Natural Earth scale: ``"auto"``, ``"10m"``, ``"50m"`` or ``"110m"``.
    colorbar
        Add a colour bar labelled with the quantity and its units.
    title
        Replaces the automatic title (quantity, units, valid and lead time).
    figsize
        Size of a new figure, in inches.
    style
        A :class:`~geostp.plot.MapStyle` in place of the keywords from
        ``scale`` to ``figsize`` (a keyword set besides it to another value is
        a ConfigError).
    motion
        A motion field (:func:`geostp.motion`) drawn over the map as thinned
        arrows (:func:`~geostp.plot.plot_motion`; call that for more arrows,
        colours or scales).

    Returns
    -------
    matplotlib.axes.Axes
        The axes (a cartopy GeoAxes for georeferenced data); the image is
        ``ax.images[0]``, the arrows (with ``motion``) ``ax.collections``' quiver.

    Raises
    ------
    GeostpError
        For data without ``y``/``x`` dims, an unknown lead time or time, dims
        left to select, or plain axes given for georeferenced data.
    """
    look = option_group(plot_map, style, MapStyle, "style", scale=scale, vmin=vmin, vmax=vmax, crs=crs,
                        natural_earth=natural_earth, features=features, resolution=resolution, colorbar=colorbar,
                        title=title, figsize=figsize)
    da = _as_dataarray(da, variable, "da")
    field = select_field(da, lead_time, time=time)
    drawn = _style(da, field.values, look)
    if ax is None:
        fig, (ax,) = _new_figure(drawn, 1, 1, width=5.5)
    else:
        _check_axes(ax, drawn)
    image = _draw(ax, field, drawn)
    _frame_axes(ax, drawn)
    title = look.title if look.title is not None else _map_title(field, da, drawn)
    if motion is not None:
        from geostp.plot.vectors import plot_motion

        plot_motion(ax, motion, crs=look.crs)
        if look.title is None and motion.attrs.get("method"):
            title += f"; arrows: {motion.attrs['method']} motion"
    ax.set_title(title, fontsize=10)
    _no_data_key(ax, [field], drawn)
    if look.colorbar:
        _colorbar(ax.figure, image, [ax], drawn)
    return ax


def _pick(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, k).round().astype(int))]


def _frames(da: xr.DataArray, lead_times: Any, times: Any, time: Any, argname: str) -> list[xr.DataArray]:
    """The 2-D fields of a panel: over lead times (a forecast) or over times (a cube)."""
    _check_grid(da, argname)
    if "lead_time" in da.dims:
        if times is not None:
            raise GeostpError(f"times= is for cubes; {argname} is a forecast: choose lead_times=... (and time= "
                              "for the reference time)")
        n = da.sizes["lead_time"]
        if lead_times is None:
            idx = _pick(n, _MAX_DEFAULT_PANELS)
        else:
            values = [lead_times] if np.ndim(lead_times) == 0 else list(lead_times)
            idx = [_index_of(da, "lead_time", v, "lead_times") for v in values]
        ref = da
        if "time" in da.dims:
            ref = da.isel(time=_index_of(da, "time", time, "time")) if time is not None else da.isel(time=0)
        elif time is not None:
            raise GeostpError(f"time={time!r} was given but {argname} has one reference time (no 'time' dim)")
        return [select_field(ref.isel(lead_time=i), argname=argname) for i in idx]
    if lead_times is not None:
        raise GeostpError(f"lead_times={lead_times!r} was given but {argname} has no 'lead_time' dim "
                          f"(dims {tuple(da.dims)}); for a cube choose frames with times=...")
    if "time" not in da.dims:
        raise GeostpError(f"{argname}: a panel needs a 'lead_time' (forecast) or 'time' (cube) dim; "
                          f"dims are {tuple(da.dims)}")
    n = da.sizes["time"]
    if times is None:
        idx = _pick(n, _MAX_DEFAULT_PANELS)
    else:
        values = [times] if np.ndim(times) == 0 or isinstance(times, str) else list(times)
        idx = [_index_of(da, "time", v, "times") for v in values]
    return [select_field(da.isel(time=i), argname=argname) for i in idx]


def _panel_values(fields: Sequence[xr.DataArray]) -> np.ndarray:
    return np.concatenate([np.asarray(f.values, dtype=float).ravel() for f in fields])


def plot_panel(
    da: xr.DataArray | xr.Dataset,
    lead_times: Any = None,
    *,
    times: Any = None,
    time: Any = None,
    variable: str | None = None,
    ncols: int | None = None,
    scale: str | ColourScale = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    crs: Any = None,
    natural_earth: str | os.PathLike[str] | bool | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    resolution: str = "auto",
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    style: MapStyle | None = None,
):
    """A panel of maps: a forecast at several lead times, or several frames of a cube.

    Parameters
    ----------
    da
        A forecast or a cube variable (see :func:`plot_map`).
    lead_times
        Lead times to show (forecast); default: up to six, evenly spread.
    times
        Frames to show (cube); default: up to six, evenly spread.
    time
        The reference time of a forecast with several.
    ncols
        Maps per row (default: up to three).
    scale, vmin, vmax, crs, natural_earth, features, resolution, variable
        As for :func:`plot_map`; one colour scale is shared by all maps.
    title
        Replaces the automatic figure title.
    figsize
        Figure size in inches.
    style
        A :class:`~geostp.plot.MapStyle` in place of ``scale`` ... ``figsize``
        (its ``colorbar=False`` leaves out the shared colour bar).

    Returns
    -------
    matplotlib.figure.Figure
    """
    look = option_group(plot_panel, style, MapStyle, "style", scale=scale, vmin=vmin, vmax=vmax, crs=crs,
                        natural_earth=natural_earth, features=features, resolution=resolution, title=title,
                        figsize=figsize)
    da = _as_dataarray(da, variable, "da")
    fields = _frames(da, lead_times, times, time, "da")
    drawn = _style(da, _panel_values(fields), look)
    ncols = ncols or min(3, len(fields))
    nrows = -(-len(fields) // ncols)
    fig, axes = _new_figure(drawn, nrows, ncols)
    image = None
    for ax, field in zip(axes, fields, strict=False):
        image = _draw(ax, field, drawn)
        _frame_axes(ax, drawn)
        ax.set_title(_short_when(field), fontsize=9)
    for ax in axes[len(fields):]:
        ax.set_visible(False)
    _no_data_key(axes[len(fields) - 1], fields, drawn)
    if look.colorbar:
        _colorbar(fig, image, axes, drawn)
    title = look.title
    if title is None:
        head = _quantity_label(drawn)
        source = _source_name(da)
        first = fields[0].coords
        if "lead_time" in first and "forecast_reference_time" in first:
            head += f", from {_format_time(first['forecast_reference_time'].values[()])}"
        title = f"{source}: {head}" if source else head
    fig.suptitle(title, fontsize=11)
    return fig


# Over 80 lines: a third is its parameter docstring; the rest lays out the panel grid.
def plot_comparison(
    forecast: xr.DataArray | xr.Dataset,
    observed: xr.DataArray | xr.Dataset,
    lead_times: Any = None,
    *,
    time: Any = None,
    variable: str | None = None,
    observed_variable: str | None = None,
    scale: str | ColourScale = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    crs: Any = None,
    natural_earth: str | os.PathLike[str] | bool | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    resolution: str = "auto",
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    style: MapStyle | None = None,
):
    """Observation beside forecast: for each lead time, what was observed at the valid time above the forecast.

    Parameters
    ----------
    forecast
        A forecast DataArray (``lead_time, y, x``).
    observed
        The observations: a cube variable or Dataset with a ``time`` dim on
        the same grid; the frame at each forecast valid time is shown.
    lead_times
        One lead time or several; default: up to four, evenly spread.
    time
        The reference time of a forecast with several.
    variable, observed_variable
        Variables of Dataset inputs (``observed_variable`` defaults to the
        forecast's name when the observations have it).
    scale, vmin, vmax, crs, natural_earth, features, resolution
        As for :func:`plot_map`; one colour scale is shared by all maps.
    title, figsize
        Figure title and size.
    style
        A :class:`~geostp.plot.MapStyle` in place of ``scale`` ... ``figsize``
        (its ``colorbar=False`` leaves out the shared colour bar).

    Returns
    -------
    matplotlib.figure.Figure
        Two rows (observed, forecast), one column per lead time.

    Raises
    ------
    GeostpError
        If ``observed`` has no frame at a forecast's valid time, or the grids differ.
    """
    look = option_group(plot_comparison, style, MapStyle, "style", scale=scale, vmin=vmin, vmax=vmax, crs=crs,
                        natural_earth=natural_earth, features=features, resolution=resolution, title=title,
                        figsize=figsize)
    fc = _as_dataarray(forecast, variable, "forecast")
    if "lead_time" not in fc.dims:
        raise GeostpError(f"forecast: expected a 'lead_time' dim (a forecast DataArray); dims are {tuple(fc.dims)}")
    if isinstance(observed, xr.Dataset) and observed_variable is None and fc.name in observed.data_vars:
        observed_variable = str(fc.name)
    obs = _as_dataarray(observed, observed_variable, "observed")
    _check_grid(obs, "observed")
    if "time" not in obs.dims:
        raise GeostpError(f"observed: expected a 'time' dim (a cube variable); dims are {tuple(obs.dims)}")
    if obs.sizes["y"] != fc.sizes["y"] or obs.sizes["x"] != fc.sizes["x"]:
        raise GeostpError(f"observed grid {obs.sizes['y']} x {obs.sizes['x']} differs from the forecast's "
                          f"{fc.sizes['y']} x {fc.sizes['x']}")
    if lead_times is None:
        lead_times = [fc["lead_time"].values[i] for i in _pick(fc.sizes["lead_time"], 4)]
    fc_fields = _frames(fc, lead_times, None, time, "forecast")
    obs_fields = []
    for f in fc_fields:
        if "valid_time" not in f.coords:
            raise GeostpError("forecast: has no 'valid_time' coordinate to match observations with")
        vt = f.coords["valid_time"].values[()]
        try:
            i = _index_of(obs, "time", vt, "observed")
        except GeostpError:
            raise GeostpError(
                f"observed: no frame at valid time {_format_time(vt)} (forecast lead "
                f"{format_lead_time(f.coords['lead_time'].values[()])}); observed covers "
                f"{_format_time(obs['time'].values[0])} .. {_format_time(obs['time'].values[-1])}"
            ) from None
        obs_fields.append(select_field(obs.isel(time=i), argname="observed"))
    drawn = _style(fc, _panel_values(fc_fields + obs_fields), look)
    n = len(fc_fields)
    fig, axes = _new_figure(drawn, 2, n)
    image = None
    source = _source_name(fc) or "forecast"
    for j, (o, f) in enumerate(zip(obs_fields, fc_fields, strict=True)):
        for row, (field, who) in enumerate(((o, "observed"), (f, source))):
            ax = axes[row * n + j]
            image = _draw(ax, field, drawn)
            _frame_axes(ax, drawn)
            when = _short_when(f) if row == 1 else _format_time(o.coords["time"].values[()])
            ax.set_title(f"{who}\n{when}", fontsize=9)
    _no_data_key(axes[-1], fc_fields + obs_fields, drawn)
    if look.colorbar:
        _colorbar(fig, image, axes, drawn)
    title = look.title
    if title is None:
        ref = fc_fields[0].coords.get("forecast_reference_time")
        title = f"{_quantity_label(drawn)}: observed and {source}"
        if ref is not None:
            title += f" from {_format_time(ref.values[()])}"
    fig.suptitle(title, fontsize=11)
    return fig
