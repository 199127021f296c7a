"""What every run records in MLflow besides its per-pass metrics."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from convrepro.data.integrity import fingerprint
from convrepro.paths import PROJECT_ROOT
from convrepro.tracking import plots
from convrepro.tracking.params import flatten
from convrepro.tracking.provenance import device_description, git_state, library_versions
from convrepro.tracking.store import TrackingError
from convrepro.training import evaluation


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TrackingError(f"output directory {folder} is not writable ({err.strerror}); "
                            f"set hydra.run.dir (or paths.root) to a writable folder") from None


def ensure_experiment(uri: str, name: str, artifact_root: str) -> str:
    """The experiment's id, creating it with artifacts beside the embedded store if new."""
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        location = Path(artifact_root, name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Created by a parallel job between our lookup and our create.
        return client.get_experiment_by_name(name).experiment_id


# Keys that do not change what a run computes: a resumed run may differ in them.
_NOT_PART_OF_THE_RUN = ("resume", "trainer.enable_progress_bar", "data.progress", "paths.output_dir")


def config_hash(cfg: DictConfig) -> str:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_PART_OF_THE_RUN:
        *parents, leaf = dotted.split(".")
        node = resolved
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_dir(run_id: str) -> Path:
    return PROJECT_ROOT / "checkpoints" / run_id


def find_resumable(client: MlflowClient, experiment_id: str, cfg: DictConfig) -> tuple[str, Path]:
    """The run ``resume=`` names (``auto``: the latest unfinished run of this config) and its checkpoint."""
    from convrepro.config import ConfigError

    if cfg.resume == "auto":
        runs = client.search_runs([experiment_id], f"tags.`config.hash` = '{config_hash(cfg)}' and "
                                  "attributes.status != 'FINISHED'", order_by=["attributes.start_time DESC"])
        if not runs:
            raise ConfigError(f"resume=auto: no unfinished run of this configuration in experiment "
                              f"{cfg.logger.experiment_name}; start it without resume")
        run = runs[0]
    else:
        try:
            run = client.get_run(str(cfg.resume))
        except mlflow.exceptions.MlflowException:
            raise ConfigError(f"resume={cfg.resume}: no such run in the tracking store") from None
        if run.info.status == "FINISHED":
            raise ConfigError(f"resume={cfg.resume}: that run FINISHED; nothing to resume")
    ckpt = checkpoint_dir(run.info.run_id) / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"resume={cfg.resume}: run {run.info.run_id} has no checkpoint at {ckpt} "
                          f"(it died before its first pass ended); start it again without resume")
    return run.info.run_id, ckpt


def run_tags(cfg: DictConfig, datamodule, hydra_cfg, client: MlflowClient | None = None,
             experiment_id: str | None = None) -> dict[str, str]:
    files = datamodule.files
    tags = {
        **git_state(PROJECT_ROOT),
        **library_versions(),
        **device_description(str(cfg.trainer.accelerator)),
        "paper": cfg.name,
        "variant": cfg.variant,
        "seed": str(cfg.seed),
        "dataset.fingerprint": fingerprint(files),
        "hydra.overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
        "config.hash": config_hash(cfg),
        # Who runs it: `convrepro-runs clean` ends RUNNING runs whose process is gone.
        "process.host": socket.gethostname(),
        "process.pid": str(os.getpid()),
    }
    if len(files) <= 16:  # a few files: one tag each; an image folder: the fingerprint alone
        tags.update({f"dataset.sha.{name}": digest for name, digest in files.items()})
    tags["dataset.files"] = str(len(files))
    tags.update({f"hydra.choice.{k}": str(v) for k, v in hydra_cfg.runtime.choices.items()
                 if not k.startswith("hydra/")})
    parent = os.environ.get("CONVREPRO_PARENT_RUN_ID")
    if not parent and client is not None and str(hydra_cfg.mode) == "RunMode.MULTIRUN":
        from convrepro.tracking.sweep import parent_of_job

        parent = parent_of_job(client, experiment_id, str(hydra_cfg.sweep.dir))
    rerun_of = os.environ.get("CONVREPRO_RERUN_OF")
    if rerun_of:
        tags["rerun.of"] = rerun_of
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


def log_config(client: MlflowClient, run_id: str, cfg: DictConfig, output_dir: Path) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = flatten(resolved)
    items = list(params.items())
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i:i + 100]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(resolved, sort_keys=False))
        client.log_artifact(run_id, str(path))
    hydra_dir = output_dir / ".hydra"
    if hydra_dir.is_dir():
        client.log_artifacts(run_id, str(hydra_dir), ".hydra")


def log_counts(client: MlflowClient, run_id: str, datamodule) -> None:
    counts = datamodule.counts()
    client.log_dict(run_id, counts, "data/counts.json")
    problems = getattr(datamodule, "problems", None)
    if problems:
        client.log_text(run_id, "\n".join(problems) + "\n", "data/problems.txt")
        client.log_metric(run_id, "data/dropped", len(problems))
    for split, per_class in counts.items():
        client.log_param(run_id, f"data.count.{split}", sum(per_class.values()))


def finish(client: MlflowClient, run_id: str, task, datamodule, model, cfg, output_dir: Path,
           total_seconds: float, checkpoint: Path | None) -> dict[str, float]:
    """End-of-run analyses, figures, checkpoint; returns the final metrics."""
    final = {k: v for k, v in task.history[-1].items() if k != "pass"} if task.history else {}
    final_set = getattr(datamodule, "final_eval", "test")
    outputs, labels = evaluation.collect_outputs(model, datamodule.eval_dataloader(final_set))
    if getattr(datamodule, "report_rejection", True):
        final.update({f"test/{k}": v for k, v in evaluation.rejection_figures(outputs, labels).items()})
    patterns = sum(row.get("throughput/train_patterns_per_second", 0) * row.get("time/pass_seconds", 0)
                   for row in task.history)
    final["time/total_seconds"] = total_seconds
    final["throughput/patterns_per_second"] = patterns / total_seconds
    steps = len(task.history)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), 0, steps)
                                      for k, v in final.items() if k not in task.history[-1]])
    figures = output_dir / "figures"
    figures.mkdir(exist_ok=True)
    title = f"{cfg.name} {cfg.variant} seed {cfg.seed}"
    plots.learning_curves(task.history, figures / "learning_curves.png", title)
    matrix = evaluation.confusion(outputs, labels, outputs.shape[1])
    plots.confusion_matrix(matrix, datamodule.class_names, figures / f"confusion_{final_set}.png",
                           f"{title}: {final_set} set")
    if getattr(datamodule, "ten_crop", False):
        probs, crop_labels = evaluation.ten_crop_outputs(model, datamodule.ten_crop_dataloader())
        errors = evaluation.top_k_errors(probs, crop_labels, (1, 5))
        ten = {f"{final_set}_10crop/error": errors[1], f"{final_set}_10crop/top5_error": errors[5]}
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, steps) for k, v in ten.items()])
        final.update(ten)
    if getattr(datamodule, "report_rejection", True):
        rejected, error = evaluation.rejection_curve(outputs, labels)
        plots.rejection(rejected, error, figures / "rejection_test.png", f"{title}: error vs rejection")
    if hasattr(datamodule, "shifted_dataloader"):
        curve = evaluation.shift_curve(model, datamodule)
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(f"shift/test_accuracy_{s}", v, 0, steps)
                                          for s, v in curve.items()])
        final.update({f"shift/test_accuracy_{s}": v for s, v in curve.items()})
        plots.shift_curve(curve, figures / "shift_invariance.png", f"{title}: accuracy vs window shift")
    if hasattr(model, "first_layer_kernels"):
        plots.kernels(model.first_layer_kernels().cpu(), figures / "first_layer_kernels.png",
                      f"{title}: learned first-layer kernels")
    client.log_artifacts(run_id, str(figures), "figures")
    client.log_dict(run_id, {"history": task.history, "final": final,
                             f"confusion_{final_set}": matrix.tolist()}, "metrics/history.json")
    if checkpoint is not None and checkpoint.is_file():
        client.log_artifact(run_id, str(checkpoint), "checkpoints")
    return final
