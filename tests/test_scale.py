"""Scale-out: DDP training on CPU (gloo) against one process, dask.distributed ingest and statistics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geostp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# One training run, in one process or in each of torchrun's processes: a tiny PredRNN whose
# scheduled sampling is constant from step 1 on (so no random draw depends on the batch size),
# on a synthetic cube without missing pixels (so a masked mean over a rank's batch is a plain mean).
TRAIN_SCRIPT = '''
import json, os, sys
import torch
import geostp.models as models
from geostp.data.synthetic import synthetic_radar
from geostp.train.ddp import init_from_env, rank, shutdown, world_size
from geostp.stream import CubeDataset, WindowSpec, compute_statistics, make_loader
from geostp.train.trainer import Trainer, TrainSettings

out, global_batch, max_iterations, shard = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
init_from_env()
torch.set_num_threads(1)
torch.manual_seed(0)
cube = synthetic_radar(n_times=16, ny=32, nx=32, seed=0, radar_range_km=1000.0)
spec = WindowSpec(input_steps=3, output_steps=3, patch_size=16, patch_stride=16)
norm = compute_statistics(cube, ["precipitation"])
ds = CubeDataset(cube, ["precipitation"], spec, normalizer=norm, batch_size=global_batch // world_size(),
                 shuffle=True, seed=5, drop_last=True, shard=shard)
net = models.get("predrnn", input_steps=3, output_steps=3, channels=1, hidden_channels=8, num_layers=2,
                 patch_size=2, sampling_start_iteration=0, sampling_end_iteration=1)
settings = TrainSettings(epochs=3, max_iterations=max_iterations, lr=3e-3, schedule="constant", device="cpu",
                         progress=False, checkpoint_every=3, seed=0, grad_clip=1.0,
                         bf16=False)  # fp32: bf16 rounding differs between batch 4 and 2 x 2
trainer = Trainer(net, settings, checkpoint_dir=os.path.join(out, "ck"))
result = trainer.fit(make_loader(ds, 0), make_loader(CubeDataset(cube, ["precipitation"], spec,
                     normalizer=norm, batch_size=4, shuffle=False), 0))
checksum = float(sum(p.double().sum() for p in net.parameters()))
seen = [[int(v) for v in (s["time"], s["y0"], s["x0"])] for b in ds.batch_samples(0) for s in b]
json.dump({"losses": [h["loss"] for h in result.history], "epochs": result.epochs, "checksum": checksum,
           "seen": seen, "steps_per_epoch": ds.batches_per_epoch(0)},
          open(os.path.join(out, f"rank{rank()}.json"), "w"))
shutdown()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    return env


def _train(tmp: Path, nproc: int, max_iterations: int, *, global_batch: int = 4,
           shard: str = "batches") -> list[dict]:
    tmp.mkdir(parents=True, exist_ok=True)
    script = tmp / "train.py"
    script.write_text(TRAIN_SCRIPT)
    args = [str(script), str(tmp), str(global_batch), str(max_iterations), shard]
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(nproc)]


def test_ddp_two_processes_follow_the_one_process_loss_curve(tmp_path):
    """2 gloo ranks with batches of 2 take the steps of 1 process with batches of 4: same losses,
    same weights on both ranks; they stop at step 4 (checkpoints written by rank 0), and a second
    launch resumes from that checkpoint on both ranks to step 13 (past the end of the 11-step
    epoch and its validation), on the same curve."""
    one = _train(tmp_path / "one", 1, 13)[0]
    assert len(one["losses"]) == 13 and one["steps_per_epoch"] == 11

    two = _train(tmp_path / "two", 2, 4)
    assert len(two[0]["losses"]) == 4 and two[0]["losses"] == two[1]["losses"]
    assert sorted(p.name for p in (tmp_path / "two" / "ck").iterdir()) == ["last.pt"]  # no stray temp file
    resumed = _train(tmp_path / "two", 2, 13)
    ddp = resumed[0]["losses"]
    assert len(ddp) == 13 and ddp[:4] == two[0]["losses"]  # the history came back from last.pt
    np.testing.assert_allclose(ddp, one["losses"], rtol=1e-4, atol=1e-6)
    # DDP kept the two ranks' weights identical, and equal to the one-process run's
    assert resumed[0]["checksum"] == pytest.approx(resumed[1]["checksum"], rel=1e-9)
    assert resumed[0]["checksum"] == pytest.approx(one["checksum"], rel=1e-4)
    # validation: each rank scores its share of the batches, the mean is taken over all of them
    assert resumed[0]["epochs"] == resumed[1]["epochs"] and len(one["epochs"]) == 1
    assert resumed[0]["epochs"][0]["val_mse"] == pytest.approx(one["epochs"][0]["val_mse"], rel=1e-4)
    assert resumed[0]["epochs"][0]["train_loss"] == pytest.approx(one["epochs"][0]["train_loss"], rel=1e-4)

    # every sample of the epoch is in exactly one rank's batches
    per_rank = [{tuple(s) for s in r["seen"]} for r in resumed]
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == {tuple(s) for s in one["seen"]}
    assert resumed[0]["steps_per_epoch"] == resumed[1]["steps_per_epoch"] == one["steps_per_epoch"]


def test_dataset_shards_cover_each_sample_once():
    """Both sharding modes: the ranks' batches partition the epoch; 'batches' cuts the one-process
    batches in parts, 'streams' keeps each rank on its own contiguous share."""
    from geostp.data.synthetic import synthetic_radar
    from geostp.stream import CubeDataset, WindowSpec

    cube = synthetic_radar(n_times=48, ny=32, nx=32, seed=0)
    spec = WindowSpec(input_steps=3, output_steps=3, patch_size=16, patch_stride=8)

    def keys(batch):
        return {(int(s["time"]), int(s["y0"]), int(s["x0"])) for s in batch}

    one = CubeDataset(cube, "precipitation", spec, batch_size=6, seed=1, drop_last=True, rank=0, world_size=1)
    everything = set().union(*map(keys, one.batch_samples(2)))
    for shard in ("batches", "streams"):
        ranks = [CubeDataset(cube, "precipitation", spec, batch_size=2, seed=1, drop_last=True, rank=r,
                             world_size=3, shard=shard).batch_samples(2) for r in range(3)]
        assert len({len(b) for b in ranks}) == 1  # the same number of batches on every rank
        flat = [k for r in ranks for b in r for k in keys(b)]
        assert len(flat) == len(set(flat))
        assert set(flat) <= everything and len(everything) - len(flat) < 6
        if shard == "batches":
            for k, batch in enumerate(one.batch_samples(2)):
                assert keys(batch) == keys(ranks[0][k]) | keys(ranks[1][k]) | keys(ranks[2][k])
    with pytest.raises(ConfigError, match="shard"):
        CubeDataset(cube, "precipitation", spec, shard="rows")


# ----------------------------------------------------------------------------------------- dask

@pytest.fixture(scope="module")
def local_cluster():
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40)
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def test_statistics_and_ingest_on_a_two_worker_cluster(tmp_path, local_cluster):
    import xarray as xr

    from geostp.data.synthetic import synthetic_radar
    from geostp.store import ingest, open_cube
    from geostp.stream import Split, compute_statistics

    cube = synthetic_radar(n_times=48, ny=32, nx=32, seed=0)
    split = Split("train", time=((None, cube.time.values[30]),))
    local = compute_statistics(cube, ["precipitation"], split=split)
    from distributed import get_task_stream

    with get_task_stream(local_cluster) as stream:
        remote = compute_statistics(cube, ["precipitation"], split=split, client=local_cluster)
    assert remote.mean == pytest.approx(local.mean, rel=1e-12)
    assert remote.std == pytest.approx(local.std, rel=1e-12)
    assert remote.extra == local.extra
    # the workers did the work, both of them: one task per chunk's moments at least
    assert len({t["worker"] for t in stream.data}) == 2
    names = [t["key"] if isinstance(t["key"], str) else t["key"][0] for t in stream.data]
    assert sum(n.startswith("_block_moments") for n in names) >= 2

    with get_task_stream(local_cluster) as stream:
        b = ingest(cube, tmp_path / "cluster.zarr", time_chunk=8, spatial_chunk=16, progress=False,
                   client=local_cluster)
    assert len({t["worker"] for t in stream.data}) == 2

    a = ingest(cube, tmp_path / "local.zarr", time_chunk=8, spatial_chunk=16, progress=False)
    ca, cb = open_cube(a), open_cube(b)
    xr.testing.assert_identical(ca.load(), cb.load())
    assert cb["precipitation"].encoding["chunks"] == (8, 16, 16)
    # a stored cube's statistics on the cluster equal those of the lazy cube
    from_store = compute_statistics(cb, ["precipitation"], split=split, client=local_cluster)
    assert from_store.mean == pytest.approx(local.mean, rel=1e-6)


def test_metrics_on_the_cluster_from_stored_cubes(tmp_path, local_cluster):
    """Scores of dask-backed forecasts and observations compute on the workers (the active client)."""
    from geostp import metrics
    from geostp.cluster import dask_client
    from geostp.data.synthetic import synthetic_radar
    from geostp.store import ingest, open_cube

    def lazy(seed, name):
        da = open_cube(ingest(synthetic_radar(n_times=24, ny=32, nx=32, seed=seed), tmp_path / name,
                              time_chunk=8, progress=False))["precipitation"]
        return da.rename(time="lead_time").assign_coords(lead_time=np.arange(24))

    fc, obs = lazy(1, "f.zarr"), lazy(0, "o.zarr")
    expected = ((fc.values.astype(float) - obs.values) ** 2)
    expected = np.nanmean(expected.reshape(24, -1), axis=1)
    with dask_client(local_cluster):
        score = metrics.mse(fc, obs)
        assert score.chunks is not None  # still lazy: nothing was pulled to the client
        np.testing.assert_allclose(score.compute().values, expected, rtol=1e-10)


def test_bad_scheduler_and_nproc_are_config_errors():
    from geostp.cluster import dask_client
    from geostp.train.ddp import launch_local

    pytest.importorskip("distributed")
    with pytest.raises(ConfigError, match="no dask scheduler answered"):
        with dask_client("tcp://127.0.0.1:1", timeout=1):
            pass
    with pytest.raises(ConfigError, match="local:N"):
        with dask_client("local:zero"):
            pass
    with pytest.raises(ConfigError, match="nproc"):
        launch_local(["run", "x.yaml"], 0)


# ------------------------------------------------------------------------------------------ CLI

RECIPE = """
kind: train
data:
  catalog: synthetic
  source: radar_small
  args: {{n_times: 24, ny: 32, nx: 32}}
  variables: [precipitation]
  splits: {{train: 0.7, test: 0.3}}
  windows: {{input_steps: 3, output_steps: 2}}
  patches: {{size: 16}}
model:
  name: predrnn
  args: {{hidden_channels: 8, num_layers: 1, patch_size: 2}}
training: {{max_iterations: 3, batch_size: 2, progress: false, checkpoint_every: 2}}
output: {{dir: {out}}}
"""


def test_geostp_run_nproc_2_trains_with_ddp(tmp_path):
    """``geostp run --nproc 2`` starts two gloo processes; rank 0 alone writes and reports."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-m", "geostp", "run", str(recipe), "--nproc", "2", "--quiet"],
                          env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 3 and proc.stdout.count("model.pt") == 1  # rank 0 only
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["iterations"] == 3 and len(history["steps"]) == 3
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.pt"]


def test_geostp_run_rejects_bad_nproc(tmp_path, capsys):
    from geostp.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "run"))
    assert main(["run", str(recipe), "--nproc", "0"]) == 2
    assert "--nproc 0; expected 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_geostp_ingest_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    from geostp.store import open_cube

    out = tmp_path / "c.zarr"
    proc = subprocess.run([sys.executable, "-m", "geostp", "ingest", "radar_small", "--catalog", "synthetic",
                           "--arg", "n_times=24", "--arg", "ny=32", "--arg", "nx=32", "--out", str(out),
                           "--time-chunk", "8", "--quiet", "--dask-scheduler", "local:2"],
                          env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from geostp.data.catalog import open_catalog

    expected = open_catalog("synthetic").open("radar_small", n_times=24, ny=32, nx=32)
    np.testing.assert_array_equal(open_cube(out)["precipitation"].values, expected["precipitation"].values)
