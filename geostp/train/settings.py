"""Typed training settings: the ``training`` section of a recipe and the trainer's budget, without torch.

Here rather than in :mod:`geostp.train.trainer` so that reading a recipe
(:mod:`geostp.recipes.schema`) does not import torch; the trainer re-exports
:class:`TrainSettings`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainSettings"]


class TrainSettings(BaseModel):
    """Typed training settings (the ``training`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="epoch budget")
    max_minutes: float | None = Field(None, gt=0, description="wall-time budget, summed over resumes")
    max_steps: int | None = Field(None, ge=1, description="optimiser-step budget (for quick runs)")
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None disables")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without val improvement")
    seed: int = 0
    device: str = "auto"
    bf16: bool = Field(True, description="bf16 autocast where the device does bf16 natively (CUDA GPUs, CPUs "
                                         "with AMX); fp32 elsewhere")
    checkpoint_every: int = Field(100, ge=1, description="optimiser steps between checkpoints")
    val_max_batches: int | None = Field(None, ge=1)
    progress: bool = True
    find_unused_parameters: bool = Field(False, description="DDP: allow parameters that a step does not use")
    sync_batchnorm: bool = Field(False, description="DDP on CUDA: convert BatchNorm to SyncBatchNorm")

    def planned_iterations(self, batches_per_epoch: int) -> int:
        """Optimiser iterations the epoch and ``max_steps`` budgets allow: what the schedules are sized to."""
        total = self.epochs * batches_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    def planned_steps(self, steps_per_epoch: int) -> int:
        """Deprecated name of :meth:`planned_iterations` (``steps`` are lead times); removed in the next release."""
        import warnings

        warnings.warn("TrainSettings.planned_steps is now planned_iterations", DeprecationWarning, stacklevel=2)
        return self.planned_iterations(steps_per_epoch)
