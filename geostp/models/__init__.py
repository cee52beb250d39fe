"""Forecasting models chosen by name: ``geostp.models.get("tau", input_steps=10, ...)``.

Registered here: ``tau``, ``predrnn``, ``predrnn_v2``, ``lagrangian`` and the baselines ``persistence``,
``optical_flow`` and ``sprog``.  Third-party models subclass :class:`Forecaster` and use the
:func:`register` decorator::

    @geostp.models.register("my_model")
    class MyModel(geostp.models.Forecaster):
        ...

or, in an installed package, declare the class in the entry-point group ``geostp.models`` (found by
:func:`names`, imported when the name is first asked for; a built-in name wins over an entry point of the
same name)::

    [project.entry-points."geostp.models"]
    my_model = "my_package.models:MyModel"

Either way the model is used by name everywhere a built-in one is: ``geostp.forecast(cube, "my_model")``,
``geostp.fit``, a recipe's ``model.name``, ``geostp demo --model my_model``, and a checkpoint that names it.

Importing this package has no side effect beyond registering the models: the
allocator tuning for CPU training (:mod:`geostp.models.allocator`) runs when
training starts, not here.
"""

from __future__ import annotations

from typing import Any

# Imported for their registration side effect.
from geostp.models import baselines, lagrangian, predrnn, tau  # noqa: F401
from geostp.models.base import (
    ENTRY_POINT_GROUP,
    MODEL_REGISTRY,
    Forecaster,
    ModelConfig,
    autoregressive_rollout,
    build_model,
    register_model,
)
from geostp.models.baselines import OpticalFlow, Persistence
from geostp.models.predrnn import PredRNN, PredRNNConfig, PredRNNv2, PredRNNv2Config
from geostp.models.tau import TAU, TAUConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "Forecaster",
    "ModelConfig",
    "get",
    "names",
    "register",
    "model_class",
    "autoregressive_rollout",
    "TAU",
    "TAUConfig",
    "PredRNN",
    "PredRNNConfig",
    "PredRNNv2",
    "PredRNNv2Config",
    "Persistence",
    "OpticalFlow",
]

register = register_model


def get(name: str, **kwargs: Any) -> Forecaster:
    """Construct the model registered as ``name`` with typed keyword arguments.

    Raises
    ------
    UnknownNameError
        ``name`` is not registered (the message lists the registered names).
    ConfigError
        An argument is unknown, of the wrong type, or impossible.
    """
    return build_model(name, **kwargs)


def names() -> list[str]:
    """Names of the registered models and of those installed packages declare (``geostp.models``), sorted."""
    return MODEL_REGISTRY.names()


def model_class(name: str) -> type[Forecaster]:
    """The class registered as ``name`` (without constructing it)."""
    return MODEL_REGISTRY.get(name)
