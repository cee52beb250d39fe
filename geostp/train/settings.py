"""Typed training settings: the ``training`` section of a recipe and the trainer's budget, without torch.

Here rather than in :mod:`geostp.train.trainer` so that reading a recipe
(:mod:`geostp.recipes.schema`) does not import torch; the trainer re-exports
:class:`TrainSettings`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from geostp.options import NumbersNotBools

__all__ = ["TrainSettings"]


class TrainSettings(NumbersNotBools):
    """Typed training settings (the ``training`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="epoch budget")
    max_minutes: float | None = Field(None, gt=0, description="wall-time budget, summed over resumes")
    # ``max_steps``, its name before ``steps`` came to mean lead times only, is still read for one release
    # (a DeprecationWarning says so); what is stored (model_dump, checkpoints, resolved recipes) is max_iterations.
    max_iterations: int | None = Field(None, ge=1, validation_alias=AliasChoices("max_iterations", "max_steps"),
                                       description="optimiser-iteration budget (for quick runs)")
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm; None disables")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without val improvement")
    seed: int = Field(0, ge=0, description="seeds torch and the data order (numpy: non-negative)")
    device: str = "auto"
    bf16: bool = Field(True, description="bf16 autocast where the device does bf16 natively (CUDA GPUs, CPUs "
                                         "with AMX); fp32 elsewhere")
    checkpoint_every: int = Field(100, ge=1, description="optimiser iterations between checkpoints")
    val_max_batches: int | None = Field(None, ge=1)
    progress: bool = True
    find_unused_parameters: bool = Field(False, description="DDP: allow parameters that an iteration does not use")
    sync_batchnorm: bool = Field(False, description="DDP on CUDA: convert BatchNorm to SyncBatchNorm")
    log_dir: str | None = Field(None, description="write TensorBoard event files into this folder (losses, "
                                                  "validation MSE per lead time, forecast maps each epoch); needs "
                                                  "the tensorboard extra")

    @field_validator("log_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        """A path object is kept as its text (checkpoints store the settings as plain values)."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="before")
    @classmethod
    def _read_deprecated_names(cls, data: Any, info: ValidationInfo) -> Any:
        """Accept ``max_steps`` (the deprecated name of ``max_iterations``) with a DeprecationWarning."""
        if isinstance(data, dict) and "max_steps" in data:
            if "max_iterations" in data:
                raise ValueError("max_steps is the deprecated name of max_iterations; give only max_iterations")
            # stacklevel 3: past this validator and pydantic's __init__/model_validate, to the caller's line
            warnings.warn(cls._deprecated_max_steps_message(info.context), DeprecationWarning, stacklevel=3)
        return data

    @classmethod
    def _deprecated_max_steps_message(cls, context: dict[str, Any] | None) -> str:
        return ("TrainSettings: max_steps is deprecated and will be removed in the next release; use "
                "max_iterations (optimiser iterations: 'steps' are lead times)")

    @property
    def max_steps(self) -> int | None:
        """Deprecated name of :attr:`max_iterations` (``steps`` are lead times); removed in the next release."""
        warnings.warn("TrainSettings.max_steps is now max_iterations", DeprecationWarning, stacklevel=2)
        return self.max_iterations

    def planned_iterations(self, batches_per_epoch: int) -> int:
        """Optimiser iterations the epoch and ``max_iterations`` budgets allow: what the schedules are sized to."""
        total = self.epochs * batches_per_epoch
        return min(total, self.max_iterations) if self.max_iterations else total

    def planned_steps(self, steps_per_epoch: int) -> int:
        """Deprecated name of :meth:`planned_iterations` (``steps`` are lead times); removed in the next release."""
        warnings.warn("TrainSettings.planned_steps is now planned_iterations", DeprecationWarning, stacklevel=2)
        return self.planned_iterations(steps_per_epoch)
