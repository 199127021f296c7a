"""``convrepro-rerun RUN_ID [overrides...]``: execute a logged run again from its stored config.

The run's Hydra overrides (a tag) recompose its config groups, so the new run has the same
name, choices and tags; then every value of the stored resolved config (``config.yaml``
artifact) that today's config files would set differently is added as an override, so the
rerun computes what the original computed even after the defaults changed.  Machine-specific
paths (project folder, data root, output folder) are today's.  Warns when the code (git
commit) or a library version differs from the original run's; tags the new run
``rerun.of = RUN_ID``.  Extra overrides apply on top (``trainer.max_epochs=5``).

What the store says is not trusted: anyone who can write a tag or an artifact (a tracking
server's users) could otherwise make a colleague's rerun call arbitrary Python through
Hydra's ``_target_``, read files or the environment, or send the rerun (and the user's
credentials) to another server.  So the stored overrides and values pass an allow-list,
each parsed by Hydra's own override parser: a group choice must name a file of that group
in the project's ``conf/``; a value change must set a key that exists as a leaf of the
composed config to a literal (number, string, bool, null, or a list of those) -- no
interpolation in any spelling, no ``+``/``++``/``~``, no ``@package``, nothing under
``hydra.``, ``logger.`` or ``paths.``, no key holding a ``_target_``.  The rerun composes
from ``conf/`` alone and writes to the tracking URI the user gave (``--uri``).  Anything
else is refused in one line, exit 2, nothing run.  Overrides typed on the command line
are the user's own and are not restricted.
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
from convrepro.errors import ConfigError, TrackingError
from convrepro.paths import CONF_DIR, PROJECT_ROOT
from convrepro.tracking.params import flatten
from convrepro.tracking.provenance import git_state, library_versions
from convrepro.tracking.runs import find_run
from convrepro.tracking.store import add_uri_argument, check

# Not part of what a run computes, or different on every machine: never taken from the store.
_MACHINE_KEYS = ("paths.", "resume", "data.root", "logger.", "hydra.")
# Keys through which Hydra's instantiate calls code.
_CODE_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")


def config_groups() -> dict[str, set[str]]:
    """Each config group of the project's ``conf/`` and the options (file names) it has."""
    return {p.name: {f.stem for f in p.glob("*.yaml")} for p in CONF_DIR.iterdir() if p.is_dir()}


def _literal(value) -> bool:
    """A plain value: number, string without interpolation, bool, null, or a list of those."""
    if isinstance(value, list):
        return all(_literal(v) for v in value)
    if isinstance(value, str):
        return "$" not in value and "\\" not in value
    return value is None or isinstance(value, (bool, int, float))


def _refusal(o, groups: dict[str, set[str]], leaves) -> str | None:
    """Why the parsed override ``o`` may not come from the store, or None.  ``leaves()`` gives
    the composed config's leaf keys (made only when a value change needs them)."""
    from hydra.core.override_parser.types import OverrideType

    key, line = o.key_or_group, o.input_line
    if key == "hydra" or key.startswith(("hydra.", "hydra/")) or "hydra" in (o.package or ""):
        return "changes Hydra itself"
    if any(word in line for word in _CODE_KEYS):
        return "names code for Hydra to call"
    if "$" in line or "\\" in line:
        return "holds an interpolation"
    if o.type == OverrideType.DEL:
        return "deletes a key"
    if o.type != OverrideType.CHANGE:
        return "adds a key (+ or ++)"
    if o.package is not None:
        return "moves a config to another package (@)"
    if o.is_sweep_override():
        return "is a sweep"
    if key.startswith(_MACHINE_KEYS) or key in ("paths", "logger"):
        return "sets where the run reads or writes (paths, logger)"
    value = o.value()
    if key in groups:
        if not isinstance(value, str) or value not in groups[key]:
            return f"chooses no file of conf/{key}/ (options: {', '.join(sorted(groups[key]))})"
        return None
    if not _literal(value):
        return "sets a value that is not a plain number, string, bool or list"
    known = leaves()
    if key not in known:
        holds = any(k.startswith(key + ".") for k in known)
        return "replaces a whole config section" if holds else "sets a key the project's config does not have"
    return None


def checked_overrides(overrides: list[str], run_id: str) -> list[str]:
    """The run's stored Hydra overrides, refused (ConfigError) unless each passes ``_refusal``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"run {run_id}'s stored overrides cannot be parsed: {str(err).splitlines()[0]}") from None
    groups = config_groups()
    # the admissible group choices compose the config the value changes are checked against
    # (a group choice never reaches the leaves)
    choices = [o.input_line for o in parsed if o.key_or_group in groups and _refusal(o, groups, None) is None]
    known: dict[str, str] = {}

    def leaves() -> dict[str, str]:
        if not known:
            known.update(composed(choices))
        return known

    for o in parsed:
        why = _refusal(o, groups, leaves)
        if why:
            raise ConfigError(f"run {run_id} cannot be rerun: its stored override {o.input_line!r} {why}; "
                              "reruns take only the project's own config files and keys (was the tag edited?)")
    return overrides


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
    return f"{key}={_hydra_value(value)}"


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


def drift_overrides(stored: dict, today: dict[str, str], dropped: list[str] | None = None) -> list[str]:
    """Overrides that put back every stored value today's config files would change.

    Not restored, and listed in ``dropped``: keys today's config no longer has (today's code
    does not read them) and values the allow-list refuses (what a tampered config.yaml would
    hold; today's value stands)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, groups, out = OverridesParser.create(), config_groups(), []

    def walk(node, prefix=""):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted.startswith(_MACHINE_KEYS):
                continue
            mine = {k: v for k, v in today.items() if k == dotted or k.startswith(dotted + ".")}
            if isinstance(value, dict) and (mine or not value):
                walk(value, dotted + ".")  # an empty section ({}) has nothing to restore
            elif not mine:
                if dropped is not None:
                    dropped.append(f"{dotted} (not in today's config)")
            elif flatten(value, dotted + ".") != mine:
                override = value_override(dotted, value)
                try:
                    why = _refusal(parser.parse_override(override), groups, lambda: today)
                except HydraException:
                    why = "cannot be parsed"
                if why is None:
                    out.append(override)
                elif dropped is not None:
                    dropped.append(f"{dotted} (its stored value {why})")
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
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no bar
    try:
        check(args.uri, must_exist=True)  # before a client: MLflow's creates a missing SQLite store
        client = MlflowClient(args.uri)
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
    dropped: list[str] = []
    try:
        overrides = checked_overrides(original_overrides(run), args.run_id)
        drift = drift_overrides(stored, composed(overrides), dropped)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if dropped:
        print(f"note: {len(dropped)} stored value(s) not restored: " + ", ".join(dropped), file=sys.stderr)
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
