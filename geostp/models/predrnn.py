"""PredRNN (Wang et al., NeurIPS 2017) and PredRNN-V2 (Wang et al., TPAMI 2022): stacked spatiotemporal LSTMs.

Each layer ``l`` keeps a temporal memory ``C^l`` that runs along time, and a
single spatiotemporal memory ``M`` zigzags through the stack: up the layers at
step ``t``, then from the top layer at ``t`` to the bottom layer at ``t + 1``.
Frames are folded into ``p x p`` patches first (the patch trick), so the
recurrence runs on a ``p`` times coarser grid.

The two versions share this file and class; V2 differs only by flags:

* memory decoupling: ``β · mean |cos(ΔC, ΔM)|`` over the memory increments,
  after a shared 1x1 adapter, added to the loss;
* reverse scheduled sampling instead of plain scheduled sampling
  (see :mod:`geostp.models.schedules`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from geostp.errors import ConfigError
from geostp.models.base import (
    Forecaster,
    ModelConfig,
    check_bool,
    check_float,
    check_int,
    config_field,
    register_model,
)
from geostp.models.layers import fold_patches, unfold_patches
from geostp.models.objectives import masked_mse, memory_decoupling
from geostp.models.schedules import (
    SCHEDULE_MARK_ARGS,
    draw_teacher_forcing,
    teacher_forcing_probabilities,
)

__all__ = ["PredRNN", "PredRNNv2", "PredRNNConfig", "PredRNNv2Config", "SpatioTemporalLSTMCell"]

# Added to both forget gates so that a fresh network starts by remembering.
FORGET_BIAS = 1.0


class SpatioTemporalLSTMCell(nn.Module):
    """One ST-LSTM cell (bias-free convolutions, forget bias 1).

    The paper's gates sum convolutions of different inputs, e.g.
    ``i = σ(W_xi * x + W_hi * h)``.  A convolution of the concatenation
    ``[x, h]`` is exactly that sum, so ``(i, f, g, o)`` come from one
    convolution of ``[x, h]`` and ``(i', f', g')`` from one of ``[x, M]``:
    same parameters and arithmetic as the separate ``W_x``, ``W_h``, ``W_m``,
    in fewer and larger kernels.

    Parameters
    ----------
    in_channels
        Channels of ``x`` (patch channels for the first layer, the hidden
        width for the others).
    hidden_channels
        Channels of ``h``, ``C`` and ``M``.
    kernel_size
        Odd kernel size of the gate convolutions (5 in the papers).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        padding = kernel_size // 2
        width = in_channels + hidden_channels
        self.temporal_gates = nn.Conv2d(width, 4 * hidden_channels, kernel_size, padding=padding, bias=False)
        self.spatial_gates = nn.Conv2d(width, 3 * hidden_channels, kernel_size, padding=padding, bias=False)
        self.output_gate = nn.Conv2d(
            2 * hidden_channels, hidden_channels, kernel_size, padding=padding, bias=False
        )
        self.memory_mix = nn.Conv2d(2 * hidden_channels, hidden_channels, 1, bias=False)

    def _gates(self, conv: nn.Conv2d, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        if state is None:
            # A zero state contributes nothing: convolve x with its own slice
            # of the kernel instead of concatenating zeros.
            weight = conv.weight[:, : self.in_channels]
            return F.conv2d(x, weight, padding=conv.padding)
        return conv(torch.cat([x, state], dim=1))

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None,
        c: torch.Tensor | None,
        m: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step; ``None`` stands for an all-zero state.

        Returns
        -------
        h, c, m
            New hidden state, temporal memory ``C`` and spatiotemporal memory ``M``.
        delta_c, delta_m
            Memory increments ``i ⊙ g`` and ``i' ⊙ g'`` (for the decoupling loss).
        """
        i, f, g, o = self._gates(self.temporal_gates, x, h).chunk(4, dim=1)
        i2, f2, g2 = self._gates(self.spatial_gates, x, m).chunk(3, dim=1)
        delta_c = torch.sigmoid(i) * torch.tanh(g)
        c_new = delta_c if c is None else torch.sigmoid(f + FORGET_BIAS) * c + delta_c
        delta_m = torch.sigmoid(i2) * torch.tanh(g2)
        m_new = delta_m if m is None else torch.sigmoid(f2 + FORGET_BIAS) * m + delta_m
        memories = torch.cat([c_new, m_new], dim=1)
        h_new = torch.sigmoid(o + self.output_gate(memories)) * torch.tanh(self.memory_mix(memories))
        return h_new, c_new, m_new, delta_c, delta_m


@dataclass(frozen=True, kw_only=True)
class PredRNNConfig(ModelConfig):
    """PredRNN's settings; the defaults are the original PredRNN's Moving-MNIST configuration.

    Parameters
    ----------
    input_steps, output_steps, channels
        ``T_in``, ``T_out`` and ``C``.
    hidden_channels
        Width of every layer (all layers share one width because ``M``
        passes from layer to layer).
    num_layers
        Number of stacked cells.
    kernel_size
        Odd size of the gate convolutions.
    patch_size
        ``p``; H and W must be multiples of it.
    decouple_weight
        ``β`` of the memory decoupling loss; 0 turns it (and its adapter) off.
        None means the config class's default (0 for PredRNN, 0.1 for V2).
    reverse_scheduled_sampling
        True: reverse scheduled sampling (V2); False: plain scheduled sampling
        (V1).  None means the config class's default.
    sampling_start_iteration, sampling_end_iteration
        The schedule's marks (25,000 and 50,000 optimiser iterations).  Plain
        scheduled sampling falls linearly from 1 at iteration 0 to 0 at
        ``sampling_end_iteration`` and ignores the start mark.
    sampling_exp_scale
        Time constant of the reverse schedule's encoder rise (5,000 iterations).
    """

    hidden_channels: int = 128
    num_layers: int = 4
    kernel_size: int = 5
    patch_size: int = 4
    decouple_weight: float | None = 0.0
    reverse_scheduled_sampling: bool | None = False
    sampling_start_iteration: int = 25_000
    sampling_end_iteration: int = 50_000
    sampling_exp_scale: float = 5_000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("patch_size", check_int("patch_size", self.patch_size, minimum=1))
        self._set("hidden_channels", check_int("hidden_channels", self.hidden_channels, minimum=1))
        self._set("num_layers", check_int("num_layers", self.num_layers, minimum=1))
        kernel_size = check_int("kernel_size", self.kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {kernel_size}")
        self._set("kernel_size", kernel_size)
        for name in ("decouple_weight", "reverse_scheduled_sampling"):
            if getattr(self, name) is None:
                self._set(name, self.default(name))
        self._set("decouple_weight", check_float("decouple_weight", self.decouple_weight, minimum=0.0))
        self._set("reverse_scheduled_sampling",
                  check_bool("reverse_scheduled_sampling", self.reverse_scheduled_sampling))
        start = check_int("sampling_start_iteration", self.sampling_start_iteration, minimum=0)
        self._set("sampling_start_iteration", start)
        self._set("sampling_end_iteration",
                  check_int("sampling_end_iteration", self.sampling_end_iteration, minimum=start + 1))
        self._set("sampling_exp_scale", check_float("sampling_exp_scale", self.sampling_exp_scale, minimum=1e-9))

    @property
    def spatial_multiple(self) -> int:
        return self.patch_size


@dataclass(frozen=True, kw_only=True)
class PredRNNv2Config(PredRNNConfig):
    """PredRNN-V2's settings: :class:`PredRNNConfig` with memory decoupling (``β = 0.1``) and reverse
    scheduled sampling by default."""

    decouple_weight: float | None = 0.1
    reverse_scheduled_sampling: bool | None = True


@register_model("predrnn")
class PredRNN(Forecaster):
    """PredRNN: stacked ST-LSTM cells with a zigzag spatiotemporal memory.

    Built from a :class:`PredRNNConfig` or from its fields as keyword
    arguments.  Defaults (``name = "predrnn"``) are the original PredRNN: no
    decoupling loss, plain scheduled sampling.  :class:`PredRNNv2` is the same
    model with the V2 defaults (:class:`PredRNNv2Config`).  Both produce any
    number of output steps; :meth:`quick_config` gives a small configuration.

    Attributes
    ----------
    sampling_generator : torch.Generator or None
        Randomness for teacher-forcing draws; None uses torch's global
        generator.  Not saved in the state dict.
    """

    config_class: ClassVar[type[PredRNNConfig]] = PredRNNConfig
    recurrent = True
    takes_schedule_marks = True
    quick_settings = MappingProxyType({"hidden_channels": 32, "num_layers": 2, "patch_size": 4})
    patch_size = config_field("patch_size")
    hidden_channels = config_field("hidden_channels")
    num_layers = config_field("num_layers")
    decouple_weight = config_field("decouple_weight")
    reverse_scheduled_sampling = config_field("reverse_scheduled_sampling")
    sampling_start_iteration = config_field("sampling_start_iteration")
    sampling_end_iteration = config_field("sampling_end_iteration")
    sampling_exp_scale = config_field("sampling_exp_scale")

    def __init__(self, config: PredRNNConfig | None = None, /, **overrides: Any) -> None:
        cfg = self.config_class.from_arguments(config, **overrides)
        super().__init__(input_steps=cfg.input_steps, output_steps=cfg.output_steps, channels=cfg.channels,
                         spatial_multiple=cfg.spatial_multiple)
        self._set_typed_config(cfg)
        self.sampling_generator: torch.Generator | None = None
        patch_size, kernel_size = cfg.patch_size, cfg.kernel_size

        patch_channels = self.channels * patch_size**2
        self.cells = nn.ModuleList(
            SpatioTemporalLSTMCell(
                patch_channels if layer == 0 else self.hidden_channels, self.hidden_channels, kernel_size
            )
            for layer in range(self.num_layers)
        )
        self.readout = nn.Conv2d(self.hidden_channels, patch_channels, 1, bias=False)
        # The 1x1 adapter shared by all layers maps both increments into one
        # space before they are compared; only V2 needs it.
        self.adapter = (
            nn.Conv2d(self.hidden_channels, self.hidden_channels, 1, bias=False)
            if self.decouple_weight > 0
            else None
        )

    # ------------------------------------------------------------------ recurrence
    def _unroll(
        self, patches: torch.Tensor, num_steps: int, truth: torch.Tensor, collect_increments: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run the recurrence for ``num_steps`` steps.

        Parameters
        ----------
        patches
            ``[B, T, C p², h, w]`` true frames available (T may be shorter than
            ``num_steps`` at inference: those steps are never teacher forced).
        num_steps
            Number of steps; step ``t`` reads frame ``t`` and predicts ``t + 1``.
        truth
            Bool ``[B, num_steps - 1]``: column ``t - 1`` says whether step
            ``t`` reads the true frame (else the previous prediction).  Step 0
            always reads the true first frame.

        Returns
        -------
        predictions
            ``[B, num_steps, C p², h, w]``, predictions of frames ``1 .. num_steps``.
        delta_c, delta_m
            Per-step lists of ``[L, B, hidden, h, w]`` increments, empty unless
            ``collect_increments``.
        """
        # Which steps are all-truth / all-prediction is decided once, on the
        # host, so the loop only builds a mixed input when it must.
        all_truth = truth.all(dim=0).tolist()
        any_truth = truth.any(dim=0).tolist()
        truth = truth.to(patches.device)
        h: list[torch.Tensor | None] = [None] * self.num_layers
        c: list[torch.Tensor | None] = [None] * self.num_layers
        m: torch.Tensor | None = None
        predictions: list[torch.Tensor] = []
        deltas_c: list[torch.Tensor] = []
        deltas_m: list[torch.Tensor] = []
        for t in range(num_steps):
            if t == 0 or all_truth[t - 1]:
                net = patches[:, t]
            elif not any_truth[t - 1]:
                net = predictions[-1]
            else:
                net = torch.where(truth[:, t - 1, None, None, None], patches[:, t], predictions[-1])
            step_dc, step_dm = [], []
            for layer, cell in enumerate(self.cells):
                below = net if layer == 0 else h[layer - 1]
                h[layer], c[layer], m, delta_c, delta_m = cell(below, h[layer], c[layer], m)
                if collect_increments:
                    step_dc.append(delta_c)
                    step_dm.append(delta_m)
            if collect_increments:
                deltas_c.append(torch.stack(step_dc))
                deltas_m.append(torch.stack(step_dm))
            # clamped only under ``predict(bounds=...)``: the frame fed back stays in the data's range
            predictions.append(self.clamp_output(self.readout(h[-1]), repeat=self.patch_size ** 2))
        return torch.stack(predictions, dim=1), deltas_c, deltas_m

    # ------------------------------------------------------------------ API
    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.check_input(x, steps)
        patches = fold_patches(x, self.patch_size)
        num_steps = self.input_steps + steps - 1
        truth = torch.zeros(x.shape[0], num_steps - 1, dtype=torch.bool)
        truth[:, : self.input_steps - 1] = True
        predictions, _, _ = self._unroll(patches, num_steps, truth, collect_increments=False)
        return unfold_patches(predictions[:, self.input_steps - 1 :], self.patch_size)

    @property
    def typed_config(self) -> PredRNNConfig:
        return self._typed_config

    def output_layer(self) -> nn.Conv2d:
        """The 1x1 readout (no bias) that turns the top layer's hidden state into patch frames."""
        return self.readout

    def set_schedule_marks(self, **marks: float) -> None:
        """Place the scheduled-sampling marks (``sampling_start_iteration``, ``sampling_end_iteration``,
        ``sampling_exp_scale``) for the run ahead, e.g. :func:`~geostp.models.schedules.schedule_marks_for`'s.

        The config (and so the checkpoint) records them; nothing else changes.
        """
        unknown = sorted(set(marks) - set(SCHEDULE_MARK_ARGS))
        if unknown:
            raise ConfigError(f"set_schedule_marks takes {', '.join(SCHEDULE_MARK_ARGS)}; got {', '.join(unknown)}")
        self._set_typed_config(self.typed_config.replace(**marks))

    def teacher_forcing_probabilities(self, iteration: int) -> tuple[float, float]:
        """Encoder and decoder teacher-forcing probabilities at ``iteration``."""
        return teacher_forcing_probabilities(
            iteration,
            reverse=self.reverse_scheduled_sampling,
            start_iteration=self.sampling_start_iteration,
            end_iteration=self.sampling_end_iteration,
            exp_scale=self.sampling_exp_scale,
        )

    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        iteration: int = 0,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE over every next-frame prediction plus ``β`` x decoupling loss (``weight``: per-pixel, like ``y``).

        As in the papers, the MSE covers the predictions of input frames
        ``2 .. T_in`` as well as of the targets; ``mask`` only describes ``y``,
        so input frames count in full.  Teacher forcing is drawn here from the
        schedule at ``iteration``.

        Returns ``(loss, {"mse", "decouple", "loss", "teacher_forcing_encoder",
        "teacher_forcing_decoder"})``.
        """
        self.check_target(x, y, mask)
        batch = x.shape[0]
        frames = torch.cat([x, y], dim=1)
        patches = fold_patches(frames, self.patch_size)
        num_steps = frames.shape[1] - 1
        p_encoder, p_decoder = self.teacher_forcing_probabilities(iteration)
        truth = draw_teacher_forcing(
            batch,
            self.input_steps - 1,
            self.output_steps - 1,
            p_encoder,
            p_decoder,
            generator=self.sampling_generator,
            device="cpu",
        )
        collect = self.adapter is not None and self.decouple_weight > 0
        predictions, deltas_c, deltas_m = self._unroll(patches, num_steps, truth, collect)
        predicted_frames = unfold_patches(predictions, self.patch_size)
        targets = frames[:, 1:]
        full_mask = None
        if mask is not None:
            known = torch.ones_like(x[:, 1:], dtype=torch.bool)
            full_mask = torch.cat([known, mask], dim=1)
        full_weight = None
        if weight is not None:
            full_weight = torch.cat([torch.ones_like(x[:, 1:]), weight.expand_as(y).to(x.dtype)], dim=1)
        mse = masked_mse(predicted_frames, targets, full_mask, full_weight)
        loss = mse
        decouple = mse.new_zeros(())
        if collect:
            decouple = self._decoupling(deltas_c, deltas_m, mask)
            loss = mse + self.decouple_weight * decouple
        return loss, {
            "mse": float(mse.detach()),
            "decouple": float(decouple.detach()),
            "loss": float(loss.detach()),
            "teacher_forcing_encoder": p_encoder,
            "teacher_forcing_decoder": p_decoder,
        }

    def _decoupling(
        self,
        deltas_c: list[torch.Tensor],
        deltas_m: list[torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Decoupling loss over all steps and layers, with one batched adapter call."""
        stacked_c = torch.stack(deltas_c)  # [S, L, B, hidden, h, w]
        stacked_m = torch.stack(deltas_m)
        lead = stacked_c.shape[:3]
        adapted_c = self.adapter(stacked_c.flatten(0, 2)).unflatten(0, lead)
        adapted_m = self.adapter(stacked_m.flatten(0, 2)).unflatten(0, lead)
        valid = None
        if mask is not None:
            # Step t reads frame t; frames from T_in on are targets, whose mask
            # we know.  A patch cell counts when all its pixels are valid.
            cells = fold_patches(mask.float(), self.patch_size).amin(dim=2, keepdim=True) > 0.5
            steps = stacked_c.shape[0]
            valid = torch.ones(steps, *cells.shape[:1], *cells.shape[2:], dtype=torch.bool, device=cells.device)
            valid[self.input_steps :] = cells.transpose(0, 1)[: steps - self.input_steps]
            valid = valid[:, None]  # [S, 1, B, 1, h, w], broadcast over layers and channels
        return memory_decoupling(adapted_c, adapted_m, valid)


@register_model("predrnn_v2")
class PredRNNv2(PredRNN):
    """PredRNN-V2: :class:`PredRNN` with memory decoupling (``β = 0.1``) and reverse scheduled sampling."""

    config_class = PredRNNv2Config

    def __init__(self, config: PredRNNv2Config | None = None, /, **overrides: Any) -> None:
        super().__init__(config, **overrides)
