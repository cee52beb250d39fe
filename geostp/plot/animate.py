"""Animations of forecasts (over lead time) and cubes (over time), written as GIF or MP4.

GIFs need only Pillow (through imageio). MP4 needs the ``imageio-ffmpeg``
package (which ships an ffmpeg executable, or uses ``$IMAGEIO_FFMPEG_EXE`` or
one on ``PATH``); without it, :func:`animate` refuses ``.mp4`` with a message
saying how to get it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geostp.errors import GeostpError, writing
from geostp.options import option_group
from geostp.plot import maps
from geostp.plot.colours import ColourScale
from geostp.plot.style import DEFAULT_FEATURES, MapStyle
from geostp.writers import atomic_path

__all__ = ["animate", "ffmpeg_executable", "render_frames"]


def ffmpeg_executable() -> str | None:
    """The ffmpeg executable that MP4 output would use, or ``None`` if MP4 cannot be written."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # imageio-ffmpeg without a bundled binary and none on PATH
        return None
    return str(exe) if exe and (Path(exe).exists() or shutil.which(exe)) else None


def render_frames(
    da: xr.DataArray | xr.Dataset,
    *,
    time: Any = None,
    variable: str | None = None,
    dpi: int = 90,
    scale: str | ColourScale = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    crs: Any = None,
    natural_earth: str | os.PathLike[str] | bool | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    resolution: str = "auto",
    figsize: tuple[float, float] | None = None,
    style: MapStyle | None = None,
) -> list[np.ndarray]:
    """Render every lead time (forecast) or time (cube) as an RGB ``uint8`` image of one size.

    The map, its coastlines and colour bar are drawn once; each frame only
    swaps the image data and the title, so frames align exactly. Parameters
    are those of :func:`geostp.plot.plot_map`; ``time`` chooses the reference
    time of a forecast with several.  A ``style`` (:class:`~geostp.plot.MapStyle`)
    stands for ``scale`` ... ``figsize``; its ``title``, if set, is every frame's.
    """
    look = option_group(render_frames, style, MapStyle, "style", scale=scale, vmin=vmin, vmax=vmax, crs=crs,
                        natural_earth=natural_earth, features=features, resolution=resolution, figsize=figsize)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    da = maps._as_dataarray(da, variable, "da")
    maps._check_grid(da, "da")
    if "lead_time" in da.dims:
        if "time" in da.dims:
            da = da.isel(time=maps._index_of(da, "time", time, "time")) if time is not None else da.isel(time=0)
        dim = "lead_time"
    elif "time" in da.dims:
        if time is not None:
            raise GeostpError("time= chooses a forecast's reference time; a cube is animated over all its times "
                              "(select a range first, e.g. da.sel(time=slice(...)))")
        dim = "time"
    else:
        raise GeostpError(f"da: an animation needs a 'lead_time' or 'time' dim; dims are {tuple(da.dims)}")
    n = da.sizes[dim]
    fields = [maps.select_field(da.isel({dim: i})) for i in range(n)]
    drawn = maps._style(da, maps._panel_values(fields), look)
    fig = Figure(figsize=look.figsize or maps._figsize(drawn, 1, 1, width=5.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    kwargs = {"projection": drawn.projection} if drawn.projection is not None else {}
    ax = fig.add_subplot(1, 1, 1, **kwargs)
    image = maps._draw(ax, fields[0], drawn)
    maps._frame_axes(ax, drawn)
    ax.set_title(look.title or maps._map_title(fields[0], da, drawn), fontsize=10)
    maps._no_data_key(ax, fields, drawn)
    if look.colorbar:
        maps._colorbar(fig, image, [ax], drawn)
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the layout: later titles must not move the map
    frames = []
    for field in fields:
        arr, _ = maps._oriented(field, drawn.projection is not None)
        image.set_data(arr)
        ax.set_title(look.title or maps._map_title(field, da, drawn), fontsize=10)
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    return frames


def _pad_to(frames: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return frames
    return [np.pad(f, ((0, ph), (0, pw), (0, 0)), constant_values=255) for f in frames]


def animate(
    da: xr.DataArray | xr.Dataset,
    path: str | os.PathLike[str],
    *,
    fps: float = 4.0,
    loop: bool = True,
    **map_kwargs: Any,
) -> Path:
    """Write an animation of a forecast over its lead times, or of a cube over its times.

    Parameters
    ----------
    da
        A forecast (animated over ``lead_time``) or a cube variable (over
        ``time``); see :func:`geostp.plot.plot_map`.
    path
        Output file: ``.gif`` (always available) or ``.mp4`` (needs ffmpeg,
        see :func:`ffmpeg_executable`).
    fps
        Frames per second.
    loop
        GIF only: loop forever (else play once).
    **map_kwargs
        Passed to :func:`render_frames` (``time``, ``scale``,
        ``natural_earth``, ``dpi``, ...).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    GeostpError
        For an unknown suffix, or ``.mp4`` without ffmpeg (with how to get it).
    """
    import imageio.v3 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise GeostpError(f"path={str(path)!r}: unknown animation format {suffix or '(no suffix)'!r}; "
                          "use .gif or .mp4")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not np.isfinite(fps) or fps <= 0:
        raise GeostpError(f"fps={fps!r}; expected a positive number of frames per second")
    if suffix == ".mp4":
        if ffmpeg_executable() is None:
            raise GeostpError(
                "MP4 needs ffmpeg through the imageio-ffmpeg package, which is not usable here: "
                "`pip install imageio-ffmpeg` (it ships an ffmpeg), or write a .gif instead"
            )
    frames = render_frames(da, **map_kwargs)
    if suffix == ".gif":  # a complete file under the final name, or none (and a WriteError naming it)
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0 if loop else 1)
    else:
        with writing(path, "animation"):
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_mp4(path, _pad_to(frames, 16), fps)
    return path


def _write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import imageio.v2 as iio2

    writer = iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                             pixelformat="yuv420p", macro_block_size=16, quality=7)
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
