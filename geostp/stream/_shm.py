"""Batches that travel from DataLoader workers in reused shared-memory blocks.

A worker's batch reaches the main process through shared memory.  Left to
itself torch copies every tensor into a fresh shared block at each batch, and
on a virtual machine the page faults of fresh memory cost more than the copy
(about 1 ms per MB measured here).  So a worker writes each batch straight
into one shared block (one ``slot``) and reuses the block once the main
process has let go of it:

- the block starts with a header ``[MAGIC, worker id, slot, token]``;
- a small shared ``int64`` table (made by the dataset before the workers
  start) holds, per worker and slot, the token of the batch in flight;
- the main process side (:class:`Releaser`, run by :func:`make_loader`'s
  loader) keeps a weak reference to each batch's storage; once it has expired
  (no tensor or view of the batch is left) it writes ``-token`` back, and the
  worker may then write the next batch into that block.

Tokens are unique per worker process, so a release that arrives for an older
loader's worker never frees a block in use.  A plain DataLoader (no
:class:`Releaser`) just never releases: workers then allocate fresh blocks, as
torch does.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

__all__ = ["SLOTS", "MAX_WORKERS", "slot_table", "SlotAllocator", "Releaser", "alloc_batch"]

MAGIC = 0x67656F737470  # "geostp"
SLOTS = 8  # blocks a worker may have in flight and still reuse
MAX_WORKERS = 64
HEADER = 64  # bytes

_MADV_POPULATE_WRITE = 23  # Linux >= 5.14
_libc: Any = None


def slot_table() -> torch.Tensor:
    """The shared table of in-flight tokens (create before the workers start)."""
    return torch.zeros((MAX_WORKERS, SLOTS), dtype=torch.int64).share_memory_()


def _populate(address: int, nbytes: int) -> None:
    """Fault a fresh block in with one call rather than one trap per page (Linux; a no-op elsewhere)."""
    global _libc
    if _libc is False or nbytes < 1 << 20:
        return
    try:
        if _libc is None:
            import ctypes
            import ctypes.util

            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        start = address & ~4095
        if _libc.madvise(start, nbytes + (address - start), _MADV_POPULATE_WRITE) != 0:
            _libc = False  # an older kernel: pages fault in one by one
    except (OSError, AttributeError):
        _libc = False


def _new_shared(nbytes: int) -> torch.UntypedStorage:
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if new_shared is not None:
        storage = new_shared(nbytes)
    else:  # pragma: no cover - older torch
        storage = torch.empty(nbytes, dtype=torch.uint8).share_memory_().untyped_storage()
    _populate(storage.data_ptr(), nbytes)
    return storage


def _header(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64).set_(storage, 0, (4,))


class SlotAllocator:
    """One worker's shared blocks: reuses the ones the main process has released."""

    def __init__(self, table: torch.Tensor, worker_id: int) -> None:
        self.table = table
        self.worker = worker_id if 0 <= worker_id < table.shape[0] else -1
        self.storages: list[torch.UntypedStorage | None] = [None] * table.shape[1]
        self.tokens = [0] * table.shape[1]
        self.counter = 0
        self.prefix = (os.getpid() & 0x7FFFFF) << 32
        if self.worker >= 0:
            self.table[self.worker].zero_()

    def storage(self, nbytes: int) -> torch.UntypedStorage:
        slot = -1
        if self.worker >= 0:
            row = self.table[self.worker].tolist()
            for k, st in enumerate(self.storages):  # a released block that is big enough
                if st is not None and row[k] == -self.tokens[k] and st.nbytes() >= nbytes:
                    slot = k
                    break
            else:
                for k, st in enumerate(self.storages):  # a free slot, or one whose block is released but small
                    if st is None or (row[k] == -self.tokens[k]):
                        slot = k
                        self.storages[k] = _new_shared(nbytes)
                        break
        if slot < 0:  # every slot in flight: an untracked block (freed by the main process, as torch does)
            storage = _new_shared(nbytes)
            _header(storage).copy_(torch.tensor([MAGIC, -1, -1, 0]))
            return storage
        self.counter += 1
        token = self.prefix | self.counter
        self.tokens[slot] = token
        storage = self.storages[slot]
        assert storage is not None
        _header(storage).copy_(torch.tensor([MAGIC, self.worker, slot, token]))
        self.table[self.worker, slot] = token
        return storage


class Releaser:
    """Main-process side: tells workers which of their blocks no batch uses any more."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.pending: list[tuple[Any, int, int, int]] = []
        self.released = 0  # blocks handed back to their worker, for diagnostics

    def track(self, batch: dict[str, torch.Tensor]) -> None:
        from torch.multiprocessing.reductions import StorageWeakRef

        x = batch.get("x")
        if isinstance(x, torch.Tensor) and x.is_shared() and x.untyped_storage().nbytes() >= HEADER:
            storage = x.untyped_storage()
            magic, worker, slot, token = _header(storage).tolist()
            if magic == MAGIC and worker >= 0 and token != 0:
                self.pending.append((StorageWeakRef(storage), worker, slot, token))
            del storage
        self.sweep()

    def sweep(self) -> None:
        keep = []
        for ref, worker, slot, token in self.pending:
            if ref.expired():
                if int(self.table[worker, slot]) == token:
                    self.table[worker, slot] = -token
                    self.released += 1
            else:
                keep.append((ref, worker, slot, token))
        self.pending = keep


def alloc_batch(spec: dict[str, tuple[tuple[int, ...], torch.dtype]],
                allocator: SlotAllocator | None) -> dict[str, torch.Tensor]:
    """Empty tensors for one batch: plain ones in the main process, views of one shared block in a worker."""
    if allocator is None:
        return {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in spec.items()}
    offsets, total = {}, HEADER
    for k, (shape, dt) in spec.items():
        offsets[k] = total
        total += (math.prod(shape) * dt.itemsize + 63) // 64 * 64
    storage = allocator.storage(total)
    return {k: torch.empty(0, dtype=dt).set_(storage, offsets[k] // dt.itemsize, shape)
            for k, (shape, dt) in spec.items()}
