"""What every run records in MLflow besides its per-pass metrics: tags, config, counts, final results."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import mlflow
import torch
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from convrepro.data.integrity import fingerprint, verification
from convrepro.paths import PROJECT_ROOT
from convrepro.tracking import plots
from convrepro.tracking.params import flatten
from convrepro.tracking.provenance import device_description, git_state, library_versions
from convrepro.tracking.runs import config_hash, parent_of_job


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
        "dataset.verified": verification(),  # hashed | cached (size and mtime unchanged) | none
        "hydra.overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
        "config.hash": config_hash(cfg),
        "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
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
    if datamodule.problems:
        client.log_text(run_id, "\n".join(datamodule.problems) + "\n", "data/problems.txt")
        client.log_metric(run_id, "data/dropped", len(datamodule.problems))
    for split, per_class in counts.items():
        client.log_param(run_id, f"data.count.{split}", sum(per_class.values()))


def record_final(client: MlflowClient, run_id: str, history: list[dict], results, class_names: list[str],
                 model, cfg, output_dir: Path, total_seconds: float, checkpoint: Path | None,
                 stop_reason: str | None = None) -> dict[str, float]:
    """The end-of-run results (``training.final_evaluation.FinalResults``) as metrics, figures and
    artifacts, with the checkpoint; returns the final metrics (the last pass's and the analyses').
    ``stop_reason``: why training ended before ``trainer.max_epochs`` (tag ``stop.reason``)."""
    last = history[-1] if history else {}
    final = {k: v for k, v in last.items() if k != "pass"}
    final.update(results.metrics)
    patterns = sum(row.get("throughput/train_patterns_per_second", 0) * row.get("time/pass_seconds", 0)
                   for row in history)
    final["time/total_seconds"] = total_seconds
    final["throughput/patterns_per_second"] = patterns / total_seconds if total_seconds else 0.0
    steps = len(history)
    final["passes"] = float(steps)
    if stop_reason:
        client.set_tag(run_id, "stop.reason", stop_reason)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), 0, steps)
                                      for k, v in final.items() if k not in last])
    figures = output_dir / "figures"
    figures.mkdir(exist_ok=True)
    title = f"{cfg.name} {cfg.variant} seed {cfg.seed}"
    name = results.final_set
    plots.learning_curves(history, figures / "learning_curves.png", title)
    plots.confusion_matrix(results.confusion, class_names, figures / f"confusion_{name}.png",
                           f"{title}: {name} set")
    if results.rejection is not None:
        plots.rejection(*results.rejection, figures / "rejection_test.png", f"{title}: error vs rejection")
    if results.shift_curve:
        plots.shift_curve(results.shift_curve, figures / "shift_invariance.png",
                          f"{title}: accuracy vs window shift")
    if hasattr(model, "first_layer_kernels"):
        plots.kernels(model.first_layer_kernels().cpu(), figures / "first_layer_kernels.png",
                      f"{title}: learned first-layer kernels")
    client.log_artifacts(run_id, str(figures), "figures")
    client.log_dict(run_id, {"history": history, "final": final,
                             f"confusion_{name}": results.confusion.tolist()}, "metrics/history.json")
    if checkpoint is not None and checkpoint.is_file():
        client.log_artifact(run_id, str(checkpoint), "checkpoints")
    return final


def record_replicas(client: MlflowClient, run_id: str, digests: list[float]) -> None:
    """Every DDP replica's weight digest: equal digests, identical replicas."""
    client.set_tag(run_id, "ddp.world_size", str(len(digests)))
    client.set_tag(run_id, "ddp.replica_weight_digests", " ".join(f"{d:.17g}" for d in digests))
    client.set_tag(run_id, "ddp.replicas_identical", str(len(set(digests)) == 1).lower())
