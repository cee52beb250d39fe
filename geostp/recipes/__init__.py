"""Recipes: typed YAML descriptions of train, evaluate and nowcast runs, and the wiring that runs them.

``load_recipe(path, overrides)`` reads and checks one (:mod:`geostp.recipes.schema`);
``run_recipe(recipe)`` runs it (:mod:`geostp.recipes.run`); ``geostp run RECIPE``
does both from the command line.
"""

from __future__ import annotations

from geostp.recipes.schema import Recipe, apply_overrides, load_recipe, parse_recipe, recipe_to_yaml

__all__ = ["Recipe", "load_recipe", "parse_recipe", "apply_overrides", "recipe_to_yaml", "run_recipe", "run_file"]


def __getattr__(name: str):
    if name in ("run_recipe", "run_file"):  # torch and the data stack load only when a run starts
        from geostp.recipes import run

        return getattr(run, name)
    raise AttributeError(name)
