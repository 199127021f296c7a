"""Run identity and lookup: which experiment, which run to continue, where its checkpoints live."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from convrepro.errors import ConfigError, TrackingError
from convrepro.paths import PROJECT_ROOT

# MLflow 3 opens an experiment without this tag as a GenAI app ("Evaluations", traces).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


# MLflow's runs table shows no metric columns until a user picks them, and keeps the choice in
# the browser.  A view stored on the experiment (this tag prefix plus a key) is what its
# "share view" writes; opening the runs page with ?viewStateShareKey=<key> applies it.
SHARED_VIEW_TAG = "mlflow.sharedViewState."
SHARED_VIEW_KEY = "convrepro"


def shared_view(columns: list[str]) -> str:
    """The runs table with the seed and the paper's measures as columns (MLflow's column keys)."""
    return json.dumps({"selectedColumns": ["params.`seed`", *(f"metrics.`{key}`" for key in columns)]})


def dashboard_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in MLflow's UI at ``base``, with the paper's measures shown, in
    the UI's model-training mode: MLflow 3 opens in its GenAI mode (traces, judges, prompts)
    unless the link's ``workflowType`` says otherwise (mlflow/mlflow#24498)."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={SHARED_VIEW_KEY}"
            "&workflowType=machine_learning")


def ensure_experiment(uri: str, name: str, artifact_root: str, note: str | None = None,
                      columns: list[str] | None = None) -> str:
    """The experiment's id, creating it with artifacts beside the embedded store if new; tagged
    as model training, with ``note`` as its description and ``columns`` (metric keys) as the
    runs table of its shared view (``dashboard_url``)."""
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        location = None
        if uri.startswith("sqlite:"):
            location = Path(artifact_root, name).resolve().as_uri()
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            # Created by a parallel job between our lookup and our create.
            experiment_id = client.get_experiment_by_name(name).experiment_id
    tags = client.get_experiment(experiment_id).tags
    wanted = {**EXPERIMENT_KIND, **({"mlflow.note.content": note} if note else {}),
              **({SHARED_VIEW_TAG + SHARED_VIEW_KEY: shared_view(columns)} if columns else {})}
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


# Keys that do not change what a run computes: a resumed run may differ in them.
_NOT_PART_OF_THE_RUN = ("resume", "rehash_data", "trainer.enable_progress_bar", "data.progress", "paths.output_dir")


def _what_the_run_computes(cfg: DictConfig) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_PART_OF_THE_RUN:
        *parents, leaf = dotted.split(".")
        node = resolved
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return resolved


def config_hash(cfg: DictConfig) -> str:
    return hashlib.sha256(json.dumps(_what_the_run_computes(cfg), sort_keys=True, default=str).encode()).hexdigest()


def _differences(run, cfg: DictConfig) -> list[str]:
    """``key: run's value -> this command's`` for every computing key that differs (from the
    run's params, the flattened config it recorded)."""
    from convrepro.tracking.params import flatten

    now = flatten(_what_the_run_computes(cfg))
    then = {k: v for k, v in run.data.params.items() if not k.startswith("data.count.")
            and not any(k == d or k.startswith(d + ".") for d in _NOT_PART_OF_THE_RUN)}
    return [f"{k}: {then.get(k, '(absent)')} -> {now.get(k, '(absent)')}"
            for k in sorted(set(now) | set(then)) if then.get(k) != now.get(k)]


def checkpoint_dir(run_id: str) -> Path:
    return PROJECT_ROOT / "checkpoints" / run_id


def find_resumable(client: MlflowClient, experiment_id: str, cfg: DictConfig) -> tuple[str, Path]:
    """The run ``resume=`` names (``auto``: the latest unfinished run of this config) and its checkpoint."""
    if cfg.resume == "auto":
        runs = client.search_runs([experiment_id], f"tags.`config.hash` = '{config_hash(cfg)}' and "
                                  "attributes.status != 'FINISHED'", order_by=["attributes.start_time DESC"])
        if not runs:
            raise ConfigError(f"resume=auto: no unfinished run of this configuration in experiment "
                              f"{cfg.logger.experiment_name}; start it without resume")
        # The newest that has a checkpoint: a newer one that died before its first pass does not hide it.
        kept = [r for r in runs if (checkpoint_dir(r.info.run_id) / "last.ckpt").is_file()]
        run = kept[0] if kept else runs[0]
    else:
        try:
            run = find_run(client, str(cfg.resume))  # a whole id or a unique beginning
        except TrackingError as err:
            raise ConfigError(f"resume={cfg.resume}: {err}") from None
        if run.info.status == "FINISHED":
            raise ConfigError(f"resume={cfg.resume}: that run FINISHED; nothing to resume")
        if run.data.tags.get("config.hash") != config_hash(cfg):
            # As resume=auto: a run continues only with the configuration it was started with.
            changed = _differences(run, cfg)
            raise ConfigError(f"resume={cfg.resume}: that run was started with another configuration ("
                              f"{'; '.join(changed[:6]) or 'the config files changed since'}"
                              f"{f'; {len(changed) - 6} more' if len(changed) > 6 else ''}); resume it with the "
                              f"overrides it was started with ({run.data.tags.get('hydra.overrides', '?')}) or "
                              f"start a new run")
    ckpt = checkpoint_dir(run.info.run_id) / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"resume={cfg.resume}: run {run.info.run_id} has no checkpoint at {ckpt} "
                          f"(it died before its first pass ended); start it again without resume")
    return run.info.run_id, ckpt


def parent_of_job(client: MlflowClient, experiment_id: str, sweep_dir: str) -> str | None:
    """The id of the running sweep parent tagged with this job's sweep folder, if any."""
    runs = client.search_runs([experiment_id], f"tags.sweep = 'parent' and tags.`sweep.dir` = '{sweep_dir}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def find_run(client: MlflowClient, run_id: str):
    """The run with this id or unique id prefix (the report and the tables show 8 characters)."""
    if len(run_id) == 32:
        try:
            return client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            raise TrackingError(f"no run {run_id} in the tracking store") from None
    ids = [e.experiment_id for e in client.search_experiments()]
    matches = [r for r in client.search_runs(ids, max_results=50000) if r.info.run_id.startswith(run_id)] if ids else []
    if not matches:
        raise TrackingError(f"no run whose id begins with {run_id!r} in the tracking store")
    if len(matches) > 1:
        names = ", ".join(f"{r.info.run_id[:12]} ({r.info.run_name})" for r in matches[:5])
        raise TrackingError(f"{run_id!r} is the beginning of {len(matches)} run ids ({names}); give more characters")
    return matches[0]
