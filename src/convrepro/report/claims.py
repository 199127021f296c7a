"""AlexNet's claims as a table: what each choice of the paper buys, measured on Imagenette.

Each claim (``experiments/krizhevsky2012/claims.yaml``) is an ablation run as a seed sweep
(``convrepro-claims``): one MLflow parent per variant, tagged ``variant=claims-<name>``, its
seeds as children.  For each claim: Δ = the ablation's mean error minus the recipe's, in
percentage points (positive: removing the choice hurts, as the paper says), ± the standard
error of that difference of two means, sqrt(sd_a^2/n_a + sd_d^2/n_d).  The verdict says
whether the direction holds and whether |Δ| exceeds twice that standard error -- the seeds'
spread -- the same kind of tolerance as the paper-versus-run tables.  Ten classes are not a
thousand: the sizes of the paper's Δ are not expected to carry over, only their directions
(experiments/krizhevsky2012/README.md, "Claims").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from convrepro.errors import ConfigError
from convrepro.paths import EXPERIMENTS_DIR
from convrepro.tracking.statistics import summarise

EXPERIMENT = "krizhevsky2012"
TOP1 = ("val_10crop/error", "val/error")  # the paper's test (10 crops), else the centre crop
TOP5 = ("val_10crop/top5_error", "val/top5_error")


def load_claims(path: Path | None = None) -> list[dict]:
    """The default (name ``default``, no overrides) first, then every claim of the YAML."""
    path = path or EXPERIMENTS_DIR / EXPERIMENT / "claims.yaml"
    try:
        spec = yaml.safe_load(path.read_text())
        for claim in spec["claims"]:
            if not (claim["name"] and claim["claim"] and len(claim["paper"]) == 2
                    and all("=" in o for o in claim["overrides"])):
                raise ValueError(f"claim {claim.get('name')!r} needs a name, a claim, overrides key=value "
                                 "and the paper's [top-1, top-5]")
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: not a claims file ({type(err).__name__}: {err}); see "
                          f"{EXPERIMENTS_DIR / EXPERIMENT / 'claims.yaml'}") from None
    return [{"name": "default", "claim": "the recipe", "overrides": [], "paper": [None, None]}, *spec["claims"]]


@dataclass
class Variant:
    name: str
    parent: object | None = None
    runs: list = field(default_factory=list)  # FINISHED children

    def values(self, keys: tuple[str, ...]) -> list[float]:
        """Per seed: the first of ``keys`` the run has (10-crop, else centre crop)."""
        out = []
        for run in self.runs:
            value = next((run.data.metrics[k] for k in keys if k in run.data.metrics), None)
            if value is not None:
                out.append(value)
        return out


def collect(client: MlflowClient, names: list[str]) -> dict[str, Variant]:
    """The latest sweep parent of each variant and its finished children."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    out = {name: Variant(name) for name in names}
    if experiment is None:
        return out
    for name in names:
        parents = client.search_runs([experiment.experiment_id], f"tags.sweep = 'parent' and "
                                     f"tags.variant = 'claims-{name}'", order_by=["attributes.start_time DESC"],
                                     max_results=1)
        if parents:
            out[name].parent = parents[0]
            out[name].runs = client.search_runs(
                [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}' and "
                "attributes.status = 'FINISHED'", order_by=["tags.seed ASC"])
    return out


@dataclass
class Delta:
    mean: float
    se: float | None  # None: fewer than two seeds on a side
    n: tuple[int, int]


def delta(ablation: list[float], default: list[float]) -> Delta | None:
    a, d = summarise(ablation), summarise(default)
    if a is None or d is None:
        return None
    se = math.sqrt(a.sd ** 2 / a.n + d.sd ** 2 / d.n) if a.n > 1 and d.n > 1 else None
    return Delta(a.mean - d.mean, se, (a.n, d.n))


def verdict(d: Delta | None) -> str:
    if d is None:
        return "no finished runs"
    if d.mean == 0:
        return "no difference"
    direction = "holds" if d.mean > 0 else "reversed"
    if d.se is None:
        return f"direction {direction}; too few seeds to tell from noise"
    outside = abs(d.mean) > 2 * d.se
    return f"{direction}, {'outside' if outside else 'within'} the seeds' spread"


def _fmt(d: Delta | None) -> str:
    if d is None:
        return "-"
    spread = f" ± {d.se:.2f}" if d.se is not None else ""
    return f"{d.mean:+.2f}{spread} (n {d.n[0]}/{d.n[1]})"


def _paper(value) -> str:
    return "-" if value is None else f"+{value:g}"


def passes_to(run_history: list, error: float) -> int | None:
    """The first pass whose running training error is at or below ``error`` (None: never)."""
    for metric in sorted(run_history, key=lambda m: m.step):
        if metric.value <= error:
            return metric.step
    return None


def speed_row(client: MlflowClient, claim: dict, relu: Variant, tanh: Variant) -> list[str]:
    """Passes to the claim's training error per seed ('-': not within the run's passes), ReLU
    (the recipe) and tanh, and the ratio of their means (Figure 1: six)."""
    target = claim["speed"]["error"]

    def passes(variant: Variant) -> list[int | None]:
        return [passes_to(client.get_metric_history(r.info.run_id, "train/running_error"), target)
                for r in variant.runs]

    fast, slow = passes(relu), passes(tanh)
    measured = "; ".join(f"{name} " + " ".join("-" if p is None else str(p) for p in values)
                         for name, values in (("ReLU", fast), ("tanh", slow)))
    if fast and slow and all(fast) and all(slow):
        ratio = (sum(slow) / len(slow)) / (sum(fast) / len(fast))
        measured += f"; tanh / ReLU {ratio:.2f}"
        result = "ReLU faster" if ratio > 1 else "ReLU not faster"
    else:
        result = "not reached by every seed"
    return [f"passes to {target:g} % training error, tanh / ReLU", f"ratio {claim['speed']['ratio']:g}",
            measured, "-", result]


HEADER = ["claim", "paper Δ top-1 / top-5", "measured Δ top-1 (pp)", "measured Δ top-5 (pp)", "verdict"]


def table(client: MlflowClient, claims: list[dict], variants: dict[str, Variant]) -> list[list[str]]:
    """One row per claim (Δ of the ablation against the recipe), the 10-crop row, the speed row."""
    default = variants["default"]
    rows = []
    for claim in claims[1:]:
        v = variants[claim["name"]]
        d1 = delta(v.values(TOP1), default.values(TOP1))
        d5 = delta(v.values(TOP5), default.values(TOP5))
        paper = " / ".join(_paper(p) for p in claim["paper"])
        rows.append([claim["claim"], paper, _fmt(d1), _fmt(d5), verdict(d1)])
        if "speed" in claim:
            rows.append(speed_row(client, claim, default, v))
    centre = delta(default.values(("val/error",)), default.values(("val_10crop/error",)))
    rows.append(["10 crops against the centre crop (the recipe's runs)", "-", _fmt(centre), "-",
                 verdict(centre) if default.values(("val_10crop/error",)) else "no 10-crop evaluation"])
    return rows


def figure(claims: list[dict], variants: dict[str, Variant], path: Path) -> Path | None:
    """Δ top-1 per claim with twice its standard error, the paper's Δ beside it."""
    import matplotlib.pyplot as plt

    default = variants["default"]
    measured = [(c, delta(variants[c["name"]].values(TOP1), default.values(TOP1))) for c in claims[1:]]
    measured = [(c, d) for c, d in measured if d is not None]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(measured) + 1.5))
    ys = range(len(measured))
    ax.errorbar([d.mean for _, d in measured], [y + 0.15 for y in ys],
                xerr=[2 * (d.se or 0) for _, d in measured], fmt="o", capsize=4, label="Imagenette (± 2 se)")
    paper = [(y, c["paper"][0]) for y, (c, _) in zip(ys, measured, strict=True) if c["paper"][0] is not None]
    ax.plot([p for _, p in paper], [y - 0.15 for y, _ in paper], "s", label="paper (ILSVRC-2012)")
    ax.axvline(0, color="#999", linewidth=0.8)
    ax.set_yticks(list(ys), [c["name"] for c, _ in measured])
    ax.set_xlabel("top-1 error without the choice minus with it (percentage points)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def as_json(claims: list[dict], variants: dict[str, Variant]) -> dict:
    """What ``experiments/krizhevsky2012/claims.json`` holds: per variant its overrides and, per
    seed, top-1 and top-5 (10-crop and centre), passes run and wall seconds; the device,
    precision, resolution and commit of the runs."""
    out: dict = {"variants": {}}
    for claim in claims:
        v = variants[claim["name"]]
        seeds = {}
        for run in v.runs:
            m, params = run.data.metrics, run.data.params
            seeds[run.data.tags.get("seed", "?")] = {
                "top1_10crop": m.get("val_10crop/error"), "top5_10crop": m.get("val_10crop/top5_error"),
                "top1_centre": m.get("val/error"), "top5_centre": m.get("val/top5_error"),
                "passes": m.get("passes"), "wall_seconds": m.get("time/total_seconds"),
                "stop_reason": run.data.tags.get("stop.reason")}
            out.setdefault("device", run.data.tags.get("device.gpu") or run.data.tags.get("device.cpu"))
            out.setdefault("precision", params.get("trainer.precision"))
            out.setdefault("resolution", {"store": params.get("data.image_size"), "crop": params.get("data.crop_size")})
            out.setdefault("commit", run.data.tags.get("git.commit"))
        out["variants"][claim["name"]] = {"overrides": claim["overrides"], "seeds": seeds,
                                          "parent": v.parent.info.run_id if v.parent else None,
                                          "status": v.parent.info.status if v.parent else None}
    return out


def section(client: MlflowClient, figure_path: Path) -> tuple[list[list[str]], Path | None] | None:
    """The report's claims table and figure; None while no claim has been run."""
    claims = load_claims()
    variants = collect(client, [c["name"] for c in claims])
    if not any(v.parent for v in variants.values()):
        return None
    return table(client, claims, variants), figure(claims, variants, figure_path)
