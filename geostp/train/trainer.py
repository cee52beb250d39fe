"""A plain torch training loop that can be trusted with days of compute.

Nothing is hidden: one loop over batches with an optimiser (Adam/AdamW), the
OneCycle or cosine schedule of the reference benchmark, gradient clipping,
bf16 autocast where the hardware does bf16 natively (GPUs, CPUs with AMX), a
progress bar with loss and ETA, validation every epoch, early stopping, and
epoch, iteration and time budgets.  Checkpoints are
written atomically and hold the optimiser, schedule, iteration, position in
the epoch, random state and history, so that a run killed at any point and
resumed continues exactly where it was: the loss curve matches an
uninterrupted run.

Distributed data parallel
-------------------------
Inside an initialised ``torch.distributed`` process group (``torchrun``,
``geostp run --nproc N``, :func:`geostp.train.ddp.init_from_env`) the model
is wrapped in ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA, one
device per process): gradients are averaged over the ranks in the backward
pass, so ``N`` ranks with batches of ``B`` take the iterations of one process with
batches of ``N x B`` over the same samples.  Every rank runs the same number of
iterations per epoch (the smallest any rank has), logged losses and validation
metrics are averaged over the ranks, time budgets and early stopping are
decided together, only rank 0 writes checkpoints (the others wait at a
barrier), and every rank resumes from the same ``last.pt``, so the checkpoint
folder must be on storage all ranks reach.  BatchNorm layers keep per-rank
batch statistics (DDP broadcasts rank 0's running statistics each iteration); set
``sync_batchnorm`` for SyncBatchNorm (CUDA only).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geostp.errors import CheckpointError, ConfigError
from geostp.train.checkpoint import (
    check_finite_weights,
    check_replaceable,
    load_checkpoint,
    save_checkpoint,
)
from geostp.train.ddp import process_group
from geostp.train.settings import TrainSettings

if TYPE_CHECKING:
    import geostp.models.base

__all__ = ["TrainSettings", "TrainResult", "Trainer", "TrainingBudgetWarning", "pick_device", "seed_everything"]


# warm-up iterations skipped, then as many timed, before judging whether the time fits the schedule
_PACE_ITERATIONS = 10


class TrainingBudgetWarning(UserWarning):
    """The time budget will stop training long before the learning-rate schedule ends."""


@dataclass
class TrainResult:
    """What a training run produced."""

    history: list[dict[str, float]] = field(default_factory=list)  # one entry per optimiser iteration
    epochs: list[dict[str, float]] = field(default_factory=list)  # one entry per finished epoch
    iteration: int = 0
    stopped: str = ""
    checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    skipped_iterations: int = 0  # iterations whose gradients were not finite: no update was made

    @property
    def skipped_steps(self) -> int:
        """Deprecated name of :attr:`skipped_iterations` (``steps`` are lead times); removed in the next release."""
        import warnings

        warnings.warn("TrainResult.skipped_steps is now skipped_iterations", DeprecationWarning, stacklevel=2)
        return self.skipped_iterations


def seed_everything(seed: int) -> None:
    """Seed torch's generators (CPU and every GPU): called before a model is built, so that its initial weights,
    and everything drawn after (data order, dropout), depend on ``seed`` alone, not on what ran before in the
    process.  (geostp draws nothing from numpy's or Python's global generators: its samplers take their seed.)"""
    torch.manual_seed(int(seed))


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


class _LossModule(torch.nn.Module):
    """``forward`` is the model's ``training_loss``: what DistributedDataParallel wraps, so that the
    loss goes through DDP's forward and its backward all-reduces the gradients."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, y, iteration, mask):  # noqa: D102
        return self.model.training_loss(x, y, iteration=iteration, mask=mask)


def _set_epoch(loader: Any, epoch: int, start_batch: int) -> None:
    target = getattr(loader, "dataset", loader)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch, start_batch=start_batch)
    elif start_batch:
        raise ConfigError("resuming mid-epoch needs a dataset with set_epoch(epoch, start_batch=...)")


class Trainer:
    """Train one :class:`geostp.models.base.Forecaster`.

    Parameters
    ----------
    model
        A trainable forecaster.
    settings
        :class:`TrainSettings`.
    checkpoint_dir
        Where ``last.pt`` (resume point) and ``best.pt`` (best validation) go.
        ``None`` trains without checkpoints.
    metadata
        JSON-able facts stored in every checkpoint (normalisation, cube schema,
        variables, recipe, package version): what a forecast needs later.
    on_step
        Called after every optimiser iteration with ``(trainer, record)``; ``record["iteration"]`` counts them
        from 1.
    """

    def __init__(
        self,
        model: geostp.models.base.Forecaster,
        settings: TrainSettings | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
        on_step: Callable[[Trainer, dict[str, float]], None] | None = None,
    ) -> None:
        if not model.trainable:
            raise ConfigError(f"model {model.name!r} has nothing to train")
        self.settings = settings or TrainSettings()
        self.dist = process_group(min_size=2)  # torch.distributed in a group of two or more, else None
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world_size = self.dist.get_world_size() if self.dist else 1
        device = self.settings.device
        if self.dist and device in ("auto", "cuda") and torch.cuda.is_available():
            import os

            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one device per process
        self.device = pick_device(device)
        if self.dist and self.settings.sync_batchnorm and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self._loss_fn: torch.nn.Module = _LossModule(self.model)
        if self.dist:
            from torch.nn.parallel import DistributedDataParallel

            # Broadcasts rank 0's weights to every rank now, and averages gradients in backward.
            self._loss_fn = DistributedDataParallel(
                self._loss_fn, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.settings.find_unused_parameters)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.metadata = metadata or {}
        self.on_step = on_step
        s = self.settings
        opt_cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.result = TrainResult()
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed = 0.0  # seconds of training, summed over resumes
        self.best_val = math.inf
        self.bad_epochs = 0
        self._clock = time.perf_counter()
        # the last validation's MSE per lead time, and its first sample (observed, forecast): for TensorBoard
        self.validation_by_lead: list[float] = []
        self.validation_sample: tuple[torch.Tensor, torch.Tensor] | None = None
        self._tensorboard: Any = None  # a geostp.train.tensorboard.TensorBoardLogger while fit() runs with log_dir

    # ------------------------------------------------------------------ schedule
    def _make_scheduler(self, iterations_per_epoch: int) -> None:
        s = self.settings
        total = max(s.planned_iterations(iterations_per_epoch), 1)
        if s.schedule == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=s.lr, total_steps=total + 1)
        elif s.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total, eta_min=1e-6)
        else:
            self.scheduler = None

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model_name": self.model.name,
            "model_config": self.model.config,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "rng": rng,
            "train_state": {
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "iteration": self.result.iteration,
                "elapsed": self.elapsed,
                "best_val": self.best_val if math.isfinite(self.best_val) else None,
                "bad_epochs": self.bad_epochs,
                "history": self.result.history,
                "epochs": self.result.epochs,
                "settings": self.settings.model_dump(),
            },
            "metadata": self.metadata,
        }

    def save(self, name: str = "last.pt") -> Path | None:
        """Write a checkpoint; under DDP rank 0 writes it and every rank waits until it is in place."""
        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / name
        if self.rank == 0:
            save_checkpoint(path, self.state())
        if self.dist:
            self.dist.barrier()
        return path

    def restore(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save` (same model and settings)."""
        ck = load_checkpoint(path, map_location=self.device)
        if ck.get("model_name") != self.model.name:
            raise CheckpointError(f"{path} holds model {ck.get('model_name')!r}, not {self.model.name!r}")
        check_finite_weights(ck.get("state_dict"), path)  # resuming from a diverged run would train NaN further
        try:
            self.model.load_state_dict(ck["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit this model ({str(exc)[:300]})") from None
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck.get("scheduler"):
            self.scheduler.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"]["torch"].cpu())
        if "cuda" in ck["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in ck["rng"]["cuda"]])
        st = ck["train_state"]
        self.epoch, self.batch_in_epoch = st["epoch"], st["batch_in_epoch"]
        self.result.iteration, self.elapsed = st["iteration"], st["elapsed"]
        self.best_val = st["best_val"] if st["best_val"] is not None else math.inf
        self.bad_epochs = st["bad_epochs"]
        # a checkpoint written before the rename counted its history records with "step"
        self.result.history = [{("iteration" if k == "step" else k): v for k, v in h.items()} for h in st["history"]]
        self.result.epochs = st["epochs"]

    # ------------------------------------------------------------------ loop
    def _to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        nb = self.device.type == "cuda"
        x = batch["x"].to(self.device, non_blocking=nb)
        y = batch["y"].to(self.device, non_blocking=nb)
        mask = batch.get("mask_y")
        if mask is not None:
            mask = mask.to(self.device, non_blocking=nb)
            if bool(mask.all()):
                mask = None  # nothing masked: the cheaper unmasked loss is the same
        return x, y, mask

    def _autocast(self):
        from geostp.models.base import bf16_autocast

        return bf16_autocast(self.device, enabled=self.settings.bf16)

    def _elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._clock)

    def _budget_left(self) -> bool:
        s = self.settings
        if s.max_iterations is not None and self.result.iteration >= s.max_iterations:
            self.result.stopped = f"max_iterations={s.max_iterations} reached"
            return False
        if s.max_minutes is not None and self._any_rank(self._elapsed_now() >= s.max_minutes * 60):
            self.result.stopped = f"max_minutes={s.max_minutes} reached"
            return False
        return True

    # ------------------------------------------------------------------ across ranks
    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on any (decisions all ranks must take together)."""
        if not self.dist:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._reduce_device())
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _reduce_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _mean_over_ranks(self, values: list[float]) -> list[float]:
        """Average numbers over the ranks (identity in one process)."""
        if not self.dist or not values:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._reduce_device())
        self.dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def _iterations_this_epoch(self, loader: Any) -> int:
        """Batches every rank takes in this epoch: the fewest any rank has (so no rank waits forever)."""
        n = len(loader)
        if not self.dist:
            return n
        t = torch.tensor([n], dtype=torch.int64, device=self._reduce_device())
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return int(t.item())

    def validate(self, loader: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Mean loss and masked MSE (normalised units) over the validation batches."""
        self.model.eval()
        totals: dict[str, float] = {}
        by_lead: torch.Tensor | None = None  # summed per-lead MSE of the batches
        n = 0
        _set_epoch(loader, 0, 0)
        with torch.inference_mode(), self._autocast():
            for i, batch in enumerate(loader):
                if self.settings.val_max_batches and i >= self.settings.val_max_batches:
                    break
                x, y, mask = self._to_device(batch)
                pred = self.model(x, y.shape[1]).float()
                err = (pred - y) ** 2
                mse = err[mask].mean() if mask is not None else err.mean()
                totals["val_mse"] = totals.get("val_mse", 0.0) + float(mse)
                dims = (0, *range(2, err.ndim))  # all but the lead time
                lead = err.mean(dim=dims) if mask is None else \
                    (err * mask).sum(dim=dims) / mask.sum(dim=dims).clamp(min=1)
                by_lead = lead.double().cpu() if by_lead is None else by_lead + lead.double().cpu()
                if i == 0:
                    self.validation_sample = (y[:1].float().cpu(), pred[:1].cpu())
                n += 1
        self.model.train()
        leads = by_lead.tolist() if by_lead is not None else []
        if self.dist:  # sums and counts over the ranks: the mean over every rank's batches
            keys = ["val_mse"]  # the same on every rank, also on one without a batch
            summed = self._mean_over_ranks([totals.get(k, 0.0) for k in keys] + [float(n)])
            n_all = summed[-1] * self.world_size
            if n_all == 0:
                raise ConfigError("the validation split produced no batch; check the split and window settings")
            # per lead: rank 0's share (it alone logs them; a rank without a batch has no lead count to reduce)
            self.validation_by_lead = [v / n for v in leads] if n else []
            return {k: v * self.world_size / n_all for k, v in zip(keys, summed[:-1], strict=True)}
        if n == 0:
            raise ConfigError("the validation split produced no batch; check the split and window settings")
        self.validation_by_lead = [v / n for v in leads]
        return {k: v / n for k, v in totals.items()}

    def fit(
        self,
        train_loader: Iterable[dict[str, torch.Tensor]],
        val_loader: Iterable[dict[str, torch.Tensor]] | None = None,
        *,
        resume: bool | str | Path = True,
    ) -> TrainResult:
        """Train until the epoch, iteration or time budget is spent or early stopping fires.

        ``resume=True`` continues from ``checkpoint_dir/last.pt`` when it exists;
        a path resumes from that checkpoint; ``False`` starts afresh.
        """
        from tqdm.auto import tqdm

        from geostp.models.allocator import tune_allocator

        tune_allocator()  # glibc keeps freed tensor memory for reuse from here on (GEOSTP_NO_MALLOPT=1 opts out)
        s = self.settings
        try:
            iterations_per_epoch = self._iterations_this_epoch(train_loader)
        except TypeError:
            raise ConfigError("the training loader must know its length (batches per epoch)") from None
        if iterations_per_epoch == 0:
            raise ConfigError("the training split produced no batch; check the split, window and patch settings")
        for name in ("last.pt", "best.pt") if self.checkpoint_dir is not None else ():  # a user's file there:
            check_replaceable(self.checkpoint_dir / name)  # refused now (every rank), not after some iterations
        seed_everything(s.seed)
        self._make_scheduler(iterations_per_epoch)
        last = self.checkpoint_dir / "last.pt" if self.checkpoint_dir else None
        if resume is not True and resume is not False:
            self.restore(resume)
        elif resume and last is not None and last.exists():
            self.restore(last)
        self.model.train()
        self._clock = time.perf_counter()
        total_iterations = s.planned_iterations(iterations_per_epoch)
        first_iteration = self.result.iteration
        pace_from: tuple[int, float] | None = None  # (iteration, elapsed) after the warm-up iterations
        # Under a time budget alone the bar counts the budget's seconds (time left), not the planned iterations,
        # which the budget usually ends long before.
        by_time = bool(s.max_minutes) and s.max_iterations is None
        bar = tqdm(total=round(s.max_minutes * 60) if by_time else total_iterations,
                   initial=round(self.elapsed) if by_time else self.result.iteration,
                   disable=not s.progress or self.rank != 0, desc=f"train {self.model.name}",
                   unit="s" if by_time else "it", dynamic_ncols=True)
        self._open_tensorboard()
        try:
            while self.epoch < s.epochs and not self.result.stopped:
                _set_epoch(train_loader, self.epoch, self.batch_in_epoch)
                batches: Iterable[dict[str, torch.Tensor]] = train_loader
                if self.dist:  # every rank takes the same number of iterations
                    batches = itertools.islice(train_loader, self._iterations_this_epoch(train_loader))
                for batch in batches:
                    if not self._budget_left():
                        break
                    record = self._step(batch)
                    done = self.result.iteration - first_iteration
                    if done == _PACE_ITERATIONS:  # the first iterations are slow (kernels, caches): time the next
                        pace_from = (self.result.iteration, self._elapsed_now())
                    elif done == 2 * _PACE_ITERATIONS and pace_from is not None:
                        self._warn_if_time_cuts_schedule(total_iterations, *pace_from)
                    bar.update(min(round(self._elapsed_now()), bar.total) - bar.n if by_time else 1)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", epoch=self.epoch, iteration=self.result.iteration)
                    if self._tensorboard is not None:
                        self._tensorboard.log_iteration(record)
                    if self.checkpoint_dir and self.result.iteration % s.checkpoint_every == 0:
                        self._checkpoint()
                    if self.on_step is not None:
                        self.on_step(self, record)
                else:
                    self._end_epoch(val_loader)
                    continue
                break
            if not self.result.stopped:
                self.result.stopped = f"epochs={s.epochs} done"
        finally:
            bar.close()
            self._close_tensorboard()
        self._checkpoint()
        return self.result

    def _open_tensorboard(self) -> None:
        """With ``settings.log_dir``, rank 0 logs to TensorBoard (:mod:`geostp.train.tensorboard`) while fit runs."""
        if self.settings.log_dir is not None and self.rank == 0:
            from geostp.train.tensorboard import TensorBoardLogger

            self._tensorboard = TensorBoardLogger(self.settings.log_dir)

    def _close_tensorboard(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y, mask = self._to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss, parts = self._loss_fn(x, y, self.result.iteration, mask)
        if self._any_rank(not bool(torch.isfinite(loss))):  # every rank stops when one diverges
            raise ConfigError(
                f"the loss became {float(loss)} at iteration {self.result.iteration}; lower the learning rate "
                f"(lr={self.settings.lr}) or enable grad_clip"
            )
        loss.backward()
        if not self._grads_finite():
            # A non-finite gradient (seen on CPU in rare backward passes of some convolutions) would poison
            # every weight: the update is skipped, as a gradient scaler skips overflowing steps, and counted.
            self.optimizer.zero_grad(set_to_none=True)
            self.result.skipped_iterations += 1
            if self.result.skipped_iterations > max(20, self.result.iteration // 4):
                raise ConfigError(f"{self.result.skipped_iterations} of {self.result.iteration + 1} iterations had "
                                  f"non-finite gradients; lower the learning rate (lr={self.settings.lr}) or enable "
                                  "grad_clip")
        if self.settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler.last_epoch < self.scheduler_total():
            self.scheduler.step()
        self.result.iteration += 1
        self.batch_in_epoch += 1
        names = list(parts)
        means = self._mean_over_ranks([float(loss.detach())] + [float(parts[k]) for k in names])
        record = {"iteration": self.result.iteration, "epoch": self.epoch, "loss": means[0],
                  "lr": self.optimizer.param_groups[0]["lr"], **dict(zip(names, means[1:], strict=True))}
        self.result.history.append(record)
        return record

    def _grads_finite(self) -> bool:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return True
        flag = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        return not self._any_rank(not bool(flag))

    def _warn_if_time_cuts_schedule(self, total_iterations: int, first_iteration: int, first_elapsed: float) -> None:
        """Warn once when, at the pace since ``first_iteration``, ``max_minutes`` ends training early in the schedule.

        A OneCycle or cosine schedule is sized to the epoch/iteration budget; a time
        budget that runs out first leaves the learning rate wherever it was
        (OneCycle still warming up, in the worst case).
        """
        s = self.settings
        if s.max_minutes is None or self.scheduler is None or self.rank != 0:
            return
        pace = (self._elapsed_now() - first_elapsed) / max(self.result.iteration - first_iteration, 1)
        left = s.max_minutes * 60 - self._elapsed_now()
        reach = self.result.iteration + int(max(left, 0) / pace)
        if reach < 0.9 * total_iterations:
            import warnings

            where = ("still warming up" if s.schedule == "onecycle" and reach < 0.3 * total_iterations
                     else "before the learning rate has annealed")
            warnings.warn(
                f"at the measured {pace:.3g} s per iteration, max_minutes={s.max_minutes:g} stops training near "
                f"iteration {reach} of the {total_iterations} that the {s.schedule} schedule is sized to "
                f"({100 * reach / total_iterations:.0f} %), {where}; set max_iterations (or epochs) to what fits the "
                "time, or schedule='constant'",
                TrainingBudgetWarning, stacklevel=3)

    def scheduler_total(self) -> int:
        total = getattr(self.scheduler, "total_steps", None)
        return int(total) - 1 if total else 1 << 62

    def _checkpoint(self) -> None:
        # fold the running interval into elapsed so a resumed run keeps the time budget
        self.elapsed, self._clock = self._elapsed_now(), time.perf_counter()
        if self.checkpoint_dir is not None:
            self.result.checkpoint = self.save("last.pt")

    def _end_epoch(self, val_loader) -> None:
        summary: dict[str, float] = {"epoch": self.epoch}
        recent = [h["loss"] for h in self.result.history if h["epoch"] == self.epoch]
        if recent:
            summary["train_loss"] = sum(recent) / len(recent)
        has_val = val_loader is not None
        if self.dist:  # a rank whose share of the validation split is empty still joins the reduction
            has_val = self._any_rank(has_val)
        if has_val:
            summary.update(self.validate(val_loader if val_loader is not None else []))
            val = summary["val_mse"]
            if val < self.best_val:
                self.best_val, self.bad_epochs = val, 0
                if self.checkpoint_dir:
                    self.result.best_checkpoint = self.save("best.pt")
            else:
                self.bad_epochs += 1
        self.result.epochs.append(summary)
        if self._tensorboard is not None:
            self._tensorboard.log_epoch(self.result.iteration, summary, self.validation_by_lead if has_val else [],
                                        self.validation_sample if has_val else None)
        self.epoch += 1
        self.batch_in_epoch = 0
        p = self.settings.early_stopping_patience
        if p is not None and self.bad_epochs >= p:
            self.result.stopped = f"early stopping: no validation improvement in {p} epochs"
