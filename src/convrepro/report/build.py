"""``convrepro-report``: the papers' tables beside the reproductions, as HTML and Markdown.

    convrepro-report [--uri URI] [--out reports] [--paper lecun1989 ...]

Writes ``<out>/index.html`` (self-contained: figures are embedded, it opens offline) and
``<out>/results.md`` (figures beside it in ``<out>/figures/``).  Per paper and group
(variant-optimizer): paper value, reproduction mean ± sd and n over the latest sweep,
min/max, the best run's id and a verdict; learning curves of every seed; the best run's
own figures (confusion matrix, rejection or shift-invariance curve, first-layer kernels).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from convrepro.paths import EXPERIMENTS_DIR, PROJECT_ROOT  # noqa: E402
from convrepro.tracking.store import add_uri_argument

from . import claims  # noqa: E402
from .collect import Group, best_run, groups_for  # noqa: E402
from .paper import Judgement, cell, judge, load_paper  # noqa: E402
from .summary import is_recipe  # noqa: E402

RUN_FIGURES = ("confusion_test.png", "confusion_val.png", "rejection_test.png", "shift_invariance.png",
               "first_layer_kernels.png")


CAPTIONS = {"confusion_test": "Confusion matrix on the test set (best run)",
            "confusion_val": "Confusion matrix on the validation set (best run)",
            "rejection_test": "Test error against the share of patterns rejected (best run)",
            "shift_invariance": "Accuracy against a time shift of the input (best run)",
            "first_layer_kernels": "First-layer kernels after training (best run)"}


def caption(stem: str) -> str:
    """What a figure shows, not its file name."""
    if stem.endswith("_curves"):
        return "Learning curves of every seed in the group"
    return next((text for key, text in CAPTIONS.items() if stem.endswith(key)), stem.replace("_", " "))


def papers() -> list[str]:
    return sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/paper.yaml"))


def seed_curves(client: MlflowClient, group: Group, keys: list[str], path: Path, title: str) -> Path | None:
    # Drawn at the size the page shows it (4 inches a panel at 110 dpi, no downscaling), so that
    # ticks and legend stay readable.
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3.2), squeeze=False,
                             layout="constrained")
    drawn = False
    for ax, key in zip(axes[0], keys, strict=False):
        for run in group.runs:
            history = client.get_metric_history(run.info.run_id, key)
            if len(history) >= 2:  # one point is no curve
                drawn = True
                ax.plot([m.step for m in history], [m.value for m in history], marker="o", ms=2,
                        label=f"seed {run.data.tags.get('seed', '?')}")
        ax.set_xlabel("pass (epoch)")
        ax.set_ylabel(f"{key} (%)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path if drawn else None


def run_figures(client: MlflowClient, run, into: Path) -> list[Path]:
    names = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "figures")}
    out = []
    for name in RUN_FIGURES:
        if name in names:
            local = client.download_artifacts(run.info.run_id, f"figures/{name}", str(into))
            target = into / f"{run.info.run_id[:8]}_{name}"
            os.replace(local, target)
            out.append(target)
    return out


def provenance(run) -> str:
    """How the run computed: device, precision, float32 matmul mode (TF32 or not), commit."""
    t, p = run.data.tags, run.data.params
    return (f"device {t.get('device.gpu', t.get('device.accelerator', '?'))}, precision "
            f"{p.get('trainer.precision', '32-true')}, float32 matmul "
            f"{t.get('torch.float32_matmul_precision', 'highest')}, commit {t.get('git.commit', '?')[:10]}")


HOW_TO_RUN = {"lecun1989": "make reproduce-lecun1989", "waibel1989": "make reproduce-waibel1989",
              "krizhevsky2012": "make reproduce-krizhevsky2012"}


def build(uri: str, out: Path, selected: list[str] | None = None) -> dict:
    """Write the report; returns what it wrote, per paper and group (the tests read it).

    The page opens with one table of the papers (each headline number beside the best recipe
    group's); then per paper its recipe groups in full (table, every seed's curves, the best
    run's figures) and the groups with overrides (smoke runs, variants) as a short list."""
    client = MlflowClient(uri)
    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    sections_md, sections_html, overview = [], [], []
    written: dict = {}
    for experiment in selected or papers():
        paper = load_paper(experiment)
        groups = groups_for(client, experiment, [m.key for m in paper.metrics])
        overview.append(_overview_row(experiment, paper, groups))
        md, body = sections_md, sections_html  # this paper's section
        md.append(f"\n## {paper.citation}\n")
        body.append(f'<h2 id="{experiment}">{html.escape(paper.citation)}</h2>')
        if not groups:
            how = HOW_TO_RUN.get(experiment, f"convrepro-train experiment={experiment}")
            md.append(f"No finished runs yet: `{how}` makes the first.\n")
            body.append(f"<p>No finished runs yet: <code>{html.escape(how)}</code> makes the first.</p>")
        recipe = [g for g in groups if is_recipe(g.key)]
        others = [g for g in groups if not is_recipe(g.key)]
        for group in recipe + [g for g in others if _passes(g) >= 2]:
            _group_section(client, experiment, paper, group, figures, md, body, written)
        if others:
            items = [f"{g.key}: {len(g.runs)} run(s), {paper.primary} {cell(_mean(g, paper.primary))}"
                     + (" (above)" if _passes(g) >= 2 else "") for g in others]
            md.append("\nRuns with overrides (not the paper's recipe; one-pass smoke runs get no figures):\n")
            md += [f"- {item}" for item in items]
            body.append("<details><summary>Runs with overrides (not the paper's recipe)</summary><ul>"
                        + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul></details>")
            for g in others:
                written.setdefault(experiment, {}).setdefault(g.key, {"runs": [r.info.run_id for r in g.runs],
                                                                      "best": None})
        if experiment == claims.EXPERIMENT:
            _claims(client, figures, md, body, written)
    header = ["paper", "headline measure", "paper", "best recipe group: mean ± sd (n)", "verdict"]
    md = [f"# convrepro — paper versus reproduction\n\nTracking store: `{uri}`\n",
          *_md_table(header, overview), *sections_md]
    linked = [[f'<a href="#{e}">{html.escape(row[0])}</a>', *map(html.escape, row[1:])]
              for e, row in zip(selected or papers(), overview, strict=True)]
    top = _html_table(header, linked, escaped=True)
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "index.html").write_text(_page(top + "\n" + "\n".join(sections_html), uri))
    return written


def _passes(group: Group) -> int:
    """The most passes a run of the group made (runs before the ``passes`` metric: their setting)."""
    return max((int(r.data.metrics.get("passes", r.data.params.get("trainer.max_epochs", 0))) for r in group.runs),
               default=0)


def _mean(group: Group, key: str) -> float | None:
    agg = group.aggregates.get(key)
    return agg.mean if agg else None


def _overview_row(experiment: str, paper, groups: list[Group]) -> list[str]:
    """The paper's headline number beside the best recipe group's mean (the lowest)."""
    metric = next((m for m in paper.metrics if m.key == paper.primary), paper.metrics[0])
    scored = [g for g in groups if is_recipe(g.key) and metric.key in g.aggregates]
    if not scored:
        return [paper.citation.split(" (")[0], metric.label, cell(metric.paper, metric.key),
                f"no recipe run yet (`{HOW_TO_RUN.get(experiment, experiment)}`)", "-"]
    best = min(scored, key=lambda g: g.aggregates[metric.key].mean)
    agg = best.aggregates[metric.key]
    judged = judge(metric, agg.mean, agg.sd, agg.n)
    return [paper.citation.split(" (")[0], metric.label, cell(metric.paper, metric.key),
            (f"{agg.mean:.4g} ± {agg.sd:.2g} ({agg.n})" if agg.n > 1 else f"{agg.mean:.4g} (1)") + f" [{best.key}]",
            judged.verdict or "-"]


def _group_section(client, experiment, paper, group, figures, md, body, written) -> None:
    primary = paper.primary
    best = best_run(group, primary)
    written.setdefault(experiment, {})[group.key] = {"runs": [r.info.run_id for r in group.runs],
                                                     "best": best.info.run_id if best else None}
    md.append(f"\n### {group.key} — {group.source}\n")
    md.append(f"Best run by {primary}: `{best.info.run_id}` ({best.info.run_name}); {provenance(best)}\n")
    rows = []
    for m in paper.metrics:
        agg = group.aggregates.get(m.key)
        repro = "-" if agg is None else (f"{agg.mean:.4g} (1 run)" if agg.n == 1
                                         else f"{agg.mean:.4g} ± {agg.sd:.2g} ({agg.n})")
        judged = (judge(m, agg and agg.mean, agg and agg.sd, agg.n if agg else 1) if is_recipe(group.key)
                  else Judgement("not the recipe", ""))
        rows.append([m.label, cell(m.paper, m.key), repro, cell(agg and agg.minimum, m.key),
                     cell(agg and agg.maximum, m.key), judged.rule, judged.verdict])
    md += _md_table(GROUP_HEADER, rows)
    body.append(f"<h3>{html.escape(group.key)} <small>{html.escape(group.source)}</small></h3>")
    body.append(f"<p>Best run by <code>{html.escape(primary)}</code>: <code>{best.info.run_id}</code> "
                f"({html.escape(best.info.run_name)}); {html.escape(provenance(best))}</p>")
    body.append(_html_table(GROUP_HEADER, rows))
    pictures = []
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{experiment}_{group.key}").strip("_")
    if len(stem) > 100:  # a group of many overrides: a file name the file system takes
        stem = f"{stem[:80]}_{hashlib.sha1(stem.encode()).hexdigest()[:10]}"
    curve = seed_curves(client, group, paper.curves, figures / f"{stem}_curves.png",
                        f"{experiment} {group.key}: every seed")
    if curve:
        pictures.append(curve)
    pictures += run_figures(client, best, figures)
    for picture in pictures:
        _embed(picture, caption(picture.stem), md, body)
    md.append("")


def _claims(client: MlflowClient, figures: Path, md: list[str], body: list[str], written: dict) -> None:
    """AlexNet's claims (``make claims-krizhevsky2012``): the ablations' table and figure."""
    found = claims.section(client, figures / "krizhevsky2012_claims.png")
    title = "AlexNet's claims on Imagenette: what each choice buys"
    if found is None:
        md.append(f"\n### {title}\n\nNot measured yet: `make claims-krizhevsky2012` (on a GPU).\n")
        body.append(f"<h3>{html.escape(title)}</h3><p>Not measured yet: <code>make claims-krizhevsky2012</code> "
                    "(on a GPU).</p>")
        return
    rows, picture = found
    written.setdefault(claims.EXPERIMENT, {})["claims"] = rows
    note = ("Δ: error without the choice minus with it, percentage points, ± the standard error of the "
            "difference of the two means (n seeds ablation/recipe); ten classes, not the paper's thousand.")
    md += [f"\n### {title}\n", note + "\n", *_md_table(claims.HEADER, rows)]
    body += [f"<h3>{html.escape(title)}</h3>", f"<p>{html.escape(note)}</p>", _html_table(claims.HEADER, rows)]
    if picture is not None:
        _embed(picture, "Δ top-1 per claim (± 2 standard errors) beside the paper's", md, body)
        md.append("")


GROUP_HEADER = ["measure", "paper", "reproduction mean ± sd (n)", "min", "max", "tolerance", "verdict"]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _embed(picture: Path, text: str, md: list[str], body: list[str]) -> None:
    """A figure beside the Markdown (a file in figures/) and inside the HTML (self-contained)."""
    md.append(f"\n![{picture.stem}](figures/{picture.name})")
    data = base64.b64encode(picture.read_bytes()).decode()
    body.append(f'<figure><img alt="{picture.stem}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(text)}</figcaption></figure>")


def _html_table(header: list[str], rows: list[list[str]], escaped: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cls = {"reproduced": "ok", "goal met": "ok", "missed": "miss", "goal missed": "miss"}.get(row[-1], "")
        cells = "".join(f"<td>{c if escaped else html.escape(c)}</td>" for c in row[:-1])
        lines.append(f'<tr>{cells}<td class="{cls}">{row[-1] if escaped else html.escape(row[-1])}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _page(body: str, uri: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>convrepro — paper versus reproduction</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
td.ok {{ background: #e3f5e1; }} td.miss {{ background: #fbe3e1; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}  /* shown at the size drawn */
small {{ color: #777; font-weight: normal; }}
</style></head><body>
<h1>convrepro — paper versus reproduction</h1>
<p>Tracking store: <code>{html.escape(uri)}</code></p>
{body}
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-report", description=__doc__.splitlines()[0])
    add_uri_argument(parser)
    parser.add_argument("--out", default=str(PROJECT_ROOT / "reports"))
    parser.add_argument("--paper", action="append", choices=papers(), help="only these papers (repeatable)")
    args = parser.parse_args(argv)
    from convrepro.tracking.store import TrackingError, check

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        check(args.uri, must_exist=True)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    build(args.uri, Path(args.out), args.paper)
    print(f"written {Path(args.out) / 'index.html'} and {Path(args.out) / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
