"""Advection-aware forecasting: any learned model predicts the change of rain in the frame that moves with it.

The literature's recipe for beating extrapolation with little data (L-CNN,
Ritvanen et al. 2023; NowcastNet's evolution operator, Zhang et al. 2023):
keep the motion outside the network.  :class:`Lagrangian` wraps a registered
learned model (TAU, PredRNN, ...).  It sees the input frames already carried
into the frame of the newest observation (:func:`geostp.advection.to_lagrangian`)
and forecasts, in that frame, each lead's field as

    newest frame + inner model(inputs - newest frame)

The inner model's output layer starts at zero, so an untrained wrapper
forecasts "no change in the moving frame", which, advected forward, *is* the
extrapolation nowcast; training moves it away only where the loss says so.

``base="sprog"`` learns the change from a stronger base: S-PROG's forecast in
the same moving frame (:func:`geostp.advection.lagrangian_sprog`; scale by
scale AR(2) smoothing with probability matching), so that an untrained model
is the S-PROG nowcast and the network learns what S-PROG cannot do (growth,
decay, the shapes it smooths away).  Each lead is then

    S-PROG base + inner model(inputs - newest frame)

and the base frames travel with the inputs: ``x`` holds the ``input_steps``
carried inputs followed by one base frame per lead (the training corpus and
the forecaster put them there).
The Eulerian <-> Lagrangian transforms (motion, warps) happen outside the
network: in the training corpus (:mod:`geostp.stream.lagrangian`) and in
:meth:`geostp.forecast.FittedForecaster.predict`.

The loss is the inner model's own objective (TAU: MSE + differential
divergence; PredRNN: MSE + decoupling, scheduled sampling) with every pixel's
error weighted by ``min(1 + R, cap)``, ``R`` the target rain rate in mm/h
(NowcastNet, DGMR), when ``loss="weighted"``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch

from geostp.errors import ConfigError
from geostp.models.base import Forecaster, build_model, check_float, check_int, register_model

__all__ = ["Lagrangian"]

_LOSSES = ("weighted", "mse")
#: What the learned change is added to: the newest frame (extrapolation) or S-PROG's forecast.
BASES = ("extrapolation", "sprog")


@register_model("lagrangian")
class Lagrangian(Forecaster):
    """A learned model made advection-aware (see the module docstring).

    Parameters
    ----------
    model
        The registered learned model that predicts the change (``"tau"``, ``"predrnn_v2"``, ...).
    model_config
        Its constructor arguments (shape arguments are the wrapper's).
    input_steps, output_steps, channels
        As for every model.
    loss
        ``"weighted"`` (rain-weighted, needs ``decoder``) or ``"mse"``.
    weight_cap
        The cap of the rain weight ``min(1 + R, cap)``.
    decoder
        How model units become mm/h for the weight: ``{"kind": "log10", "offset": ..., "mean": ..., "std": ...}``
        (set by the training pipeline from the normaliser).
    base
        ``"extrapolation"`` (the newest frame) or ``"sprog"`` (S-PROG in the moving frame, passed in ``x``).
    base_levels
        S-PROG's cascade levels for ``base="sprog"``.
    """

    needs_motion = True
    # Small settings for a CPU fit: a quick TAU learns the change (plain MSE: a quick config has no decoder).
    quick_settings = MappingProxyType({"model_config": {"spatial_hidden_channels": 16, "temporal_hidden_channels": 64,
                                                        "spatial_blocks": 2, "temporal_blocks": 2}, "loss": "mse"})

    def __init__(
        self,
        *,
        model: str = "tau",
        model_config: dict[str, Any] | None = None,
        input_steps: int = 4,
        output_steps: int = 6,
        channels: int = 1,
        loss: str = "weighted",
        weight_cap: float = 24.0,
        decoder: dict[str, Any] | None = None,
        base: str = "extrapolation",
        base_levels: int = 8,
    ) -> None:
        inner_args = dict(model_config or {})
        for k in ("input_steps", "output_steps", "channels"):
            inner_args.pop(k, None)
        inner = build_model(model, input_steps=input_steps, output_steps=output_steps, channels=channels,
                            **inner_args)
        if not inner.trainable:
            raise ConfigError(f"lagrangian wraps a learned model; {model!r} has nothing to learn")
        if inner.needs_motion:
            raise ConfigError("lagrangian cannot wrap another lagrangian model")
        super().__init__(input_steps=inner.input_steps, output_steps=inner.output_steps,
                         channels=inner.channels, spatial_multiple=inner.spatial_multiple)
        if loss not in _LOSSES:
            raise ConfigError(f"loss must be one of {list(_LOSSES)}, got {loss!r}")
        if loss == "weighted" and decoder is None:
            raise ConfigError("loss='weighted' needs decoder (how model units become mm/h); the training "
                              "pipeline sets it from the normaliser")
        if base not in BASES:
            raise ConfigError(f"base must be one of {list(BASES)}, got {base!r}")
        self.inner = inner
        self.base = base
        self.base_levels = check_int("base_levels", base_levels, minimum=1)
        self.loss_kind = loss
        self.weight_cap = check_float("weight_cap", weight_cap, minimum=1.0)
        self.decoder = dict(decoder) if decoder is not None else None
        layer = inner.output_layer()
        with torch.no_grad():  # the untrained wrapper is "no change": extrapolation
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
        inner_config = {k: v for k, v in inner.config.items() if k not in ("input_steps", "output_steps", "channels")}
        self._remember_config(model=inner.name, model_config=inner_config, input_steps=self.input_steps,
                              output_steps=self.output_steps, channels=self.channels, loss=self.loss_kind,
                              weight_cap=self.weight_cap, decoder=self.decoder, base=self.base,
                              base_levels=self.base_levels)

    def output_layer(self) -> torch.nn.Module:
        return self.inner.output_layer()

    def base_steps(self, steps: int) -> int:
        """How many base frames ``x`` carries after the inputs for a forecast of ``steps`` leads."""
        return steps if self.base == "sprog" else 0

    def split_input(self, x: torch.Tensor, steps: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``x`` as (carried inputs, base ``[B, steps, C, H, W]``, steps); checks both."""
        n_in = self.input_steps
        if self.base == "sprog":
            if steps is None:
                steps = x.shape[1] - n_in if x.ndim == 5 else None
            steps = self.check_input(x[:, :n_in] if x.ndim == 5 else x, steps)
            if x.shape[1] != n_in + steps:
                raise ConfigError(f"{self.name} with base='sprog' expects x with {n_in} inputs followed by {steps} "
                                  f"S-PROG base frames, got {x.shape[1]} frames (axis 1 of {tuple(x.shape)})")
            return x[:, :n_in], x[:, n_in:], steps
        steps = self.check_input(x, steps)
        return x, x[:, -1:].expand(-1, steps, -1, -1, -1), steps

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        inputs, base, steps = self.split_input(x, steps)
        anchor = inputs[:, -1:]
        out = base + self.inner(inputs - anchor, steps)
        return self.clamp_output(out)

    def rain_weight(self, y: torch.Tensor) -> torch.Tensor:
        """``min(1 + R, cap)`` with ``R`` the rain rate (mm/h) of the model-unit target ``y``."""
        d = self.decoder or {}
        z = y * float(d.get("std", 1.0)) + float(d.get("mean", 0.0))
        kind = d.get("kind", "none")
        if kind == "log10":
            rain = torch.clamp(torch.pow(10.0, z) - float(d.get("offset", 0.01)), min=0.0)
        elif kind == "db":
            rain = torch.where(z >= 10.0 * torch.log10(torch.tensor(float(d.get("threshold", 0.1)))),
                               torch.pow(10.0, z / 10.0), torch.zeros_like(z))
        else:
            rain = torch.clamp(z, min=0.0)
        return torch.clamp(1.0 + rain, max=self.weight_cap).detach()

    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        iteration: int = 0,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The inner model's objective on the change from the base, rain-weighted."""
        inputs, base, _ = self.split_input(x, y.shape[1] if isinstance(y, torch.Tensor) and y.ndim == 5 else None)
        self.check_target(inputs, y, mask)
        if self.loss_kind == "weighted":
            w = self.rain_weight(y)
            weight = w if weight is None else weight * w
        anchor = inputs[:, -1:]
        return self.inner.training_loss(inputs - anchor, y - base, iteration=iteration, mask=mask, weight=weight)
