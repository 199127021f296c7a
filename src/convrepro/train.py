"""``convrepro-train``: compose a Hydra config, train with Lightning, record everything in MLflow.

    convrepro-train experiment=lecun1989 optim=sdlm seed=3 trainer.max_epochs=5
    python -m convrepro.train experiment=lecun1989 -m seed=1,2,3

Everything that can be wrong with the command line, the data or the tracking store is
checked before a run is created; once training starts the run ends FINISHED, FAILED (with
the error as a tag) or KILLED (Ctrl-C), never RUNNING.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from convrepro.config import ConfigError, validate
from convrepro.data.errors import DataError
from convrepro.paths import CONF_DIR, PROJECT_ROOT
from convrepro.tracking.store import TrackingError

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("div"):
    OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))

USER_ERRORS = (ConfigError, DataError, TrackingError)


def build(cfg: DictConfig):
    """Everything a run needs, built and checked before the run exists."""
    validate(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = _instantiate("data", cfg.data)
    datamodule.prepare_data()
    model = _instantiate("model", cfg.model)
    loss = _instantiate("loss", cfg.loss)
    optimizer = _instantiate("optim", cfg.optim)
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
                          channels_last=bool(cfg.training.get("channels_last", False)))
    return datamodule, model, task


def _instantiate(group: str, node):
    """Build a config group's object; a value its constructor refuses is a config error.

    Hydra wraps whatever the constructor raises; the user should see the constructor's
    own message (a DataError as it is), prefixed with the group it came from.
    """
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, USER_ERRORS):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{group}: {cause}") from None
        raise


def is_global_zero() -> bool:
    """Rank 0 of a DDP job (torchrun sets RANK, SLURM SLURM_PROCID, Lightning's own launcher
    LOCAL_RANK and NODE_RANK in the processes it starts); a single process is rank 0."""
    return all(int(os.environ.get(var) or 0) == 0 for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


def run_replica(cfg: DictConfig) -> dict[str, float]:
    """A DDP process other than rank 0: the same training, no tracking (rank 0 records the run)."""
    from convrepro.training.callbacks import PassCheckpoint

    datamodule, _, task = build(cfg)
    # Only rank 0 writes checkpoints; the others need a folder name for the collective call.
    run_id = os.environ.get("CONVREPRO_RUN_ID", "replica")
    from convrepro.tracking import recorder

    resume_ckpt = None
    if cfg.resume:
        from mlflow.tracking import MlflowClient

        from convrepro.tracking.store import resolve_uri

        client = MlflowClient(resolve_uri(cfg.logger.tracking_uri, PROJECT_ROOT))
        experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
        _, resume_ckpt = recorder.find_resumable(client, experiment.experiment_id, cfg)
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=False,
                         callbacks=[PassCheckpoint(recorder.checkpoint_dir(run_id),
                                                   cfg.training.checkpoint_every_n_steps)],
                         enable_checkpointing=False)
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=False)
    return {}


def run(cfg: DictConfig) -> dict[str, float]:
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from convrepro.report.paper import print_run_table
    from convrepro.tracking import recorder
    from convrepro.tracking.store import resolve_uri
    from convrepro.training.callbacks import PassCheckpoint, lock_directory

    if not is_global_zero():
        return run_replica(cfg)
    datamodule, model, task = build(cfg)
    uri = resolve_uri(cfg.logger.tracking_uri, PROJECT_ROOT)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    recorder.check_writable(output_dir)

    hc = HydraConfig.get()
    run_name = f"{cfg.name}-{cfg.variant}-{hc.runtime.choices.get('optim', 'optim')}-seed{cfg.seed}"
    experiment_id = recorder.ensure_experiment(uri, cfg.logger.experiment_name, cfg.logger.artifact_root)
    resume_id, resume_ckpt = None, None
    if cfg.resume:
        resume_id, resume_ckpt = recorder.find_resumable(MlflowClient(uri), experiment_id, cfg)
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment_name, run_name=run_name, tracking_uri=uri,
                          tags=None if resume_id else recorder.run_tags(cfg, datamodule, hc, MlflowClient(uri),
                                                                        experiment_id), log_model=False,
                          run_id=resume_id)
    logger._experiment_id = experiment_id
    client, run_id = logger.experiment, logger.run_id
    # Before the run is touched: another process may be continuing it right now.
    lock = lock_directory(recorder.checkpoint_dir(run_id))
    status = "FAILED"
    try:
        if resume_id:  # the same run continues: params and counts are already there
            client.update_run(run_id, "RUNNING")
            client.set_tag(run_id, "resumed", f"from {resume_ckpt}")
        else:
            recorder.log_config(client, run_id, cfg, output_dir)
            recorder.log_counts(client, run_id, datamodule)
            client.set_tag(run_id, "checkpoint.dir", str(recorder.checkpoint_dir(run_id)))
        # Every pass ends with a checkpoint (weights, optimizer, loop position, RNG, history).
        checkpoint = PassCheckpoint(recorder.checkpoint_dir(run_id), cfg.training.checkpoint_every_n_steps)
        os.environ["CONVREPRO_RUN_ID"] = run_id  # DDP processes Lightning starts inherit it
        trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger,
                             callbacks=[checkpoint], default_root_dir=output_dir, enable_checkpointing=False)
        # Our own checkpoint holds RNG states (numpy, python): not loadable with weights_only.
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=False)
        if trainer.interrupted:
            status = "KILLED"
            raise KeyboardInterrupt
        if trainer.world_size > 1:
            digests = task.replica_digests
            client.set_tag(run_id, "ddp.world_size", str(trainer.world_size))
            client.set_tag(run_id, "ddp.replica_weight_digests", " ".join(f"{d:.17g}" for d in digests))
            client.set_tag(run_id, "ddp.replicas_identical", str(len(set(digests)) == 1).lower())
        final = recorder.finish(client, run_id, task, datamodule, model, cfg, output_dir,
                                total_seconds=task.elapsed(),
                                checkpoint=checkpoint.path)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit) as err:
        # Ctrl-C: Lightning shuts down gracefully, then exits; SIGTERM: Lightning raises
        # SIGTERMException, an exit with status 0.  Either way the run was killed, not failed,
        # and the process must not report success.
        status = "KILLED"
        client.set_tag(run_id, "error", f"interrupted ({type(err).__name__})")
        if isinstance(err, SystemExit) and not err.code:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    except BaseException as err:
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        raise
    finally:
        client.set_terminated(run_id, status)
        lock.close()
    print_run_table(cfg.name, final, f"{run_name}, run {run_id}")
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
    return final.get("test/error", final.get("val/error"))


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
