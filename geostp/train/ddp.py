"""Torch distributed data parallel (DDP): the process group, this process's rank, and the local launcher.

Training runs one process per device.  :func:`init_from_env` joins the process
group that ``torchrun`` (or ``geostp run --nproc N``, which calls torch's own
elastic launcher, :func:`launch_local`) describes in the ``RANK``/
``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` variables: gloo
on CPU, nccl on CUDA.  The trainer (:class:`geostp.train.trainer.Trainer`) then
wraps the model in ``DistributedDataParallel`` and
:class:`geostp.stream.CubeDataset` shards by rank.  :func:`rank`,
:func:`world_size` and :func:`process_group` are the one place that asks
``torch.distributed`` where this process stands.  See ``docs/scale-out.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from geostp.errors import ConfigError, GeostpError

__all__ = [
    "init_from_env",
    "launch_local",
    "is_distributed",
    "process_group",
    "rank",
    "world_size",
    "rank_and_size",
    "is_main_process",
    "barrier",
    "shutdown",
]


def process_group(*, min_size: int = 1) -> Any:
    """``torch.distributed`` when this process is in an initialised group of ``min_size`` or more, else ``None``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() >= min_size:
        return dist
    return None


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return process_group() is not None


def rank_and_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's rank and the group's size: the process group's, or the values given (checked).

    With neither given: the initialised process group's rank and size, ``(0, 1)``
    outside one.  Given values (a dataset sharded by hand) are checked: ``0 <=
    rank < world_size``; a missing one defaults to ``0`` / ``1``.
    """
    if rank is None and world_size is None:
        group = process_group()
        return (group.get_rank(), group.get_world_size()) if group is not None else (0, 1)
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank}, world_size={world_size}; expected 0 <= rank < world_size")
    return rank, world_size


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return rank_and_size()[0]


def world_size() -> int:
    """The number of processes in the group (1 outside one)."""
    return rank_and_size()[1]


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
