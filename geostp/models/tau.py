"""TAU, the Temporal Attention Unit (Tan et al., CVPR 2023): a recurrence-free SimVP-style forecaster.

Shape of the model::

    x [B, T, C, H, W] ─ encoder (per frame) ─▶ [B, T·C_s, H/4, W/4] ─ translator (N_T TAU blocks)
      ─▶ decoder (per frame, + skip from the first encoder block) ─▶ [B, T, C, H, W]

The encoder is ``N_S`` conv-GroupNorm-SiLU blocks, every second one strided;
the translator stacks time and channels and mixes them with TAU blocks, each a
temporal-attention branch and a convolutional MLP branch with layer scale and
drop path; the decoder mirrors the encoder with sub-pixel upsampling.  The
training loss is MSE plus ``α`` times the differential divergence regulariser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from geostp.errors import ConfigError
from geostp.models.base import (
    Forecaster,
    ModelConfig,
    autoregressive_rollout,
    check_float,
    check_int,
    config_field,
    register_model,
)
from geostp.models.layers import ConvNormAct, DropPath, LayerScale
from geostp.models.objectives import differential_divergence, masked_mse

__all__ = ["TAU", "TAUConfig", "TAUBlock", "TemporalAttentionModule"]

# Memory layouts, chosen by measurement on two CPU cores (oneDNN kernels):
# the translator's depthwise and 1x1 convolutions on 16x16 maps run much
# faster channels-last (NHWC; inference 1.25x for the whole model), while at
# full resolution GroupNorm, SiLU and pixel-shuffle backward are several times
# slower channels-last than NCHW.  Values, shapes and state dict are the same
# either way; only strides differ.
TRANSLATOR_FORMAT = torch.channels_last
SPATIAL_FORMAT = torch.contiguous_format


class TemporalAttentionModule(nn.Module):
    """Static intra-frame attention times dynamic inter-frame attention, times the input.

    The intra-frame part decomposes a large ``K x K`` kernel into a depthwise
    ``(2d-1)²`` conv, a depthwise dilated ``⌊K/d⌋²`` conv (dilation ``d``) and a
    1x1 conv (5x5, 7x7 dilated 3, 1x1 for ``K = 21, d = 3``).  The inter-frame
    part is a squeeze-and-excitation over channels, i.e. over time x feature
    since the translator stacks frames in channels.

    Parameters
    ----------
    channels
        Channels of the stacked features.
    kernel_size
        ``K``, the receptive field the decomposition emulates.
    dilation
        ``d``.
    """

    def __init__(self, channels: int, kernel_size: int = 21, dilation: int = 3) -> None:
        super().__init__()
        local_kernel = 2 * dilation - 1
        dilated_kernel = kernel_size // dilation
        dilated_kernel += dilated_kernel % 2 - 1  # force odd so padding keeps the size
        self.depthwise = nn.Conv2d(
            channels, channels, local_kernel, padding=local_kernel // 2, groups=channels
        )
        self.depthwise_dilated = nn.Conv2d(
            channels,
            channels,
            dilated_kernel,
            padding=dilation * (dilated_kernel - 1) // 2,
            dilation=dilation,
            groups=channels,
        )
        self.pointwise = nn.Conv2d(channels, channels, 1)
        # Squeeze width: the authors' code ends up with 16 hidden units for any
        # channel count >= 64 (their reduction is max(channels // 16, 4)), so
        # this excitation stays a cheap global gate; smaller inputs use /4.
        squeeze = max(1, min(16, channels // 4))
        self.excitation = nn.Sequential(
            nn.Linear(channels, squeeze, bias=False),
            nn.ReLU(),
            nn.Linear(squeeze, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        static = self.pointwise(self.depthwise_dilated(self.depthwise(x)))
        dynamic = self.excitation(x.mean(dim=(2, 3)))
        return static * dynamic[:, :, None, None] * x


class TemporalAttention(nn.Module):
    """1x1 conv, GELU, temporal attention module, 1x1 conv, with a shortcut around them."""

    def __init__(self, channels: int, kernel_size: int = 21, dilation: int = 3) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(channels, channels, 1)
        self.act = nn.GELU()
        self.attention = TemporalAttentionModule(channels, kernel_size, dilation)
        self.project_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.attention(self.act(self.project_in(x)))) + x


class ConvMlp(nn.Module):
    """1x1 conv, depthwise 3x3, GELU, 1x1 conv: the block's channel MLP with a little spatial mixing."""

    def __init__(self, channels: int, hidden_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden_channels, 1)
        self.depthwise = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, groups=hidden_channels)
        self.act = nn.GELU()
        self.reduce = nn.Conv2d(hidden_channels, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.depthwise(self.expand(x))))
        return self.drop(self.reduce(x))


class TAUBlock(nn.Module):
    """One TAU block: ``x + DP(γ₁ · Attn(BN(x)))`` then ``x + DP(γ₂ · MLP(BN(x)))``.

    Parameters
    ----------
    channels
        Channels of the stacked time x feature input.
    mlp_ratio
        Hidden width of the MLP as a multiple of ``channels`` (paper: 8).
    kernel_size, dilation
        Of the static attention (21 and 3).
    drop_path
        Stochastic depth probability of both branches.
    dropout
        Dropout inside the MLP.
    layer_scale_init
        Initial layer scale ``γ`` (1e-2).
    """

    def __init__(
        self,
        channels: int,
        *,
        mlp_ratio: float = 8.0,
        kernel_size: int = 21,
        dilation: int = 3,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        layer_scale_init: float = 1e-2,
    ) -> None:
        super().__init__()
        self.norm_attention = nn.BatchNorm2d(channels)
        self.attention = TemporalAttention(channels, kernel_size, dilation)
        self.scale_attention = LayerScale(channels, layer_scale_init)
        self.norm_mlp = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio), dropout)
        self.scale_mlp = LayerScale(channels, layer_scale_init)
        self.drop_path = DropPath(drop_path)
        # The authors' code draws the MLP's conv weights from N(0, 2/fan_out)
        # and leaves the attention branch at torch's default; we do the same
        # so training behaves like the published configuration.
        for module in self.mlp.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                fan_out //= module.groups
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.scale_attention(self.attention(self.norm_attention(x))))
        return x + self.drop_path(self.scale_mlp(self.mlp(self.norm_mlp(x))))


class _TranslatorStage(nn.Module):
    """A TAU block followed, when the width changes, by a 1x1 conv to the next width."""

    def __init__(self, channels: int, out_channels: int, **block_kwargs) -> None:
        super().__init__()
        self.block = TAUBlock(channels, **block_kwargs)
        self.resize = nn.Conv2d(channels, out_channels, 1) if out_channels != channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resize(self.block(x))


@dataclass(frozen=True, kw_only=True)
class TAUConfig(ModelConfig):
    """TAU's settings; the defaults are the paper's Moving-MNIST configuration.

    Parameters
    ----------
    input_steps
        ``T_in``.  The network maps ``T_in`` frames to the next ``T_in``.
    output_steps
        ``T_out`` used in training and by default at inference; more than
        ``T_in`` feeds predictions back, fewer keeps the first frames.
    channels
        ``C``.
    spatial_hidden_channels
        ``C_s`` (``hid_S``), channels of the per-frame encoder; even.
    temporal_hidden_channels
        ``C_t`` (``hid_T``), width of the translator's inner blocks.
    spatial_blocks
        ``N_S``, encoder (and decoder) blocks; every second one halves H and W,
        so H and W must be multiples of ``2 ** (N_S // 2)``.
    temporal_blocks
        ``N_T`` >= 2 TAU blocks in the translator.
    encoder_kernel, decoder_kernel
        Odd kernel sizes of the spatial blocks.
    mlp_ratio
        MLP expansion of a TAU block.
    attention_kernel, attention_dilation
        ``K`` and ``d`` of the static attention.
    drop_path
        Largest stochastic-depth probability; block ``i`` uses
        ``drop_path * i / (N_T - 1)``.
    dropout
        Dropout inside the MLPs.
    layer_scale_init
        Initial layer scale.
    ddr_weight
        ``α``, weight of the differential divergence regulariser.
    ddr_temperature
        ``τ`` of its softmax.
    """

    spatial_hidden_channels: int = 64
    temporal_hidden_channels: int = 512
    spatial_blocks: int = 4
    temporal_blocks: int = 8
    encoder_kernel: int = 3
    decoder_kernel: int = 3
    mlp_ratio: float = 8.0
    attention_kernel: int = 21
    attention_dilation: int = 3
    drop_path: float = 0.0
    dropout: float = 0.0
    layer_scale_init: float = 1e-2
    ddr_weight: float = 0.1
    ddr_temperature: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("spatial_blocks", check_int("spatial_blocks", self.spatial_blocks, minimum=1))
        hidden = check_int("spatial_hidden_channels", self.spatial_hidden_channels, minimum=2)
        if hidden % 2:
            raise ConfigError(f"spatial_hidden_channels must be even (GroupNorm uses 2 groups), got {hidden}")
        self._set("spatial_hidden_channels", hidden)
        self._set("temporal_hidden_channels",
                  check_int("temporal_hidden_channels", self.temporal_hidden_channels, minimum=1))
        self._set("temporal_blocks", check_int("temporal_blocks", self.temporal_blocks, minimum=2))
        for name in ("encoder_kernel", "decoder_kernel"):
            kernel = check_int(name, getattr(self, name), minimum=1)
            if kernel % 2 == 0:
                raise ConfigError(f"{name} must be odd, got {kernel}")
            self._set(name, kernel)
        self._set("mlp_ratio", check_float("mlp_ratio", self.mlp_ratio, minimum=1.0))
        dilation = check_int("attention_dilation", self.attention_dilation, minimum=1)
        self._set("attention_dilation", dilation)
        self._set("attention_kernel", check_int("attention_kernel", self.attention_kernel, minimum=dilation))
        self._set("drop_path", check_float("drop_path", self.drop_path, minimum=0.0, below=1.0))
        self._set("dropout", check_float("dropout", self.dropout, minimum=0.0, below=1.0))
        self._set("layer_scale_init", check_float("layer_scale_init", self.layer_scale_init, minimum=0.0))
        self._set("ddr_weight", check_float("ddr_weight", self.ddr_weight, minimum=0.0))
        self._set("ddr_temperature", check_float("ddr_temperature", self.ddr_temperature, minimum=1e-6))

    @property
    def spatial_multiple(self) -> int:
        return 2 ** (self.spatial_blocks // 2)


@register_model("tau")
class TAU(Forecaster):
    """Temporal Attention Unit forecaster (Tan et al., CVPR 2023).

    Built from a :class:`TAUConfig` or from its fields as keyword arguments
    (``TAU(spatial_blocks=2)``, ``TAU(config, output_steps=12)``).  The
    defaults are the paper's Moving-MNIST configuration (44.7 M parameters for
    10 x 1 x 64 x 64 inputs); :meth:`quick_config` gives a small one.
    """

    config_class = TAUConfig
    quick_settings = MappingProxyType({"spatial_hidden_channels": 16, "temporal_hidden_channels": 64,
                                       "spatial_blocks": 2, "temporal_blocks": 2})
    ddr_weight = config_field("ddr_weight")
    ddr_temperature = config_field("ddr_temperature")

    def __init__(self, config: TAUConfig | None = None, /, **overrides: Any) -> None:
        cfg = TAUConfig.from_arguments(config, **overrides)
        super().__init__(input_steps=cfg.input_steps, output_steps=cfg.output_steps, channels=cfg.channels,
                         spatial_multiple=cfg.spatial_multiple)
        self._set_typed_config(cfg)
        spatial_hidden_channels, spatial_blocks = cfg.spatial_hidden_channels, cfg.spatial_blocks

        # Encoder: block i strides when i is odd (SimVP's [no, yes, no, yes, ...]).
        self.encoder = nn.ModuleList(
            ConvNormAct(
                self.channels if i == 0 else spatial_hidden_channels,
                spatial_hidden_channels,
                cfg.encoder_kernel,
                stride=2 if i % 2 == 1 else 1,
            )
            for i in range(spatial_blocks)
        )
        # Decoder mirrors it: block j upsamples when encoder block N_S-1-j strided.
        self.decoder = nn.ModuleList(
            ConvNormAct(
                spatial_hidden_channels,
                spatial_hidden_channels,
                cfg.decoder_kernel,
                upsample=(spatial_blocks - 1 - j) % 2 == 1,
            )
            for j in range(spatial_blocks)
        )
        self.readout = nn.Conv2d(spatial_hidden_channels, self.channels, 1)

        stacked = self.input_steps * spatial_hidden_channels
        temporal_blocks = cfg.temporal_blocks
        widths = [stacked] + [cfg.temporal_hidden_channels] * (temporal_blocks - 1) + [stacked]
        block_kwargs = dict(
            mlp_ratio=cfg.mlp_ratio,
            kernel_size=cfg.attention_kernel,
            dilation=cfg.attention_dilation,
            dropout=cfg.dropout,
            layer_scale_init=cfg.layer_scale_init,
        )
        self.translator = nn.Sequential(
            *(
                _TranslatorStage(
                    widths[i],
                    widths[i + 1],
                    drop_path=cfg.drop_path * i / (temporal_blocks - 1),
                    **block_kwargs,
                )
                for i in range(temporal_blocks)
            )
        )
        self.translator.to(memory_format=TRANSLATOR_FORMAT)

    def _predict_block(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``T_in`` frames to the next ``T_in`` frames."""
        batch, steps, channels, height, width = x.shape
        frames = x.reshape(batch * steps, channels, height, width).contiguous(memory_format=SPATIAL_FORMAT)
        skip = hidden = self.encoder[0](frames)
        for block in self.encoder[1:]:
            hidden = block(hidden)
        _, hidden_channels, low_h, low_w = hidden.shape
        stacked = hidden.reshape(batch, steps * hidden_channels, low_h, low_w)
        hidden = self.translator(stacked.contiguous(memory_format=TRANSLATOR_FORMAT))
        hidden = hidden.reshape(batch * steps, hidden_channels, low_h, low_w)
        hidden = hidden.contiguous(memory_format=SPATIAL_FORMAT)
        for block in self.decoder[:-1]:
            hidden = block(hidden)
        # The skip from the first encoder block restores detail lost in the
        # strided blocks before the last decoder block.
        out = self.readout(self.decoder[-1](hidden + skip))
        return out.contiguous().reshape(batch, steps, channels, height, width)

    @property
    def typed_config(self) -> TAUConfig:
        return self._typed_config

    def output_layer(self) -> nn.Conv2d:
        """The 1x1 readout that turns decoded features into frames."""
        return self.readout

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        steps = self.check_input(x, steps)
        return autoregressive_rollout(lambda window: self.clamp_output(self._predict_block(window)), x, steps)

    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        iteration: int = 0,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE (``weight``-ed per pixel if given) plus ``α`` x differential divergence; ``iteration`` is not used.

        Returns ``(loss, {"mse", "ddr", "loss"})``.
        """
        self.check_target(x, y, mask)
        prediction = autoregressive_rollout(self._predict_block, x, self.output_steps)
        mse = masked_mse(prediction, y, mask, weight)
        if self.ddr_weight > 0:
            ddr = differential_divergence(prediction, y, self.ddr_temperature, mask)
            loss = mse + self.ddr_weight * ddr
        else:
            ddr = mse.new_zeros(())
            loss = mse
        return loss, {"mse": float(mse.detach()), "ddr": float(ddr.detach()), "loss": float(loss.detach())}
