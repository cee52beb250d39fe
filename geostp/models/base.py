"""The contract every forecaster follows, the model registry, and the shared autoregressive rollout.

A forecaster maps ``x`` of shape ``[B, T_in, C, H, W]`` (normalised, with NaN
already replaced by a fill value) to ``[B, steps, C, H, W]``.  Learned models
and baselines share this interface so the trainer, the forecast API and the
benchmarks never need to know which one they hold.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from geostp.errors import ConfigError
from geostp.registry import Registry

__all__ = [
    "Forecaster",
    "MODEL_REGISTRY",
    "register_model",
    "build_model",
    "autoregressive_rollout",
    "check_int",
    "check_float",
    "check_bool",
    "native_bf16",
    "bf16_autocast",
]

MODEL_REGISTRY: Registry[type[Forecaster]] = Registry("model")

F = TypeVar("F", bound="type[Forecaster]")


def register_model(name: str | None = None, *, replace: bool = False) -> Callable[[F], F]:
    """Class decorator that registers a :class:`Forecaster` subclass under ``name``.

    Parameters
    ----------
    name
        Registry name; defaults to the class's ``name`` attribute.  The class's
        ``name`` is set to the registered name so checkpoints can record it.
    replace
        Allow replacing an existing entry of the same name.
    """

    def decorate(cls: F) -> F:
        if not (isinstance(cls, type) and issubclass(cls, Forecaster)):
            raise ConfigError(f"only Forecaster subclasses can be registered as models, got {cls!r}")
        key = name or cls.name
        if not key:
            raise ConfigError(f"model class {cls.__name__} needs a name to be registered")
        cls.name = key.strip().lower()
        MODEL_REGISTRY.register(cls.name, cls, replace=replace)
        return cls

    return decorate


def build_model(name: str, **kwargs: Any) -> Forecaster:
    """Construct the registered model ``name`` from typed keyword arguments.

    Unknown keyword arguments raise :class:`~geostp.errors.ConfigError` naming
    them and listing the ones the model accepts.
    """
    cls = MODEL_REGISTRY.get(name)
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model {cls.name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted)}"
        )
    return cls(**kwargs)


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise ConfigError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
) -> float:
    """Return ``value`` as a float in range, or raise ConfigError naming the argument.

    ``minimum``/``maximum`` are inclusive bounds, ``below`` an exclusive upper one.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if value != value:
        raise ConfigError(f"{name} must be a number, got NaN")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    if below is not None and value >= below:
        raise ConfigError(f"{name} must be < {below}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, or raise ConfigError naming the argument."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` does bf16 matrix arithmetic natively (so bf16 autocast pays).

    True for CUDA GPUs that support bf16 and for CPUs with AMX tiles (Intel
    Sapphire Rapids and later), where oneDNN runs bf16 convolutions and matrix
    products on the AMX units several times faster than fp32.  The environment
    variable ``GEOSTP_BF16=0`` turns it off everywhere.
    """
    if os.environ.get("GEOSTP_BF16", "").strip() == "0":
        return False
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        try:
            return bool(torch.cpu._is_amx_tile_supported())
        except AttributeError:  # an older or non-x86 build
            return False
    return False


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` and the device does bf16 natively, else a no-op."""
    dev = torch.device(device)
    if not (enabled and native_bf16(dev)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


class Forecaster(nn.Module):
    """Base class of every geostp model, learned or not.

    Subclasses call ``super().__init__(...)`` with the shape attributes, then
    :meth:`_remember_config` with their constructor arguments, and implement
    :meth:`forward` and :meth:`training_loss`.

    Parameters
    ----------
    input_steps
        ``T_in``, the number of past frames the model reads.
    output_steps
        ``T_out``, the number of frames it is trained to produce (and produces
        when ``steps`` is not given).
    channels
        ``C``, the number of variables per frame.
    spatial_multiple
        ``H`` and ``W`` must be multiples of this.

    Attributes
    ----------
    name : str
        Registry name (class attribute).
    trainable : bool
        False for baselines: they have no parameters to optimise.
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True

    def __init__(
        self, *, input_steps: int, output_steps: int, channels: int, spatial_multiple: int = 1
    ) -> None:
        super().__init__()
        self.input_steps = check_int("input_steps", input_steps, minimum=1)
        self.output_steps = check_int("output_steps", output_steps, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.spatial_multiple = check_int("spatial_multiple", spatial_multiple, minimum=1)
        self._config: dict[str, Any] = {}
        # Per-channel (low, high) bounds on produced frames, set only for the duration of ``predict``.
        self._bounds: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ config
    def _remember_config(self, **kwargs: Any) -> None:
        """Record the constructor arguments that rebuild this model (must be JSON-serialisable)."""
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        try:
            json.dumps(config)
        except TypeError as err:  # a programming error in a subclass, not a user error
            raise ConfigError(f"model {self.name!r} config is not JSON-serialisable: {err}") from None
        self._config = config

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments; ``geostp.models.get(self.name, **config)`` rebuilds the model."""
        return copy.deepcopy(self._config)

    # ------------------------------------------------------------------ checks
    def check_input(self, x: torch.Tensor, steps: int | None = None) -> int:
        """Validate ``x`` and ``steps`` against the model; return the number of steps to produce."""
        steps = self.output_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if not isinstance(x, torch.Tensor) or x.ndim != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"{self.name} expects x of shape [B, T_in, C, H, W], got {shape}")
        _, steps_in, channels, height, width = x.shape
        if steps_in != self.input_steps:
            raise ConfigError(
                f"{self.name} was built for input_steps={self.input_steps} frames, "
                f"got x with {steps_in} (axis 1 of {tuple(x.shape)})"
            )
        if channels != self.channels:
            raise ConfigError(
                f"{self.name} was built for channels={self.channels}, "
                f"got x with {channels} (axis 2 of {tuple(x.shape)})"
            )
        m = self.spatial_multiple
        if height % m or width % m:
            raise ConfigError(
                f"{self.name} needs H and W to be multiples of {m}, got H={height}, W={width}; "
                "crop or pad the patches"
            )
        if not x.is_floating_point():
            raise ConfigError(f"{self.name} expects a floating-point x, got {x.dtype}")
        return int(steps)

    def check_target(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Validate a training pair: ``y`` is ``[B, output_steps, C, H, W]`` and ``mask`` matches it."""
        self.check_input(x)
        expected = (x.shape[0], self.output_steps, *x.shape[2:])
        if tuple(y.shape) != expected:
            raise ConfigError(
                f"{self.name} was built for output_steps={self.output_steps}; y must have shape "
                f"{expected}, got {tuple(y.shape)}"
            )
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != expected):
            raise ConfigError(
                f"mask must be a bool tensor of shape {expected}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )

    # ------------------------------------------------------------------ API
    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Forecast ``steps`` (default ``output_steps``) frames from ``x``; no teacher forcing."""
        raise NotImplementedError

    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        iteration: int = 0,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to back-propagate and a dict of its float components.

        Parameters
        ----------
        x
            ``[B, T_in, C, H, W]`` input frames.
        y
            ``[B, T_out, C, H, W]`` target frames.
        iteration
            Count of optimiser steps taken so far; schedules depend on it.
        mask
            Optional bool tensor like ``y``; True marks valid pixels.
        """
        raise NotImplementedError

    @torch.inference_mode()
    def predict(
        self,
        x: torch.Tensor,
        steps: int | None = None,
        *,
        bf16: bool | None = None,
        bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> torch.Tensor:
        """Forecast in eval mode without autograd bookkeeping (faster than ``forward``).

        ``bf16=None`` (default) runs under bf16 autocast where the device does
        bf16 natively (:func:`native_bf16`: recent GPUs, CPUs with AMX) and in
        fp32 elsewhere; the output has ``x``'s dtype either way.  The module's
        training flag is restored afterwards.

        ``bounds=(low, high)``, one value per channel in model units, clamps
        every produced frame *before* it is fed back (autoregressive blocks,
        recurrent steps) as well as in the output.  A model far outside the
        range of its training data is extrapolating; after a decoding such as
        ``10**z`` one wild pixel becomes an absurd rain rate, and fed back it
        compounds.  :class:`~geostp.forecast.FittedForecaster` passes the range
        of the training data.
        """
        was_training = self.training
        self.eval()
        if bounds is not None:
            low, high = (torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1), device=x.device)
                         for b in bounds)
            if low.numel() != self.channels or high.numel() != self.channels or bool((low > high).any()):
                raise ConfigError(f"bounds must be (low, high) with {self.channels} value(s) each and low <= high; "
                                  f"got {bounds!r}")
            self._bounds = (low, high)
        try:
            with bf16_autocast(x.device, enabled=bf16 is not False):
                out = self(x, steps)
            return out.to(x.dtype)
        finally:
            self.train(was_training)
            self._bounds = None

    def clamp_output(self, y: torch.Tensor, *, channel_axis: int = -3, repeat: int = 1) -> torch.Tensor:
        """``y`` clamped to the bounds ``predict`` was given (unchanged without bounds).

        ``repeat``: each channel's bound covers that many consecutive channels of
        ``y`` (PredRNN's folded patches put ``p²`` channels per input channel).
        """
        if self._bounds is None:
            return y
        low, high = self._bounds
        if repeat > 1:
            low, high = low.repeat_interleave(repeat), high.repeat_interleave(repeat)
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        return torch.clamp(y, low.view(shape).to(y.dtype), high.view(shape).to(y.dtype))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())


def autoregressive_rollout(
    predict_block: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """Produce ``steps`` frames from a model that predicts a fixed block at a time.

    ``predict_block`` maps a window ``[B, T_in, C, H, W]`` to the next ``k``
    frames; longer forecasts feed the predictions back as the next window
    (the last ``T_in`` frames of inputs plus predictions), as OpenSTL does
    for SimVP and TAU.  Gradients flow through the feedback when autograd is on.
    """
    window_length = x.shape[1]
    blocks: list[torch.Tensor] = []
    produced = 0
    window = x
    while produced < steps:
        block = predict_block(window)
        blocks.append(block)
        produced += block.shape[1]
        if produced < steps:
            window = torch.cat([window, block], dim=1)[:, -window_length:]
    out = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
    return out[:, :steps]
