"""Deprecated alias of :mod:`geostp.models.objectives` (the models own their objectives); removed in the next release."""

from __future__ import annotations

import warnings

from geostp.models.objectives import *  # noqa: F403
from geostp.models.objectives import __all__  # noqa: F401

warnings.warn("geostp.train.losses moved to geostp.models.objectives; import it from there "
              "(the alias goes in the next release)", DeprecationWarning, stacklevel=2)
