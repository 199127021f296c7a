"""``convrepro-claims``: AlexNet's claims measured -- the recipe and each ablation of
``experiments/krizhevsky2012/claims.yaml`` as a seed sweep (one MLflow parent per variant),
then the table of what each choice buys (``convrepro.report.claims``).

    convrepro-claims [--seeds 1,2,3] [--only lrn,dropout] [--json FILE] [OVERRIDE ...]
    make claims-krizhevsky2012 SEEDS=3 ARGS="trainer.precision=bf16-mixed"

A variant whose sweep fails leaves its parent FAILED with the reason; the others still run,
and the command exits 1.  Ctrl-C stops the whole table (exit 130; ``resume=auto`` in the
overrides continues each variant's sweep).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from convrepro.errors import USER_ERRORS, ConfigError


def _seeds(text: str) -> list[str]:
    seeds = [s.strip() for s in text.split(",") if s.strip()]
    if not seeds:
        raise ConfigError(f"--seeds {text!r} names no seed: give at least one, e.g. --seeds 1,2,3 (SEEDS=3 in make)")
    for s in seeds:
        if not s.isdigit():
            raise ConfigError(f"--seeds: {s!r} is not a seed (a whole number from 0 to 4294967295)")
    return seeds


def _selected(claims: list[dict], only: str | None) -> list[dict]:
    if not only:
        return claims
    names = [c["name"] for c in claims]
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown or not wanted:
        raise ConfigError(f"--only {only!r}: {'unknown claim ' + repr(unknown[0]) if unknown else 'no claim named'}; "
                          f"choose from {', '.join(names)}")
    return [c for c in claims if c["name"] == "default" or c["name"] in wanted]  # the recipe is every Δ's base


def variant_overrides(claim: list[str], given: list[str]) -> list[str]:
    """The user's overrides, then the claim's: a key the claim sets is the claim's (its ablation
    must hold), and its ``model.width`` multiplies the recipe's ("half the kernels" of a run
    made narrower for a smoke test stays half)."""
    user = dict(o.split("=", 1) for o in given)
    mine = {}
    for override in claim:
        key, value = override.split("=", 1)
        mine[key] = f"{float(value) * float(user.get(key, 1.0)):g}" if key == "model.width" else value
    return [f"{k}={v}" for k, v in user.items() if k not in mine] + [f"{k}={v}" for k, v in mine.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-claims", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds for every variant (default 1,2,3)")
    parser.add_argument("--only", help="comma-separated claims to run (the recipe always runs)")
    parser.add_argument("--json", type=Path, help="write the measured table's data here (claims.json)")
    parser.add_argument("--claims", type=Path,
                        help="another claims file (default: experiments/krizhevsky2012/claims.yaml)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (trainer.precision=bf16-mixed)")
    args = parser.parse_args(argv)
    from convrepro.report.claims import load_claims

    try:
        seeds, claims = _seeds(args.seeds), load_claims(args.claims)
        selected = _selected(claims, args.only)
        if bad := [o for o in args.overrides if "=" not in o or o.startswith(("-", "seed=", "variant="))]:
            raise ConfigError(f"{bad[0]!r}: overrides are key=value for every run (seeds go in --seeds)")
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = []
    for i, claim in enumerate(selected, 1):
        command = ["-m", "experiment=krizhevsky2012_claims", f"variant=claims-{claim['name']}",
                   f"seed={','.join(seeds)}", *variant_overrides(claim["overrides"], args.overrides)]
        print(f"claims {i}/{len(selected)}: {claim['name']} -- convrepro-train {' '.join(command)}", flush=True)
        status = subprocess.run([sys.executable, "-m", "convrepro.train", *command]).returncode
        if status in (130, 143):  # Ctrl-C or SIGTERM: the user stops the table, not one variant
            return status
        if status:
            failed.append(claim["name"])
            print(f"claims: {claim['name']} failed (exit {status}); its parent run says why; the others go on",
                  file=sys.stderr)
    report(selected, args.overrides, args.json)
    if failed:
        print(f"claims: {len(failed)} variant(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def report(claims: list[dict], overrides: list[str], json_path: Path | None) -> None:
    from mlflow.tracking import MlflowClient
    from rich.console import Console
    from rich.table import Table

    from convrepro.report.claims import HEADER, as_json, collect, table
    from convrepro.tracking.store import resolve_uri

    uri = resolve_uri(next((o.split("=", 1)[1] for o in overrides if o.startswith("logger.tracking_uri=")), None))
    client = MlflowClient(uri)
    variants = collect(client, [c["name"] for c in claims])
    shown = Table(*HEADER, title="AlexNet's claims on Imagenette (Δ: error without the choice minus with it)")
    for row in table(client, claims, variants):
        shown.add_row(*row)
    Console(width=160).print(shown)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(as_json(claims, variants), indent=1) + "\n")
        print(f"wrote {json_path}")
    print("next: `make report` puts this table and its figure beside the paper's numbers")


if __name__ == "__main__":
    raise SystemExit(main())
