"""A ``dask.distributed`` client for the data work (ingest, normalisation statistics, verification).

Data work is dask graphs of one small task per chunk.  They run on whatever
dask scheduler is active: give :func:`dask_client` a ``distributed.Client``, a
scheduler address (``tcp://host:8786``) or ``"local"`` / ``"local:N"`` (a
:class:`LocalCluster` of ``N`` single-threaded worker processes on this
machine) and every ``dask.compute`` inside the ``with`` block runs on its
workers.  Results that come back to the client are per-chunk moments or scores,
never whole cubes.  Training's process groups are in :mod:`geostp.train.ddp`;
see ``docs/scale-out.md``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from geostp.errors import ConfigError

__all__ = ["dask_client", "active_client"]


def active_client() -> Any:
    """The ``distributed.Client`` that ``dask.compute`` would use now, or ``None``.

    Does not import ``distributed`` (no client can be active without it being imported).
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _local_cluster(n_workers: int) -> Any:
    from distributed import Client, LocalCluster

    # One thread per worker process: the tasks are numpy/zarr chunk work that holds the GIL
    # part of the time, and a process each keeps their memory apart.
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster, set_as_default=False)


@contextlib.contextmanager
def dask_client(client: Any = None, *, timeout: float = 10.0) -> Iterator[Any]:
    """Run the dask work of the ``with`` block on a ``distributed`` client.

    Parameters
    ----------
    client
        ``None`` (keep the active scheduler: a client made the default before,
        or dask's local threads); a ``distributed.Client``; a scheduler address
        such as ``"tcp://10.0.0.5:8786"``; or ``"local"`` / ``"local:N"`` for a
        LocalCluster of ``N`` worker processes (default: the CPU count) that is
        closed when the block ends.
    timeout
        Seconds to wait for a scheduler at an address.

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    ConfigError
        If ``distributed`` is not installed, the address is malformed or no
        scheduler answers there.
    """
    if client is None:
        yield active_client()
        return
    try:
        import distributed
    except ImportError:
        raise ConfigError("a dask client needs the 'distributed' package: pip install 'geostp[distributed]'") from None
    owned = None
    if isinstance(client, distributed.Client):
        chosen = client
    elif isinstance(client, str):
        spec = client.strip()
        if spec == "local" or spec.startswith("local:"):
            n = spec.partition(":")[2] or str(os.cpu_count() or 1)
            if not n.isdigit() or int(n) < 1:
                raise ConfigError(f"dask scheduler {client!r}; expected 'local', 'local:N' with N >= 1, "
                                  "or an address such as tcp://host:8786")
            owned = chosen = _local_cluster(int(n))
        else:
            if "://" not in spec and ":" not in spec:
                raise ConfigError(f"dask scheduler {client!r} is not an address; expected e.g. tcp://host:8786, "
                                  "'local' or 'local:N'")
            try:
                owned = chosen = distributed.Client(spec, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"no dask scheduler answered at {spec!r} within {timeout:g} s "
                                  f"({type(exc).__name__}: {str(exc)[:200]}); start one with "
                                  "'dask scheduler' and 'dask worker ADDRESS', or use 'local:N'") from None
            except ValueError as exc:
                raise ConfigError(f"dask scheduler {client!r}: {exc}") from None
    else:
        raise ConfigError(f"client is a {type(client).__name__}; expected a distributed.Client, "
                          "a scheduler address or 'local[:N]'")
    try:
        with chosen.as_current():
            import dask

            with dask.config.set(scheduler=chosen.get):
                yield chosen
    finally:
        if owned is not None:
            cluster = getattr(owned, "cluster", None)
            owned.close()
            if cluster is not None:
                cluster.close()
