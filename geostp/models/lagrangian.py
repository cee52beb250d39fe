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

A learned change can also hurt: at the first leads the change from the base
is mostly noise that no network can forecast, and a network trained on a few
hundred windows adds some anyway.  ``lead_gate`` (one factor in [0, 1] per
lead) scales the change lead by lead; :meth:`Lagrangian.calibrate_lead_gate`
sets it from held-out windows as the least-squares factor of each lead, so
the training pipeline moves the forecast away from the base only as far as
validation says that helps (a factor of 0 leaves the base as it is).

The loss is the inner model's own objective (TAU: MSE + differential
divergence; PredRNN: MSE + decoupling, scheduled sampling) with every pixel's
error weighted by ``min(1 + R, cap)``, ``R`` the target rain rate in mm/h
(NowcastNet, DGMR), when ``loss="weighted"``.
"""

from __future__ import annotations

from types import MappingProxyType
from collections.abc import Iterable, Iterator, Sequence
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
    lead_gate
        One factor in [0, 1] per lead that scales the learned change (``None``: 1 everywhere; leads past the
        last factor use the last); set by :meth:`calibrate_lead_gate`.
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
        lead_gate: Sequence[float] | None = None,
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
        self.lead_gate = _checked_gate(lead_gate)
        layer = inner.output_layer()
        with torch.no_grad():  # the untrained wrapper is "no change": extrapolation
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
        inner_config = {k: v for k, v in inner.config.items() if k not in ("input_steps", "output_steps", "channels")}
        self._remember_config(model=inner.name, model_config=inner_config, input_steps=self.input_steps,
                              output_steps=self.output_steps, channels=self.channels, loss=self.loss_kind,
                              weight_cap=self.weight_cap, decoder=self.decoder, base=self.base,
                              base_levels=self.base_levels, lead_gate=self.lead_gate)

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
        out = base + self._gated(self.inner(inputs - anchor, steps))
        return self.clamp_output(out)

    def _gated(self, change: torch.Tensor) -> torch.Tensor:
        if self.lead_gate is None:
            return change
        steps = change.shape[1]
        factors = [self.lead_gate[min(i, len(self.lead_gate) - 1)] for i in range(steps)]
        return change * torch.tensor(factors, dtype=change.dtype, device=change.device).view(1, steps, 1, 1, 1)

    def set_lead_gate(self, gate: Sequence[float] | None) -> None:
        """Adopt ``gate`` (see the class docstring); it is part of :attr:`config`, so checkpoints keep it."""
        self.lead_gate = _checked_gate(gate)
        self._config["lead_gate"] = self.lead_gate

    @torch.no_grad()
    def calibrate_lead_gate(self, batches: Iterable[dict[str, torch.Tensor]], *, max_batches: int | None = None,
                            device: torch.device | str = "cpu", objective: str = "model",
                            bounds: tuple[Sequence[float], Sequence[float]] | None = None) -> dict[str, Any]:
        """Set :attr:`lead_gate` from held-out ``batches`` (``{"x", "y", "mask_y"}``, as the training corpus yields).

        ``objective="model"``: for each lead ``k`` the factor is the weighted least-squares ``a_k`` of
        ``y - base ~ a_k * change`` (the loss's rain weight where the loss is weighted), clipped to [0, 1]: 0 where
        the learned change does not help on these windows, 1 where all of it does.  Returns the factors and, per
        lead, the weighted mean squared error of the base, of the ungated model and of the gated one on the same
        windows (model units).

        ``objective="rain_mse"``: the factor of each lead is the one of 0, 0.05, ..., 1 whose forecast has the
        least squared error in rain rate (mm/h, through :attr:`decoder`), the verification's own MSE: in model
        (log) units a change that doubles intense rain costs little, in mm/h it dominates.  The errors reported
        are then mean squared errors in (mm/h)^2; a lead whose windows score every factor alike (a dry history)
        keeps its factor.  ``bounds`` (model units, as :meth:`predict` takes them) clamps
        each trial forecast as the forecast itself will be.
        """
        if objective == "rain_mse":
            return self._calibrate_rain_mse(batches, max_batches=max_batches, device=device, bounds=bounds)
        if objective != "model":
            raise ConfigError(f"objective must be 'model' or 'rain_mse', got {objective!r}")
        sums: list[torch.Tensor] | None = None  # per lead: sum w*c*r, sum w*c*c, sum w*r*r, sum w
        n = 0
        for y, base, change, mask in self._held_out(batches, max_batches, device):
            w = self.rain_weight(y) if self.loss_kind == "weighted" else torch.ones_like(y)
            if mask is not None:
                w = w * mask
            resid = y - base
            dims = (0, 2, 3, 4)
            terms = [(w * change * resid).sum(dims), (w * change * change).sum(dims), (w * resid * resid).sum(dims),
                     w.sum(dims)]
            sums = terms if sums is None else [a + b for a, b in zip(sums, terms)]
            n += 1
        if sums is None:
            raise ConfigError("calibrate_lead_gate: the held-out windows produced no batch")
        num, den, base_err, total_w = sums
        gate = torch.clamp(num / den.clamp_min(1e-12), 0.0, 1.0)

        def err(a: torch.Tensor) -> list[float]:  # weighted error of base + a * change
            return [round(float(v), 6) for v in (base_err - 2 * a * num + a * a * den) / total_w.clamp_min(1e-12)]

        self.set_lead_gate([round(float(g), 4) for g in gate])
        return {"lead_gate": self.lead_gate, "batches": n, "base_error": err(torch.zeros_like(gate)),
                "ungated_error": err(torch.ones_like(gate)), "gated_error": err(gate)}

    def _held_out(self, batches: Iterable[dict[str, torch.Tensor]], max_batches: int | None,
                  device: torch.device | str) -> Iterator[tuple[torch.Tensor, ...]]:
        """``(y, base, change, mask or None)`` of up to ``max_batches`` batches, the model in eval mode meanwhile."""
        was_training = self.training
        self.eval()
        try:
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = batch["x"].to(device), batch["y"].to(device)
                inputs, base, steps = self.split_input(x, y.shape[1])
                change = self.inner(inputs - inputs[:, -1:], steps)
                mask = batch["mask_y"].to(device).to(y.dtype) if batch.get("mask_y") is not None else None
                yield y, base, change, mask
        finally:
            self.train(was_training)

    #: The factors :meth:`calibrate_lead_gate` tries with ``objective="rain_mse"``.
    GATE_GRID = tuple(i / 20 for i in range(21))

    def _calibrate_rain_mse(self, batches: Iterable[dict[str, torch.Tensor]], *, max_batches: int | None,
                            device: torch.device | str,
                            bounds: tuple[Sequence[float], Sequence[float]] | None) -> dict[str, Any]:
        if self.decoder is None:
            raise ConfigError("calibrating the lead gate on rain-rate error needs the model's decoder (how model "
                              "units become mm/h); this model has none")
        grid = torch.tensor(self.GATE_GRID)
        low, high = (float(bounds[0][0]), float(bounds[1][0])) if bounds is not None else (-float("inf"), float("inf"))
        sse: torch.Tensor | None = None  # [factor, lead]
        count: torch.Tensor | None = None
        n = 0
        for y, base, change, mask in self._held_out(batches, max_batches, device):
            mask = mask if mask is not None else torch.ones_like(y)
            observed = self.rain_rate(y)
            dims = (0, 2, 3, 4)
            errors = torch.stack([(((self.rain_rate(torch.clamp(base + a * change, low, high)) - observed) ** 2) * mask)
                                  .sum(dims).cpu() for a in grid.tolist()])
            sse = errors if sse is None else sse + errors
            count = mask.sum(dims).cpu() if count is None else count + mask.sum(dims).cpu()
            n += 1
        if sse is None or count is None:
            raise ConfigError("calibrate_lead_gate: the windows produced no batch")
        mse = sse / count.clamp_min(1.0)
        best = mse.argmin(0)
        gate = [round(float(grid[j]), 4) for j in best]
        # A lead whose windows cannot tell the factors apart (no rain there, or no valid target) is no evidence:
        # it keeps the factor it had.
        before = self.lead_gate or [1.0]
        flat = (mse.max(0).values - mse.min(0).values) <= 1e-12 * mse.max(0).values.clamp_min(1e-30)
        gate = [before[min(k, len(before) - 1)] if bool(flat[k]) else g for k, g in enumerate(gate)]
        self.set_lead_gate(gate)  # a kept factor's error is the argmin's: every factor scored alike there
        leads = torch.arange(mse.shape[1])
        return {"lead_gate": self.lead_gate, "batches": n, "objective": "rain_mse",
                "base_error": [round(float(v), 6) for v in mse[0]],
                "ungated_error": [round(float(v), 6) for v in mse[-1]],
                "gated_error": [round(float(v), 6) for v in mse[best, leads]]}

    def rain_rate(self, y: torch.Tensor) -> torch.Tensor:
        """The rain rate (mm/h) of model-unit values ``y``, through :attr:`decoder`."""
        d = self.decoder or {}
        z = y * float(d.get("std", 1.0)) + float(d.get("mean", 0.0))
        kind = d.get("kind", "none")
        if kind == "log10":
            return torch.clamp(torch.pow(10.0, z) - float(d.get("offset", 0.01)), min=0.0)
        if kind == "db":
            return torch.where(z >= 10.0 * torch.log10(torch.tensor(float(d.get("threshold", 0.1)))),
                               torch.pow(10.0, z / 10.0), torch.zeros_like(z))
        return torch.clamp(z, min=0.0)

    def rain_weight(self, y: torch.Tensor) -> torch.Tensor:
        """``min(1 + R, cap)`` with ``R`` the rain rate (mm/h) of the model-unit target ``y``."""
        return torch.clamp(1.0 + self.rain_rate(y), max=self.weight_cap).detach()

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


def _checked_gate(gate: Sequence[float] | None) -> list[float] | None:
    if gate is None:
        return None
    try:
        factors = [float(g) for g in gate]
    except (TypeError, ValueError):
        raise ConfigError(f"lead_gate must be a list of numbers in [0, 1], got {gate!r}") from None
    if not factors or not all(0.0 <= f <= 1.0 for f in factors):
        raise ConfigError(f"lead_gate must be a non-empty list of numbers in [0, 1], got {factors}")
    return factors
