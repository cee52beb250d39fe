"""Scaling out on existing engines: a ``dask.distributed`` client for data, ``torch.distributed`` for training.

Data (ingest, normalisation statistics, verification) are dask graphs of one
small task per chunk.  They run on whatever dask scheduler is active: give
:func:`dask_client` a ``distributed.Client``, a scheduler address
(``tcp://host:8786``) or ``"local"`` / ``"local:N"`` (a :class:`LocalCluster`
of ``N`` single-threaded worker processes on this machine) and every
``dask.compute`` inside the ``with`` block runs on its workers.  Results that
come back to the client are per-chunk moments or scores, never whole cubes.

Training runs one process per device (DDP).  :func:`init_from_env` joins the
process group that ``torchrun`` (or ``geostp run --nproc N``, which calls
torch's own elastic launcher, :func:`launch_local`) describes in the
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``
variables: gloo on CPU, nccl on CUDA.  The trainer
(:class:`geostp.train.trainer.Trainer`) then wraps the model in
``DistributedDataParallel`` and :class:`geostp.stream.CubeDataset` shards by
rank.  See ``docs/scale-out.md``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from geostp.errors import ConfigError

__all__ = [
    "dask_client",
    "active_client",
    "init_from_env",
    "launch_local",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "barrier",
]

# --------------------------------------------------------------------------------------------- dask


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


# -------------------------------------------------------------------------------------------- torch


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes shared files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def init_from_env(backend: str | None = None, *, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by ``torchrun``'s environment variables, once.

    Returns ``True`` when this process is part of a group of two or more
    processes (after this call), ``False`` when it runs alone (no
    ``WORLD_SIZE``, or ``WORLD_SIZE=1``).  The backend defaults to nccl when
    CUDA is available and gloo otherwise; on CUDA each process takes the device
    ``LOCAL_RANK``.
    """
    import datetime

    import torch
    import torch.distributed as dist

    if is_distributed():
        return dist.get_world_size() > 1
    try:
        ws = int(os.environ.get("WORLD_SIZE", "1"))
        rk = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (as torchrun sets them)") from None
    if ws <= 1:
        return False
    if not 0 <= rk < ws:
        raise ConfigError(f"RANK={rk} with WORLD_SIZE={ws}; expected 0 <= RANK < WORLD_SIZE")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE={ws} but {var} is not set: start the processes with torchrun "
                              "or 'geostp run --nproc N'")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    """Leave the process group (end of a run started by :func:`init_from_env`)."""
    if is_distributed():
        import torch.distributed as dist

        dist.destroy_process_group()


def launch_local(argv: Sequence[str], nproc: int, *, module: str = "geostp") -> int:
    """Run ``python -m <module> <argv>`` in ``nproc`` local processes with torch's elastic launcher.

    This is ``torchrun --standalone --nproc-per-node nproc -m geostp ...``
    (a rendezvous on a free local port); each process sees ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.  When
    CPU training, ``OMP_NUM_THREADS`` defaults to the CPU count divided by
    ``nproc`` so the processes do not oversubscribe the cores.  Returns 0 when
    every process succeeded; a failing process ends the others and its error
    is reported.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc {nproc!r}; expected a whole number of processes >= 1")
    from torch.distributed.run import parse_args, run

    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    argv = _without_nproc(list(argv))  # the processes know their number from WORLD_SIZE
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0",
                       "-m", module, *argv])
    try:
        run(args)
    except Exception as exc:  # torch.distributed.elastic.multiprocessing.errors.ChildFailedError
        from geostp.errors import GeostpError

        raise GeostpError(f"the distributed run failed: {str(exc).strip()[:2000]}") from None
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (torchrun's parser would take it for --nproc-per-node)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out
