"""What a recipe names, resolved without reading any data: its catalog and sources, their adapters and the names of
the adapters' arguments, and for a nowcast the lead times of its maps against its steps.

:func:`check_sources` runs these checks; ``geostp run --check`` calls it (after the schema's own checks,
:mod:`geostp.recipes.schema`), and so does every run before it opens anything.  Reading a catalog file and looking
a name up in a registry is all it does: no data file is opened and no environment variable a catalog's arguments
refer to is expanded, so a recipe can be checked on a machine that does not hold the data.  Every failure is a
:class:`~geostp.errors.ConfigError` whose message starts with the recipe's file and the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from geostp.errors import ConfigError, DataError, GeostpError
from geostp.recipes.sections import Recipe

__all__ = ["check_sources"]


def _fail(where: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {msg}")


def _adapter(name: str, where: str, key: str) -> Callable[..., Any]:
    from geostp.data.adapters import get_adapter

    try:
        return get_adapter(name)
    except ConfigError as exc:  # an unknown name (the message lists the adapters), or an entry point that fails
        raise _fail(where, key, f"{exc}; expected an adapter geostp has (built in, or declared by an installed "
                                "package)") from None


def _argument_names(adapter: Callable[..., Any], name: str, args: Mapping[str, Any], where: str,
                    key_of: Callable[[str], str]) -> None:
    """Refuse an argument the adapter does not take (``key_of`` says where each argument was given)."""
    try:
        params = inspect.signature(adapter).parameters
    except (TypeError, ValueError):  # no introspectable signature: opening the source will tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for arg in args:
        if arg not in named:
            raise _fail(where, key_of(arg), f"unknown argument of adapter {name!r}; expected one of its arguments: "
                                            f"{', '.join(named)}")


def _catalog(recipe: Recipe) -> Any:
    from geostp.data.catalog import open_catalog

    try:
        return open_catalog(recipe.data.catalog)  # type: ignore[arg-type]
    except (ConfigError, DataError) as exc:
        raise _fail(recipe.where, "data.catalog", f"{exc}; expected a catalog's name (geostp catalogs lists them) "
                                                  "or a catalog file") from None


def _entry(recipe: Recipe, catalog: Any, source: str, key: str, given: Mapping[str, Any],
           given_key: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A catalog source named at ``key``: its adapter, checked, and its arguments with those ``given`` over them."""
    where = recipe.where
    try:
        entry = catalog.entry(source)
    except ConfigError as exc:
        raise _fail(where, key, f"{exc}; expected one of the catalog's sources") from None
    adapter = _adapter(entry.adapter, where, key)
    merged = {**entry.args, **given}
    _argument_names(adapter, entry.adapter, merged, where,
                    lambda a: f"{given_key}.{a}" if a in given else f"{key} ({catalog.path}: sources.{source}.args.{a})")
    return adapter, merged


def check_sources(recipe: Recipe) -> None:
    """Resolve every name the recipe gives its data (see the module docstring); a ConfigError naming the key."""
    d, where = recipe.data, recipe.where
    adapter: Callable[..., Any] | None = None
    args: dict[str, Any] = {}
    name = d.adapter
    if d.adapter is not None:
        adapter, args = _adapter(d.adapter, where, "data.adapter"), dict(d.args)
        _argument_names(adapter, d.adapter, args, where, lambda a: f"data.args.{a}")
    elif d.catalog is not None:
        catalog = _catalog(recipe)
        if d.source is not None:
            adapter, args = _entry(recipe, catalog, d.source, "data.source", d.args, "data.args")
            name = catalog.entry(d.source).adapter
        for i, e in enumerate(d.source_entries()):
            _entry(recipe, catalog, e.source, f"data.sources[{i}]", e.args, f"data.sources[{i}].args")
        ev = recipe.evaluation
        if ev is not None and ev.source is not None:
            _entry(recipe, catalog, ev.source.source, "evaluation.source.source", ev.source.args,
                   "evaluation.source.args")
    if recipe.kind == "nowcast" and adapter is not None:
        _check_feed(recipe, adapter, str(name), args)


def _check_feed(recipe: Recipe, adapter: Callable[..., Any], name: str, args: Mapping[str, Any]) -> None:
    """A nowcast's adapter must read arriving files; its maps must be lead times it forecasts."""
    from geostp.conventions import format_step, parse_step, to_timedelta
    from geostp.data.feed_support import feed_support

    where, nc = recipe.where, recipe.nowcast
    key = "data.adapter" if recipe.data.adapter is not None else "data.source"
    try:
        support = feed_support(adapter, name)
    except ConfigError as exc:
        raise _fail(where, key, f"{exc}; a nowcast expected an adapter that reads arriving files (radar, radolan, "
                                "netcdf)") from None
    if nc is None or not recipe.output.maps:
        return
    step_value = nc.time_step if nc.time_step is not None else \
        args.get(support.step_arg) if support.step_arg else None
    if step_value is None or (isinstance(step_value, str) and "$" in step_value):
        return  # known only once the feed is set up (or from the environment): the run checks it
    try:
        step = parse_step(step_value, what="nowcast.time_step")
    except GeostpError:
        return  # the feed refuses it, naming it, when the run starts
    leads = f"{nc.steps} lead time(s) every {format_step(step)}, {format_step(step)} .. {format_step(nc.steps * step)}"
    for i, lead in enumerate(recipe.output.maps):
        delta = to_timedelta(lead)  # a positive interval: the schema checked it
        if delta > nc.steps * step or delta % step:
            raise _fail(where, f"output.maps[{i}]", f"{lead!r} is not a lead time of this nowcast; expected one of "
                                                    f"its {leads} (nowcast.steps)")


def check_watch(watch: bool, poll_seconds: Any, max_polls: Any, *, names: tuple[str, str] = ("poll_seconds",
                                                                                              "max_polls")) -> None:
    """The polling arguments of a nowcast run (``names``: how the caller spells them, e.g. ``--poll``): only with
    ``watch``; ``poll_seconds`` a finite number of seconds > 0 (a negative or zero one would poll back to back),
    ``max_polls`` an integer >= 1 (one below would stop before the first poll)."""
    from geostp.checks import check_polling

    poll_name, max_name = names
    if not watch:
        given = [n for n, v in ((poll_name, poll_seconds), (max_name, max_polls)) if v is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)}: only used when watching a feed (--watch, watch=True); "
                              "expected with --watch, or left out for one cycle")
        return
    if poll_seconds is not None or max_polls is not None:  # poll_seconds None: the recipe's nowcast.poll_seconds
        check_polling(1.0 if poll_seconds is None else poll_seconds, max_polls, names=names)
