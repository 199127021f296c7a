"""``convrepro-train``: compose a Hydra config, train with Lightning, record everything in MLflow.

    convrepro-train experiment=lecun1989 optim=sdlm seed=3 trainer.max_epochs=5
    python -m convrepro.train -m experiment=lecun1989 seed=1,2,3

Everything that can be wrong with the command line, the data or the tracking store is
checked before a run is created; once training starts the run ends FINISHED, FAILED (with
the error as a tag) or KILLED (Ctrl-C), never RUNNING.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from convrepro.config import (
    check_trainer_keys,
    check_trainer_overrides,
    instantiate_group,
    register_resolvers,
    validate,
)
from convrepro.data.integrity import rehash
from convrepro.errors import USER_ERRORS, ConfigError
from convrepro.paths import CONF_DIR
from convrepro.quiet import quiet_libraries
from convrepro.training.processes import is_global_zero, leave_process_group

if TYPE_CHECKING:
    import pytorch_lightning as pl
# Lightning, MLflow and torch are imported where they are used: `convrepro-train --help`
# and a config error then answer in ~4 s (torch's import, which the checks of layer names
# need) instead of ~16 s after Lightning's and MLflow's (measured on 2 cores).


def build(cfg: DictConfig):
    """Everything a run needs, built and checked before the run exists (``validate`` has run)."""
    check_trainer_keys(cfg.trainer)
    import pytorch_lightning as pl
    import torch

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.training.matmul_precision)
    rehash(bool(cfg.get("rehash_data", False)))  # the run tags which it did: dataset.verified
    datamodule = instantiate_group("data", cfg.data)
    datamodule.prepare_data()
    model = instantiate_group("model", cfg.model)
    loss = instantiate_group("loss", cfg.loss)
    optimizer = instantiate_group("optim", cfg.optim)
    try:
        optimizer(model.parameters())  # construct once so that a bad value fails now
    except (ValueError, TypeError) as err:
        raise ConfigError(f"optim: {err}") from None
    scheduler = None
    if cfg.get("scheduler"):
        scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
        scheduler["factory"] = instantiate(cfg.scheduler.factory)
    from convrepro.training.task import ClassifierTask

    task = ClassifierTask(model, loss, optimizer, datamodule.eval_names, scheduler=scheduler,
                          patterns_per_update=cfg.training.patterns_per_update,
                          top_k=tuple(cfg.training.top_k), curvature_patterns=cfg.training.curvature_patterns,
                          channels_last=bool(cfg.training.get("channels_last", False)),
                          online_step=cfg.training.get("online_step", "pairs"))
    return datamodule, model, task


def make_trainer(cfg: DictConfig, checkpoint_dir: Path, logger=False, output_dir: Path | None = None):
    """The Trainer of every process of a run (only rank 0 passes a logger), with its pass checkpoint."""
    import pytorch_lightning as pl

    from convrepro.training.callbacks import DeliverInterrupt, PassCheckpoint, PassLine, StopAtFloor

    # Every pass ends with a checkpoint (weights, optimizer, loop position, RNG, history).
    checkpoint = PassCheckpoint(checkpoint_dir, cfg.training.checkpoint_every_n_steps,
                                cfg.training.checkpoint_min_interval_s)
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger,
                         callbacks=[checkpoint, DeliverInterrupt(), *[StopAtFloor()] * cfg.training.stop_at_floor,
                                    *[PassLine()] * bool(logger)],
                         default_root_dir=output_dir,
                         enable_checkpointing=False)
    return trainer, checkpoint


def train_and_evaluate(cfg: DictConfig, trainer: pl.Trainer, task, datamodule, model, resume_ckpt):
    """Fit, then the end-of-run evaluation on the same accelerator (every process takes part)."""
    from convrepro.training.final_evaluation import evaluate

    # Our own checkpoint holds RNG states (numpy, python): not loadable with weights_only.
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=False)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return evaluate(trainer, model, datamodule, len(datamodule.class_names),
                    channels_last=bool(cfg.training.get("channels_last", False)))


def run_replica(cfg: DictConfig, datamodule, model, task) -> dict[str, float]:
    """A DDP process other than rank 0: the same training and evaluation, nothing recorded."""
    from convrepro.tracking.lifecycle import RUN_ID_ENV, resume_checkpoint
    from convrepro.tracking.runs import checkpoint_dir

    # Only rank 0 writes checkpoints; the others need a folder name for the collective call.
    trainer, _ = make_trainer(cfg, checkpoint_dir(os.environ.get(RUN_ID_ENV, "replica")))
    train_and_evaluate(cfg, trainer, task, datamodule, model, resume_checkpoint(cfg))
    return {}


def run(cfg: DictConfig) -> dict[str, float]:
    validate(cfg)  # before MLflow's and Lightning's imports (~10 s): a mistyped value answers at once
    from convrepro.report.paper import dashboard_columns, experiment_note, print_run_table, run_note
    from convrepro.report.summary import extra_overrides
    from convrepro.tracking import recorder
    from convrepro.tracking.lifecycle import finished_sweep_job, tracked_run

    done = finished_sweep_job(cfg)
    if done is not None:
        print(f"{done.info.run_name}: finished in run {done.info.run_id}; skipped (the sweep continues)")
        return dict(done.data.metrics)
    datamodule, model, task = build(cfg)
    if not is_global_zero():
        return run_replica(cfg, datamodule, model, task)
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    columns = dashboard_columns(cfg.name)
    with tracked_run(cfg, datamodule, hydra_cfg, output_dir, experiment_note(cfg.name), columns) as tracked:
        trainer, checkpoint = make_trainer(cfg, tracked.checkpoint_dir, tracked.logger, output_dir)
        results = train_and_evaluate(cfg, trainer, task, datamodule, model, tracked.resume_checkpoint)
        if trainer.world_size > 1:
            recorder.record_replicas(tracked.client, tracked.run_id, task.replica_digests)
        final = recorder.record_final(tracked.client, tracked.run_id, task.history, results,
                                      datamodule.class_names, model, cfg, output_dir,
                                      total_seconds=task.elapsed(), checkpoint=checkpoint.path,
                                      stop_reason=task.stop_reason)
    extra = extra_overrides(list(hydra_cfg.overrides.task))
    tracked.client.set_tag(tracked.run_id, "mlflow.note.content", run_note(cfg.name, final, tracked.name, extra))
    print_run_table(cfg.name, final, f"{tracked.name}, run {tracked.run_id}", deviations=extra,
                    passes=int(final["passes"]))
    print("next: `make mlflow-ui` for the run's curves and figures, `make report` for every paper beside its runs")
    return final


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        final = run(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as err:  # diverged: the run is FAILED with this message as its tag
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except PermissionError as err:  # a data file, folder or store this user may not read or write
        print(f"error: {err.filename or err}: permission denied ({err.strerror}); fix its permissions or point "
              "CONVREPRO_DATA_DIR / CONVREPRO_PROJECT_DIR elsewhere", file=sys.stderr)
        sys.exit(2)
    finally:
        leave_process_group()
    return final.get("test/error", final.get("val/error"))


def main() -> None:
    try:  # trainer.max_epoch=1: the project's hint before Hydra's advice to add the key with +
        check_trainer_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    quiet_libraries()
    _hydra_main()


if __name__ == "__main__":
    main()
