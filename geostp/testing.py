"""Small data built in code for tests (geostp's own and yours): cubes, and the same data numpy- or dask-backed;
and :func:`assert_refused`, the check that a bad input gets a clear :class:`~geostp.errors.GeostpError`.

Nothing here reads a file or the network.  A test that should hold whatever
backs the arrays takes a backend name and converts its data with
:func:`as_backend`; geostp's test suite has a ``backend`` fixture
parametrised over :data:`BACKENDS` for that::

    def test_mse_is_zero_on_itself(backend):
        cube = geostp.testing.small_cube(backend=backend)
        ...
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import xarray as xr

from geostp.errors import ConfigError, GeostpError

__all__ = ["BACKENDS", "Backend", "as_backend", "assert_refused", "read_only_folder", "small_cube"]

#: The array backends a cube may have: numpy (in memory) and dask (lazy, chunked).
BACKENDS: tuple[str, ...] = ("numpy", "dask")
Backend = Literal["numpy", "dask"]

X = TypeVar("X", xr.Dataset, xr.DataArray)


def as_backend(data: X, backend: Backend) -> X:
    """``data`` with numpy arrays (``"numpy"``: loaded) or dask arrays (``"dask"``).

    Dask data keeps its chunks; numpy data is cut into two chunks along its
    first dimension (time, for a cube), so that a computation must combine
    chunks as it would on a real store.
    """
    if backend == "numpy":
        return data.load() if data.chunks else data.copy()
    if backend == "dask":
        if data.chunks:
            return data
        first = next(iter(data.dims), None)
        if first is None:
            return data.chunk()
        return data.chunk({first: max(1, -(-data.sizes[first] // 2))})
    raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def small_cube(
    n_times: int = 24,
    ny: int = 48,
    nx: int = 40,
    *,
    seed: int = 3,
    time_chunk: int = 8,
    backend: Backend = "dask",
) -> xr.Dataset:
    """A small synthetic radar cube (:func:`geostp.data.synthetic.synthetic_radar`): rain rate in mm/h on a
    5-minute axis, 1 km pixels in a CF grid mapping, NaN outside the radar's range.

    Parameters
    ----------
    n_times, ny, nx
        Frames and grid size (the defaults make 24 frames of 48 x 40 pixels).
    seed
        The same seed gives the same cube.
    time_chunk
        Frames per dask chunk.
    backend
        ``"dask"`` (lazy, as :func:`geostp.open_cube` gives) or ``"numpy"`` (loaded).
    """
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = synthetic_radar(n_times, ny, nx, seed=seed, time_chunk=time_chunk)
    return as_backend(cube, backend)


def assert_refused(kind: type[Exception], call: Callable[[], Any], *named: str, expected: str = "expected") -> str:
    """Assert that ``call()`` raises ``kind``, a :class:`~geostp.errors.GeostpError` whose message names each of
    ``named`` and says ``expected``; return the message.  Any other exception propagates."""
    try:
        call()
    except kind as exc:
        message = str(exc)
        assert isinstance(exc, GeostpError), type(exc)
        for name in named:
            assert name in message, (name, message)
        assert expected in message, message
        return message
    raise AssertionError(f"DID NOT RAISE {kind.__name__}")


def read_only_folder(tmp_path: Any) -> Any:
    """A folder nothing can be created in, for tests of refused writes: ``tmp_path / "read-only"`` with mode
    0o555, or (as root, who may write there anyway) one of the kernel's folders in /sys.  Skips the test (pytest)
    where no folder refuses writes to this user."""
    from pathlib import Path

    import pytest

    folder = Path(tmp_path) / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.mkdir()
    except OSError:
        return folder
    probe.rmdir()
    for candidate in (Path("/sys/kernel"), Path("/sys")):
        try:
            (candidate / "geostp-probe").mkdir()
        except OSError:
            return candidate
        (candidate / "geostp-probe").rmdir()  # pragma: no cover
    pytest.skip("no folder here refuses writes to this user")  # pragma: no cover
