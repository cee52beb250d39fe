"""Deprecated alias of :mod:`geostp.models.schedules` (the models own their sampling schedules); removed in the next release."""

from __future__ import annotations

import warnings

from geostp.models.schedules import *  # noqa: F403
from geostp.models.schedules import __all__  # noqa: F401

warnings.warn("geostp.train.schedules moved to geostp.models.schedules; import it from there "
              "(the alias goes in the next release)", DeprecationWarning, stacklevel=2)
