"""The ``.geostp`` accessor on DataArrays and Datasets: thin methods over the free functions of geostp.plot.

Importing :mod:`geostp.plot` registers it; then ``forecast.geostp.map("30min")``
is :func:`geostp.plot.plot_map` ``(forecast, "30min")``, and so on.
"""

from __future__ import annotations

import os
from typing import Any

import xarray as xr

__all__ = ["GeostpAccessor"]


class GeostpAccessor:
    """Plotting methods on a forecast, a cube variable, a cube Dataset or a score table.

    Each method passes its arguments on to the free function of the same
    purpose; see those for the parameters.
    """

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def map(self, lead_time: Any = None, **kwargs: Any):
        """One map: :func:`geostp.plot.plot_map`."""
        from geostp.plot.maps import plot_map

        return plot_map(self._obj, lead_time, **kwargs)

    def panel(self, lead_times: Any = None, **kwargs: Any):
        """A panel of lead times (or times): :func:`geostp.plot.plot_panel`."""
        from geostp.plot.maps import plot_panel

        return plot_panel(self._obj, lead_times, **kwargs)

    def compare(self, observed: xr.DataArray | xr.Dataset, lead_times: Any = None, **kwargs: Any):
        """Observation beside this forecast: :func:`geostp.plot.plot_comparison`."""
        from geostp.plot.maps import plot_comparison

        return plot_comparison(self._obj, observed, lead_times, **kwargs)

    def animate(self, path: str | os.PathLike[str], **kwargs: Any):
        """A GIF or MP4 over lead time (or time): :func:`geostp.plot.animate`."""
        from geostp.plot.animate import animate

        return animate(self._obj, path, **kwargs)

    def scores(self, metric: str | None = None, **kwargs: Any):
        """Score against lead time per model: :func:`geostp.plot.plot_scores`."""
        from geostp.plot.curves import plot_scores

        return plot_scores(self._obj, metric, **kwargs)

    def projection(self, **kwargs: Any):
        """The cartopy projection of the data: :func:`geostp.plot.projection_for`."""
        from geostp.plot.maps import projection_for

        return projection_for(self._obj, **kwargs)


def register() -> None:
    """Register the accessor as ``.geostp`` on DataArray and Dataset (idempotent)."""
    for cls, registrar in ((xr.DataArray, xr.register_dataarray_accessor),
                           (xr.Dataset, xr.register_dataset_accessor)):
        existing = getattr(cls, "geostp", None)
        if existing is GeostpAccessor or getattr(existing, "_accessor", None) is GeostpAccessor:
            continue
        registrar("geostp")(GeostpAccessor)


register()
