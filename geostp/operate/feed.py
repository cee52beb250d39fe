"""The file feed of an operational nowcast: files of one source arriving in a folder.

A :class:`FileFeed` finds the files (a glob), reads each one's time from its
name (pysteps' ``fn_pattern`` convention), and reads one file at a time
through the source's adapter into a loaded one-frame cube (a :class:`Frame`);
a file that cannot be used raises :class:`BadFile`.  The adapter says which of
its arguments receive the files, the time pattern, the step and the extension
(:class:`geostp.data.feed_support.FeedSupport`); an adapter that declares
none cannot serve a feed.  :class:`FeedPolicy` is what a runner does with
late, missing, corrupt and wrong-grid inputs (:mod:`geostp.operate.runner`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geostp.conventions import glob_paths, parse_step, times_from_names
from geostp.errors import ConfigError, CubeError, DataError, GeostpError

__all__ = [
    "BadFile",
    "FeedPolicy",
    "Frame",
    "FileFeed",
    "grid_signature",
    "grid_difference",
    "stat_key",
]


class BadFile(Exception):
    """A feed file that cannot be used (unreadable or wrong grid); ``kind`` is ``corrupt`` or ``grid``."""

    def __init__(self, path: Path, kind: str, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path, self.kind, self.reason = path, kind, reason


@dataclass(frozen=True)
class FeedPolicy:
    """How a runner treats late, missing, corrupt, wrong-grid and future-stamped inputs (:mod:`geostp.operate.runner`
    says how)."""

    wait_for_late: float = 120.0
    on_missing: Literal["skip", "fill_previous"] = "skip"
    max_filled: int = 1
    catch_up: int = 12
    max_attempts: int = 3
    expected_shape: tuple[int, int] | None = None
    #: Seconds a file's time may be ahead of the wall clock (UTC) and still be used; None: no limit.
    future_tolerance: float | None = 3600.0

    def __post_init__(self) -> None:
        if self.on_missing not in ("skip", "fill_previous"):
            raise ConfigError(f"on_missing={self.on_missing!r}; expected 'skip' or 'fill_previous'")
        number = (int, float, np.integer, np.floating)
        if not isinstance(self.wait_for_late, number) or isinstance(self.wait_for_late, bool) \
                or not np.isfinite(self.wait_for_late) or self.wait_for_late < 0:
            raise ConfigError(f"FeedPolicy wait_for_late={self.wait_for_late!r}; expected seconds >= 0")
        for name, low in (("max_filled", 0), ("catch_up", 0), ("max_attempts", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ConfigError(f"FeedPolicy {name}={value!r}; expected an integer >= {low}")
        shape = self.expected_shape
        if shape is not None and (not isinstance(shape, (tuple, list)) or len(shape) != 2 or any(
                not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1 for n in shape)):
            raise ConfigError(f"FeedPolicy expected_shape={shape!r}; expected None or two integers >= 1 (ny, nx)")
        if self.future_tolerance is not None and not self.future_tolerance >= 0:
            raise ConfigError(f"future_tolerance={self.future_tolerance!r}; expected seconds >= 0, or None for "
                              "no limit")


# ----------------------------------------------------------------------------- the feed


@dataclass
class Frame:
    """One decoded input frame (a one-time-step cube, loaded) and where it came from."""

    time: np.datetime64
    path: Path
    data: xr.Dataset
    grid: dict[str, Any]


def stat_key(path: Path) -> tuple[int, int] | None:
    """Size and modification time of a file (what says it changed); None if it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def grid_signature(ds: xr.Dataset) -> dict[str, Any]:
    """Shape, corner coordinates and CRS of a cube's grid (what must not change between frames)."""
    from geostp.cube import cube_crs

    try:
        crs = cube_crs(ds)
    except CubeError:
        crs = None
    x, y = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
    return {"shape": [int(y.size), int(x.size)], "x": [float(x[0]), float(x[-1])],
            "y": [float(y[0]), float(y[-1])], "crs": crs.to_wkt() if crs is not None else None}


def grid_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """How grid ``b`` differs from ``a``; None if they are the same."""
    if list(a["shape"]) != list(b["shape"]):
        return f"shape {tuple(b['shape'])} instead of {tuple(a['shape'])}"
    for k in ("x", "y"):
        if not np.allclose(a[k], b[k], rtol=0, atol=1e-3):
            return f"{k} from {b[k][0]:.6g} to {b[k][1]:.6g} m instead of {a[k][0]:.6g} to {a[k][1]:.6g} m"
    if (a.get("crs") or None) != (b.get("crs") or None):
        import pyproj

        if a.get("crs") is None or b.get("crs") is None or \
                not pyproj.CRS.from_wkt(a["crs"]).equals(pyproj.CRS.from_wkt(b["crs"])):
            return "a different CRS"
    return None


class FileFeed:
    """Files of one source arriving in a folder.

    Parameters
    ----------
    adapter
        The adapter name (``geostp.data.adapters``) that reads the files; it
        must declare a :class:`~geostp.data.feed_support.FeedSupport`.
    args
        Its arguments (a catalog source's, say); those its declaration names as
        picking an archive's files (the radar adapter's ``root``, ``path_fmt``,
        ``start``, ``end``) are dropped, and the files argument is the feed's.
    files
        A glob of the files (``**`` allowed); default: the adapter's files
        argument in ``args``, if it is one glob string.
    time_pattern, extension
        pysteps' file-name convention (strftime codes, ``?`` wildcards) that
        gives each file's time; names that do not match are ignored (a
        downloader's temporary files, say).  Default: the adapter's time-pattern
        and extension arguments in ``args``; both are passed on to the adapter.
    file_arg
        Kept for old callers: if given, it must be the files argument the
        adapter declares.
    time_step
        The nominal interval between frames; default: the adapter's step
        argument in ``args``.
    variables
        The variables to keep (default every ``(time, y, x)`` variable).
    """

    def __init__(self, adapter: str, args: Mapping[str, Any], *, files: str | None = None,
                 time_pattern: str | None = None, extension: str | None = None, file_arg: str | None = None,
                 time_step: Any = None, variables: Sequence[str] | None = None) -> None:
        from geostp.data.adapters import get_adapter
        from geostp.data.feed_support import feed_support

        self.adapter_name = adapter
        self.adapter = get_adapter(adapter)  # the adapter front: registered or declared by an installed package
        support = self.support = feed_support(self.adapter, adapter)
        if file_arg is not None and file_arg != support.files_arg:
            raise ConfigError(f"file_arg={file_arg!r}: adapter {adapter!r} receives the files through its argument "
                              f"{support.files_arg!r} (its FeedSupport)")

        def given(value: Any, arg: str | None) -> Any:
            return value if value is not None or arg is None else args.get(arg)

        def also(arg: str | None) -> str:
            return f", or the adapter argument {arg!r}" if arg else f" (adapter {adapter!r} takes none from its args)"

        files = given(files, support.files_arg)
        if not isinstance(files, (str, Path)):
            raise ConfigError(f"files: required (a glob of the arriving files), or the adapter argument "
                              f"{support.files_arg!r} as one glob string; got {files!r}")
        time_pattern = given(time_pattern, support.time_pattern_arg)
        if not time_pattern:
            raise ConfigError("time_pattern: required (the file-name time pattern, e.g. 'AQC%y%j%H%M?_00005.801')"
                              + also(support.time_pattern_arg))
        extension = given(extension, support.extension_arg)
        time_step = given(time_step, support.step_arg)
        if time_step is None:
            raise ConfigError("time_step: required (e.g. 5min)" + also(support.step_arg))
        dropped = set(support.archive_args) | {support.files_arg}
        self.args = {k: v for k, v in args.items() if k not in dropped}
        if support.time_pattern_arg:
            self.args.setdefault(support.time_pattern_arg, time_pattern)
        if support.extension_arg and extension is not None:
            self.args.setdefault(support.extension_arg, extension)
        self.files = str(files)
        self.time_pattern = str(time_pattern)
        self.extension = extension
        self.file_arg = support.files_arg
        self.step = np.timedelta64(parse_step(time_step, what="nowcast time_step").to_timedelta64(), "ns")
        self.variables = list(variables) if variables else None

    def __repr__(self) -> str:
        return f"FileFeed({self.adapter_name!r}, files={self.files!r})"

    def time_of(self, path: Path) -> np.datetime64 | None:
        """The time a file's name carries, or None if the name does not follow the pattern."""
        try:
            (t,) = times_from_names([path], self.time_pattern, self.extension)
        except (DataError, ConfigError):
            return None
        return np.datetime64(pd.Timestamp(t).to_datetime64(), "ns")

    def scan(self) -> tuple[dict[np.datetime64, Path], list[str]]:
        """Files present now, by time; and notes on names that collide."""
        found: dict[np.datetime64, list[Path]] = {}
        for p in glob_paths(self.files):  # the folders that exist under their own name are taken literally
            if p.name.startswith(".") or not p.is_file():
                continue
            t = self.time_of(p)
            if t is not None:
                found.setdefault(t, []).append(p)
        out, notes = {}, []
        for t, paths in found.items():
            if len(paths) > 1:
                paths.sort(key=lambda q: (stat_key(q) or (0, 0))[1])
                notes.append(f"{len(paths)} files carry time {pd.Timestamp(t)}: "
                             f"{', '.join(q.name for q in paths)}; using the newest, {paths[-1].name}")
            out[t] = paths[-1]
        return out, notes

    def read(self, path: Path, expected_time: np.datetime64) -> Frame:
        """Read one file into a loaded one-frame cube; :class:`BadFile` if it cannot be used."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = self.adapter(**{**self.args, self.file_arg: [str(path)]})
                if self.variables is not None:
                    missing = [v for v in self.variables if v not in ds.data_vars]
                    if missing:
                        raise BadFile(path, "corrupt", f"lacks variable(s) {missing}; it has {list(ds.data_vars)}")
                    keep = set(self.variables)
                    ds = ds.drop_vars([v for v in ds.data_vars if v not in keep and "time" in ds[v].dims])
                ds = ds.load()
        except BadFile:
            raise
        except GeostpError as exc:
            raise BadFile(path, "corrupt", f"cannot be read ({exc})") from None
        except Exception as exc:  # any reader's own failure: the file is unusable, the runner goes on
            raise BadFile(path, "corrupt", f"cannot be read ({type(exc).__name__}: {exc})") from None
        times = ds["time"].values.astype("datetime64[ns]")
        if times.size != 1:
            raise BadFile(path, "corrupt", f"holds {times.size} time steps; expected one frame per file")
        if times[0] != expected_time:
            raise BadFile(path, "corrupt", f"holds time {pd.Timestamp(times[0])} but its name says "
                                           f"{pd.Timestamp(expected_time)}")
        return Frame(time=expected_time, path=path, data=ds, grid=grid_signature(ds))


# ----------------------------------------------------------------------------- the runner
