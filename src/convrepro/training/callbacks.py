"""Checkpoint after every pass, atomically.

Lightning's ModelCheckpoint decides by ``trainer.global_step``, which on-line learning
does not advance (the task applies its per-pattern updates itself), and it writes the file
in place, so a ``kill -9`` during the write could leave a torn checkpoint.  This writes
``last.ckpt`` (weights, optimizer, loop position, the task's RNG state and history) to a
temporary name and renames it over the previous one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl


class PassCheckpoint(pl.Callback):
    """Saved when the task has finished its own end-of-pass work (metrics recorded,
    schedulers stepped): callbacks' ``on_train_epoch_end`` run before the module's, so the
    task calls its ``after_pass`` hooks last and this registers one of them.  A run resumed
    from it starts cleanly at the next pass.
    """

    def __init__(self, dirpath: Path):
        self.dirpath = Path(dirpath)
        self.path = self.dirpath / "last.ckpt"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.after_pass.append(lambda: self.save(trainer))

    def save(self, trainer: pl.Trainer) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".last.ckpt.{os.getpid()}.tmp"
        trainer.save_checkpoint(tmp)  # written by global rank 0 only (a barrier for the others)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
