"""One small generic registry, used for models, adapters and anything else chosen by name.

A registry may also name an entry-point group (``geostp.models``): what installed packages declare there is
listed among its names and loaded when a name is first asked for, so that a third-party package's entries are
used by name like the built-in ones without being imported first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from geostp.errors import ConfigError, UnknownNameError
from geostp.names import plain_name

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A named collection of objects (usually classes or factories).

    Parameters
    ----------
    kind
        What the entries are, for messages ("model", "adapter", ...).
    entry_point_group
        An entry-point group whose entries installed packages declare (``[project.entry-points."NAME"]`` in
        their ``pyproject.toml``): listed by :meth:`names`, loaded by :meth:`get` when first asked for.  A
        registered name wins over a declared one.
    adopt
        Called as ``adopt(name, loaded_object)`` on what an entry point loads, unless loading it registered
        the name itself (a module that uses the decorator); returns what is registered, or raises
        :class:`~geostp.errors.ConfigError` saying what was expected.

    Examples
    --------
    >>> models = Registry("model")
    >>> @models.register("persistence")
    ... class Persistence: ...
    >>> models.get("persistence").__name__
    'Persistence'
    """

    def __init__(self, kind: str, *, entry_point_group: str | None = None,
                 adopt: Callable[[str, Any], T] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._adopt = adopt
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        ``name`` must be a plain name (:func:`geostp.names.plain_name`: it may become a file name, such as the
        model store's ``<model>-<key>.pt``); a ConfigError says what is wrong with it.
        """
        key = self._normalise(name)
        plain_name(key, f"{self.kind} name")

        def add(item: T) -> T:
            if key in self._entries and not replace and self._entries[key] is not item:
                raise ValueError(f"a {self.kind} named {key!r} is already registered")
            self._entries[key] = item
            return item

        if obj is None:
            return add
        return add(obj)

    def get(self, name: str) -> T:
        """Return the entry called ``name``: a registered one, else one an installed package declares (loaded
        now); unknown names list them all.

        Raises
        ------
        UnknownNameError
            No entry of that name.
        ConfigError
            A package declares the name but its entry point cannot be loaded, or is not what the registry holds.
        """
        key = self._normalise(name)
        if key in self._entries:
            return self._entries[key]
        declared = self.declared().get(key)
        if declared is None:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s are: "
                f"{', '.join(self.names()) or '(none)'}"
            )
        return self._load(key, declared)

    def declared(self) -> dict[str, EntryPoint]:
        """Entries that installed packages declare in :attr:`entry_point_group` and are not registered (yet)."""
        if self.entry_point_group is None:
            return {}
        out: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.entry_point_group):
            key = ep.name.strip().lower()
            if key and key not in self._entries:
                out.setdefault(key, ep)
        return out

    def _load(self, key: str, ep: EntryPoint) -> T:
        where = f"{self.kind} {key!r} (entry point {ep.value!r}"
        where += f" of package {ep.dist.name}" if ep.dist is not None else ""
        where += f" in group {self.entry_point_group!r})"
        plain_name(key, f"the name of {where}")  # refused before the package's code is imported
        try:
            obj = ep.load()
        except Exception as exc:  # an installed package's import error: name it, never a bare traceback
            raise ConfigError(f"{where} could not be loaded: {type(exc).__name__}: {exc}") from None
        if key in self._entries:  # importing it registered the name (the package uses the decorator)
            return self._entries[key]
        if self._adopt is not None:
            try:
                obj = self._adopt(key, obj)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        return self.register(key, obj)

    def names(self) -> list[str]:
        """Names of every entry: the registered ones and those installed packages declare, sorted."""
        return sorted(set(self._entries) | set(self.declared()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name.strip():
            return False
        key = self._normalise(name)
        return key in self._entries or key in self.declared()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    @staticmethod
    def _normalise(name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise UnknownNameError(f"a registry name must be a non-empty string, got {name!r}")
        return name.strip().lower()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


