"""One small generic registry, used for models, adapters and anything else chosen by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from geostp.errors import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A named collection of objects (usually classes or factories).

    Parameters
    ----------
    kind
        What the entries are, for messages ("model", "adapter", ...).

    Examples
    --------
    >>> models = Registry("model")
    >>> @models.register("persistence")
    ... class Persistence: ...
    >>> models.get("persistence").__name__
    'Persistence'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        key = self._normalise(name)

        def add(item: T) -> T:
            if key in self._entries and not replace and self._entries[key] is not item:
                raise ValueError(f"a {self.kind} named {key!r} is already registered")
            self._entries[key] = item
            return item

        if obj is None:
            return add
        return add(obj)

    def get(self, name: str) -> T:
        """Return the entry called ``name``; unknown names list the registered ones."""
        key = self._normalise(name)
        try:
            return self._entries[key]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s are: "
                f"{', '.join(self.names()) or '(none)'}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalise(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _normalise(name: str) -> str:
        if not isinstance(name, str) or not name.strip():
            raise UnknownNameError(f"a registry name must be a non-empty string, got {name!r}")
        return name.strip().lower()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


