"""TensorBoard logging of a training run: losses per iteration, validation scores per lead time, forecast maps.

The trainer (:class:`geostp.train.trainer.Trainer`) opens a :class:`TensorBoardLogger` when its settings name a
``log_dir`` (``geostp.fit(..., log_dir=...)``, a recipe's ``training.log_dir``) and, under DDP, on rank 0 only.
What it writes, by tag (the step is the optimiser iteration):

- ``train/loss``, ``train/lr`` and the model's own loss parts (``train/<part>``), every iteration;
- ``epoch/train_loss`` and ``epoch/val_mse`` (normalised units), every epoch;
- ``validation/mse_lead_01`` ... one per lead time, the validation MSE of that lead (normalised units);
- ``forecast/lead_01``, ... a few lead times (first, middle, last) of the first validation sample: the
  observed map on the left, the forecast on the right, on one grey scale.

TensorBoard itself is an optional dependency (``pip install 'geostp[tensorboard]'``); the event files are
written by ``torch.utils.tensorboard``, and read by TensorBoard (``tensorboard --logdir DIR``) or by
``tensorboard.backend.event_processing.event_accumulator.EventAccumulator``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from geostp.errors import ConfigError, writing

__all__ = ["TensorBoardLogger", "forecast_leads_to_draw"]

#: Keys of a trainer's iteration record that are positions, not values to plot.
_NOT_SCALARS = ("iteration", "epoch")


def forecast_leads_to_draw(n_leads: int, count: int = 3) -> list[int]:
    """Indices of the lead times drawn each epoch: the first, the last and evenly between (at most ``count``)."""
    if n_leads <= count:
        return list(range(n_leads))
    return sorted({round(i * (n_leads - 1) / (count - 1)) for i in range(count)})


class TensorBoardLogger:
    """Writes a training run's scalars and forecast images as TensorBoard event files in ``log_dir``.

    Parameters
    ----------
    log_dir
        The folder (created); several runs may share a parent folder, each in its own sub-folder.
    images
        How many lead times of the first validation sample are drawn each epoch (0: none).

    Raises
    ------
    ConfigError
        TensorBoard is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, images: int = 3) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's writer needs the tensorboard package
            raise ConfigError(f"log_dir={str(log_dir)!r} asks for TensorBoard logs, but TensorBoard is not "
                              f"installed ({exc}); install it with: pip install 'geostp[tensorboard]'") from None
        self.log_dir = os.fspath(log_dir)
        self.images = int(images)
        with writing(self.log_dir, "TensorBoard log folder (log_dir)"):  # created here: a file there, read-only
            self.writer = SummaryWriter(log_dir=self.log_dir)

    def log_iteration(self, record: Mapping[str, float]) -> None:
        """The loss, learning rate and loss parts of one optimiser iteration."""
        step = int(record["iteration"])
        for key, value in record.items():
            if key not in _NOT_SCALARS:
                self.writer.add_scalar(f"train/{key}", float(value), step)

    def log_epoch(self, iteration: int, summary: Mapping[str, float], by_lead: Sequence[float] = (),
                  sample: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """An epoch's summary, its validation MSE per lead time, and forecast maps of one validation sample.

        ``sample`` is ``(observed, forecast)``, each ``[T, C, H, W]`` (or ``[1, T, C, H, W]``); its first
        channel is drawn.
        """
        for key, value in summary.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", float(value), iteration)
        for lead, value in enumerate(by_lead, start=1):
            self.writer.add_scalar(f"validation/mse_lead_{lead:02d}", float(value), iteration)
        if sample is not None and self.images > 0:
            observed, forecast = (t.detach().float().cpu() for t in sample)
            if observed.ndim == 5:
                observed, forecast = observed[0], forecast[0]
            for lead in forecast_leads_to_draw(forecast.shape[0], self.images):
                image = _side_by_side(observed[lead, 0], forecast[lead, 0])
                self.writer.add_image(f"forecast/lead_{lead + 1:02d}", image, iteration, dataformats="HW")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _side_by_side(observed: torch.Tensor, forecast: torch.Tensor) -> torch.Tensor:
    """Observed | forecast in [0, 1] on one scale (their joint range), a white column between; NaN is black."""
    both = torch.stack([observed, forecast])
    finite = both[torch.isfinite(both)]
    low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    scaled = ((both - low) / max(high - low, 1e-12)).nan_to_num(0.0).clamp(0.0, 1.0)
    gap = torch.ones(observed.shape[0], max(1, observed.shape[1] // 32))
    return torch.cat([scaled[0], gap, scaled[1]], dim=1)
