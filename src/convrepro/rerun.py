"""``convrepro-rerun RUN_ID [overrides...]``: execute a logged run again from its stored config.

The run's Hydra overrides (a tag) recompose its config groups, so the new run has the same
name, choices and tags; then every value of the stored resolved config (``config.yaml``
artifact) that today's config files would set differently is added as an override, so the
rerun computes what the original computed even after the defaults changed.  Machine-specific
paths (project folder, data root, output folder) are today's.  Warns when the code (git
commit) or a library version differs from the original run's; tags the new run
``rerun.of = RUN_ID``.  Extra overrides apply on top (``trainer.max_epochs=5``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict

from convrepro.config import register_resolvers
from convrepro.errors import TrackingError
from convrepro.paths import CONF_DIR, PROJECT_ROOT
from convrepro.tracking.params import flatten
from convrepro.tracking.provenance import git_state, library_versions
from convrepro.tracking.runs import find_run
from convrepro.tracking.store import add_uri_argument

# Not part of what a run computes, or different on every machine.
_MACHINE_KEYS = ("paths.", "resume", "data.root", "logger.")


def stored_config(client: MlflowClient, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "config.yaml", tmp)
        return yaml.safe_load(Path(path).read_text())


def original_overrides(run) -> list[str]:
    text = run.data.tags.get("hydra.overrides", "(none)")
    return [] if text == "(none)" else text.split(" ")


def composed(overrides: list[str]) -> dict[str, str]:
    """Today's config for these overrides, flattened like the params (paths left out)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = None
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def value_override(key: str, value) -> str:
    return f"++{key}={_hydra_value(value)}"


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def drift_overrides(stored: dict, today: dict[str, str]) -> list[str]:
    """Overrides that put back every stored value today's config files would change."""
    out = []

    def walk(node, prefix=""):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted.startswith(_MACHINE_KEYS) or dotted == "resume":
                continue
            if isinstance(value, dict):
                walk(value, dotted + ".")
            elif flatten(value, dotted + ".") != {k: v for k, v in today.items()
                                                  if k == dotted or k.startswith(dotted + ".")}:
                out.append(value_override(dotted, value))
    walk(stored)
    return out


def provenance_warnings(run) -> list[str]:
    tags, warnings = run.data.tags, []
    now = git_state(PROJECT_ROOT)
    if tags.get("git.commit") != now["git.commit"]:
        warnings.append(f"the run was made at commit {tags.get('git.commit')}, this checkout is at "
                        f"{now['git.commit']}: the code may differ")
    if now["git.dirty"] == "true":
        warnings.append("this checkout has uncommitted changes")
    for key, version in library_versions().items():
        if key in tags and tags[key] != version:
            warnings.append(f"{key[8:]} was {tags[key]} for the run, is {version} now")
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied on top of the stored config")
    add_uri_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)
    client = MlflowClient(args.uri)
    try:
        run = find_run(client, args.run_id)
        args.run_id = run.info.run_id
        stored = stored_config(client, args.run_id)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (MlflowException, OSError) as err:
        print(f"error: run {args.run_id} cannot be rerun from {args.uri}: {str(err).splitlines()[0]}",
              file=sys.stderr)
        return 2
    for warning in provenance_warnings(run):
        print(f"warning: {warning}", file=sys.stderr)
    overrides = original_overrides(run)
    drift = drift_overrides(stored, composed(overrides))
    if drift:
        print(f"note: today's config files differ from the run's in {len(drift)} value(s); restoring them: "
              + " ".join(drift), file=sys.stderr)
    command = [sys.executable, "-m", "convrepro.train", *overrides, *drift, *args.overrides]
    print("rerun: " + " ".join(command[1:]))
    if args.dry_run:
        return 0
    env = {**os.environ, "CONVREPRO_RERUN_OF": args.run_id, "MLFLOW_TRACKING_URI": args.uri}
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
