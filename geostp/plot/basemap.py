"""Map projections from CF grid mappings, and coastlines and borders read from a local Natural Earth folder.

Nothing here downloads anything: shapefiles are opened by explicit path from a
folder on disk (cartopy's own downloader is never asked for a file), and when
no folder is found the map is drawn without them after one warning.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geostp.errors import CubeError, DataError

__all__ = [
    "MapWarning",
    "NATURAL_EARTH_ENV",
    "FEATURES",
    "grid_crs",
    "map_projection",
    "natural_earth_dir",
    "natural_earth_file",
    "add_basemap",
    "clear_cache",
]

#: Environment variable naming the Natural Earth folder (cartopy's layout:
#: ``<folder>/shapefiles/natural_earth/{physical,cultural}/ne_<res>_<name>.shp``).
NATURAL_EARTH_ENV = "GEOSTP_NATURAL_EARTH"

#: The map features geostp knows: name -> (category, Natural Earth name, line style).
FEATURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "coastline": ("physical", "coastline", {"edgecolor": "0.15", "linewidth": 0.7}),
    "borders": ("cultural", "admin_0_boundary_lines_land", {"edgecolor": "0.15", "linewidth": 0.6,
                                                             "linestyle": (0, (4, 1.5))}),
    "lakes": ("physical", "lakes", {"edgecolor": "0.35", "linewidth": 0.4}),
}

_RESOLUTIONS = ("10m", "50m", "110m")
_WARNED: set[str] = set()


class MapWarning(UserWarning):
    """A map was drawn with something left out (no coastlines, no borders)."""


def _warn_once(key: str, message: str) -> None:
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, MapWarning, stacklevel=4)


# ----------------------------------------------------------------------------- projections


def grid_crs(da: xr.DataArray, crs: Any = None, *, argname: str = "da"):
    """The :class:`pyproj.CRS` of a DataArray from its CF grid mapping, or ``None`` if it has none.

    Parameters
    ----------
    da
        A cube variable or a forecast. Its ``grid_mapping`` attribute (or
        encoding) names a coordinate holding CF grid-mapping attributes, as
        :func:`geostp.cube.forecast_to_dataarray` and the adapters write it.
    crs
        Overrides the grid mapping: a :class:`pyproj.CRS`, anything
        :meth:`pyproj.CRS.from_user_input` accepts (``"EPSG:21781"``, WKT), or
        a dict of CF grid-mapping attributes.
    argname
        The argument name to put in error messages.

    Raises
    ------
    CubeError
        If the grid mapping is named but missing, or cannot be read.
    """
    import pyproj

    if crs is not None:
        try:
            if isinstance(crs, dict):
                return pyproj.CRS.from_cf(crs)
            return pyproj.CRS.from_user_input(crs)
        except Exception as exc:  # pyproj raises several kinds
            raise CubeError(f"crs={crs!r} is not a CRS pyproj understands ({exc})") from None
    gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if not gm:
        return None
    if gm not in da.coords:
        raise CubeError(
            f"{argname}: attribute grid_mapping={gm!r} names no coordinate of this DataArray; "
            f"pass the Dataset (cube) itself, or crs=..., or drop the attribute to plot a plain image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pyproj.CRS.from_cf(dict(da.coords[gm].attrs))
    except Exception as exc:
        raise CubeError(
            f"{argname}: grid mapping {gm!r} cannot be read as a CRS by pyproj ({exc}); expected CF "
            "grid-mapping attributes such as pyproj.CRS.to_cf() writes"
        ) from None


def _projection_class():
    import cartopy.crs as ccrs

    class GridProjection(ccrs.Projection):
        """A cartopy projection from any pyproj CRS, with the map domain given explicitly.

        cartopy derives a projection's domain from the CRS's area of use, which
        for national grids (Swiss LV03: Switzerland only) is smaller than a radar
        composite; here the domain is the data's extent plus a margin.
        """

        def __init__(self, crs, bounds: tuple[float, float, float, float]):
            super().__init__(crs)
            self.bounds = tuple(float(b) for b in bounds)
            x0, x1, y0, y1 = self.bounds
            self.threshold = min(x1 - x0, y1 - y0) / 1000.0

        def __eq__(self, other):
            return (isinstance(other, GridProjection) and self.proj4_init == other.proj4_init
                    and self.bounds == other.bounds)

        def __hash__(self):
            return hash((self.proj4_init, self.bounds))

    return GridProjection


_GridProjection = None


def map_projection(crs, extent: Sequence[float], *, margin: float = 0.5):
    """A cartopy projection for ``crs`` whose domain covers ``extent`` (x0, x1, y0, y1) with a margin.

    Parameters
    ----------
    crs
        A :class:`pyproj.CRS`.
    extent
        The data's extent in the CRS's units.
    margin
        The domain grows by this fraction of the extent on each side, so that
        coastlines are clipped at the domain edge rather than at the data's.
    """
    global _GridProjection
    if _GridProjection is None:
        _GridProjection = _projection_class()
    x0, x1, y0, y1 = (float(v) for v in extent)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    bounds = (x0 - dx, x1 + dx, y0 - dy, y1 + dy)
    if crs.is_geographic:
        bounds = (max(bounds[0], -180.0), min(bounds[1], 180.0), max(bounds[2], -90.0), min(bounds[3], 90.0))
    return _GridProjection(crs, bounds)


# ----------------------------------------------------------------------------- Natural Earth


def _has_shapefiles(root: Path) -> bool:
    return any(root.glob("ne_*.shp")) or any(root.glob("*/ne_*.shp"))


def _layout_root(folder: Path) -> Path | None:
    """The folder that holds ``physical/`` and ``cultural/`` (or the shapefiles themselves)."""
    for candidate in (folder / "shapefiles" / "natural_earth", folder / "natural_earth", folder):
        if candidate.is_dir() and _has_shapefiles(candidate):
            return candidate
    return None


def natural_earth_dir(folder: str | os.PathLike[str] | None = None) -> Path | None:
    """The local Natural Earth folder, or ``None`` if there is none.

    Looked up in this order: ``folder``; ``$GEOSTP_NATURAL_EARTH``;
    ``$GEOSTP_DATA/natural_earth`` (the project's shared data folder); cartopy's
    configured ``pre_existing_data_dir`` and ``data_dir`` where they already
    hold shapefiles. A folder may be cartopy's layout (``shapefiles/natural_earth/
    {physical,cultural}``) or hold the ``physical``/``cultural`` folders, or the
    ``ne_*.shp`` files, directly.

    Raises
    ------
    DataError
        If ``folder`` (or ``$GEOSTP_NATURAL_EARTH``) is given but holds no
        Natural Earth shapefiles: an explicit choice that does not work is an
        error, not a silent map without coastlines.
    """
    explicit = [(folder, "natural_earth"), (os.environ.get(NATURAL_EARTH_ENV) or None, NATURAL_EARTH_ENV)]
    for value, what in explicit:
        if value is None:
            continue
        root = _layout_root(Path(value))
        if root is None:
            raise DataError(
                f"{what}={str(value)!r} holds no Natural Earth shapefiles; expected cartopy's layout "
                "<folder>/shapefiles/natural_earth/{physical,cultural}/ne_<res>_<name>.shp"
            )
        return root
    candidates: list[Path] = []
    if os.environ.get("GEOSTP_DATA"):
        candidates.append(Path(os.environ["GEOSTP_DATA"]) / "natural_earth")
    try:
        import cartopy

        for key in ("pre_existing_data_dir", "data_dir"):
            value = cartopy.config.get(key)
            if value and str(value) not in ("", "."):
                candidates.append(Path(value))
    except ImportError:  # pragma: no cover - cartopy is needed for maps anyway
        pass
    for candidate in candidates:
        root = _layout_root(candidate)
        if root is not None:
            return root
    return None


def natural_earth_file(root: Path, resolution: str, category: str, name: str) -> Path | None:
    """The path of one Natural Earth shapefile under ``root``, or ``None`` if it is not there."""
    filename = f"ne_{resolution}_{name}.shp"
    for candidate in (root / category / filename, root / filename):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=32)
def _geometries(path: str) -> tuple:
    from cartopy.io import shapereader

    reader = shapereader.Reader(path)
    try:
        return tuple(g for g in reader.geometries() if g is not None)
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()


@functools.lru_cache(maxsize=64)
def _clipped(path: str, box: tuple[float, float, float, float] | None) -> tuple:
    """The geometries of a shapefile cut to a lon/lat box.

    cartopy projects every vertex of every geometry it is given, and a 50m
    coastline holds continent-long lines: cut to the map's neighbourhood
    first, a national radar map draws in a fraction of the time.
    """
    import shapely

    geoms = _geometries(path)
    if box is None:
        return geoms
    arr = np.array(geoms, dtype=object)
    lon0, lat0, lon1, lat1 = box
    near = shapely.intersects(arr, shapely.box(lon0, lat0, lon1, lat1))
    cut = shapely.clip_by_rect(arr[near], lon0, lat0, lon1, lat1)
    return tuple(g for g in cut if not g.is_empty)


def _lonlat_box(ax, pad: float = 0.15) -> tuple[float, float, float, float] | None:
    """A lon/lat box around the map's visible extent, or None where none fits (a pole, the antimeridian)."""
    import pyproj

    try:
        x0, x1, y0, y1 = ax.get_extent()
        t = np.linspace(0.0, 1.0, 50)
        xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)])
        ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t])
        to_lonlat = pyproj.Transformer.from_crs(ax.projection, "EPSG:4326", always_xy=True)
        lon, lat = to_lonlat.transform(xs, ys)
        to_map = pyproj.Transformer.from_crs("EPSG:4326", ax.projection, always_xy=True)
        for pole in (90.0, -90.0):
            px, py = to_map.transform(0.0, pole)
            if np.isfinite(px) and x0 <= px <= x1 and y0 <= py <= y1:
                return None
    except Exception:  # a projection pyproj cannot invert here: draw everything
        return None
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        return None
    lon0, lon1, lat0, lat1 = float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())
    if lon1 - lon0 > 180.0:  # crosses the antimeridian, or nearly global
        return None
    dlon, dlat = (lon1 - lon0) * pad + 0.5, (lat1 - lat0) * pad + 0.5
    return (round(lon0 - dlon, 3), round(max(lat0 - dlat, -90.0), 3),
            round(lon1 + dlon, 3), round(min(lat1 + dlat, 90.0), 3))


def clear_cache() -> None:
    """Forget the shapefile geometries read so far (and the one-time warnings)."""
    _geometries.cache_clear()
    _clipped.cache_clear()
    _WARNED.clear()


def _resolution_order(lonlat_extent: Sequence[float], resolution: str) -> tuple[str, ...]:
    if resolution != "auto":
        if resolution not in _RESOLUTIONS:
            raise DataError(f"resolution={resolution!r} is not a Natural Earth scale; choose one of "
                            f"'auto', {', '.join(map(repr, _RESOLUTIONS))}")
        return (resolution,)
    lon0, lon1, lat0, lat1 = lonlat_extent
    span = max(abs(lon1 - lon0), abs(lat1 - lat0))
    if span < 3:
        return ("10m", "50m", "110m")
    if span < 40:
        return ("50m", "10m", "110m")
    return ("110m", "50m")


def add_basemap(
    ax,
    *,
    natural_earth: str | os.PathLike[str] | bool | None = None,
    features: Sequence[str] = ("coastline", "borders", "lakes"),
    resolution: str = "auto",
    zorder: float = 3,
) -> list[Path]:
    """Draw coastlines, borders and lakes on a cartopy GeoAxes from local shapefiles.

    Parameters
    ----------
    ax
        A cartopy ``GeoAxes`` whose extent is already set.
    natural_earth
        The Natural Earth folder (see :func:`natural_earth_dir`); ``None``
        looks it up; ``False`` draws no features.
    features
        Names from :data:`FEATURES`.
    resolution
        ``"auto"`` (the finest scale on disk suited to the map's extent) or
        ``"10m"``, ``"50m"``, ``"110m"``.
    zorder
        Drawing order of the feature lines (above the data).

    Returns
    -------
    list of Path
        The shapefiles drawn; empty when none was available, in which case a
        :class:`MapWarning` says so once per process.
    """
    import cartopy.crs as ccrs
    from cartopy.feature import ShapelyFeature

    if natural_earth is False or not features:
        return []
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise DataError(f"features={list(features)!r}: unknown feature(s) {unknown}; choose from {sorted(FEATURES)}")
    root = natural_earth_dir(None if natural_earth in (None, True) else natural_earth)
    if root is None:
        _warn_once(
            "no-folder",
            "no Natural Earth folder found: the map is drawn without coastlines and borders. Point "
            f"${NATURAL_EARTH_ENV} (or natural_earth=) at a folder in cartopy's layout "
            "(shapefiles/natural_earth/{physical,cultural}); geostp never downloads them.",
        )
        return []
    try:
        lonlat = ax.get_extent(ccrs.PlateCarree())
    except Exception:  # an extent that does not map to lon/lat: use the coarsest scale first
        lonlat = (-180.0, 180.0, -90.0, 90.0)
    box = _lonlat_box(ax)
    drawn: list[Path] = []
    for feature in features:
        category, name, style = FEATURES[feature]
        path = None
        for res in _resolution_order(lonlat, resolution):
            path = natural_earth_file(root, res, category, name)
            if path is not None:
                break
        if path is None:
            if feature != "lakes":  # lakes are a nicety; coastlines and borders are worth a word
                _warn_once(f"missing-{feature}",
                           f"no Natural Earth {feature} shapefile (ne_*_{name}.shp) in {root}: "
                           f"the map is drawn without {feature}")
            continue
        geoms = _clipped(str(path), box)
        artist = ax.add_feature(ShapelyFeature(geoms, ccrs.PlateCarree()), facecolor="none",
                                zorder=zorder, **style)
        artist.set_label(f"natural_earth:{feature}:{path}")
        drawn.append(path)
    return drawn


_LENGTH_TO_METRES = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0,
                     "km": 1000.0, "kilometre": 1000.0, "kilometres": 1000.0, "kilometer": 1000.0,
                     "kilometers": 1000.0}


def data_extent(da: xr.DataArray, *, in_metres: bool = False) -> tuple[float, float, float, float]:
    """The extent (x0, x1, y0, y1) of a gridded DataArray's pixel edges.

    In the x/y coordinates' own units, or with ``in_metres`` in metres where
    the coordinates say ``units: km`` (some CF files, such as the Bureau of
    Meteorology's, give projection coordinates in km while the CRS is in m).
    """
    out = []
    for d in ("x", "y"):
        v = np.asarray(da[d].values, dtype=float)
        step = abs(v[1] - v[0]) if v.size > 1 else 1.0
        factor = 1.0
        if in_metres:
            factor = _LENGTH_TO_METRES.get(str(da[d].attrs.get("units", "m")).strip().lower(), 1.0)
        out += [float(v.min() - step / 2) * factor, float(v.max() + step / 2) * factor]
    return tuple(out)  # type: ignore[return-value]
