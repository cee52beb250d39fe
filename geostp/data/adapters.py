"""The adapter front: the registry of adapters, their names, third-party adapters, and the one way to open a source.

Every adapter has the same contract: ``adapter(**args) -> xarray.Dataset``, a
lazy cube that :func:`geostp.cube.validate_cube` accepts.  The built-in ones
are registered when this module is imported.  Third-party code adds its own
either with the decorator::

    @geostp.data.adapters.register("my_radar")
    def open_my_radar(path, ...): ...

or, for an installed package, through the entry-point group ``geostp.adapters``
(found on first use, loaded when the name is first asked for; a built-in name
wins over an entry point of the same name)::

    [project.entry-points."geostp.adapters"]
    my_radar = "my_package.readers:open_my_radar"

:func:`open_source` is the one function that opens a source, for the command
line, the recipes, catalogs (:meth:`geostp.data.catalog.Catalog.open`) and the
nowcast feed alike: an adapter by name with its arguments, or a catalog's
source (:meth:`~geostp.data.catalog.Catalog.source`) whose arguments the given
ones override.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import xarray as xr

from geostp.data import crowdflow, netcdf, radar, radolan, synthetic, video
from geostp.errors import ConfigError, UnknownNameError
from geostp.registry import Registry
from geostp.store import open_cube

__all__ = [
    "adapters",
    "register",
    "names",
    "get_adapter",
    "open_source",
    "Source",
    "UnknownAdapterError",
    "AdapterArgumentsError",
    "ENTRY_POINT_GROUP",
]

#: The entry-point group in which installed packages declare adapters.
ENTRY_POINT_GROUP = "geostp.adapters"



def _adopt_adapter(name: str, obj: Any) -> Callable[..., xr.Dataset]:
    """What an entry point names must be callable: ``adapter(**args) -> xarray.Dataset``."""
    if not callable(obj):
        raise ConfigError(f"it is a {type(obj).__name__}; expected a callable adapter(**args) -> xarray.Dataset")
    return obj


#: Adapters turn arguments into a lazy cube: ``adapter(**args) -> xarray.Dataset``.  Those installed packages
#: declare in :data:`ENTRY_POINT_GROUP` are found by the registry (:class:`geostp.registry.Registry`).
adapters: Registry[Callable[..., xr.Dataset]] = Registry("adapter", entry_point_group=ENTRY_POINT_GROUP,
                                                         adopt=_adopt_adapter)
register = adapters.register


class UnknownAdapterError(UnknownNameError):
    """No adapter is registered (or declared by an installed package) under the name."""


class AdapterArgumentsError(ConfigError):
    """An adapter does not take the arguments given (an unknown keyword, or a required one missing)."""


class Source(NamedTuple):
    """A source to open: an adapter name, its arguments, and a label for messages (``catalog:source``)."""

    adapter: str
    args: dict[str, Any]
    label: str


# ----------------------------------------------------------------------------- built-in adapters


@register("zarr_cube")
def zarr_cube(path: str | os.PathLike[str]) -> xr.Dataset:
    """A store written by :func:`geostp.ingest` (lazy)."""
    return open_cube(path)


register("synthetic_radar", synthetic.synthetic_radar)
register("moving_mnist", synthetic.moving_mnist)

# Real archives (see docs/adapters.md). Heavy readers (pysteps, wradlib, netCDF4, imageio) load on first use.
register("radar", radar.open_radar)
register("radolan", radolan.open_radolan)
register("netcdf", netcdf.open_netcdf)
register("taxibj", crowdflow.open_taxibj)
register("moving_mnist_npy", video.open_moving_mnist_npy)
register("frame_folders", video.open_frame_folders)
register("video_files", video.open_video_files)


# ----------------------------------------------------------------------------- names and discovery


def names() -> list[str]:
    """Names of every adapter: the registered ones and those installed packages declare, sorted."""
    return adapters.names()


def get_adapter(name: str) -> Callable[..., xr.Dataset]:
    """The adapter called ``name``: a registered one, else one an installed package declares (loaded now).

    Raises
    ------
    UnknownAdapterError
        No adapter of that name; the message lists the names there are.
    ConfigError
        A package declares the name but its entry point cannot be loaded, or is not callable.
    """
    try:
        return adapters.get(name)
    except UnknownNameError as exc:
        raise UnknownAdapterError(str(exc)) from None


# ----------------------------------------------------------------------------- opening a source


def _check_arguments(adapter: Callable[..., Any], name: str, label: str, args: Mapping[str, Any]) -> None:
    """Unknown and missing keywords, said before the call (a TypeError from inside an adapter is its own)."""
    try:
        params = inspect.signature(adapter).parameters
    except (TypeError, ValueError):  # a callable without an introspectable signature: the call will tell
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [] if takes_any else [k for k in args if k not in named]
    missing = [n for n, p in params.items() if p.default is p.empty and n not in args
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not unknown and not missing:
        return
    problems = []
    if unknown:
        problems.append(f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    if missing:
        problems.append(f"missing required argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    shown = name if label == name else f"{name} ({label})"
    raise AdapterArgumentsError(f"adapter {shown!r} rejected the arguments {sorted(args)}: {'; '.join(problems)} "
                                f"(it takes {', '.join(named)})")


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the type hint ``hint`` (the plain types, unions, Optional, Literal, containers;
    anything this does not know fits: the adapter decides)."""
    import numbers
    import types
    import typing
    from collections.abc import Sequence

    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (os.PathLike, Path) or origin is os.PathLike:
        return isinstance(value, (str, os.PathLike))
    base = origin or hint
    if base in (list, tuple, Sequence, set, frozenset):
        return isinstance(value, (list, tuple, set, frozenset)) if base is not Sequence \
            else isinstance(value, (list, tuple, str))
    if base in (dict, Mapping):
        return isinstance(value, Mapping)
    return True


def _hint_text(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not hasattr(hint, "__args__") else None
    return text or str(hint).replace("typing.", "").replace("collections.abc.", "")


def _check_types(adapter: Callable[..., Any], name: str, label: str, args: Mapping[str, Any]) -> None:
    """A value of the wrong type (a float for an ``int`` argument, a number for a path), named before the call:
    from inside the adapter it would surface as an error about something else."""
    import typing

    try:
        hints = typing.get_type_hints(adapter)
    except Exception:  # annotations that do not resolve here (a third party's): the adapter checks them
        return
    shown = name if label == name else f"{name} ({label})"
    for key, value in args.items():
        if key in hints and not _fits(value, hints[key]):
            raise AdapterArgumentsError(f"adapter {shown!r}: argument {key}={value!r} is a {type(value).__name__}; "
                                        f"expected {_hint_text(hints[key])}")


def _keywords(args: Any, argument: str) -> dict[str, Any]:
    """``args`` as keyword arguments: a mapping from names (strings) to values; None is none."""
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise AdapterArgumentsError(f"{argument}={args!r:.100} is a {type(args).__name__}; expected a mapping of "
                                    "argument names to values, e.g. {'path': 'radar/*.nc', 'variable': 'rain'}")
    bad = next((k for k in args if not isinstance(k, str) or not k.isidentifier()), None)
    if bad is not None:
        raise AdapterArgumentsError(f"{argument}: the key {bad!r} is not an argument name; expected a mapping of "
                                    "argument names (strings) to values")
    return dict(args)


def open_source(source: str | Source, args: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Open a source as a lazy cube: an adapter by name with ``args``, or a catalog's source.

    Parameters
    ----------
    source
        An adapter name (see :func:`names`), or a :class:`Source` — what
        :meth:`geostp.data.catalog.Catalog.source` gives for a catalog's source:
        its adapter and its arguments (environment variables expanded).
    args
        Keyword arguments of the adapter; for a catalog source they override the catalog's.

    Raises
    ------
    UnknownAdapterError
        (an :class:`~geostp.errors.UnknownNameError`) no adapter has that name; the message lists them.
    AdapterArgumentsError
        (a :class:`~geostp.errors.ConfigError`) the adapter does not take these arguments.
    GeostpError
        Whatever the adapter raises about the data itself (a missing file, an impossible value) passes through.
    """
    if isinstance(source, Source):
        name, label = source.adapter, source.label
        given = {**_keywords(source.args, f"{label}: args"), **_keywords(args, "open_source: args")}
    elif isinstance(source, str):
        name, label, given = source, source, _keywords(args, "open_source: args")
    else:
        raise ConfigError(f"a source is an adapter name or a catalog's Source; got {source!r} ({type(source).__name__})")
    adapter = get_adapter(name)
    _check_arguments(adapter, name, label, given)
    _check_types(adapter, name, label, given)
    try:
        return adapter(**given)
    except TypeError as exc:  # the keywords fit (checked above): a value of the wrong type, most likely
        shown = name if label == name else f"{name} ({label})"
        raise AdapterArgumentsError(f"adapter {shown!r} failed on the arguments {sorted(given)} (TypeError: {exc}); "
                                    "expected values of the types it documents") from exc
