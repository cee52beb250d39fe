"""``geostp.fit(..., checkpoint_dir=...)`` is resumable: a fit killed midway goes on from its last checkpoint and ends
where an uninterrupted fit ends; another fit's checkpoint is refused."""

from __future__ import annotations

import warnings

import pytest
import torch

from geostp.errors import ConfigError

TINY_TAU = {"spatial_hidden_channels": 4, "temporal_hidden_channels": 8, "spatial_blocks": 2, "temporal_blocks": 2}


class Killed(Exception):
    """Stands for the process being killed in the middle of an iteration."""


@pytest.fixture(autouse=True)
def checkpoint_every_five(monkeypatch):
    """fit checkpoints every 50 iterations; every 5 here, so that a test of the same logic takes seconds."""
    from geostp.train import trainer

    class EveryFive(trainer.TrainSettings):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "checkpoint_every": 5})

    monkeypatch.setattr(trainer, "TrainSettings", EveryFive)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the result is the same, and on a busy shared machine two spinning OpenMP threads made
    these tiny fits some 30 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cube():
    from geostp.data.synthetic import synthetic_radar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return synthetic_radar(n_times=30, ny=32, nx=32, seed=0).load()


def _fit(cube, **kwargs):
    from geostp.fit import fit

    settings = {"model_args": dict(TINY_TAU), "input_steps": 3, "output_steps": 2, "patch_size": 16,
                "batch_size": 2, "max_minutes": None, "max_iterations": 14, "advection": False, "use_store": False,
                "device": "cpu", "progress": False, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(cube, "tau", **settings)


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_killed_fit_resumes_from_its_checkpoint_dir_onto_the_same_model(cube, tmp_path, monkeypatch):
    from geostp.train.checkpoint import load_checkpoint
    from geostp.train.trainer import Trainer

    whole = _fit(cube, checkpoint_dir=tmp_path / "whole")
    assert whole.metadata["iterations"] == 14

    step = Trainer._step

    def dies_at_12(self, batch):
        if self.result.iteration == 12:  # after the checkpoint at 10: two iterations are lost and redone
            raise Killed
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", dies_at_12)
    with pytest.raises(Killed):
        _fit(cube, checkpoint_dir=tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["train_state"]["iteration"] == 10 and last["metadata"]["fit_key"]
    monkeypatch.setattr(Trainer, "_step", step)

    seen = []

    def counting(self, batch):
        seen.append(self.result.iteration)
        return step(self, batch)

    monkeypatch.setattr(Trainer, "_step", counting)
    resumed = _fit(cube, checkpoint_dir=tmp_path / "run")
    assert seen[0] == 10 and len(seen) == 4  # it went on from iteration 10, not from nothing
    assert resumed.metadata["iterations"] == 14
    assert _same_weights(resumed, whole)  # onto the model the uninterrupted fit gave

    seen.clear()
    again = _fit(cube, checkpoint_dir=tmp_path / "run")  # finished: it trains no further
    assert seen == [] and _same_weights(again, whole)

    seen.clear()
    fresh = _fit(cube)  # no folder: a temporary one, nothing to resume from
    assert seen[0] == 0 and len(seen) == 14 and _same_weights(fresh, whole)


def test_a_checkpoint_dir_of_another_fit_is_refused(cube, tmp_path):
    _fit(cube, checkpoint_dir=tmp_path / "run", max_iterations=3)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"checkpoint_dir .*run: last.pt there is the checkpoint of another fit"):
        _fit(cube, checkpoint_dir=tmp_path / "run", max_iterations=3, seed=1)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # left as it was
