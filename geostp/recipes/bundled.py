"""The example recipes shipped with geostp: package data ``geostp/recipes/examples/*.yaml``.

They are found through :mod:`importlib.resources`, so an installed wheel has
them as well as a source checkout (whose top-level ``recipes/`` is a link to the
same folder). ``geostp run mch_tau`` runs the example ``mch_tau.yaml`` from
anywhere; a path that exists is always read as the path.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from geostp.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["examples_dir", "example_recipes", "resolve_recipe"]


def examples_dir() -> Traversable:
    """The folder of the example recipes (package data)."""
    return files("geostp.recipes") / "examples"


def example_recipes() -> dict[str, Traversable]:
    """The example recipes by name (the file name without ``.yaml``), sorted."""
    folder = examples_dir()
    if not folder.is_dir():
        return {}
    found = [f for f in folder.iterdir() if f.name.endswith(".yaml") and f.is_file()]
    return {f.name[: -len(".yaml")]: f for f in sorted(found, key=lambda f: f.name)}


def resolve_recipe(path_or_name: str | os.PathLike[str]) -> Path:
    """A recipe file: ``path_or_name`` itself where it exists, else the example recipe of that name
    (``mch_tau`` or ``mch_tau.yaml``).

    Raises
    ------
    ConfigError
        Where it is neither an existing file nor an example's name; the message lists the examples.
    """
    p = Path(path_or_name)
    if p.exists():
        return p
    examples = example_recipes()
    name = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    if p.parent == Path(".") and name in examples:
        return Path(str(examples[name]))  # package data lies in a folder for every install pip makes
    raise ConfigError(f"recipe {path_or_name} does not exist, and no example recipe has that name; run an "
                      f"example by its name (geostp run NAME): {', '.join(examples) or '(none)'}")
