"""Small building blocks shared by the models: drop path, layer scale and conv-norm-act blocks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "LayerScale", "ConvNormAct", "fold_patches", "unfold_patches"]


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training.

    Parameters
    ----------
    probability
        Chance that a sample's branch is replaced by zeros.  Kept branches are
        scaled by ``1 / (1 - probability)`` so the expected output is unchanged.
    """

    def __init__(self, probability: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {probability}")
        self.probability = float(probability)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.probability == 0.0 or not self.training:
            return x
        keep = 1.0 - self.probability
        # One Bernoulli draw per sample, broadcast over every other axis.
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        gate = x.new_empty(shape).bernoulli_(keep).div_(keep)
        return x * gate

    def extra_repr(self) -> str:
        return f"probability={self.probability}"


class LayerScale(nn.Module):
    """Learnable per-channel scale of a residual branch (CaiT's layer scale).

    Parameters
    ----------
    channels
        Number of channels (axis 1 of the input).
    init_value
        Starting value of every scale; small values make a fresh block start
        close to the identity.
    """

    def __init__(self, channels: int, init_value: float = 1e-2) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, *([1] * (x.ndim - 2)))


class ConvNormAct(nn.Module):
    """Convolution, GroupNorm with two groups, SiLU: SimVP's spatial block.

    Parameters
    ----------
    in_channels, out_channels
        Channel counts.
    kernel_size
        Odd spatial kernel size.
    stride
        2 halves the resolution (encoder), 1 keeps it.
    upsample
        When true the convolution produces ``4 * out_channels`` and a pixel
        shuffle doubles the resolution (sub-pixel upsampling in the decoder).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        if upsample and stride != 1:
            raise ValueError("a block either upsamples or strides, not both")
        padding = kernel_size // 2
        conv_out = out_channels * 4 if upsample else out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, kernel_size, stride=stride, padding=padding)
        self.shuffle = nn.PixelShuffle(2) if upsample else nn.Identity()
        self.norm = nn.GroupNorm(2, out_channels)
        self.act = nn.SiLU()
        # The reference implementation starts these convolutions small; with
        # GroupNorm right after, only the direction of the weights matters.
        nn.init.trunc_normal_(self.conv.weight, std=0.02)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.shuffle(self.conv(x))))


def fold_patches(frames: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fold each ``p x p`` block of pixels into channels: ``[..., C, H, W] -> [..., C p², H/p, W/p]``.

    PredRNN's patch trick: the recurrence runs on a ``p`` times coarser grid
    with ``p²`` times more channels, which makes the 5x5 convolutions see a
    ``5p`` pixel neighbourhood at a fraction of the cost.
    """
    if patch_size == 1:
        return frames
    lead = frames.shape[:-3]
    folded = nn.functional.pixel_unshuffle(frames.reshape(-1, *frames.shape[-3:]), patch_size)
    return folded.reshape(*lead, *folded.shape[-3:])


def unfold_patches(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of :func:`fold_patches`."""
    if patch_size == 1:
        return patches
    lead = patches.shape[:-3]
    frames = nn.functional.pixel_shuffle(patches.reshape(-1, *patches.shape[-3:]), patch_size)
    return frames.reshape(*lead, *frames.shape[-3:])
