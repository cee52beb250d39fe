"""Models: TAU and PredRNN against their papers' structure, losses against numpy, baselines, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import geostp.models as models
from geostp.errors import ConfigError, UnknownNameError
from geostp.models.objectives import differential_divergence, masked_mse, memory_decoupling
from geostp.models.predrnn import SpatioTemporalLSTMCell
from geostp.models.schedules import (
    draw_teacher_forcing,
    reverse_scheduled_sampling,
    scheduled_sampling,
)
from geostp.models.tau import TAUBlock, TemporalAttentionModule

TINY_TAU = dict(input_steps=4, output_steps=4, channels=1, spatial_hidden_channels=8,
                temporal_hidden_channels=16, spatial_blocks=2, temporal_blocks=2)
TINY_PREDRNN = dict(input_steps=4, output_steps=4, channels=1, hidden_channels=8, num_layers=2, patch_size=2)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- TAU


def test_tau_moving_mnist_configuration_matches_the_reference_size_and_flops():
    model = models.get("tau")  # defaults: 10x1x64x64, hid_S 64, hid_T 512, N_S 4, N_T 8
    n = _n_params(model)
    assert abs(n - 44.7e6) / 44.7e6 < 0.01
    assert n == 44_656_001  # OpenSTL's count for the same configuration
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 10, 1, 64, 64))
    macs = counter.get_total_flops() / 2  # torch counts a multiply-accumulate as 2 FLOPs
    assert abs(macs - 16.0e9) / 16.0e9 < 0.02


def test_tau_block_structure_follows_the_paper():
    block = TAUBlock(32)
    assert isinstance(block.norm_attention, torch.nn.BatchNorm2d)
    assert isinstance(block.norm_mlp, torch.nn.BatchNorm2d)
    assert torch.allclose(block.scale_attention.scale, torch.full((32,), 1e-2))
    assert torch.allclose(block.scale_mlp.scale, torch.full((32,), 1e-2))
    assert block.mlp.expand.out_channels == 8 * 32
    assert block.mlp.depthwise.groups == 8 * 32 and block.mlp.depthwise.kernel_size == (3, 3)
    tam = block.attention.attention
    assert tam.depthwise.kernel_size == (5, 5) and tam.depthwise.groups == 32
    assert tam.depthwise_dilated.kernel_size == (7, 7) and tam.depthwise_dilated.dilation == (3, 3)
    assert tam.pointwise.kernel_size == (1, 1)


def test_temporal_attention_is_static_times_dynamic_times_input():
    torch.manual_seed(0)
    tam = TemporalAttentionModule(16)
    x = torch.randn(2, 16, 32, 32)
    static = tam.pointwise(tam.depthwise_dilated(tam.depthwise(x)))
    dynamic = tam.excitation(x.mean(dim=(2, 3)))
    assert torch.allclose(tam(x), static * dynamic[:, :, None, None] * x, atol=1e-6)
    # the static branch sees 5 + (7 - 1) * 3 = 23 pixels across (the 21-pixel kernel it decomposes, and the
    # 5x5 local part's overhang): measure it from the gradient of one output pixel
    x = torch.randn(1, 16, 64, 64, requires_grad=True)
    static = tam.pointwise(tam.depthwise_dilated(tam.depthwise(x)))
    static[0, :, 32, 32].sum().backward()
    cols = (x.grad[0].abs().sum(dim=(0, 1)) > 0).nonzero().flatten()
    assert cols.max() - cols.min() + 1 == 23
    # the dynamic branch depends on the whole frame: a change far away changes the gate
    a = torch.zeros(1, 16, 32, 32)
    b = a.clone()
    b[..., 0, 0] = 5.0
    assert not torch.allclose(tam.excitation(a.mean(dim=(2, 3))), tam.excitation(b.mean(dim=(2, 3))))


def test_tau_rolls_out_any_number_of_steps_by_feeding_back():
    torch.manual_seed(0)
    model = models.get("tau", **TINY_TAU).eval()
    x = torch.randn(2, 4, 1, 16, 16)
    with torch.no_grad():
        short = model(x)
        long = model(x, 11)
        again = model(torch.cat([x, short], dim=1)[:, -4:], 4)
    assert short.shape == (2, 4, 1, 16, 16)
    assert long.shape == (2, 11, 1, 16, 16)
    assert torch.allclose(long[:, :4], short, atol=1e-6)
    # frames 5..8 are the model applied to its own first block
    assert torch.allclose(long[:, 4:8], again, atol=1e-5)
    assert torch.isfinite(long).all()


def test_tau_trains_on_a_fixed_batch():
    torch.manual_seed(0)
    model = models.get("tau", **TINY_TAU)
    x = torch.rand(4, 4, 1, 16, 16)
    y = torch.roll(x, shifts=1, dims=-1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, parts = model.training_loss(x, y)
    assert set(parts) == {"mse", "ddr", "loss"}
    assert parts["loss"] == pytest.approx(parts["mse"] + 0.1 * parts["ddr"], rel=1e-5)
    for _ in range(40):
        opt.zero_grad()
        loss, _ = model.training_loss(x, y)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * float(first.detach())


# --------------------------------------------------------------------------- losses against numpy


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_differential_divergence_is_the_kl_of_softmaxed_frame_differences():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(2, 5, 1, 6, 7)).astype(np.float64)
    true = rng.normal(size=(2, 5, 1, 6, 7)).astype(np.float64)
    tau = 0.1
    total = 0.0
    for b in range(2):
        for t in range(4):
            p = _softmax(((pred[b, t + 1] - pred[b, t]) / tau).ravel())
            q = _softmax(((true[b, t + 1] - true[b, t]) / tau).ravel())
            total += float(np.sum(p * (np.log(p) - np.log(q))))
    expected = total / (2 * 4 * 6 * 7)  # divided by the number of difference pixels, as the authors' mean
    got = differential_divergence(torch.from_numpy(pred), torch.from_numpy(true), tau)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    assert float(differential_divergence(torch.from_numpy(true), torch.from_numpy(true), tau)) == pytest.approx(0, abs=1e-12)


def test_differential_divergence_with_a_mask_ignores_masked_pixels():
    torch.manual_seed(0)
    pred = torch.randn(1, 3, 1, 4, 4, dtype=torch.float64)
    true = pred.clone()
    mask = torch.ones_like(pred, dtype=torch.bool)
    true[..., 0, :] += 10 * torch.randn(1, 3, 1, 4, dtype=torch.float64)  # row 0 wrong everywhere
    mask[..., 0, :] = False
    assert float(differential_divergence(pred, true, 0.1, mask)) == pytest.approx(0, abs=1e-12)
    assert float(differential_divergence(pred, true, 0.1)) > 0.1
    assert float(masked_mse(pred, true, mask)) == 0.0
    assert float(masked_mse(pred, true)) > 1.0


def test_memory_decoupling_is_the_mean_absolute_channel_cosine():
    rng = np.random.default_rng(2)
    c = rng.normal(size=(3, 2, 5, 4, 4))
    m = rng.normal(size=(3, 2, 5, 4, 4))
    fc, fm = c.reshape(3, 2, 5, -1), m.reshape(3, 2, 5, -1)
    cos = (fc * fm).sum(-1) / (np.linalg.norm(fc, axis=-1) * np.linalg.norm(fm, axis=-1))
    got = memory_decoupling(torch.from_numpy(c), torch.from_numpy(m))
    assert float(got) == pytest.approx(float(np.abs(cos).mean()), rel=1e-9)
    same = torch.from_numpy(c)
    assert float(memory_decoupling(same, same)) == pytest.approx(1.0)
    assert float(memory_decoupling(same, -same)) == pytest.approx(1.0)


# --------------------------------------------------------------------------- schedules


def test_reverse_scheduled_sampling_follows_the_tpami_schedule():
    assert reverse_scheduled_sampling(0) == (0.5, 0.5)
    assert reverse_scheduled_sampling(24_999) == (0.5, 0.5)
    enc, dec = reverse_scheduled_sampling(30_000)
    assert enc == pytest.approx(1 - 0.5 * math.exp(-1))
    assert dec == pytest.approx(0.4)
    assert reverse_scheduled_sampling(50_000) == (1.0, 0.0)
    encs = [reverse_scheduled_sampling(i)[0] for i in range(25_000, 50_001, 500)]
    decs = [reverse_scheduled_sampling(i)[1] for i in range(25_000, 50_001, 500)]
    assert all(a <= b for a, b in zip(encs, encs[1:], strict=False)) and all(a >= b for a, b in zip(decs, decs[1:], strict=False))
    assert scheduled_sampling(0) == (1.0, 1.0)
    assert scheduled_sampling(25_000) == (1.0, 0.5)
    assert scheduled_sampling(80_000) == (1.0, 0.0)
    with pytest.raises(ConfigError, match="start_iteration"):
        reverse_scheduled_sampling(0, 10, 5)


def test_teacher_forcing_draws_have_the_scheduled_frequencies():
    g = torch.Generator().manual_seed(0)
    truth = draw_teacher_forcing(4000, 9, 9, 0.8, 0.3, generator=g)
    assert truth.shape == (4000, 18) and truth.dtype == torch.bool
    assert float(truth[:, :9].float().mean()) == pytest.approx(0.8, abs=0.01)
    assert float(truth[:, 9:].float().mean()) == pytest.approx(0.3, abs=0.01)
    assert draw_teacher_forcing(3, 2, 2, 1.0, 0.0).tolist() == [[True, True, False, False]] * 3


# --------------------------------------------------------------------------- PredRNN


def test_predrnn_v2_moving_mnist_configuration_matches_the_reference_size():
    model = models.get("predrnn_v2")  # 4 layers of 128, 5x5, patch 4
    assert _n_params(model) == 23_855_104  # OpenSTL's PredRNN-V2 count
    assert model.decouple_weight == 0.1 and model.reverse_scheduled_sampling
    v1 = models.get("predrnn")
    assert v1.decouple_weight == 0.0 and not v1.reverse_scheduled_sampling


def test_st_lstm_cell_zero_state_shortcut_equals_explicit_zeros():
    torch.manual_seed(0)
    cell = SpatioTemporalLSTMCell(4, 6)
    x = torch.randn(2, 4, 8, 8)
    zeros = torch.zeros(2, 6, 8, 8)
    a = cell(x, None, None, None)
    b = cell(x, zeros, zeros, zeros)
    for u, v in zip(a, b, strict=True):
        assert torch.allclose(u, v, atol=1e-6)
    # forget bias 1: with all weights zero the forget gate is sigmoid(1) and C decays by it, no input
    for p in cell.parameters():
        torch.nn.init.zeros_(p)
    c = torch.ones(2, 6, 8, 8)
    with torch.no_grad():
        _, c_new, m_new, dc, _ = cell(x, zeros, c, c)
    assert torch.allclose(c_new, torch.sigmoid(torch.tensor(1.0)) * c)
    assert torch.allclose(m_new, torch.sigmoid(torch.tensor(1.0)) * c)
    assert float(dc.abs().max()) == 0.0


def test_predrnn_memory_flows_zigzag_through_layers_and_time():
    torch.manual_seed(0)
    model = models.get("predrnn_v2", **TINY_PREDRNN).eval()
    calls: list[tuple[int, torch.Tensor | None, torch.Tensor]] = []
    hooks = [
        cell.register_forward_hook(lambda mod, args, out, layer=layer: calls.append((layer, args[3], out[2])))
        for layer, cell in enumerate(model.cells)
    ]
    with torch.no_grad():
        model(torch.randn(1, 4, 1, 8, 8), 2)
    for h in hooks:
        h.remove()
    layers = model.num_layers
    assert [layer for layer, _, _ in calls] == list(range(layers)) * (len(calls) // layers)
    assert calls[0][1] is None  # M starts at zero
    for (_, _, m_out), (_, m_in, _) in zip(calls, calls[1:], strict=False):
        assert m_in is m_out  # each cell reads the M the previous cell in the zigzag wrote: up, then top -> bottom


def test_predrnn_rolls_out_any_number_of_steps_causally():
    torch.manual_seed(0)
    model = models.get("predrnn", **TINY_PREDRNN).eval()
    x = torch.randn(2, 4, 1, 8, 8)
    with torch.no_grad():
        five = model(x, 5)
        forty = model(x, 40)
    assert five.shape == (2, 5, 1, 8, 8) and forty.shape == (2, 40, 1, 8, 8)
    assert torch.allclose(forty[:, :5], five, atol=1e-6)
    assert torch.isfinite(forty).all()


def test_predrnn_v2_loss_has_the_decoupling_term_and_trains():
    torch.manual_seed(0)
    model = models.get("predrnn_v2", **TINY_PREDRNN)
    model.sampling_generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 4, 1, 8, 8)
    y = torch.roll(x, shifts=1, dims=-1)
    loss, parts = model.training_loss(x, y, iteration=60_000)
    assert parts["teacher_forcing_encoder"] == 1.0 and parts["teacher_forcing_decoder"] == 0.0
    assert 0.0 < parts["decouple"] <= 1.0
    assert parts["loss"] == pytest.approx(parts["mse"] + 0.1 * parts["decouple"], rel=1e-5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(loss.detach())
    for i in range(40):
        opt.zero_grad()
        loss, parts = model.training_loss(x, y, iteration=60_000 + i)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


# --------------------------------------------------------------------------- baselines


def test_persistence_repeats_the_last_frame():
    model = models.get("persistence", input_steps=3, output_steps=6, channels=2)
    x = torch.randn(2, 3, 2, 5, 5)
    out = model(x)
    assert out.shape == (2, 6, 2, 5, 5)
    assert torch.equal(out, x[:, -1:].expand(-1, 6, -1, -1, -1))
    assert not model.trainable and _n_params(model) == 0


def test_optical_flow_moves_a_blob_along_its_motion():
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.stack([np.exp(-((yy - 32) ** 2 + (xx - 16 - 2 * t) ** 2) / 30.0) for t in range(3)])
    x = torch.from_numpy(frames.astype(np.float32))[None, :, None]
    model = models.get("optical_flow", input_steps=3, output_steps=5)
    out = model(x)[0, :, 0].numpy()

    def centre_x(f):
        return float((f * xx).sum() / f.sum())

    shifts = np.diff([centre_x(frames[-1])] + [centre_x(f) for f in out])
    assert np.allclose(shifts, 2.0, atol=0.5)  # 2 pixels to the east per step, as observed


# --------------------------------------------------------------------------- interface and errors


@pytest.mark.parametrize("name, kwargs", [("tau", TINY_TAU), ("predrnn_v2", TINY_PREDRNN)])
def test_config_rebuilds_the_same_model(name, kwargs):
    model = models.get(name, **kwargs)
    again = models.get(model.name, **model.config)
    again.load_state_dict(model.state_dict())
    x = torch.randn(1, 4, 1, 8, 8) if name == "predrnn_v2" else torch.randn(1, 4, 1, 16, 16)
    assert torch.equal(model.predict(x), again.predict(x))


def test_bad_model_requests_get_clear_errors():
    with pytest.raises(UnknownNameError, match="tau"):
        models.get("tua")
    with pytest.raises(ConfigError, match="hidden_size"):
        models.get("predrnn", hidden_size=3)
    with pytest.raises(ConfigError, match="even"):
        models.get("tau", spatial_hidden_channels=7)
    tau = models.get("tau", **TINY_TAU)
    with pytest.raises(ConfigError, match="input_steps=4"):
        tau(torch.zeros(1, 3, 1, 16, 16))
    with pytest.raises(ConfigError, match="multiples of 2"):
        tau(torch.zeros(1, 4, 1, 15, 16))
    with pytest.raises(ConfigError, match="steps"):
        tau(torch.zeros(1, 4, 1, 16, 16), 0)
    with pytest.raises(ConfigError, match="output_steps"):
        tau.training_loss(torch.zeros(1, 4, 1, 16, 16), torch.zeros(1, 3, 1, 16, 16))
    with pytest.raises(ConfigError, match="input_steps >= 2"):
        models.get("optical_flow", input_steps=1)


# --------------------------------------------------------------------------- every registered model

EVERY_MODEL = models.names()
SHAPE = dict(input_steps=4, output_steps=3, channels=1)


def _quick(name: str, **overrides):
    """Every registered model builds from its quick configuration and the shape arguments."""
    torch.manual_seed(0)
    cls = models.model_class(name)
    return models.get(name, **cls.quick_config(**SHAPE, **overrides))


def _inputs(model, batch: int = 2, size: int = 16) -> torch.Tensor:
    assert size % model.spatial_multiple == 0
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, model.input_steps, model.channels, size, size, generator=g)


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_model_forecasts_the_right_shape_without_nan(name):
    model = _quick(name).eval()
    x = _inputs(model)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3, 1, 16, 16) and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert model.predict(x).shape == out.shape


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_model_rolls_out_any_number_of_steps(name):
    model = _quick(name).eval()
    x = _inputs(model)
    with torch.no_grad():
        default = model(x)
        one = model(x, 1)
        longer = model(x, 8)  # more than output_steps and than input_steps: predictions are fed back
    assert one.shape == (2, 1, 1, 16, 16) and longer.shape == (2, 8, 1, 16, 16)
    assert torch.isfinite(longer).all()
    # a longer forecast starts with the shorter one: the extra steps only add lead times
    assert torch.allclose(longer[:, :3], default, atol=1e-5)
    assert torch.allclose(one, default[:, :1], atol=1e-5)


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_one_optimisation_step_lowers_the_loss(name):
    model = _quick(name)
    x = _inputs(model, batch=4)
    y = torch.roll(torch.cat([x, x], dim=1)[:, 1:1 + model.output_steps], shifts=1, dims=-1)

    def loss() -> torch.Tensor:
        torch.manual_seed(2)  # the same teacher-forcing draws both times
        value, parts = model.training_loss(x, y)
        assert math.isfinite(parts["loss"]) and parts["loss"] == pytest.approx(float(value.detach()), rel=1e-5)
        return value

    if not model.trainable:
        assert not list(model.parameters()) and not loss().requires_grad
        return
    before = loss()
    before.backward()
    # a plain gradient step of a fixed small length: first order, so it must go downhill (Adam's first step
    # moves every weight by the learning rate whatever its gradient, which need not)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert float(norm) > 0
    torch.optim.SGD(model.parameters(), lr=1e-2 / float(norm)).step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_model_survives_a_checkpoint_round_trip(name, tmp_path):
    from geostp.forecast import load_forecaster
    from geostp.train.checkpoint import save_checkpoint

    model = _quick(name)
    x = _inputs(model)
    with torch.no_grad():
        model.train()(x)  # moves BatchNorm running statistics away from their initial values
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / f"{name}.pt", {"model_name": model.name, "model_config": model.config,
                                                     "state_dict": model.state_dict(),
                                                     "metadata": {"variables": ["rain"]}})
    loaded = load_forecaster(path).model
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.typed_config == model.typed_config
    assert torch.equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_capabilities_are_declared_by_the_model_class(name):
    cls = models.model_class(name)
    quick = cls.quick_config()
    assert isinstance(quick, dict) and cls.quick_config(**SHAPE) == {**quick, **SHAPE}
    model = _quick(name)
    for flag in ("trainable", "recurrent", "takes_schedule_marks", "needs_motion"):
        assert isinstance(getattr(model, flag), bool), flag  # a wrapper may answer for the model it wraps
    if model.trainable:
        layer = model.output_layer()
        assert isinstance(layer, torch.nn.Conv2d) and any(layer is m for m in model.modules())
    else:
        assert quick == {}
        with pytest.raises(ConfigError, match="no learned output layer"):
            model.output_layer()
    with pytest.raises(ConfigError, match="unknown argument"):
        cls.quick_config(no_such_argument=1)


# --------------------------------------------------------------------------- typed configuration


def test_quick_configs_are_the_small_cpu_settings():
    assert models.TAU.quick_config() == {"spatial_hidden_channels": 16, "temporal_hidden_channels": 64,
                                         "spatial_blocks": 2, "temporal_blocks": 2}
    for cls in (models.PredRNN, models.PredRNNv2):
        assert cls.quick_config() == {"hidden_channels": 32, "num_layers": 2, "patch_size": 4}
    assert models.Persistence.quick_config() == {} == models.OpticalFlow.quick_config()
    assert models.TAU.quick_config(temporal_blocks=3)["temporal_blocks"] == 3


def test_capabilities_of_the_learned_models():
    assert models.PredRNN.recurrent and models.PredRNNv2.recurrent and not models.TAU.recurrent
    assert models.PredRNNv2.takes_schedule_marks and not models.TAU.takes_schedule_marks
    assert not models.Persistence.takes_schedule_marks and not models.Persistence.trainable


@pytest.mark.parametrize("name, kwargs", [("tau", TINY_TAU), ("predrnn", TINY_PREDRNN)])
def test_a_zeroed_output_layer_forecasts_zeros(name, kwargs):
    model = models.get(name, **kwargs).eval()
    layer = model.output_layer()
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    size = 16 if name == "tau" else 8
    assert torch.count_nonzero(model(torch.rand(1, 4, 1, size, size), 6)) == 0


def test_model_configs_are_frozen_validated_dataclasses():
    import dataclasses
    import inspect

    from geostp.models.predrnn import PredRNNConfig, PredRNNv2Config
    from geostp.models.tau import TAUConfig

    cfg = TAUConfig(**TINY_TAU)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.spatial_blocks = 4
    assert cfg.replace(output_steps=6).output_steps == 6 and cfg.output_steps == 4
    with pytest.raises(ConfigError, match="even"):
        cfg.replace(spatial_hidden_channels=7)
    with pytest.raises(ConfigError, match="hidden_size"):
        TAUConfig.from_arguments(hidden_size=3)
    assert TAUConfig(mlp_ratio=4).mlp_ratio == 4.0 and isinstance(TAUConfig(mlp_ratio=4).mlp_ratio, float)
    # a model is built from a config or from its fields, and its keyword signature is the config's
    model = models.TAU(cfg, output_steps=6)
    assert model.typed_config == cfg.replace(output_steps=6) and model.config == model.typed_config.to_dict()
    assert models.TAU(**TINY_TAU).config == models.TAU(cfg).config == cfg.to_dict()
    params = inspect.signature(models.TAU).parameters
    assert [p for p in params if p != "config"] == list(TAUConfig.names())
    assert params["mlp_ratio"].default == 8.0 and params["mlp_ratio"].annotation is float
    import typing

    assert typing.get_type_hints(models.TAU.__init__)["spatial_blocks"] is int  # what recipe validation reads
    with pytest.raises(ConfigError, match="expected a TAUConfig"):
        models.TAU(PredRNNConfig())
    # V1 and V2 differ only by their defaults; None still means "the version's default"
    assert PredRNNConfig().decouple_weight == 0.0 and PredRNNv2Config().decouple_weight == 0.1
    assert PredRNNv2Config(decouple_weight=None, reverse_scheduled_sampling=None) == PredRNNv2Config()
    assert models.get("predrnn_v2").typed_config == PredRNNv2Config()


def test_a_config_written_by_an_earlier_release_still_builds_the_model():
    # model_config of a TAU checkpoint written before the typed configs (keys and JSON types as stored then)
    old = {"input_steps": 4, "output_steps": 4, "channels": 1, "spatial_hidden_channels": 8,
           "temporal_hidden_channels": 16, "spatial_blocks": 2, "temporal_blocks": 2, "encoder_kernel": 3,
           "decoder_kernel": 3, "mlp_ratio": 8.0, "attention_kernel": 21, "attention_dilation": 3, "drop_path": 0.0,
           "dropout": 0.0, "layer_scale_init": 0.01, "ddr_weight": 0.1, "ddr_temperature": 0.1}
    assert models.get("tau", **old).config == old
    old_v2 = {"input_steps": 10, "output_steps": 10, "channels": 1, "hidden_channels": 128, "num_layers": 4,
              "kernel_size": 5, "patch_size": 4, "decouple_weight": 0.1, "reverse_scheduled_sampling": True,
              "sampling_start_iteration": 25000, "sampling_end_iteration": 50000, "sampling_exp_scale": 5000.0}
    assert models.get("predrnn_v2", **old_v2).config == old_v2


def test_schedule_marks_are_placed_through_the_config():
    from geostp.models.schedules import fit_schedule_marks, schedule_marks_for, takes_schedule_marks

    model = models.get("predrnn_v2", **TINY_PREDRNN)
    marks = schedule_marks_for(1000)
    model.set_schedule_marks(**marks)
    assert {k: model.config[k] for k in marks} == marks and model.sampling_end_iteration == marks[
        "sampling_end_iteration"]
    with pytest.raises(AttributeError):
        model.sampling_end_iteration = 5  # read-only: the config (and so the checkpoint) says what ran
    with pytest.raises(ConfigError, match="sampling_end_iteration"):
        model.set_schedule_marks(sampling_end_iteration=0)
    assert takes_schedule_marks(model, {}) and not takes_schedule_marks(model, {"sampling_exp_scale": 3.0})
    assert not takes_schedule_marks(models.get("tau", **TINY_TAU), {})
    assert fit_schedule_marks(models.PredRNN, {"num_layers": 1}, 1000) == {"num_layers": 1, **marks}
