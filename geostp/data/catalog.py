"""Data catalogs: YAML files that name sources and say how to open them.

The built-in catalogs (``synthetic``, ``radar``, ``crowdflow``, ``video``) are
package data (``geostp/catalogs/*.yaml``), found through
:mod:`importlib.resources`, so an installed wheel has them too; a name is looked
up first in the folders of ``$GEOSTP_CATALOGS``, then among the built-in ones
(:func:`catalog_dirs`).

A catalog file looks like::

    description: Radar composites of the pysteps example data
    sources:
      mch:
        description: MeteoSwiss rain rate, 5 min, 1 km
        adapter: radar            # a name in geostp.data.adapters
        args:                     # keyword arguments of that adapter
          importer: mch_gif
          root: ${GEOSTP_DATA}/radar/mch

String values may use ``${VAR}`` or ``${VAR:-default}`` environment variables.
``geostp.open_catalog(path_or_name)`` reads one; ``catalog.source(name)`` is a
source's adapter and arguments, which :func:`geostp.data.adapters.open_source`
opens; ``catalog.open(name)`` does both and returns the source as a lazy cube.
The adapter registry lives in :mod:`geostp.data.adapters` (``adapters`` stays
importable from here for one release).
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geostp.checks import as_path
from geostp.data.adapters import Source, adapters, open_source
from geostp.data.safe_yaml import load_yaml, read_yaml_text
from geostp.errors import ConfigError, DataError, UnknownNameError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["Catalog", "SourceEntry", "open_catalog", "adapters", "catalog_dirs", "builtin_catalog_dir",
           "catalog_files", "expand_env"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, *, where: str = "") -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string inside ``value``."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set (used as ${{{name}}})")

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    return value


class SourceEntry(BaseModel):
    """One named source of a catalog."""

    model_config = ConfigDict(extra="forbid")
    adapter: str
    description: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    license: str | None = None


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    sources: dict[str, SourceEntry]


class Catalog:
    """A set of named sources read from a YAML catalog file."""

    def __init__(self, sources: dict[str, SourceEntry], *, path: Path | Traversable | None = None,
                 description: str = ""):
        self.sources = sources
        self.path = path
        self.description = description

    def __contains__(self, name: str) -> bool:
        return name in self.sources

    def __iter__(self):
        return iter(self.sources)

    def names(self) -> list[str]:
        return sorted(self.sources)

    def entry(self, name: str) -> SourceEntry:
        try:
            return self.sources[name]
        except KeyError:
            raise UnknownNameError(
                f"source {name!r} is not in catalog {self.path or '(in memory)'}; "
                f"available sources: {', '.join(self.names()) or '(none)'}"
            ) from None

    def resolved_args(self, name: str) -> dict[str, Any]:
        """The adapter arguments of a source with environment variables expanded."""
        return expand_env(self.entry(name).args, where=f"{self.path}: sources.{name}.args")

    def source(self, name: str) -> Source:
        """Source ``name``: its adapter and arguments (environment variables expanded), for :func:`open_source`."""
        label = f"{_stem(self.path) if self.path is not None else 'catalog'}:{name}"
        return Source(self.entry(name).adapter, self.resolved_args(name), label)

    def open(self, name: str, **overrides: Any) -> xr.Dataset:
        """Open source ``name`` as a lazy cube (:func:`geostp.data.adapters.open_source`); ``overrides`` replace
        catalog arguments."""
        return open_source(self.source(name), overrides)

    def __repr__(self) -> str:
        return f"Catalog({self.path}, sources={self.names()})"


def _stem(path: Path | Traversable) -> str:
    return path.name.rsplit(".", 1)[0]


def builtin_catalog_dir() -> Traversable:
    """The built-in catalogs: the package data folder ``geostp/catalogs`` (through :mod:`importlib.resources`)."""
    return files("geostp") / "catalogs"


def catalog_dirs() -> list[Path | Traversable]:
    """Where catalog names are looked up, in order: the folders of ``$GEOSTP_CATALOGS`` (``os.pathsep``
    separated; a user's own catalogs, which win over a built-in one of the same name), then the built-in
    catalogs (:func:`builtin_catalog_dir`)."""
    dirs: list[Path | Traversable] = [Path(p) for p in os.environ.get("GEOSTP_CATALOGS", "").split(os.pathsep) if p]
    dirs.append(builtin_catalog_dir())
    return dirs


def catalog_files() -> dict[str, Path | Traversable]:
    """Every catalog found by name: ``{name: file}``, the first folder of :func:`catalog_dirs` winning."""
    found: dict[str, Path | Traversable] = {}
    for d in catalog_dirs():
        if d.is_dir():
            for f in sorted(d.iterdir(), key=lambda f: f.name):
                if f.name.endswith(".yaml") and f.is_file():
                    found.setdefault(_stem(f), f)
    return found


def open_catalog(path_or_name: str | os.PathLike[str]) -> Catalog:
    """Read a catalog from a YAML path, or by name from :func:`catalog_dirs`.

    Raises
    ------
    ConfigError
        For malformed YAML or entries, naming the file and the key (a key given twice included); for a
        ``path_or_name`` that is neither a string nor a path (``None``, a number).
    UnknownNameError
        For a name that matches no catalog file, listing the available ones.
    """
    p: Path | Traversable = as_path(path_or_name, "open_catalog: path_or_name",
                                    expected="a catalog name (geostp catalogs lists them) or a catalog YAML file")
    if not p.suffix and not p.exists():
        candidates = catalog_files()
        if str(path_or_name) not in candidates:
            raise UnknownNameError(
                f"no catalog named {str(path_or_name)!r}; available catalogs: "
                f"{', '.join(sorted(candidates)) or '(none)'} (searched {', '.join(map(str, catalog_dirs()))})"
            )
        p = candidates[str(path_or_name)]
    elif not p.exists():
        raise DataError(f"catalog file {p} does not exist")
    raw = load_yaml(read_yaml_text(p, what="catalog"), where=str(p))  # refuses anchors and aliases (alias bombs)
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with a 'sources' key, got {type(raw).__name__}")
    try:
        parsed = _CatalogFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{p}: malformed catalog: {problems}") from None
    return Catalog(parsed.sources, path=p, description=parsed.description)


def _load_builtin_adapters() -> None:
    """Deprecated (one release), does nothing: the built-in adapters are registered when
    :mod:`geostp.data.adapters` is imported, as this module does; use its ``get_adapter`` and ``names``."""
