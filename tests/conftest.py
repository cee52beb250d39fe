"""Shared fixtures: the real-data folder (one configured path), small cubes built in code (geostp.testing)
and the array backend (numpy or dask) a test runs over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geostp.testing import BACKENDS, small_cube

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$GEOSTP_DATA`` if set, else ``../shared/data`` beside the checkout, if it exists."""
    env = os.environ.get("GEOSTP_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; skips with a reason when absent (fails instead under GEOSTP_REQUIRE_DATA=1, as in CI)."""
    path = shared_data_dir()
    if path is None:
        msg = ("real data folder not found: set GEOSTP_DATA to the shared data folder "
               "(../shared/data beside the checkout)")
        if os.environ.get("GEOSTP_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def mnist_dir(shared_data: Path) -> Path:
    return shared_data / "mnist"


@pytest.fixture
def radar_cube():
    """A small lazy synthetic radar cube (24 frames, 48 x 40 pixels): :func:`geostp.testing.small_cube`."""
    return small_cube()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """``"numpy"`` then ``"dask"``: convert a test's data with ``geostp.testing.as_backend(data, backend)``."""
    return request.param
