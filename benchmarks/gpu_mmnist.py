#!/usr/bin/env python
"""GPU throughput, training and evaluation of TAU and PredRNN-V2 on Moving MNIST (issues 5 and 10).

One command on a CUDA machine, from a clean clone::

    python benchmarks/gpu_mmnist.py --mnist-dir ../shared/data/mnist --out benchmarks/results \\
        --minutes-tau 8 --minutes-predrnn 5

measures the peak bf16 matrix rate of the GPU, the training-step and
inference throughput of both models in the Moving-MNIST configuration (fp32,
bf16 autocast, bf16 + channels-last, bf16 + channels-last + torch.compile,
and geostp's own ``Trainer`` step for comparison), trains each model for a
wall-clock budget with a OneCycle schedule sized to that budget, evaluates
on held-back test clips and writes ``gpu_mmnist.json``, ``gpu_mmnist.md`` and
the loss curves as CSV under ``--out``.

Data never leaves the GPU: the 10,000 MNIST test-file digits are uploaded
once; every epoch's 10,000 training clips are *drawn fresh* (as OpenSTL's
Moving-MNIST loader does) from the first 7,000 digits, their trajectories
computed with numpy in a few milliseconds and the frames composited on the
GPU; the test clips are exactly ``geostp.data.synthetic.moving_mnist(n,
split="test", seed=0)`` (digits 7,000-9,999), generated with geostp's own
clip function.  The training step performs no host synchronisation: losses
are written into a GPU buffer and read once per epoch.

Without a CUDA device the script stops with an error, unless ``--allow-cpu``
is given; ``--allow-cpu --smoke`` runs a tiny configuration in seconds (the
test suite uses it).

The script needs torch and numpy; geostp's model and loss modules are loaded
from the checkout.  Modules that only the lazy cube code needs (dask) are
stubbed when missing, so it runs on a bare GPU image as well.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCHEMA = 1
OPENSTL_TOTAL_STEPS = 200 * 625  # 200 epochs of 10,000 clips at batch 16
FRAMES_IN = 10
FRAMES_OUT = 10
SIZE = 64
N_DIGITS = 2
STEP_LENGTH = 0.1
DIGIT = 28

# Published anchors (OpenSTL benchmark, 200 epochs; TAU paper at 50 epochs).
PUBLISHED = {
    "tau": {"source": "OpenSTL Moving-MNIST table, 200 epochs", "mse": 24.60, "mae": 71.93,
            "ssim": 0.9454, "psnr": 23.19, "fps_v100": 283,
            "paper_50_epochs": {"mse": 35.0, "minutes_per_epoch": 2.5}},
    "predrnn_v2": {"source": "OpenSTL Moving-MNIST table, 200 epochs", "mse": 24.13, "mae": 73.73,
                   "ssim": 0.9453, "psnr": 23.21, "fps_v100": 52},
}


# ----------------------------------------------------------------------------- imports
def _stub_missing(names: list[str]) -> list[str]:
    """Insert empty placeholder modules for optional packages that are not installed."""
    stubbed = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub not in sys.modules:
                    sys.modules[sub] = types.ModuleType(sub)
                if i > 1:
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
            stubbed.append(name)
    return stubbed


def load_synthetic():
    """geostp.data.synthetic, loaded from its file (its package pulls zarr/pyproj we do not need)."""
    stubbed = _stub_missing(["dask", "dask.array", "pandas", "xarray"])
    spec = importlib.util.spec_from_file_location("_geostp_synthetic", REPO / "geostp" / "data" / "synthetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module, stubbed


def load_models():
    """The model registry with TAU and PredRNN-V2 registered."""
    from geostp.models.base import MODEL_REGISTRY

    for name in ("geostp.models.tau", "geostp.models.predrnn"):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # predrnn may not exist in an old checkout
            print(f"[warn] could not import {name}: {exc}", flush=True)
    return MODEL_REGISTRY


# ----------------------------------------------------------------------------- data
def fake_digits(n: int, seed: int = 0) -> np.ndarray:
    """Blobby 28x28 uint8 'digits' for smoke runs without the MNIST file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:DIGIT, 0:DIGIT]
    out = np.zeros((n, DIGIT, DIGIT), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(8, 20, 2)
        r = rng.uniform(3, 7)
        out[i] = (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))).astype(np.uint8)
    return out


def trajectories(theta: np.ndarray, py: np.ndarray, px: np.ndarray, n_frames: int,
                 size: int = SIZE, step_length: float = STEP_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Top/left corners ``[N, T, D]`` of bouncing digits; the arithmetic of geostp's clip generator, vectorised."""
    room = size - DIGIT
    vy, vx = np.sin(theta), np.cos(theta)
    py, px = py.copy(), px.copy()
    top = np.empty((*theta.shape[:1], n_frames, theta.shape[1]), np.int64)
    left = np.empty_like(top)
    for t in range(n_frames):
        top[:, t] = np.round(py * room)
        left[:, t] = np.round(px * room)
        py = py + vy * step_length
        px = px + vx * step_length
        for pos, vel in ((py, vy), (px, vx)):
            low = pos < 0
            pos[low], vel[low] = -pos[low], -vel[low]
            high = pos > 1
            pos[high], vel[high] = 2 - pos[high], -vel[high]
    return top, left


def draw_clip_params(rng: np.random.Generator, n: int, n_digit_images: int) -> dict[str, np.ndarray]:
    """Random choices of ``n`` clips, with the same laws as geostp's ``_moving_mnist_clip``."""
    return {
        "index": rng.integers(n_digit_images, size=(n, N_DIGITS)),
        "theta": rng.uniform(0, 2 * np.pi, size=(n, N_DIGITS)),
        "py": rng.uniform(0, 1, size=(n, N_DIGITS)),
        "px": rng.uniform(0, 1, size=(n, N_DIGITS)),
    }


def composite(digits: torch.Tensor, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
              size: int = SIZE, chunk: int = 1024) -> torch.Tensor:
    """Frames ``[N, T, size, size]`` uint8: each digit pasted at its corner, overlaps keep the brighter pixel.

    ``digits`` [M, 28, 28] uint8, ``index`` [N, D], ``top``/``left`` [N, T, D], all on one device.
    """
    n, n_frames, n_digits = top.shape
    out = torch.empty((n, n_frames, size, size), dtype=torch.uint8, device=digits.device)
    flat = digits.reshape(digits.shape[0], -1)
    coords = torch.arange(size, device=digits.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        frame = torch.zeros((e - s, n_frames, size, size), dtype=torch.uint8, device=digits.device)
        for d in range(n_digits):
            dy = coords.view(1, 1, size) - top[s:e, :, d, None]  # [n, T, size]
            dx = coords.view(1, 1, size) - left[s:e, :, d, None]
            inside = ((dy >= 0) & (dy < DIGIT))[..., :, None] & ((dx >= 0) & (dx < DIGIT))[..., None, :]
            lin = dy.clamp(0, DIGIT - 1)[..., :, None] * DIGIT + dx.clamp(0, DIGIT - 1)[..., None, :]
            img = flat[index[s:e, d]]  # [n, 784]
            pix = torch.gather(img[:, None, :].expand(-1, n_frames, -1), 2, lin.reshape(e - s, n_frames, -1))
            pix = pix.reshape(e - s, n_frames, size, size) * inside
            frame = torch.maximum(frame, pix.to(torch.uint8))
        out[s:e] = frame
    return out


class GpuMovingMnist:
    """Fresh Moving-MNIST clips every epoch, composited on the device from digits held there."""

    def __init__(self, digits: np.ndarray, device: torch.device, n_frames: int = FRAMES_IN + FRAMES_OUT) -> None:
        self.digits = torch.as_tensor(np.array(digits), device=device)
        self.n_digit_images = len(digits)
        self.n_frames = n_frames
        self.device = device

    def clips(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        p = draw_clip_params(rng, n, self.n_digit_images)
        top, left = trajectories(p["theta"], p["py"], p["px"], self.n_frames)
        dev = self.device
        return composite(self.digits, torch.as_tensor(p["index"], device=dev),
                         torch.as_tensor(top, device=dev), torch.as_tensor(left, device=dev))


class _ReplayRng:
    """Stands in for numpy's Generator in geostp's clip function, returning pre-drawn choices."""

    def __init__(self, params: dict[str, np.ndarray], clip: int) -> None:
        self.queue = []
        for d in range(N_DIGITS):
            self.queue += [int(params["index"][clip, d]), float(params["theta"][clip, d]),
                           float(params["py"][clip, d]), float(params["px"][clip, d])]

    def integers(self, *args, **kwargs):
        return self.queue.pop(0)

    def uniform(self, *args, **kwargs):
        return self.queue.pop(0)


def check_generator(synthetic, digits: np.ndarray, device: torch.device, n: int = 256) -> dict[str, Any]:
    """Composite ``n`` clips on the device and with geostp's own clip function from the same choices."""
    rng = np.random.default_rng(12345)
    p = draw_clip_params(rng, n, len(digits))
    top, left = trajectories(p["theta"], p["py"], p["px"], FRAMES_IN + FRAMES_OUT)
    fast = composite(torch.as_tensor(np.array(digits), device=device), torch.as_tensor(p["index"], device=device),
                     torch.as_tensor(top, device=device), torch.as_tensor(left, device=device))
    fast = fast.float().div_(255).cpu().numpy()
    ref = np.stack([synthetic._moving_mnist_clip(_ReplayRng(p, i), digits, FRAMES_IN + FRAMES_OUT, SIZE,
                                                  N_DIGITS, STEP_LENGTH) for i in range(n)])
    differ = np.abs(fast - ref).reshape(n, -1).max(axis=1) > 0
    return {"clips": n, "clips_differing": int(differ.sum()), "max_abs_diff": float(np.abs(fast - ref).max())}


def exact_clips(synthetic, digits: np.ndarray, stream_seed: int, n: int) -> np.ndarray:
    """Clips ``0..n-1`` of geostp's ``moving_mnist`` stream, as uint8 (lossless: values are k/255)."""
    out = np.empty((n, FRAMES_IN + FRAMES_OUT, SIZE, SIZE), np.uint8)
    for i in range(n):
        clip = synthetic._moving_mnist_clip(np.random.default_rng([stream_seed, i]), digits,
                                            FRAMES_IN + FRAMES_OUT, SIZE, N_DIGITS, STEP_LENGTH)
        out[i] = np.rint(clip * 255.0)
    return out


def as_batch(clips_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[B, 20, H, W]`` -> float ``x [B, 10, 1, H, W]``, ``y [B, 10, 1, H, W]`` in [0, 1]."""
    frames = clips_u8.unsqueeze(2).float().div_(255.0)
    return frames[:, :FRAMES_IN], frames[:, FRAMES_IN:]


# ----------------------------------------------------------------------------- metrics
def frame_scores(pred: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-lead-time sums over the batch of OpenSTL-style frame scores, in float64 on the device.

    ``pred``/``true`` ``[B, T, 1, H, W]``.  MSE/MAE are per-frame sums over
    pixels (geostp's ``mse_frame``/``mae_frame``) on the raw prediction; SSIM
    and PSNR on the prediction clipped to [0, 1], as OpenSTL does.  SSIM is
    geostp's (7x7 uniform window, sample covariance, valid window centres
    only), at ``data_range=1`` and, for comparison, at ``data_range=2`` (what
    scikit-image's float default gives when no data range is passed).
    """
    p = pred.double()
    t = true.double()
    err = p - t
    b, steps = p.shape[:2]
    out = {
        "mse": err.square().sum(dim=(2, 3, 4)).sum(0),
        "mae": err.abs().sum(dim=(2, 3, 4)).sum(0),
    }
    pc = p.clamp(0, 1)
    frame_mse = (pc - t).square().mean(dim=(2, 3, 4))
    out["psnr"] = (10 * torch.log10(1.0 / frame_mse.clamp_min(1e-30))).sum(0)
    a = pc.reshape(b * steps, 1, *p.shape[-2:])
    c = t.reshape(b * steps, 1, *p.shape[-2:])
    win = 7
    cov_norm = win * win / (win * win - 1.0)
    ux, uy = F.avg_pool2d(a, win, 1), F.avg_pool2d(c, win, 1)
    uxx, uyy, uxy = F.avg_pool2d(a * a, win, 1), F.avg_pool2d(c * c, win, 1), F.avg_pool2d(a * c, win, 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    for key, data_range in (("ssim", 1.0), ("ssim_range2", 2.0)):
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out[key] = s.mean(dim=(1, 2, 3)).reshape(b, steps).sum(0)
    return out


def check_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """Compare :func:`frame_scores` with geostp.metrics (xarray + scipy) on a few clips, if importable."""
    try:
        import xarray as xr

        from geostp import metrics
    except ImportError as exc:
        return {"skipped": f"geostp.metrics not importable here: {exc}"}
    mine = frame_scores(torch.as_tensor(pred[:, :, None]), torch.as_tensor(true[:, :, None]))
    mine = {k: (v / pred.shape[0]).numpy() for k, v in mine.items()}
    dims = ("sequence", "lead_time", "y", "x")
    f = xr.DataArray(pred.astype(np.float64), dims=dims)
    fc = xr.DataArray(np.clip(pred, 0, 1).astype(np.float64), dims=dims)
    o = xr.DataArray(true.astype(np.float64), dims=dims)
    ref = {"mse": metrics.mse_frame(f, o).values, "mae": metrics.mae_frame(f, o).values,
           "ssim": metrics.ssim(fc, o, data_range=1.0).values, "psnr": metrics.psnr(fc, o).values}
    return {k: float(np.max(np.abs(mine[k] - ref[k]) / np.maximum(np.abs(ref[k]), 1e-12))) for k in ref}


# ----------------------------------------------------------------------------- models
MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    # The paper / OpenSTL Moving-MNIST configurations: model defaults, batch 16, Adam, OneCycle.
    "tau": {"kwargs": {}, "batch": 16, "lr": 1e-3},
    # PredRNN-V2: the class defaults are the paper's 4 x 128, kernel 5, patch 4, beta 0.1, reverse
    # scheduled sampling.  OpenSTL's config sets no lr, so its default (1e-3) applies.
    "predrnn_v2": {"kwargs": {}, "batch": 16, "lr": 1e-3},
}
SMOKE_KWARGS: dict[str, dict[str, Any]] = {
    "tau": {"spatial_hidden_channels": 8, "temporal_hidden_channels": 16, "spatial_blocks": 2,
            "temporal_blocks": 2, "mlp_ratio": 2.0},
    "predrnn_v2": {"hidden_channels": 8, "num_layers": 2, "patch_size": 4},
}


def build(registry, name: str, smoke: bool) -> torch.nn.Module:
    cls = registry.get(name)
    kwargs = dict(SMOKE_KWARGS[name] if smoke else MODEL_SETTINGS[name]["kwargs"])
    kwargs.setdefault("input_steps", FRAMES_IN)
    kwargs.setdefault("output_steps", FRAMES_OUT)
    kwargs.setdefault("channels", 1)
    return cls(**kwargs)


class LossFunction:
    """A training loss ``(x, y, iteration) -> (loss, parts)`` that never synchronises with the host.

    ``prepare`` runs eagerly (it may depend on the iteration, e.g. drawing the
    teacher-forcing pattern on the device); ``core`` is the tensor program,
    the part that :meth:`compiled` hands to ``torch.compile`` (so a schedule
    that changes every iteration never triggers a recompilation).  ``parts``
    names the entries of the returned parts tensor, which stays on the device.
    """

    def __init__(self, core, prepare, parts: tuple[str, ...]) -> None:
        self.core, self.prepare, self.parts = core, prepare, parts

    def __call__(self, x, y, iteration=0):
        return self.core(*self.prepare(x, y, iteration))

    def compiled(self, **kwargs) -> LossFunction:
        return LossFunction(torch.compile(self.core, **kwargs), self.prepare, self.parts)


def loss_function(model: torch.nn.Module) -> LossFunction:
    """geostp's training loss of ``model``, rebuilt without host synchronisations.

    geostp's ``training_loss`` methods return their parts as Python floats,
    one device-to-host copy (a synchronisation) per part and step, and
    PredRNN's also draws its teacher-forcing pattern on the host and copies it
    to the device (one more).  The same losses are rebuilt here from the same
    modules and library functions, with the pattern drawn on the device and
    the parts left there; ``tests/test_gpu_script.py`` checks that they equal
    ``training_loss``.  Other models fall back to ``training_loss`` itself.
    """
    name = getattr(model, "name", "")
    if name == "tau":
        from geostp.models.base import autoregressive_rollout
        from geostp.models.objectives import differential_divergence, masked_mse

        def tau_core(x, y):
            pred = autoregressive_rollout(model._predict_block, x, model.output_steps)
            mse = masked_mse(pred, y)
            ddr = differential_divergence(pred, y, model.ddr_temperature)
            loss = mse + model.ddr_weight * ddr
            return loss, torch.stack([loss.detach(), mse.detach(), ddr.detach()])

        return LossFunction(tau_core, lambda x, y, iteration: (x, y), ("loss", "mse", "ddr"))
    if name in ("predrnn", "predrnn_v2"):
        return _predrnn_loss(model)

    def generic_core(x, y, iteration):
        loss, _ = model.training_loss(x, y, iteration=iteration)
        return loss, loss.detach()[None]

    return LossFunction(generic_core, lambda x, y, iteration: (x, y, iteration), ("loss",))


def _predrnn_loss(model) -> LossFunction:
    """PredRNN's ``training_loss`` (next-frame MSE over all 19 steps plus ``β`` x decoupling), sync-free."""
    from geostp.models.layers import fold_patches, unfold_patches
    from geostp.models.objectives import masked_mse
    from geostp.models.schedules import draw_teacher_forcing

    def prepare(x, y, iteration, generator=None):
        p_encoder, p_decoder = model.teacher_forcing_probabilities(iteration)
        truth = draw_teacher_forcing(x.shape[0], model.input_steps - 1, model.output_steps - 1, p_encoder,
                                     p_decoder, generator=generator, device=x.device)
        return x, y, truth

    def core(x, y, truth):
        frames = torch.cat([x, y], dim=1)
        patches = fold_patches(frames, model.patch_size)
        collect = model.adapter is not None and model.decouple_weight > 0
        h: list = [None] * model.num_layers
        c: list = [None] * model.num_layers
        m = None
        predictions, deltas_c, deltas_m = [], [], []
        for t in range(frames.shape[1] - 1):
            # the model decides all-true / all-predicted steps on the host; a
            # device-side select gives the same input without asking
            net = patches[:, 0] if t == 0 else torch.where(truth[:, t - 1, None, None, None], patches[:, t],
                                                           predictions[-1])
            step_dc, step_dm = [], []
            for layer, cell in enumerate(model.cells):
                below = net if layer == 0 else h[layer - 1]
                h[layer], c[layer], m, delta_c, delta_m = cell(below, h[layer], c[layer], m)
                step_dc.append(delta_c)
                step_dm.append(delta_m)
            if collect:
                deltas_c.append(torch.stack(step_dc))
                deltas_m.append(torch.stack(step_dm))
            predictions.append(model.readout(h[-1]))
        predicted = unfold_patches(torch.stack(predictions, dim=1), model.patch_size)
        mse = masked_mse(predicted, frames[:, 1:])
        if collect:
            decouple = model._decoupling(deltas_c, deltas_m, None)
            loss = mse + model.decouple_weight * decouple
        else:
            decouple = mse.detach() * 0
            loss = mse
        return loss, torch.stack([loss.detach(), mse.detach(), decouple.detach()])

    return LossFunction(core, prepare, ("loss", "mse", "decouple"))


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Convolution backward counted as one forward-sized convolution per gradient asked for.

    torch.utils.flop_counter's own formula counts the weight gradient of a
    grouped convolution as if it were dense (it ignores ``groups``), which for
    TAU's depthwise convolutions over 512-4096 channels inflates the count by
    that factor.  Both gradients of any convolution cost as many
    multiply-accumulates as its forward pass.
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flops_per_sample(model: torch.nn.Module, loss_fn, device: torch.device, batch: int = 2) -> dict[str, float]:
    """FLOPs per sample from torch.utils.flop_counter: inference forward, and a training step (fwd + bwd).

    ``train_step_torch_counter`` is the counter's raw figure; ``train_step`` replaces
    its convolution-backward formula by :func:`_conv_backward_flops` (see there).
    """
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, FRAMES_IN, 1, SIZE, SIZE, generator=g).to(device)
    y = torch.rand(batch, FRAMES_OUT, 1, SIZE, SIZE, generator=g).to(device)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, FRAMES_OUT)
    infer = counter.get_total_flops() / batch
    model.train()
    counts = {}
    for key, mapping in (("train_step_torch_counter", None),
                         ("train_step", {torch.ops.aten.convolution_backward: _conv_backward_flops})):
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            loss, _ = loss_fn(x, y, 0)
            loss.backward()
        counts[key] = float(counter.get_total_flops() / batch)
        model.zero_grad(set_to_none=True)
    return {"inference_forward": float(infer), **counts}


# ----------------------------------------------------------------------------- timing helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def peak_matmul(device: torch.device, sizes=(4096, 8192, 16384), repeats: int = 10) -> dict[str, Any]:
    """bf16 matrix-product rate (TFLOP/s) on random data, mean of ``repeats`` after 3 warm-ups."""
    out = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        dt = (time.perf_counter() - t0) / repeats
        out[str(n)] = 2 * n**3 / dt / 1e12
        del a, b
    torch.cuda.empty_cache()
    return {"tflops_by_size": out, "peak_tflops": max(out.values())}


def copy_bandwidth(device: torch.device, gib: float = 2.0, repeats: int = 10) -> float:
    """Device-to-device copy rate in TB/s, counting bytes read plus written."""
    n = int(gib * 2**30) // 4
    a = torch.rand(n, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        b.copy_(a)
    sync(device)
    dt = (time.perf_counter() - t0) / repeats
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 4 / dt / 1e12


# ----------------------------------------------------------------------------- throughput
def _inputs(batch: int, device: torch.device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(batch, FRAMES_IN, 1, SIZE, SIZE, generator=g).to(device)
    y = torch.rand(batch, FRAMES_OUT, 1, SIZE, SIZE, generator=g).to(device)
    return x, y


def time_train(model, step_fn, batch: int, device: torch.device, warmup: int, steps: int) -> dict[str, float]:
    """Samples/s of ``step_fn(x, y, i)`` (one optimiser step); warm-up (and compile) timed separately."""
    x, y = _inputs(batch, device)
    sync(device)
    t0 = time.perf_counter()
    for i in range(warmup):
        step_fn(x, y, i)
    sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        step_fn(x, y, warmup + i)
    sync(device)
    dt = time.perf_counter() - t0
    return {"batch": batch, "steps": steps, "step_ms": 1e3 * dt / steps, "samples_per_s": batch * steps / dt,
            "warmup_s": warm}


def time_infer(forward, batch: int, device: torch.device, warmup: int, iters: int, bf16: bool) -> dict[str, float]:
    x, _ = _inputs(batch, device, seed=1)
    with torch.inference_mode(), autocast(device, bf16):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(warmup):
            forward(x)
        sync(device)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(iters):
            forward(x)
        sync(device)
        dt = time.perf_counter() - t0
    return {"batch": batch, "iters": iters, "ms_per_batch": 1e3 * dt / iters, "samples_per_s": batch * iters / dt,
            "frames_per_s": batch * iters * FRAMES_OUT / dt, "warmup_s": warm}


def make_step(model, loss_fn, optimizer, device: torch.device, bf16: bool):
    """One optimiser step with no host synchronisation; returns the parts tensor (on the device)."""

    def step(x, y, iteration):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            loss, parts = loss_fn(x, y, iteration)
        loss.backward()
        optimizer.step()
        return parts

    return step


def throughput(registry, name: str, device: torch.device, args, peak: float | None, log) -> dict[str, Any]:
    """The throughput table of one model: variants of the training step and of inference."""
    from geostp.models.base import Forecaster  # noqa: F401  (import check)

    smoke = args.smoke
    batch = 2 if smoke else MODEL_SETTINGS[name]["batch"]
    big = 4 if smoke else args.big_batch
    warm, steps = (1, 2) if smoke else (5, args.timed_steps)
    result: dict[str, Any] = {"train": {}, "inference": {}}
    torch.manual_seed(0)
    model = build(registry, name, smoke).to(device)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    loss_fn = loss_function(model)
    result["flops_per_sample"] = flops_per_sample(model, loss_fn, device)
    log(f"{name}: {result['parameters']:,} parameters, FLOPs/sample {result['flops_per_sample']}")

    def fused_adam(m):
        kw = {"fused": True} if device.type == "cuda" else {}
        return torch.optim.Adam(m.parameters(), lr=1e-4, **kw)

    def record(kind, key, res, flops_key):
        if peak and res.get("samples_per_s"):
            tflops = res["samples_per_s"] * result["flops_per_sample"][flops_key] / 1e12
            res["achieved_tflops"] = tflops
            res["fraction_of_peak_bf16"] = tflops / peak
        result[kind][key] = res
        log(f"  {name} {kind:9s} {key:34s} " + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))

    def guarded(kind, key, fn, flops_key):
        try:
            record(kind, key, fn(), flops_key)
        except Exception as exc:  # one failing variant must not lose the others
            result[kind][key] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
            log(f"  {name} {kind} {key}: FAILED {type(exc).__name__}: {str(exc)[:400]}")
        finally:
            torch.cuda.empty_cache() if device.type == "cuda" else None

    # -- training step variants
    model.train()
    variants = [("fp32", False, False), ("bf16", True, False), ("bf16_channels_last", True, True)]
    if smoke:
        variants = variants[1:2]
    for key, bf16, cl in variants:
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        step = make_step(model, loss_fn, fused_adam(model), device, bf16)
        guarded("train", key, lambda step=step: time_train(model, step, batch, device, warm, steps), "train_step")
    best_cl = _faster(result["train"], "bf16_channels_last", "bf16")
    model.to(memory_format=torch.channels_last if best_cl else torch.contiguous_format)
    result["channels_last_helps_train"] = best_cl
    # the same step plus one host synchronisation (reading the loss) per step, as a history log would
    step = make_step(model, loss_fn, fused_adam(model), device, True)

    def step_with_sync(x, y, i):
        float(step(x, y, i)[0])

    guarded("train", f"bf16{'_channels_last' if best_cl else ''}_plus_float(loss)_each_step",
            lambda: time_train(model, step_with_sync, batch, device, warm, steps), "train_step")
    # geostp's own Trainer step (as users get it: its syncs, default Adam) at the best layout
    try:
        from geostp.train.trainer import Trainer, TrainSettings

        trainer = Trainer(model, TrainSettings(device=str(device), progress=False, lr=1e-4, schedule="constant",
                                               bf16=True))

        def trainer_step(x, y, i):
            trainer._step({"x": x, "y": y})

        guarded("train", "geostp_Trainer._step (bf16)", lambda: time_train(model, trainer_step, batch, device,
                                                                          warm, steps), "train_step")
    except ImportError as exc:
        result["train"]["geostp_Trainer._step (bf16)"] = {"error": f"not importable here: {exc}"}
    # larger batch, to see how far the step is from the GPU's rate
    if not smoke:
        step = make_step(model, loss_fn, fused_adam(model), device, True)
        guarded("train", f"bf16{'_channels_last' if best_cl else ''}_batch{big}",
                lambda: time_train(model, step, big, device, 3, max(5, steps // 4)), "train_step")
    # torch.compile of the loss (forward + backward through AOTAutograd)
    if args.compile:
        compiled = loss_fn.compiled()
        step = make_step(model, compiled, fused_adam(model), device, True)
        label = f"bf16{'_channels_last' if best_cl else ''}_compile"

        def run_compiled():
            t0 = time.perf_counter()
            step(*_inputs(batch, device), 0)
            sync(device)
            first = time.perf_counter() - t0
            res = time_train(model, step, batch, device, warm, steps)
            res["compile_s"] = first
            return res

        guarded("train", label, run_compiled, "train_step")
        if not smoke:
            guarded("train", f"{label}_batch{big}", lambda: time_train(model, step, big, device, 3,
                                                                       max(5, steps // 4)), "train_step")
        torch._dynamo.reset()

    # -- inference variants (batch 16 as trained, and OpenSTL's throughput batch of 100)
    model.eval()
    ibatch = 2 if smoke else 16
    obatch = 4 if smoke else 100
    iters = 2 if smoke else args.timed_steps
    for key, bf16, cl in variants:
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for b in ([ibatch] if smoke else sorted({ibatch, obatch})):
            guarded("inference", f"{key}_batch{b}",
                    lambda b=b, bf16=bf16: time_infer(lambda x: model(x, FRAMES_OUT), b, device, warm, iters, bf16),
                    "inference_forward")
    best_cl_inf = _faster(result["inference"], f"bf16_channels_last_batch{obatch}", f"bf16_batch{obatch}")
    model.to(memory_format=torch.channels_last if best_cl_inf else torch.contiguous_format)
    result["channels_last_helps_inference"] = best_cl_inf
    if args.compile:
        compiled_model = torch.compile(model)
        label = f"bf16{'_channels_last' if best_cl_inf else ''}_compile"
        for b in sorted({ibatch, obatch}):
            def run_compiled_infer(b=b):
                x, _ = _inputs(b, device, seed=2)
                t0 = time.perf_counter()
                with torch.inference_mode(), autocast(device, True):
                    compiled_model(x, FRAMES_OUT)
                sync(device)
                first = time.perf_counter() - t0
                res = time_infer(lambda x: compiled_model(x, FRAMES_OUT), b, device, warm, iters, True)
                res["compile_s"] = first
                return res

            guarded("inference", f"{label}_batch{b}", run_compiled_infer, "inference_forward")
        torch._dynamo.reset()
    return result


def _faster(table: dict, a: str, b: str) -> bool:
    ra, rb = table.get(a, {}), table.get(b, {})
    return bool(ra.get("samples_per_s") and rb.get("samples_per_s") and ra["samples_per_s"] > rb["samples_per_s"])


# ----------------------------------------------------------------------------- training
def evaluate(model, clips_u8: torch.Tensor, device: torch.device, batch: int, bf16: bool,
             forward=None) -> dict[str, Any]:
    """Frame scores over ``clips_u8`` ``[N, 20, H, W]`` (on the device); one host sync at the end."""
    model.eval()
    forward = forward or (lambda x: model(x, FRAMES_OUT))
    sums: dict[str, torch.Tensor] = {}
    n = clips_u8.shape[0]
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, batch):
            x, y = as_batch(clips_u8[s:s + batch])
            with autocast(device, bf16):
                pred = forward(x)
            for k, v in frame_scores(pred.float(), y).items():
                sums[k] = sums[k] + v if k in sums else v
    per_lead = {k: (v / n).cpu().numpy() for k, v in sums.items()}
    dt = time.perf_counter() - t0
    model.train()
    out = {k: float(v.mean()) for k, v in per_lead.items()}
    out["per_lead_time"] = {k: [float(a) for a in v] for k, v in per_lead.items()}
    out["clips"] = int(n)
    out["seconds"] = dt
    return out


def train_model(registry, name: str, device: torch.device, args, synthetic, train_digits: np.ndarray,
                test_clips: torch.Tensor, val_clips: torch.Tensor, minutes: float, log,
                csv_path: Path, epochs_path: Path) -> dict[str, Any]:
    """Train ``name`` for ``minutes`` of wall clock (compile and warm-up included) and evaluate it."""
    smoke = args.smoke
    settings = MODEL_SETTINGS[name]
    batch = 4 if smoke else settings["batch"]
    per_epoch = args.train_clips
    steps_per_epoch = per_epoch // batch
    t_start = time.perf_counter()
    budget_s = minutes * 60.0
    torch.manual_seed(args.seed)
    model = build(registry, name, smoke).to(device)
    if args.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    loss_fn = loss_function(model)
    use_compile = args.compile and name in args.compile_train
    fn = loss_fn.compiled() if use_compile else loss_fn
    gen = GpuMovingMnist(train_digits, device)
    bf16 = device.type == "cuda"
    # 1. warm up (compiles) and time the step, on throwaway optimiser state
    opt_kw = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"] * 0.01, **opt_kw)
    step = make_step(model, fn, optimizer, device, bf16)
    probe = gen.clips(np.random.default_rng([args.seed, 10**6]), batch * 8)
    x, y = as_batch(probe[:batch])
    t0 = time.perf_counter()
    step(x, y, 0)
    sync(device)
    compile_s = time.perf_counter() - t0
    n_probe = 1 if smoke else 30
    for i in range(1 if smoke else 3):
        step(x, y, i)
    sync(device)
    t0 = time.perf_counter()
    for i in range(n_probe):
        step(*as_batch(probe[(i % 8) * batch:(i % 8 + 1) * batch]), i)
    sync(device)
    step_s = (time.perf_counter() - t0) / n_probe
    # 2. restore the initial weights; a fresh optimiser and a OneCycle sized to what is left
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(init_state[k])
    del init_state
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], **opt_kw)
    step = make_step(model, fn, optimizer, device, bf16)
    left = budget_s - (time.perf_counter() - t_start)
    # per epoch: generation and a small validation, about 2% on top of the steps
    total_steps = max(2, int(left * 0.96 / (step_s * 1.02)))
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings["lr"], total_steps=total_steps)
    sampling = None
    if model.takes_schedule_marks:
        # The schedule's marks (25k / 50k / 5k iterations) are 20 % / 40 % / 4 % of OpenSTL's 200 epochs
        # of 625 steps; a budget run keeps those fractions of its own length.
        from geostp.models.schedules import schedule_marks_for

        model.set_schedule_marks(**schedule_marks_for(total_steps))
        sampling = {"start_iteration": model.sampling_start_iteration,
                    "end_iteration": model.sampling_end_iteration, "exp_scale": model.sampling_exp_scale,
                    "scaled_by": total_steps / OPENSTL_TOTAL_STEPS}
        log(f"{name}: scheduled-sampling marks scaled to the budget: {sampling}")
    log(f"{name}: compile/first step {compile_s:.1f}s, {1e3 * step_s:.1f} ms/step, "
        f"{left:.0f}s left -> {total_steps} steps ({total_steps / steps_per_epoch:.2f} epochs of {per_epoch})")
    parts_names = loss_fn.parts
    history = torch.zeros(total_steps, len(parts_names), device=device)
    lrs = np.zeros(total_steps)
    epochs: list[dict[str, Any]] = []
    it = 0
    epoch = 0
    t_train = time.perf_counter()
    stopped = "schedule finished"
    while it < total_steps:
        t_epoch = time.perf_counter()
        clips = gen.clips(np.random.default_rng([args.seed, epoch]), per_epoch)
        perm = torch.randperm(per_epoch, device=device)
        first = it
        for b in range(steps_per_epoch):
            if it >= total_steps:
                break
            x, y = as_batch(clips[perm[b * batch:(b + 1) * batch]])
            parts = step(x, y, it)
            history[it, :parts.numel()] = parts.float()
            lrs[it] = scheduler.get_last_lr()[0]
            if it + 1 < total_steps:
                scheduler.step()
            it += 1
        mean_loss = float(history[first:it, 0].mean())  # one host sync per epoch
        if not math.isfinite(mean_loss):
            stopped = f"loss became {mean_loss} in epoch {epoch}"
            log(stopped)
            break
        sync(device)
        epoch_s = time.perf_counter() - t_epoch
        val = evaluate(model, val_clips, device, 250, bf16)
        rec = {"epoch": epoch, "steps": it - first, "seconds": epoch_s, "train_loss": mean_loss,
               "val_mse": val["mse"], "val_ssim": val["ssim"], "lr_end": float(lrs[it - 1]),
               "elapsed_s": time.perf_counter() - t_start}
        epochs.append(rec)
        log(f"{name} epoch {epoch}: {it - first} steps in {epoch_s:.1f}s "
            f"({(it - first) * batch / epoch_s:.0f} samples/s), loss {mean_loss:.5f}, "
            f"val MSE {val['mse']:.2f}, SSIM {val['ssim']:.4f}")
        epoch += 1
        if time.perf_counter() - t_start > budget_s * 1.08 and it < total_steps:
            stopped = f"hard time limit hit at step {it} of {total_steps}"
            log(stopped)
            break
    train_s = time.perf_counter() - t_train
    hist = history[:it].cpu().numpy()
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "lr", *parts_names])
        for i in range(it):
            w.writerow([i + 1, i // steps_per_epoch, f"{lrs[i]:.6g}", *[f"{v:.6g}" for v in hist[i]]])
    with epochs_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(epochs[0]) if epochs else ["epoch"])
        w.writeheader()
        for rec in epochs:
            w.writerow(rec)
    # 3. evaluate on the held-back test clips (bf16, as deployed) and on a slice in fp32
    eval_batch = 500 if not smoke else 16
    test = evaluate(model, test_clips, device, eval_batch, bf16)
    n32 = min(len(test_clips), 64 if smoke else 1000)
    test_fp32 = evaluate(model, test_clips[:n32], device, eval_batch, False)
    test_bf16_slice = evaluate(model, test_clips[:n32], device, eval_batch, bf16)
    samples = it * batch
    return {
        "model": name,
        "config": getattr(model, "config", {}),
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch, "lr_max": settings["lr"], "optimizer": "Adam (fused)", "schedule": "OneCycleLR",
        "channels_last": bool(args.channels_last), "compiled": use_compile, "bf16_autocast": bf16,
        "budget_minutes": minutes, "compile_or_first_step_s": compile_s, "probe_step_ms": 1e3 * step_s,
        "total_steps": total_steps, "steps_done": it, "scheduled_sampling": sampling, "epochs_equivalent": it / steps_per_epoch,
        "clips_per_epoch": per_epoch, "stopped": stopped,
        "train_seconds": train_s, "train_samples_per_s": samples / train_s if train_s else None,
        "mean_epoch_seconds_full": (float(np.mean([e["seconds"] for e in epochs if e["steps"] == steps_per_epoch]))
                                    if any(e["steps"] == steps_per_epoch for e in epochs) else None),
        "wall_seconds": time.perf_counter() - t_start,
        "test": test,
        "test_fp32_slice": {k: test_fp32[k] for k in ("mse", "mae", "ssim", "psnr", "clips")},
        "test_bf16_same_slice": {k: test_bf16_slice[k] for k in ("mse", "mae", "ssim", "psnr", "clips")},
        "epochs": epochs,
        "curve_csv": csv_path.name,
        "epochs_csv": epochs_path.name,
    }


# ----------------------------------------------------------------------------- report
def env_info(device: torch.device) -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "device": str(device), "host": platform.node(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update({"gpu": p.name, "sm_count": p.multi_processor_count,
                     "gpu_memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(), "capability": f"{p.major}.{p.minor}"})
    return info


def _fmt(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def render_markdown(res: dict[str, Any]) -> str:
    lines = ["# GPU Moving-MNIST benchmark (issues 5 and 10)", ""]
    env = res.get("env", {})
    lines += [f"Device: {env.get('gpu', env.get('device'))}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
              f"Python {env.get('python')}.", ""]
    if res.get("commands"):
        lines += ["Commands:", ""] + [f"    {c}" for c in res["commands"]] + [""]
    peak = res.get("peak_bf16")
    if peak:
        lines += [f"Peak bf16 matmul: **{peak['peak_tflops']:.0f} TFLOP/s** "
                  f"({', '.join(f'{k}³: {v:.0f}' for k, v in peak['tflops_by_size'].items())}); "
                  f"device-to-device copy {res.get('copy_tb_s', float('nan')):.2f} TB/s.", ""]
    for name, tab in res.get("throughput", {}).items():
        fl = tab["flops_per_sample"]
        lines += [f"## {name} throughput", "",
                  f"{tab['parameters']:,} parameters; FLOPs per sample (torch.utils.flop_counter): "
                  f"inference forward {fl['inference_forward'] / 1e9:.1f} G, training step "
                  f"{fl['train_step'] / 1e9:.1f} G (the counter's own convolution-backward formula, which ignores "
                  f"groups, says {fl.get('train_step_torch_counter', float('nan')) / 1e9:.1f} G).", "",
                  "| kind | variant | batch | ms / step or batch | samples/s | TFLOP/s | fraction of peak bf16 | "
                  "compile / warm-up s |", "|---|---|---|---|---|---|---|---|"]
        for kind in ("train", "inference"):
            for key, r in tab[kind].items():
                if "error" in r:
                    lines.append(f"| {kind} | {key} | | failed: {r['error'][:80]} | | | | |")
                    continue
                ms = r.get("step_ms", r.get("ms_per_batch"))
                lines.append(f"| {kind} | {key} | {r['batch']} | {_fmt(ms, 2)} | {_fmt(r['samples_per_s'], 1)} | "
                             f"{_fmt(r.get('achieved_tflops'), 1)} | {_fmt(r.get('fraction_of_peak_bf16'), 3)} | "
                             f"{_fmt(r.get('compile_s', r.get('warmup_s')), 1)} |")
        lines.append("")
    for name, tr in res.get("training", {}).items():
        pub = PUBLISHED.get(name, {})
        t = tr["test"]
        lines += [f"## {name} training", "",
                  f"Budget {tr['budget_minutes']} min (compile and warm-up included): {tr['steps_done']} steps of "
                  f"batch {tr['batch']} = {tr['epochs_equivalent']:.2f} epochs of {tr['clips_per_epoch']:,} fresh "
                  f"clips; OneCycle to lr {tr['lr_max']} sized to {tr['total_steps']} steps; "
                  f"{_fmt(tr['train_samples_per_s'], 0)} samples/s in training "
                  f"(full epoch {_fmt(tr['mean_epoch_seconds_full'], 1)} s incl. clip generation); "
                  f"compiled: {tr['compiled']}, channels-last: {tr['channels_last']}; stopped: {tr['stopped']}.", "",
                  f"Test: {t['clips']:,} clips (bf16 inference, {t['seconds']:.1f} s).", "",
                  "| | MSE | MAE | SSIM | SSIM (data_range 2) | PSNR |", "|---|---|---|---|---|---|",
                  f"| geostp, this run | {t['mse']:.2f} | {t['mae']:.2f} | {t['ssim']:.4f} | {t['ssim_range2']:.4f} | "
                  f"{t['psnr']:.2f} |"]
        if pub:
            lines.append(f"| published ({pub['source']}) | {pub['mse']} | {pub['mae']} | {pub['ssim']} | | "
                         f"{pub['psnr']} |")
        f32, b16 = tr["test_fp32_slice"], tr["test_bf16_same_slice"]
        lines += ["", f"First {f32['clips']} test clips, fp32 vs bf16 inference: MSE {f32['mse']:.3f} vs "
                      f"{b16['mse']:.3f}, SSIM {f32['ssim']:.5f} vs {b16['ssim']:.5f}.", "",
                  "| epoch | steps | s | train loss | val MSE | val SSIM |", "|---|---|---|---|---|---|"]
        for e in tr["epochs"]:
            lines.append(f"| {e['epoch']} | {e['steps']} | {e['seconds']:.1f} | {e['train_loss']:.5f} | "
                         f"{e['val_mse']:.2f} | {e['val_ssim']:.4f} |")
        lines.append("")
    for key in ("generator_check", "metrics_check"):
        if key in res:
            lines += [f"{key}: `{json.dumps(res[key])}`", ""]
    return "\n".join(lines)


def merge(paths: list[Path], out: Path) -> dict[str, Any]:
    """Combine result files from several runs (later files win per section) and re-render the Markdown."""
    merged: dict[str, Any] = {}
    for p in paths:
        data = json.loads(p.read_text())
        for k, v in data.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict) and k in ("throughput", "training"):
                merged[k].update(v)
            elif k == "commands":
                merged.setdefault(k, [])
                merged[k] += [c for c in v if c not in merged[k]]
            else:
                merged[k] = v
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_mmnist.json").write_text(json.dumps(merged, indent=1))
    (out / "gpu_mmnist.md").write_text(render_markdown(merged))
    return merged


def flops_only(args: argparse.Namespace, out: Path) -> int:
    """Parameters and FLOPs per sample of the full configurations; device-independent counts."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    registry = load_models()
    res: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "env": env_info(device), "models": {},
                           "note": "FLOPs count a multiply-add as 2; train_step counts each convolution gradient as "
                                   "one forward-sized convolution; train_step_torch_counter is torch's raw figure, "
                                   "whose convolution-backward formula ignores groups"}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            torch.manual_seed(0)
            model = build(registry, name, args.smoke).to(device)
            entry = {"config": getattr(model, "config", {}),
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "flops_per_sample": flops_per_sample(model, loss_function(model), device, batch=1)}
        except Exception as exc:  # a model missing from this checkout
            entry = {"error": f"{type(exc).__name__}: {exc}"}
        res["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mmnist_flops.json").write_text(json.dumps(res, indent=1))
    return 0


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist-dir", default=None, help="folder with t10k-images-idx3-ubyte.gz "
                    "(default: $GEOSTP_MNIST_DIR, ../shared/data/mnist, .gpu)")
    ap.add_argument("--fake-digits", action="store_true", help="blob digits instead of MNIST (smoke tests only)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--models", default="tau,predrnn_v2")
    ap.add_argument("--minutes-tau", type=float, default=8.0)
    ap.add_argument("--minutes-predrnn", type=float, default=5.0)
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile everywhere")
    ap.add_argument("--compile-train", default="tau,predrnn_v2",
                    help="models whose training loss is compiled (when compile is on)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--timed-steps", type=int, default=30)
    ap.add_argument("--big-batch", type=int, default=64)
    ap.add_argument("--train-clips", type=int, default=10_000, help="fresh training clips per epoch")
    ap.add_argument("--test-clips", type=int, default=10_000)
    ap.add_argument("--val-clips", type=int, default=500)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA device")
    ap.add_argument("--smoke", action="store_true", help="tiny models and data (seconds; for tests)")
    ap.add_argument("--flops-only", action="store_true",
                    help="count parameters and FLOPs per sample of the full configurations (any device) and stop")
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="only merge these result JSON files into --out and render the Markdown")
    args = ap.parse_args(argv)
    args.compile_train = [m.strip() for m in args.compile_train.split(",") if m.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.merge:
        merge(args.merge, out)
        print(f"merged {len(args.merge)} file(s) into {out / 'gpu_mmnist.json'}")
        return 0
    if args.flops_only:
        return flops_only(args, out)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        print("error: no CUDA device is visible to torch (torch.cuda.is_available() is False). This benchmark "
              "measures the GPU; pass --allow-cpu (with --smoke for a tiny configuration) to run it on the CPU.",
              file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.smoke:
        print("[warn] running the full configuration on the CPU: this will take very long", file=sys.stderr)
    if device.type == "cpu" and args.smoke:
        # one thread: on a shared CI runner OpenMP's spinning threads can make a step 100x slower
        torch.set_num_threads(1)
    if device.type == "cpu" and args.compile and args.smoke:
        args.compile = False  # compiling on a CPU runner costs more than the whole smoke run
    if args.smoke:
        args.train_clips = min(args.train_clips, 16)
        args.test_clips = min(args.test_clips, 16)
        args.val_clips = min(args.val_clips, 8)
        args.max_steps = args.max_steps or 6
    out.mkdir(parents=True, exist_ok=True)
    from geostp.models.allocator import tune_allocator

    tune_allocator()  # what geostp's trainer does when training starts (GEOSTP_NO_MALLOPT=1 opts out)
    t_all = time.perf_counter()
    log_lines: list[str] = []

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t_all:7.1f}s] {msg}"
        print(line, flush=True)
        log_lines.append(line)

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows stay true fp32
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    res: dict[str, Any] = {"schema": SCHEMA, "env": env_info(device), "smoke": bool(args.smoke),
                           "commands": ["python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])],
                           "published": PUBLISHED}
    json_path = out / "gpu_mmnist.json"

    def save() -> None:
        json_path.write_text(json.dumps(res, indent=1))
        (out / "gpu_mmnist.md").write_text(render_markdown(res))

    log(f"env: {res['env']}")
    synthetic, stubbed = load_synthetic()
    res["stubbed_modules"] = stubbed
    registry = load_models()
    # digits
    if args.fake_digits:
        all_digits = fake_digits(10_000 if not args.smoke else 100)
        train_digits, test_digits = all_digits[: len(all_digits) * 7 // 10], all_digits[len(all_digits) * 7 // 10:]
        res["digits"] = "fake blobs (smoke)"
    else:
        candidates = [args.mnist_dir, os.environ.get("GEOSTP_MNIST_DIR"), REPO.parent / "shared" / "data" / "mnist",
                      REPO / ".gpu"]
        mnist_dir = next((Path(c) for c in candidates if c and (Path(c) / "t10k-images-idx3-ubyte.gz").exists()),
                         None)
        if mnist_dir is None:
            print("error: t10k-images-idx3-ubyte.gz not found; pass --mnist-dir (or --fake-digits for a smoke run)",
                  file=sys.stderr)
            return 2
        images = synthetic.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
        train_digits = images[synthetic.MNIST_TRAIN_DIGITS]
        test_digits = images[synthetic.MNIST_TEST_DIGITS]
        res["digits"] = (f"MNIST t10k images: training clips from {synthetic.MNIST_TRAIN_DIGITS}, "
                         f"test clips from {synthetic.MNIST_TEST_DIGITS}")
    # checks that need no model
    res["generator_check"] = check_generator(synthetic, train_digits, device, n=8 if args.smoke else 256)
    log(f"GPU clip generator vs geostp's clip function: {res['generator_check']}")
    if device.type == "cuda" and not args.skip_throughput:
        res["peak_bf16"] = peak_matmul(device, sizes=(2048,) if args.smoke else (4096, 8192, 16384))
        res["copy_tb_s"] = copy_bandwidth(device, gib=0.25 if args.smoke else 2.0)
        log(f"peak bf16 {res['peak_bf16']}, copy {res['copy_tb_s']:.2f} TB/s")
    peak = res.get("peak_bf16", {}).get("peak_tflops")
    save()
    if not args.skip_throughput:
        res["throughput"] = {}
        for name in models:
            try:
                res["throughput"][name] = throughput(registry, name, device, args, peak, log)
            except Exception as exc:
                res["throughput"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{name} throughput FAILED: {type(exc).__name__}: {exc}")
                if args.smoke:
                    raise
            save()
    if not args.throughput_only:
        t0 = time.perf_counter()
        test_np = exact_clips(synthetic, test_digits, stream_seed=2 * args.seed + 1, n=args.test_clips)
        val_np = exact_clips(synthetic, train_digits, stream_seed=2 * (args.seed + 1), n=args.val_clips)
        log(f"test clips: {len(test_np)} (moving_mnist(split='test', seed={args.seed})) and "
            f"{len(val_np)} validation clips from the training digits (seed {args.seed + 1}) in "
            f"{time.perf_counter() - t0:.1f}s")
        test_clips = torch.as_tensor(test_np, device=device)
        val_clips = torch.as_tensor(val_np, device=device)
        # cross-check the device metrics against geostp.metrics on a few clips with a crude forecast
        x, y = as_batch(test_clips[:8])
        crude = (x[:, -1:].expand_as(y) + 0.05 * torch.randn_like(y)).squeeze(2).cpu().numpy()
        res["metrics_check"] = {"max_relative_difference_vs_geostp.metrics":
                                check_metrics(crude, y.squeeze(2).cpu().numpy())}
        log(f"metrics check: {res['metrics_check']}")
        res.setdefault("training", {})
        for name in models:
            minutes = args.minutes_tau if name == "tau" else args.minutes_predrnn
            if args.smoke:
                minutes = 0.05
            try:
                res["training"][name] = train_model(
                    registry, name, device, args, synthetic, train_digits, test_clips, val_clips, minutes, log,
                    out / f"gpu_mmnist_{name}_curve.csv", out / f"gpu_mmnist_{name}_epochs.csv")
                t = res["training"][name]["test"]
                log(f"{name} test: MSE {t['mse']:.2f}, MAE {t['mae']:.2f}, SSIM {t['ssim']:.4f}, "
                    f"PSNR {t['psnr']:.2f} over {t['clips']} clips")
            except Exception as exc:
                res["training"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{name} training FAILED: {type(exc).__name__}: {exc}")
                if args.smoke:
                    raise
            torch.cuda.empty_cache() if device.type == "cuda" else None
            save()
    res["total_seconds"] = time.perf_counter() - t_all
    save()
    (out / "gpu_mmnist_log.txt").write_text("\n".join(log_lines) + "\n")
    log(f"wrote {json_path} and {out / 'gpu_mmnist.md'} in {res['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
