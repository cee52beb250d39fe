"""One lock around every netCDF-C / HDF5 call that geostp makes from dask's worker threads.

The netCDF-C and HDF5 libraries are not thread-safe. xarray serialises its own data reads with
``xarray.backends.locks.HDF5_LOCK``, but not every metadata call it makes while opening a file, and
pysteps' importers call netCDF4 and h5py directly. Two dask threads opening two files at once could
therefore crash the interpreter (seen as a segfault on CI). Our readers take ``FILE_LOCK`` for the
whole open-read-close of a frame, and then xarray's own lock inside it: always in that order, so
the two locks cannot deadlock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

FILE_LOCK = threading.RLock()


@contextlib.contextmanager
def hdf5_reading() -> Iterator[None]:
    """Hold geostp's file lock for a whole netCDF/HDF5 frame read (re-entrant)."""
    with FILE_LOCK:
        yield


@contextlib.contextmanager
def hdf5_reading_direct() -> Iterator[None]:
    """For readers that bypass xarray (pysteps importers): also hold xarray's HDF5 lock, so that
    they cannot run beside a lazy xarray read of another netCDF file."""
    from xarray.backends.locks import HDF5_LOCK

    with FILE_LOCK, HDF5_LOCK:
        yield
