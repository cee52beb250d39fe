"""The contract every forecaster follows, its typed configuration, the model registry and the shared rollout.

A forecaster maps ``x`` of shape ``[B, T_in, C, H, W]`` (normalised, with NaN
already replaced by a fill value) to ``[B, steps, C, H, W]``.  Learned models
and baselines share this interface so the trainer, the forecast API and the
benchmarks never need to know which one they hold: what differs between
models is said by class attributes (``trainable``, ``recurrent``,
``takes_schedule_marks``, ``needs_motion``), never guessed from names or
attributes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import numbers
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from geostp.errors import ConfigError
from geostp.registry import Registry

__all__ = [
    "Forecaster",
    "ModelConfig",
    "MODEL_REGISTRY",
    "ENTRY_POINT_GROUP",
    "register_model",
    "build_model",
    "autoregressive_rollout",
    "check_int",
    "check_float",
    "check_bool",
    "native_bf16",
    "bf16_autocast",
]

#: The entry-point group in which installed packages declare models (``[project.entry-points."geostp.models"]``).
ENTRY_POINT_GROUP = "geostp.models"


def _adopt_model(name: str, obj: Any) -> type[Forecaster]:
    """A class an entry point names becomes the model ``name`` (as the decorator would register it)."""
    if not (isinstance(obj, type) and issubclass(obj, Forecaster)):
        raise ConfigError(f"it is {obj!r}; expected a subclass of geostp.models.Forecaster")
    obj.name = name
    return obj


MODEL_REGISTRY: Registry[type[Forecaster]] = Registry("model", entry_point_group=ENTRY_POINT_GROUP,
                                                      adopt=_adopt_model)

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
    cls.check_arguments(kwargs)
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


C = TypeVar("C", bound="ModelConfig")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A model's constructor arguments as one frozen, validated dataclass (subclassed per model).

    ``__post_init__`` checks every field (a :class:`~geostp.errors.ConfigError`
    names the argument and what it must be) and normalises its type, so that
    :meth:`to_dict` is exactly the JSON a checkpoint stores as the model's
    config (``Forecaster.config``) and ``geostp.models.get(name, **config)``
    reads back.  A model built from a config class takes the same names as
    keyword arguments: its constructor's signature is derived from the fields.

    Parameters
    ----------
    input_steps
        ``T_in``, the number of past frames the model reads.
    output_steps
        ``T_out``, the number of frames it is trained to produce (and produces
        by default).
    channels
        ``C``, the number of variables per frame.
    """

    input_steps: int = 10
    output_steps: int = 10
    channels: int = 1

    def __post_init__(self) -> None:
        self._set("input_steps", check_int("input_steps", self.input_steps, minimum=1))
        self._set("output_steps", check_int("output_steps", self.output_steps, minimum=1))
        self._set("channels", check_int("channels", self.channels, minimum=1))

    def _set(self, name: str, value: Any) -> None:
        """Store a checked value on the frozen instance (only ever called from ``__post_init__``)."""
        object.__setattr__(self, name, value)

    @property
    def spatial_multiple(self) -> int:
        """``H`` and ``W`` must be multiples of this."""
        return 1

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in declaration order: the model's keyword arguments."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def default(cls, name: str) -> Any:
        """The declared default of field ``name``."""
        return {f.name: f.default for f in dataclasses.fields(cls)}[name]

    @classmethod
    def from_arguments(cls: type[C], config: C | None = None, /, **overrides: Any) -> C:
        """``config`` (default: all defaults) with ``overrides`` applied, validated.

        Raises ConfigError for an unknown name (listing the accepted ones) or a
        ``config`` of another model.
        """
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{cls.__name__} got unknown argument(s) {', '.join(map(repr, unknown))}; "
                              f"it accepts: {', '.join(cls.names())}")
        if config is None:
            return cls(**overrides)
        if not isinstance(config, cls):
            raise ConfigError(f"expected a {cls.__name__}, got {type(config).__name__}")
        return dataclasses.replace(config, **overrides) if overrides else config

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied and validated again."""
        return type(self).from_arguments(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able config a checkpoint stores (field name -> value)."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def signature(cls) -> inspect.Signature:
        """``(self, config=None, /, *, <field>: <type> = <default>, ...)``: the constructor a model derives."""
        hints = typing.get_type_hints(cls)
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
                  inspect.Parameter("config", inspect.Parameter.POSITIONAL_ONLY, default=None,
                                    annotation=cls | None)]
        params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                     annotation=hints.get(f.name, inspect.Parameter.empty))
                   for f in dataclasses.fields(cls)]
        return inspect.Signature(params)


def config_field(name: str) -> property:
    """A read-only model attribute that reads field ``name`` of the model's typed config."""

    def read(self: Forecaster) -> Any:
        return getattr(self.typed_config, name)

    return property(read, doc=f"``{name}`` of the model's config (read-only; see :attr:`Forecaster.typed_config`).")


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

    A model with a typed configuration (TAU, PredRNN) sets ``config_class`` to
    its :class:`ModelConfig` subclass, takes ``(config=None, /, **overrides)``
    in its constructor (the keyword signature is derived from the config's
    fields), builds the config with ``config_class.from_arguments``, calls
    ``super().__init__(...)`` with the shape attributes and then
    :meth:`_set_typed_config`.  Other models (the baselines, wrappers) call
    ``super().__init__(...)`` and :meth:`_remember_config` with their
    constructor arguments.  Both implement :meth:`forward` and
    :meth:`training_loss`.

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
    recurrent : bool
        True for models that step through time with a hidden state (PredRNN):
        they produce any number of frames one at a time.
    takes_schedule_marks : bool
        True for models with a scheduled-sampling schedule whose marks
        (``sampling_start_iteration``, ``sampling_end_iteration``,
        ``sampling_exp_scale``) a training run may place
        (:func:`geostp.models.schedules.fit_schedule_marks`).
    needs_motion : bool
        True for models that work in the frame of a motion field they estimate.
    config_class : type[ModelConfig] or None
        The model's typed configuration, None for models configured by a plain dict.
    quick_settings : Mapping
        Constructor arguments of a small configuration (see :meth:`quick_config`).
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True
    recurrent: ClassVar[bool] = False
    takes_schedule_marks: ClassVar[bool] = False
    needs_motion: ClassVar[bool] = False
    config_class: ClassVar[type[ModelConfig] | None] = None
    quick_settings: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config_class = cls.__dict__.get("config_class")
        if config_class is not None:
            # The config's fields are the constructor's keyword arguments: inspect.signature and
            # typing.get_type_hints (the registry, recipe validation, help(), the docs) see them with their
            # types and defaults.
            if "__init__" not in cls.__dict__:
                raise TypeError(f"{cls.__name__} declares config_class and must define its own __init__")
            signature = config_class.signature()
            cls.__init__.__signature__ = signature  # type: ignore[attr-defined]
            cls.__init__.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()
                                            if p.annotation is not inspect.Parameter.empty} | {"return": None}

    def __init__(
        self, *, input_steps: int, output_steps: int, channels: int, spatial_multiple: int = 1
    ) -> None:
        super().__init__()
        self.input_steps = check_int("input_steps", input_steps, minimum=1)
        self.output_steps = check_int("output_steps", output_steps, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.spatial_multiple = check_int("spatial_multiple", spatial_multiple, minimum=1)
        self._config: dict[str, Any] = {}
        self._typed_config: ModelConfig | None = None
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

    def _set_typed_config(self, config: ModelConfig) -> None:
        """Adopt ``config`` as this model's configuration; :attr:`config` becomes its JSON form."""
        self._typed_config = config
        self._config = config.to_dict()

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments; ``geostp.models.get(self.name, **config)`` rebuilds the model.

        This dict is what checkpoints store (``model_config``).
        """
        return copy.deepcopy(self._config)

    @property
    def typed_config(self) -> ModelConfig | None:
        """The frozen :class:`ModelConfig` the model was built from; None for a model configured by a dict."""
        return self._typed_config

    @classmethod
    def argument_names(cls) -> list[str]:
        """The keyword arguments the constructor accepts."""
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    @classmethod
    def check_arguments(cls, kwargs: Mapping[str, Any]) -> None:
        """Raise ConfigError naming any of ``kwargs`` the constructor does not accept (and listing those it does)."""
        accepted = cls.argument_names()
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(
                f"model {cls.name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"it accepts: {', '.join(accepted)}"
            )

    @classmethod
    def quick_config(cls, **overrides: Any) -> dict[str, Any]:
        """Constructor arguments of a small configuration that learns something within minutes on a CPU.

        The class's ``quick_settings`` (only what differs from the defaults,
        which are the papers' configurations) updated with ``overrides``;
        ``geostp.models.get(name, **cls.quick_config(input_steps=6))`` builds
        the model.  Empty for the baselines.  Unknown names raise ConfigError.
        """
        args = {**cls.quick_settings, **overrides}
        cls.check_arguments(args)
        return args

    def output_layer(self) -> nn.Conv2d:
        """The final convolution, the one that produces the frames (a wrapper may zero-initialise it).

        Raises ConfigError for a model without learned parameters.
        """
        raise ConfigError(f"model {self.name!r} has no learned output layer")

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
            Count of optimiser iterations taken so far; schedules depend on it.
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
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())


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
