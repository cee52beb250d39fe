"""The training loop: learning, budgets, atomic safe checkpoints, and exact resume after a kill."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from geostp.errors import CheckpointError, ConfigError
from geostp.train.checkpoint import load_checkpoint, save_checkpoint
from geostp.train.trainer import Trainer, TrainSettings

TINY_TAU = dict(input_steps=4, output_steps=4, channels=1, spatial_hidden_channels=4,
                temporal_hidden_channels=8, spatial_blocks=2, temporal_blocks=2)

# A deterministic in-memory batch source with the streaming dataset's contract:
# the batch order is a function of (seed, epoch), and set_epoch(e, start_batch=k) skips k batches.
HELPERS = '''
import torch

class Batches:
    def __init__(self, n=12, batch=2, size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        base = torch.rand(n * batch, 1, 1, size, size, generator=g)
        shift = torch.stack([torch.roll(base, k, dims=-1) for k in range(8)], dim=1)[:, :, 0]
        self.frames = shift
        self.n, self.batch, self.seed = n, batch, seed
        self.epoch, self.start = 0, 0
    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch
    def __len__(self):
        return self.n
    def __iter__(self):
        order = torch.randperm(self.n * self.batch, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        for b in range(self.start, self.n):
            idx = order[b * self.batch:(b + 1) * self.batch]
            clip = self.frames[idx]
            yield {"x": clip[:, :4], "y": clip[:, 4:8], "mask_y": torch.ones_like(clip[:, 4:8], dtype=torch.bool)}
'''
exec(HELPERS)
Batches = globals()["Batches"]  # defined by exec(HELPERS), the source the subprocess scripts reuse


def tiny_tau():
    from geostp.models.tau import TAU

    torch.manual_seed(0)
    return TAU(**TINY_TAU)


def test_training_lowers_the_loss_and_validates(tmp_path):
    model = tiny_tau()
    settings = TrainSettings(epochs=2, lr=5e-3, progress=False, checkpoint_every=5)
    trainer = Trainer(model, settings, checkpoint_dir=tmp_path, metadata={"variables": ["x"]})
    result = trainer.fit(Batches(n=8), Batches(n=2, seed=1))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert [e["epoch"] for e in result.epochs] == [0, 1] and "val_mse" in result.epochs[0]
    assert result.stopped == "epochs=2 done"
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["metadata"] == {"variables": ["x"]}
    assert ck["model_name"] == "tau" and ck["model_config"]["spatial_hidden_channels"] == 4
    assert (tmp_path / "best.pt").exists()
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"


def test_iteration_and_time_budgets(tmp_path):
    result = Trainer(tiny_tau(), TrainSettings(epochs=5, max_iterations=3, progress=False)).fit(Batches(n=2))
    assert len(result.history) == 3 and result.stopped == "max_iterations=3 reached"
    assert [h["iteration"] for h in result.history] == [1, 2, 3]
    result = Trainer(tiny_tau(), TrainSettings(epochs=50, max_minutes=0.001, progress=False)).fit(Batches(n=2))
    assert result.stopped.startswith("max_minutes") and len(result.history) < 50 * 2


def test_a_time_budget_that_cuts_the_schedule_short_is_warned_about_once(monkeypatch):
    import warnings

    from geostp.train import trainer
    from geostp.train.trainer import TrainingBudgetWarning

    monkeypatch.setattr(trainer, "_PACE_ITERATIONS", 2)  # judge the pace after iterations 2..4

    class Enough(Exception):
        pass

    def run(settings: TrainSettings) -> None:
        def stop(tr, record):  # the judgement is made at iteration 4; no need to train on
            if record["iteration"] == 6:
                raise Enough

        t = Trainer(tiny_tau(), settings)
        t.on_step = stop
        with pytest.raises(Enough):
            t.fit(Batches(n=10))

    # a million iterations of OneCycle cannot fit in 10 minutes: warned once the pace is measured, once
    with pytest.warns(TrainingBudgetWarning,
                      match=r"stops training near iteration \d+ of the 1000000 .*onecycle.*max_iterations") as rec:
        run(TrainSettings(epochs=100_000, max_minutes=10, progress=False))
    assert len([w for w in rec if w.category is TrainingBudgetWarning]) == 1
    # a budget that the schedule fits, or a constant rate, is not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingBudgetWarning)
        run(TrainSettings(epochs=3, max_minutes=10, progress=False))
        run(TrainSettings(epochs=100_000, max_minutes=10, schedule="constant", progress=False))


def test_early_stopping():
    settings = TrainSettings(epochs=30, lr=1e-9, early_stopping_patience=2, progress=False, schedule="constant")
    result = Trainer(tiny_tau(), settings).fit(Batches(n=2), Batches(n=2, seed=3))
    assert result.stopped.startswith("early stopping") and len(result.epochs) < 30


def test_empty_loader_is_a_clear_error():
    with pytest.raises(ConfigError, match="produced no batch"):
        Trainer(tiny_tau(), TrainSettings(progress=False)).fit(Batches(n=0))


def test_killed_run_resumes_on_the_same_loss_curve(tmp_path):
    """A run SIGKILLed mid-epoch and resumed gives the same per-step losses as an uninterrupted one."""
    script = HELPERS + textwrap.dedent(f"""
        import json, os, signal, sys
        from geostp.models.tau import TAU
        from geostp.train.trainer import Trainer, TrainSettings
        torch.manual_seed(0)
        model = TAU(**{TINY_TAU!r})
        kill_at = int(sys.argv[2])
        def on_step(trainer, record):
            if record["iteration"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up: as a killed job
        settings = TrainSettings(epochs=2, lr=5e-3, checkpoint_every=3, progress=False, schedule="onecycle")
        trainer = Trainer(model, settings, checkpoint_dir=sys.argv[1], on_step=on_step)
        result = trainer.fit(Batches(n=6))
        print(json.dumps([h["loss"] for h in result.history]))
    """)
    path = tmp_path / "run.py"
    path.write_text(script)

    def run(ckdir, kill_at):
        return subprocess.run([sys.executable, str(path), str(ckdir), str(kill_at)], capture_output=True,
                              text=True, timeout=300)

    full = run(tmp_path / "a", -1)
    assert full.returncode == 0, full.stderr[-2000:]
    reference = json.loads(full.stdout.strip().splitlines()[-1])
    killed = run(tmp_path / "b", 8)  # mid-epoch 1, two steps after the checkpoint at step 6
    assert killed.returncode == -9
    assert load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]["iteration"] == 6
    resumed = run(tmp_path / "b", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    curve = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert len(curve) == len(reference) == 12
    assert curve == pytest.approx(reference, rel=1e-5, abs=1e-7)


def test_crafted_checkpoint_with_a_callable_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": "geostp-checkpoint-1", "state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused: it holds objects other than tensors"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a geostp checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_round_trip_and_atomic_write(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "c.pt", {"state_dict": {"w": torch.ones(3)}, "metadata": {"a": [1, 2]}})
    ck = load_checkpoint(p)
    assert ck["metadata"] == {"a": [1, 2]} and torch.equal(ck["state_dict"]["w"], torch.ones(3))

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, {"state_dict": {}})
    assert load_checkpoint(p)["metadata"] == {"a": [1, 2]}, "the old checkpoint is intact"
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]


def test_untrainable_models_are_refused():
    class Fixed(torch.nn.Module):
        trainable = False
        name = "fixed"

    with pytest.raises(ConfigError, match="nothing to train"):
        Trainer(Fixed())


def test_pickle_is_not_needed_for_our_own_checkpoints(tmp_path):
    trainer = Trainer(tiny_tau(), TrainSettings(max_iterations=2, progress=False), checkpoint_dir=tmp_path)
    trainer.fit(Batches(n=2))
    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # would raise if anything needed pickle
    assert raw["format"] == "geostp-checkpoint-1"
    assert isinstance(pickle.dumps(raw), bytes)
    assert Path(tmp_path / "last.pt").stat().st_size > 1000


def test_the_allocator_is_tuned_when_training_starts_not_on_import():
    code = textwrap.dedent("""
        import geostp.models, geostp.models.allocator as allocator
        from geostp.train.trainer import Trainer, TrainSettings
        print(allocator.ALLOCATOR_TUNED)
    """) + HELPERS + textwrap.dedent(f"""
        settings = TrainSettings(max_iterations=1, progress=False)
        Trainer(geostp.models.get("tau", **{TINY_TAU!r}), settings).fit(Batches(n=1))
        print(allocator.ALLOCATOR_TUNED)
    """)
    env = {k: v for k, v in os.environ.items() if k != "GEOSTP_NO_MALLOPT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    on_import, after_fit = out.stdout.split()[-2:]
    assert on_import == "False"  # listing models or loading a checkpoint leaves glibc alone
    import platform

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert after_fit == "True"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**env, "GEOSTP_NO_MALLOPT": "1"})
    assert out.stdout.split()[-2:] == ["False", "False"]  # the opt-out holds


def test_planned_iterations_and_the_deprecated_names():
    import importlib

    settings = TrainSettings(epochs=3, max_iterations=5)
    assert settings.planned_iterations(4) == 5 and TrainSettings(epochs=3).planned_iterations(4) == 12
    with pytest.warns(DeprecationWarning, match="planned_iterations"):
        assert settings.planned_steps(4) == 5
    # the objectives and sampling schedules moved beside the models; the old modules re-export them for a release
    import geostp.models.objectives as objectives
    import geostp.models.schedules as schedules

    for old, new in (("geostp.train.losses", objectives), ("geostp.train.schedules", schedules)):
        with pytest.warns(DeprecationWarning, match=new.__name__):
            alias = importlib.reload(importlib.import_module(old))
        assert all(getattr(alias, name) is getattr(new, name) for name in new.__all__)


def test_the_deprecated_max_steps_still_works_and_max_iterations_is_stored(tmp_path):
    """``max_steps`` (before ``steps`` meant lead times only) is read for a release, with a DeprecationWarning."""
    import warnings

    with pytest.warns(DeprecationWarning, match="max_iterations"):
        old = TrainSettings(epochs=5, max_steps=3, progress=False)
    assert old.max_iterations == 3 and old == TrainSettings(epochs=5, max_iterations=3, progress=False)
    assert "max_steps" not in old.model_dump() and old.model_dump()["max_iterations"] == 3
    with pytest.warns(DeprecationWarning, match="max_iterations"):
        assert old.max_steps == 3  # the attribute too
    with pytest.raises(ValueError, match="give only max_iterations"):
        TrainSettings(max_steps=3, max_iterations=4)
    # the checkpoint stores the new name; the settings of a checkpoint written before the rename still load
    with pytest.warns(DeprecationWarning):
        trainer = Trainer(tiny_tau(), TrainSettings(max_steps=2, progress=False), checkpoint_dir=tmp_path)
    result = trainer.fit(Batches(n=3))
    assert result.stopped == "max_iterations=2 reached"
    state = load_checkpoint(tmp_path / "last.pt")["train_state"]
    assert state["settings"]["max_iterations"] == 2 and "max_steps" not in state["settings"]
    assert [h["iteration"] for h in state["history"]] == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert TrainSettings.model_validate(state["settings"]) == trainer.settings
    stored = {k: v for k, v in state["settings"].items() if k != "max_iterations"}
    with pytest.warns(DeprecationWarning, match="max_iterations"):
        assert TrainSettings.model_validate({**stored, "max_steps": 2}) == trainer.settings
    # a checkpoint written before the rename (history records counted by "step") resumes with "iteration"
    ck = load_checkpoint(tmp_path / "last.pt")
    ck["train_state"]["settings"] = {**stored, "max_steps": 2}
    ck["train_state"]["history"] = [{"step": h["iteration"], **{k: v for k, v in h.items() if k != "iteration"}}
                                    for h in ck["train_state"]["history"]]
    save_checkpoint(tmp_path / "old.pt", ck)
    resumed = Trainer(tiny_tau(), TrainSettings(max_iterations=3, progress=False))
    result = resumed.fit(Batches(n=3), resume=tmp_path / "old.pt")
    assert [h["iteration"] for h in result.history] == [1, 2, 3] and "step" not in result.history[0]
    with pytest.warns(DeprecationWarning, match="skipped_iterations"):
        assert result.skipped_steps == result.skipped_iterations == 0


def test_fit_reads_the_deprecated_max_steps_and_records_iterations():
    """``geostp.fit(max_steps=...)`` still works for a release (DeprecationWarning); metadata says iterations."""
    import importlib

    import geostp
    from geostp.data.synthetic import synthetic_radar

    fit_module = importlib.import_module("geostp.fit")  # the module (``geostp.fit`` is the function)

    cube = synthetic_radar(n_times=24, ny=16, nx=16, seed=1).load()
    small = dict(spatial_hidden_channels=4, temporal_hidden_channels=8, spatial_blocks=2, temporal_blocks=2)
    kwargs = dict(model_args=small, advection=False, patch_size=16, batch_size=2, max_minutes=None, use_store=False,
                  progress=False, device="cpu")
    with pytest.warns(DeprecationWarning, match="max_iterations"):
        fitted = geostp.fit(cube, "tau", max_steps=2, **kwargs)
    # "steps" repeats "iterations" for one release (older readers look for it)
    assert fitted.metadata["iterations"] == fitted.metadata["steps"] == 2
    assert fitted.metadata["stopped"] == "max_iterations=2 reached"
    assert fitted.metadata["skipped_iterations"] == fitted.metadata["skipped_steps"] == 0
    with pytest.raises(ConfigError, match="give only max_iterations"):
        geostp.fit(cube, "tau", max_steps=2, max_iterations=2, **kwargs)
    assert fit_module.MIN_CACHED_STEPS == fit_module.MIN_CACHED_ITERATIONS
