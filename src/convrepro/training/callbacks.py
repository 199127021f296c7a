"""Checkpoint after every pass, atomically.

Lightning's ModelCheckpoint decides by ``trainer.global_step``, which on-line learning
does not advance (the task applies its per-pattern updates itself), and it writes the file
in place, so a ``kill -9`` during the write could leave a torn checkpoint.  This writes
``last.ckpt`` (weights, optimizer, loop position, the task's RNG state and history) to a
temporary name and renames it over the previous one; optionally also every N training
steps (``training.checkpoint_every_n_steps``), or, for a large model with short passes, only
when the last one is ``training.checkpoint_min_interval_s`` old (and after the last pass).
Also: a Ctrl-C a library swallowed is delivered (``DeliverInterrupt``), and training ends
where the plateau rule has nothing left to do (``StopAtFloor``, ``training.stop_at_floor``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from convrepro.errors import CheckpointInUse, StorageFull, storage_full
from convrepro.signals import interrupt_lost


def lock_directory(dirpath: Path):
    """Hold ``<dirpath>/.lock`` for the life of this process; refuse if another process holds it.

    Two processes continuing the same run (two ``resume=<id>`` at once) would overwrite each
    other's checkpoints and interleave metrics in one MLflow run.
    """
    import fcntl
    import socket

    dirpath.mkdir(parents=True, exist_ok=True)
    handle = open(dirpath / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise CheckpointInUse(f"checkpoint directory {dirpath} is in use by {owner}: that process is still "
                              f"training this run; wait for it to end (or stop it) before resuming") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


class PassCheckpoint(pl.Callback):
    """Saved when the task has finished its own end-of-pass work (metrics recorded,
    schedulers stepped): callbacks' ``on_train_epoch_end`` run before the module's, so the
    task calls its ``after_pass`` hooks last and this registers one of them.  A run resumed
    from it starts cleanly at the next pass.
    """

    def __init__(self, dirpath: Path, every_n_steps: int | None = None, min_interval_s: float = 0):
        self.dirpath = Path(dirpath)
        self.path = self.dirpath / "last.ckpt"
        self.every_n_steps = every_n_steps
        # AlexNet's weights and momentum are 455 MB: saved after every 3-4 s pass on an H100,
        # the checkpoint would take a large share of the run (1.9-4.2 s a save on 2 CPU cores).
        self.min_interval_s = min_interval_s
        self._saved_at = time.perf_counter()  # the run's start counts as a save: nothing to lose yet
        self._unsaved_passes = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Long passes (an AlexNet epoch on a CPU): a kill loses at most N steps.  Lightning
        # resumes such a checkpoint at the same step count; the rest of that pass draws
        # from a new shuffle, so only pass-end checkpoints resume bit for bit.
        if self.every_n_steps and (batch_idx + 1) % self.every_n_steps == 0:
            self.save(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.after_pass.append(lambda: self._pass_end(trainer, pl_module))

    def _pass_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs = trainer.max_epochs
        last = trainer.should_stop or (epochs is not None and 0 < epochs <= pl_module.current_epoch + 1)
        start = time.perf_counter()
        # Saving is collective under DDP: every process follows rank 0's clock.
        if not trainer.strategy.broadcast(last or start - self._saved_at >= self.min_interval_s, src=0):
            self._unsaved_passes += 1
            return
        self.save(trainer)
        if trainer.logger is not None:  # timed, because it is not free (see __init__)
            trainer.logger.log_metrics({"time/checkpoint_seconds": time.perf_counter() - start},
                                       step=pl_module.current_epoch + 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Training that stopped on a pass the interval skipped (max_time, a callback's stop).
        if self._unsaved_passes:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Pre-empted (SIGTERM from timeout, SLURM, Kubernetes): Lightning stops at the end of a
        # training step, so the state is whole; keep it, as a mid-pass checkpoint would.  Not
        # under DDP (saving is collective, and ranks may stop at different points).
        if isinstance(exception, SIGTERMException) and trainer.training and trainer.world_size == 1:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".last.ckpt.{os.getpid()}.tmp"
        # Written by global rank 0 only (a barrier for the others); whole (RNG states, loops).
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
        except (OSError, RuntimeError) as err:
            tmp.unlink(missing_ok=True)  # never a half-written checkpoint beside the last whole one
            if not storage_full(err):
                raise
            free = shutil.disk_usage(self.dirpath).free / 2**20
            kept = f"{self.path} (the last complete one) is kept" if self.path.is_file() else "no checkpoint yet"
            raise StorageFull(f"the disk of {self.dirpath} is full: the checkpoint did not fit ({free:.0f} MB free); "
                              f"{kept}; free space, then the same command with resume=auto continues") from None
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._saved_at, self._unsaved_passes = time.perf_counter(), 0


class DeliverInterrupt(pl.Callback):
    """Raises a Ctrl-C that a library swallowed (see ``convrepro.signals``) at the next batch
    boundary, so that the run stops as if it had arrived there."""

    def _deliver(self, *args) -> None:
        if interrupt_lost():
            raise KeyboardInterrupt

    on_train_batch_start = on_train_batch_end = _deliver
    on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _deliver


class StopAtFloor(pl.Callback):
    """Ends training once the plateau rule has divided the rate down to its floor (``min_lr``):
    the paper's schedule has nothing left to do then (on one H100 the Imagenette default
    reached its floor at pass 49 of 90 and changed by <= 0.4 points after pass 40).  The
    reason is left on the task (``stop_reason``) for the run's record."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning steps a plateau rule after validation, before this hook: the rate is the next pass's.
        for config in trainer.lr_scheduler_configs:
            rule = config.scheduler
            if not isinstance(rule, torch.optim.lr_scheduler.ReduceLROnPlateau):
                continue
            rates = [group["lr"] for group in rule.optimizer.param_groups]
            if all(rate <= floor * (1 + 1e-9) for rate, floor in zip(rates, rule.min_lrs, strict=True)):
                trainer.should_stop = True
                pl_module.stop_reason = (f"the plateau rule reached its floor (learning rate {rates[0]:g}) "
                                         f"after pass {pl_module.current_epoch + 1}")


class PassLine(pl.Callback):
    """One line per pass, where a progress bar alone says little: the pass of how many, the
    training loss, the error measures of the pass, and the time left for the whole run (from
    the passes this process has made)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._first = time.perf_counter(), pl_module.current_epoch
        if pl_module.current_epoch:
            self._print(trainer, f"resumed at pass {pl_module.current_epoch + 1} of {trainer.max_epochs}")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.after_pass.append(lambda: self._pass_end(trainer, pl_module))

    def _pass_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done, total = pl_module.current_epoch + 1, trainer.max_epochs
        entry = pl_module.history[-1] if pl_module.history else {}
        parts = [f"pass {done}/{total}"]
        if "train/running_loss" in entry:
            parts.append(f"loss {entry['train/running_loss']:.4g}")
        parts += [f"{key} {value:.2f} %" for key, value in entry.items() if key.endswith("error")]
        elapsed = time.perf_counter() - self._start
        made = done - self._first
        left = elapsed / made * (total - done) if made and total and total > 0 else 0.0
        parts.append(f"{_clock(elapsed)} elapsed, ~{_clock(left)} left" if done < (total or 0) else
                     f"{_clock(elapsed)} elapsed")
        self._print(trainer, " · ".join(parts))

    @staticmethod
    def _print(trainer: pl.Trainer, line: str) -> None:
        bar = trainer.progress_bar_callback
        (bar.print if bar is not None else print)(line)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
