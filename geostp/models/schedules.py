"""Scheduled-sampling schedules of the recurrent models, as pure functions of the training iteration.

A recurrent forecaster is fed, at each step, either the true frame (teacher
forcing) or its own previous prediction.  These functions say how likely the
true frame is at a given iteration, and :func:`draw_teacher_forcing` turns the
probabilities into the per-sample, per-step choice.  Every recurrent model uses
these, so a schedule is defined once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from geostp.errors import ConfigError
from geostp.models.base import Forecaster

__all__ = [
    "REFERENCE_TRAINING_ITERATIONS",
    "REFERENCE_TRAINING_STEPS",
    "schedule_marks_for",
    "SCHEDULE_MARK_ARGS",
    "takes_schedule_marks",
    "fit_schedule_marks",
    "reverse_scheduled_sampling",
    "scheduled_sampling",
    "teacher_forcing_probabilities",
    "draw_teacher_forcing",
]


#: The run the papers' marks (25,000 / 50,000 / 5,000 iterations) belong to: OpenSTL's Moving MNIST,
#: 200 epochs of 625 optimiser iterations on batches of 16 clips. The marks are 20 % / 40 % / 4 % of it.
REFERENCE_TRAINING_ITERATIONS = 200 * 625
#: Deprecated name of :data:`REFERENCE_TRAINING_ITERATIONS` (``steps`` are lead times); removed in the next release.
REFERENCE_TRAINING_STEPS = REFERENCE_TRAINING_ITERATIONS


def schedule_marks_for(total_iterations: int) -> dict[str, int | float]:
    """The scheduled-sampling marks at the papers' fractions of a run of ``total_iterations`` optimiser iterations.

    With the papers' marks a run of a few thousand iterations never leaves the
    first phase: PredRNN's decoder stays teacher-forced (it never learns from
    its own predictions, which is all it gets at inference) and PredRNN-V2's
    stays at 50 %.  Returns the ``sampling_start_iteration``,
    ``sampling_end_iteration`` and ``sampling_exp_scale`` model arguments.
    """
    if isinstance(total_iterations, bool) or not isinstance(total_iterations, int) or total_iterations < 1:
        raise ConfigError(f"total_iterations must be a positive integer, got {total_iterations!r}")
    scale = total_iterations / REFERENCE_TRAINING_ITERATIONS
    start = round(25_000 * scale)
    return {"sampling_start_iteration": start,
            "sampling_end_iteration": max(start + 1, round(50_000 * scale)),
            "sampling_exp_scale": max(1.0, 5_000.0 * scale)}


#: The model arguments that place a recurrent model's scheduled-sampling marks.
SCHEDULE_MARK_ARGS = ("sampling_start_iteration", "sampling_end_iteration", "sampling_exp_scale")


def takes_schedule_marks(model: Forecaster | type[Forecaster], args: Mapping[str, Any]) -> bool:
    """Whether ``model`` (a model or its class) has a sampling schedule whose marks ``args`` leaves to the run.

    The model says whether it has such a schedule (its ``takes_schedule_marks``
    attribute); marks a user put in ``args`` are theirs.
    """
    return model.takes_schedule_marks and not any(k in args for k in SCHEDULE_MARK_ARGS)


def fit_schedule_marks(model: Forecaster | type[Forecaster], args: Mapping[str, Any],
                       total_iterations: int) -> dict | None:
    """``args`` with the marks placed for a run of ``total_iterations`` optimiser iterations
    (:func:`schedule_marks_for`), or ``None`` when :func:`takes_schedule_marks` says no."""
    if not takes_schedule_marks(model, args):
        return None
    return {**args, **schedule_marks_for(int(total_iterations))}


def reverse_scheduled_sampling(
    iteration: int,
    start_iteration: int = 25_000,
    end_iteration: int = 50_000,
    exp_scale: float = 5_000.0,
) -> tuple[float, float]:
    """PredRNN-V2's reverse scheduled sampling (RSS).

    Early in training the encoder is often fed its own predictions, which
    forces it to learn long-term dynamics from imperfect inputs; later it gets
    the true frames, as at test time.  The decoder goes the other way, from
    half teacher forcing to none.

    Parameters
    ----------
    iteration
        Training iteration (0-based; the count of optimiser iterations taken).
    start_iteration, end_iteration
        The two marks: both probabilities stay at 0.5 before the first and
        reach their final values at the second (paper: 25,000 and 50,000).
    exp_scale
        Time constant of the encoder's exponential rise (paper: 5,000).

    Returns
    -------
    encoder_probability, decoder_probability
        Chance of feeding the true frame at an encoder step (rises
        ``1 - 0.5 exp(-(i - start) / exp_scale)`` from 0.5 towards 1) and at a
        decoder step (falls linearly from 0.5 to 0).
    """
    _check_marks(start_iteration, end_iteration)
    if iteration < start_iteration:
        return 0.5, 0.5
    if iteration >= end_iteration:
        return 1.0, 0.0
    elapsed = iteration - start_iteration
    encoder = 1.0 - 0.5 * math.exp(-elapsed / exp_scale)
    decoder = 0.5 - 0.5 * elapsed / (end_iteration - start_iteration)
    return encoder, decoder


def scheduled_sampling(iteration: int, stop_iteration: int = 50_000) -> tuple[float, float]:
    """Plain scheduled sampling (Bengio et al. 2015) as used by the original PredRNN.

    The encoder always sees the true frames; the decoder's chance of seeing
    them falls linearly from 1 at iteration 0 to 0 at ``stop_iteration``
    (the reference code subtracts ``2e-5`` per iteration, i.e. 50,000 iterations).

    Returns
    -------
    encoder_probability, decoder_probability
    """
    if stop_iteration < 1:
        raise ConfigError(f"stop_iteration must be >= 1, got {stop_iteration}")
    return 1.0, max(0.0, 1.0 - iteration / stop_iteration)


def teacher_forcing_probabilities(
    iteration: int,
    *,
    reverse: bool,
    start_iteration: int = 25_000,
    end_iteration: int = 50_000,
    exp_scale: float = 5_000.0,
) -> tuple[float, float]:
    """Encoder and decoder teacher-forcing probabilities for either schedule.

    ``reverse=True`` is :func:`reverse_scheduled_sampling`; ``reverse=False``
    is :func:`scheduled_sampling` with ``end_iteration`` as the stop.
    """
    if reverse:
        return reverse_scheduled_sampling(iteration, start_iteration, end_iteration, exp_scale)
    return scheduled_sampling(iteration, end_iteration)


def draw_teacher_forcing(
    batch_size: int,
    encoder_steps: int,
    decoder_steps: int,
    encoder_probability: float,
    decoder_probability: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw which inputs are true frames: a boolean ``[batch, encoder_steps + decoder_steps]``.

    Each sample and step is an independent Bernoulli draw, with
    ``encoder_probability`` for the first ``encoder_steps`` columns and
    ``decoder_probability`` for the rest.  Probabilities of exactly 0 or 1
    give constant columns without consuming randomness from ``generator``.

    Parameters
    ----------
    generator
        Source of randomness; None uses torch's global generator, so
        ``torch.manual_seed`` makes runs repeatable.
    """
    columns = []
    for steps, probability in ((encoder_steps, encoder_probability), (decoder_steps, decoder_probability)):
        if steps <= 0:
            continue
        if probability >= 1.0:
            columns.append(torch.ones(batch_size, steps, dtype=torch.bool, device=device))
        elif probability <= 0.0:
            columns.append(torch.zeros(batch_size, steps, dtype=torch.bool, device=device))
        else:
            # Draw where the generator lives (a CPU generator cannot fill a GPU
            # tensor), then move the booleans.
            source = generator.device if generator is not None else device
            draw = torch.rand(batch_size, steps, generator=generator, device=source)
            columns.append((draw < probability).to(device))
    if not columns:
        return torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
    return torch.cat(columns, dim=1)


def _check_marks(start_iteration: int, end_iteration: int) -> None:
    if not 0 <= start_iteration < end_iteration:
        raise ConfigError(
            "scheduled sampling needs 0 <= start_iteration < end_iteration, got "
            f"start_iteration={start_iteration}, end_iteration={end_iteration}"
        )
