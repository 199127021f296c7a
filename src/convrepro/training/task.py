"""The one LightningModule the three papers share: a classifier with the papers' metrics.

Per-paper code lives in ``models/`` and ``data/``; this module only knows "a network, a
loss, an optimizer, evaluation sets".  Two ways to update:

* ``patterns_per_update=None``: Lightning's automatic optimisation, one update per batch
  (AlexNet, modern variants).
* ``patterns_per_update=k``: the 1989 papers' on-line learning, one update every ``k``
  patterns in the order given, while a Lightning step carries a whole loader batch of
  patterns.  Per-pattern updates make the loop's per-step overhead the bottleneck, so the
  inner loop forms each pattern's gradients and applies them with one fused ``foreach``
  update (SGD with or without momentum, or SDLM's per-weight steps).  For the faithful
  recipes ``online_step="pairs"`` forms them by chaining the layers' forward/backward
  pairs by hand (``online.py``); ``"autograd"`` takes them with ``torch.autograd.grad``
  through the same pairs' autograd Functions, as every other configuration does.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from convrepro.threads import one_thread

from .losses import ClassificationLoss
from .online import online_refusal, online_step, update_rule
from .sdlm import SDLM, gauss_newton_diagonal


def input_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images in NHWC memory when asked (training.channels_last: faster cuDNN/oneDNN kernels)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _weights_digest(model: nn.Module) -> float:
    """A cheap fingerprint of all weights (equal weights give equal digests)."""
    with torch.no_grad():
        return float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(model.parameters())))


ONLINE_STEPS = ("pairs", "autograd")


class ClassifierTask(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        loss: ClassificationLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        eval_names: list[str],
        scheduler: dict | None = None,
        patterns_per_update: int | None = None,
        top_k: tuple[int, ...] = (1,),
        curvature_patterns: int = 500,
        channels_last: bool = False,
        online_step: str = "pairs",
    ):
        super().__init__()
        self.model, self.loss, self.optimizer_factory = model, loss, optimizer
        self.scheduler_config = scheduler
        self.eval_names, self.top_k = list(eval_names), tuple(top_k)
        self.patterns_per_update = patterns_per_update
        self.automatic_optimization = patterns_per_update is None
        self.curvature_patterns = curvature_patterns
        self.channels_last = channels_last
        if online_step not in ONLINE_STEPS:
            raise ValueError(f"training.online_step must be one of {ONLINE_STEPS}, got {online_step!r}")
        self.online_step = online_step
        self._chain = None  # the chained pairs, or False where they do not apply (decided at the first step)
        self.replica_digests: list[float] = []
        self._reset_sums()
        self.history: list[dict[str, float]] = []
        self.stop_reason: str | None = None  # set by a callback that ends training early
        # Also set by on_train_epoch_start, which a run resumed in the middle of a pass skips.
        self._epoch_start, self._train_sums = time.perf_counter(), torch.zeros(3)
        self._training_ended: float | None = None  # when the pass's own evaluation began
        self._unchecked: list[tuple[int, torch.Tensor]] = []  # losses not yet checked (_check_finite)
        self._elapsed_before, self._fit_started = 0.0, time.perf_counter()
        self._pass_learning_rate = float("nan")  # read at the start of each pass (and of a resumed one)
        self.after_pass: list[Callable[[], None]] = []  # run when a pass is completely done

    # ---- checkpoints: everything needed to continue a run exactly -------------------------
    def on_fit_start(self):
        self._fit_started = self._epoch_start = time.perf_counter()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_train_start(self):
        self._pass_learning_rate = self._learning_rate()  # a run resumed within a pass skips its start

    def on_fit_end(self):
        """Every DDP replica should end with the same weights: their digests, gathered."""
        digest = torch.tensor([_weights_digest(self.model)], dtype=torch.float64, device=self.device)
        gathered = self.all_gather(digest) if self.trainer.world_size > 1 else digest
        self.replica_digests = [float(v) for v in gathered.flatten().cpu()]

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return input_layout(x, self.channels_last)

    def elapsed(self) -> float:
        """Training wall time, across resumptions."""
        return self._elapsed_before + time.perf_counter() - self._fit_started

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["convrepro"] = {
            "history": self.history,
            "elapsed": self.elapsed(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("convrepro", {})
        self.history = list(state.get("history", []))
        self._elapsed_before = state.get("elapsed", 0.0)
        rng = state.get("rng")
        if rng:  # the next pass draws the same shuffles, jitters and dropout masks
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])

    # ---- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        if not self.scheduler_config:
            return optimizer
        cfg = dict(self.scheduler_config)
        factory, monitor, interval = cfg.pop("factory"), cfg.pop("monitor", None), cfg.pop("interval", "epoch")
        sched = {"scheduler": factory(optimizer), "interval": interval}
        if monitor:
            sched["monitor"] = monitor
        return {"optimizer": optimizer, "lr_scheduler": sched}

    def forward(self, x):
        return self.model(x)

    def on_train_epoch_start(self):
        self._epoch_start, self._training_ended = time.perf_counter(), None
        self._train_sums = torch.zeros(3)  # loss sum, errors, patterns
        opt = self.optimizers()
        inner = getattr(opt, "optimizer", opt)
        self._pass_learning_rate = self._learning_rate()
        if isinstance(inner, SDLM):
            self._estimate_curvature(inner)

    def _estimate_curvature(self, optimizer: SDLM) -> None:
        """Re-estimate h_kk on the first few hundred training patterns before each pass."""
        loader = self.trainer.datamodule.train_dataloader()
        xs, seen = [], 0
        for x, _ in loader:
            xs.append(x)
            seen += len(x)
            if seen >= self.curvature_patterns:
                break
        x = torch.cat(xs)[: self.curvature_patterns].to(self.device)
        was_training = self.model.training
        self.model.eval()
        h = gauss_newton_diagonal(self.model, x, self.loss.output_curvature)
        self.model.train(was_training)
        optimizer.set_curvature({p: v / len(x) for p, v in h.items()})
        self._record({"sdlm/mean_curvature": float(torch.stack([v.mean() for v in h.values()]).mean()) / len(x)})

    def training_step(self, batch, batch_idx):
        if batch is None:  # every image of the batch failed to decode (reported by the loader)
            return None
        x, y = batch
        if self.automatic_optimization:
            out = self.model(self._layout(x))
            loss = self.loss(out, y)
            self._check_finite(loss.detach(), batch_idx)
            self._accumulate(loss.detach() * len(y), out.detach(), y)
            return loss
        self._per_pattern_updates(x, y, batch_idx)
        return None

    # On a GPU, reading a value back stalls the queue of kernels: there the losses wait and are
    # checked together every FINITE_CHECK_STEPS steps and at the end of each pass.
    FINITE_CHECK_STEPS = 25

    def _check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """A NaN or infinite loss stops the run with the place it happened (per loader batch,
        not per pattern)."""
        self._unchecked.append((batch_idx, loss.detach().flatten()))
        if loss.device.type == "cpu" or len(self._unchecked) >= self.FINITE_CHECK_STEPS:
            self._flush_finite_check()

    def _flush_finite_check(self) -> None:
        pending, self._unchecked = self._unchecked, []
        if not pending or bool(torch.isfinite(torch.cat([loss for _, loss in pending])).all()):
            return
        for batch_idx, loss in pending:
            bad = loss[~torch.isfinite(loss)]
            if len(bad):
                raise FloatingPointError(
                    f"the training loss became {bad[0].item()} in pass {self.current_epoch + 1}, step "
                    f"{batch_idx + 1}: training diverged (lower optim.lr?)")

    def _chained_pairs(self, x: torch.Tensor):
        """The on-line step through the layers' pairs, where it applies (decided once)."""
        if self._chain is None:
            opt = self.optimizers()
            inner = getattr(opt, "optimizer", opt)
            self._chain = False
            if self.online_step == "pairs" and not torch.is_autocast_enabled(x.device.type) \
                    and online_refusal(self.model, self.loss, inner, self.patterns_per_update) is None:
                self._chain = online_step(self.model)
        return self._chain or None

    def _per_pattern_updates(self, x, y, batch_idx: int = 0):
        params = [p for p in self.model.parameters() if p.requires_grad]
        update = self._update_rule(params)
        k = self.patterns_per_update
        prepared = self.loss.prepare(y, x)
        chain = self._chained_pairs(x)
        losses, outs = [], []
        with one_thread():  # evaluation keeps all threads
            if chain:
                with torch.no_grad():
                    for pattern, target in zip(x.split(1), prepared.split(1), strict=True):
                        out, grads = chain.gradients(pattern, lambda out, t=target: self.loss.gradient(out, t))
                        update(grads)
                        outs.append(out)
                # each pattern's loss from its output before its own update, all at once
                losses = [self.loss.per_pattern(torch.cat(outs), prepared)]
            else:
                for i in range(0, len(y), k):
                    out = self.model(x[i : i + k])
                    loss = self.loss.against(out, prepared[i : i + k])
                    update(torch.autograd.grad(loss, params))
                    losses.append(loss.detach().view(1))
                    outs.append(out.detach())
        losses = torch.cat(losses)
        self._check_finite(losses, batch_idx)
        self._accumulate(losses.sum() * k, torch.cat(outs), y)

    def _update_rule(self, params):
        opt = self.optimizers()
        return update_rule(getattr(opt, "optimizer", opt), params)

    def _accumulate(self, loss_sum, out, y):
        wrong = (out.argmax(1) != y).sum().float()
        if self._train_sums.device != out.device:  # kept on the training device: no read-back per step
            self._train_sums = self._train_sums.to(out.device)
        # The count is filled in on the device: a tensor made from a Python number is copied
        # from the host, and such a copy waits for every queued kernel (a sync per step).
        self._train_sums += torch.stack([loss_sum, wrong, wrong.new_full((), len(y))])

    def on_train_epoch_end(self):
        self._flush_finite_check()
        loss_sum, wrong, n = self._across_processes(self._train_sums).cpu().tolist()
        now = time.perf_counter()
        # Lightning evaluates the pass (validation) before this hook: that time is its own metric.
        trained_until = self._training_ended or now
        elapsed = trained_until - self._epoch_start
        # Running figures during the pass (the model changed while it went); the paper's
        # "train error" is the evaluation of the whole training set after the pass.  The
        # learning rate is the one the pass began with: Lightning has already stepped the
        # epoch's schedulers (a plateau rule too, after validation) when this hook runs.
        self._record({"train/running_loss": loss_sum / max(n, 1),
                      "train/running_error": 100.0 * wrong / max(n, 1),
                      "train/learning_rate": self._pass_learning_rate,
                      "time/pass_seconds": elapsed,
                      "time/evaluation_seconds": now - trained_until,
                      "throughput/train_patterns_per_second": n / elapsed})
        if not self.automatic_optimization:
            for sched in self._schedulers():
                if not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step()
        for hook in self.after_pass:
            hook()

    def _record(self, metrics: dict[str, float]) -> None:
        """Per-pass metrics: to callbacks (monitors) and to the logger with step = pass number.

        Lightning would log them at its global step (loader batches), which for on-line
        learning is not a unit anyone reads; the papers plot against passes.
        """
        self.log_dict(metrics, logger=False)
        epoch = self.current_epoch + 1
        if self.history and self.history[-1]["pass"] == epoch:
            self.history[-1].update(metrics)
        else:
            self.history.append({"pass": epoch, **metrics})
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=epoch)

    def _learning_rate(self) -> float:
        """The first parameter group's rate (a plateau rule's divisions show in it)."""
        opt = self.optimizers()
        return float(getattr(opt, "optimizer", opt).param_groups[0]["lr"])

    def _schedulers(self):
        s = self.lr_schedulers()
        if s is None:
            return []
        return s if isinstance(s, list) else [s]

    # ---- evaluation --------------------------------------------------------------------
    def _reset_sums(self):
        self._eval_sums: dict[str, torch.Tensor] = {}

    def on_validation_epoch_start(self):
        if self._training_ended is None:  # the first evaluation of a pass ends its training time
            if self.device.type == "cuda":  # the queued steps belong to it (one wait per pass)
                torch.cuda.synchronize(self.device)
            self._training_ended = time.perf_counter()
        self._reset_sums()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if batch is None:
            return
        x, y = batch
        out = self.model(self._layout(x))
        name = self.eval_names[dataloader_idx]
        top = out.topk(max(self.top_k), dim=1).indices
        row = [self.loss(out, y) * len(y), self.loss.mse(out, y) * len(y)]
        row += [(~(top[:, :k] == y[:, None]).any(1)).sum().float() for k in self.top_k]
        row.append(out.new_full((), len(y), dtype=torch.float32))  # filled on the device (see _accumulate)
        sums = torch.stack(row).detach()  # stays on the device: read back once, at the end
        self._eval_sums[name] = self._eval_sums.get(name, torch.zeros_like(sums)) + sums

    def _across_processes(self, sums: torch.Tensor) -> torch.Tensor:
        """Sums over all DDP processes (each evaluated its own shard); as is on one process."""
        if self.trainer.world_size == 1:
            return sums
        return self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()

    def on_validation_epoch_end(self):
        metrics = {}
        for name in self.eval_names:
            sums = self._across_processes(self._eval_sums.get(name, torch.zeros(3 + len(self.top_k))))
            values = sums.tolist()
            n = values[-1]
            metrics[f"{name}/loss"] = values[0] / n
            metrics[f"{name}/mse"] = values[1] / n
            for k, wrong in zip(self.top_k, values[2:-1], strict=True):
                key = "error" if k == 1 else f"top{k}_error"
                metrics[f"{name}/{key}"] = 100.0 * wrong / n
                if k == 1:
                    metrics[f"{name}/misses"] = wrong
        if self.trainer.sanity_checking:
            return
        self._record(metrics)
        if not self.automatic_optimization:
            for sched in self._schedulers():
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(metrics[self.scheduler_config["monitor"]])
        for key, value in metrics.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"{key} became {value} after pass {self.current_epoch + 1}: "
                                         f"training diverged (lower the learning rate?)")
