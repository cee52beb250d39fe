"""Maps, animations and verification curves of cubes and forecasts (needs the ``plot`` extra).

Importing this package registers the ``.geostp`` accessor on xarray objects::

    import geostp.plot
    forecast.geostp.map("30min")            # plot_map(forecast, "30min")
    forecast.geostp.panel()                 # plot_panel(forecast)
    forecast.geostp.compare(cube)           # plot_comparison(forecast, cube)
    forecast.geostp.animate("nowcast.gif")  # animate(forecast, "nowcast.gif")
    scores.sel(metric="csi").geostp.scores()

Motion vectors (the field :func:`geostp.motion` returns) go over a map with ``plot_map(..., motion=...)``
or :func:`plot_motion`.

One house style for all of them: ``style=MapStyle(...)`` (:mod:`geostp.plot.style`) in place of the
style keywords (``scale``, ``vmin``, ``vmax``, ``crs``, ``natural_earth``, ``features``, ``resolution``,
``colorbar``, ``title``, ``figsize``).
"""

from geostp.plot import accessor as _accessor  # noqa: F401  (registers .geostp)
from geostp.plot.animate import animate, ffmpeg_executable, render_frames
from geostp.plot.basemap import MapWarning, add_basemap, natural_earth_dir
from geostp.plot.colours import (
    CONTINUOUS,
    RAIN_RATE,
    REFLECTIVITY,
    ColourScale,
    colour_scale,
    colour_scales,
)
from geostp.plot.curves import plot_scores
from geostp.plot.maps import plot_comparison, plot_map, plot_panel, projection_for, select_field
from geostp.plot.style import MapStyle
from geostp.plot.vectors import plot_motion

__all__ = [
    "plot_map",
    "plot_panel",
    "plot_comparison",
    "plot_motion",
    "plot_scores",
    "MapStyle",
    "animate",
    "render_frames",
    "ffmpeg_executable",
    "projection_for",
    "select_field",
    "add_basemap",
    "natural_earth_dir",
    "MapWarning",
    "ColourScale",
    "colour_scale",
    "colour_scales",
    "RAIN_RATE",
    "REFLECTIVITY",
    "CONTINUOUS",
]
