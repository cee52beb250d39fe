"""The GPU benchmark script (benchmarks/gpu_mmnist.py) on the CPU: smoke run, refusal without CUDA, its parts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_mmnist.py"


def _script_module():
    spec = importlib.util.spec_from_file_location("gpu_mmnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, even on a GPU machine
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def test_refuses_to_fall_back_to_cpu(tmp_path):
    proc = _run("--out", str(tmp_path), "--fake-digits")
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--allow-cpu" in proc.stderr
    assert not (tmp_path / "gpu_mmnist.json").exists()


def test_smoke_run_writes_results(tmp_path):
    models = "tau,predrnn_v2" if (REPO / "geostp" / "models" / "predrnn.py").exists() else "tau"
    proc = _run("--allow-cpu", "--smoke", "--fake-digits", "--models", models, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_mmnist.json").read_text())
    assert res["smoke"] is True and res["env"]["device"] == "cpu"
    assert res["generator_check"]["clips_differing"] == 0
    rel = res["metrics_check"]["max_relative_difference_vs_geostp.metrics"]
    assert all(v < 1e-9 for v in rel.values()), rel
    for name in models.split(","):
        tab = res["throughput"][name]
        assert tab["parameters"] > 0
        assert tab["flops_per_sample"]["train_step"] > tab["flops_per_sample"]["inference_forward"] > 0
        assert tab["train"]["bf16"]["samples_per_s"] > 0
        assert tab["inference"]["bf16_batch2"]["samples_per_s"] > 0
        tr = res["training"][name]
        assert "error" not in tr, tr
        assert tr["steps_done"] >= 2
        for key in ("mse", "mae", "ssim", "psnr"):
            assert np.isfinite(tr["test"][key])
        assert 0 < tr["test"]["ssim"] <= 1
        assert len(tr["test"]["per_lead_time"]["mse"]) == 10
        curve = (tmp_path / tr["curve_csv"]).read_text().splitlines()
        assert curve[0].startswith("step,epoch,lr,loss") and len(curve) == tr["steps_done"] + 1
    md = (tmp_path / "gpu_mmnist.md").read_text()
    assert "tau throughput" in md and "tau training" in md


def test_merge_combines_sections(tmp_path):
    mod = _script_module()
    a = {"env": {"gpu": "X"}, "throughput": {"tau": {"parameters": 1, "flops_per_sample": {
        "inference_forward": 1e9, "train_step": 3e9}, "train": {}, "inference": {}}}, "commands": ["one"]}
    b = {"env": {"gpu": "X"}, "throughput": {"predrnn_v2": {"parameters": 2, "flops_per_sample": {
        "inference_forward": 2e9, "train_step": 6e9}, "train": {}, "inference": {}}}, "commands": ["two"]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    merged = mod.merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "out")
    assert set(merged["throughput"]) == {"tau", "predrnn_v2"} and merged["commands"] == ["one", "two"]
    assert "predrnn_v2 throughput" in (tmp_path / "out" / "gpu_mmnist.md").read_text()


def test_device_generator_matches_geostp_clip_function():
    mod = _script_module()
    synthetic, _ = mod.load_synthetic()
    digits = mod.fake_digits(50, seed=1)
    check = mod.check_generator(synthetic, digits, torch.device("cpu"), n=24)
    assert check == {"clips": 24, "clips_differing": 0, "max_abs_diff": 0.0}


def test_exact_clips_are_moving_mnist_stream():
    mod = _script_module()
    synthetic, _ = mod.load_synthetic()
    digits = mod.fake_digits(40, seed=2)
    clips = mod.exact_clips(synthetic, digits, stream_seed=1, n=3)
    ref = synthetic.moving_mnist(3, split="test", seed=0, digits=digits)["intensity"].values
    np.testing.assert_array_equal(clips.astype(np.float32) / 255.0, ref)


def test_conv_backward_flops_respect_groups():
    """torch's counter treats a depthwise conv's weight gradient as dense; the script's formula does not."""
    mod = _script_module()
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    forward = 2 * 16 * 16 * 9 * 64 * 2  # 2 FLOPs per multiply-accumulate, batch 2
    mapping = {torch.ops.aten.convolution_backward: mod._conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward


def _registry():
    mod = _script_module()
    return mod, mod.load_models()


def test_tau_loss_equals_training_loss():
    mod, registry = _registry()
    torch.manual_seed(0)
    model = mod.build(registry, "tau", smoke=True)
    x, y = torch.rand(2, 10, 1, 64, 64), torch.rand(2, 10, 1, 64, 64)
    loss, parts = mod.loss_function(model)(x, y, 0)
    ref, ref_parts = model.training_loss(x, y)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(parts, torch.tensor([ref_parts["loss"], ref_parts["mse"], ref_parts["ddr"]]))


@pytest.mark.skipif(not (REPO / "geostp" / "models" / "predrnn.py").exists(), reason="no PredRNN in this checkout")
@pytest.mark.parametrize("iteration", [0, 3, 10])
def test_predrnn_loss_equals_training_loss(iteration):
    """Same teacher-forcing draws: the device-side select gives geostp's loss (schedule before, during, after)."""
    mod, registry = _registry()
    torch.manual_seed(0)
    cls = registry.get("predrnn_v2")
    model = cls(hidden_channels=8, num_layers=2, sampling_start_iteration=2, sampling_end_iteration=6,
                sampling_exp_scale=2.0)
    x, y = torch.rand(3, 10, 1, 16, 16), torch.rand(3, 10, 1, 16, 16)
    model.sampling_generator = torch.Generator().manual_seed(7)
    ref, ref_parts = model.training_loss(x, y, iteration=iteration)
    fn = mod.loss_function(model)
    loss, parts = fn.core(*fn.prepare(x, y, iteration, generator=torch.Generator().manual_seed(7)))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(parts, torch.tensor([ref_parts["loss"], ref_parts["mse"], ref_parts["decouple"]]))
