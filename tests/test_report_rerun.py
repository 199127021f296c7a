"""Comparing runs: the paper-versus-reproduction report from a store filled by tiny real
runs, rerun from MLflow (identical metrics), and compare."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from convrepro.report import build as report_build
from convrepro.report.compare import main as compare_main

from .conftest import REPO, require_data
from .test_pipeline import train

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`

TINY = ("experiment=lecun1989", "trainer.max_epochs=2", "data.train_subset=300", "trainer.enable_progress_bar=false")
GROUP = "faithful-sgd [data.train_subset=300 trainer.max_epochs=2]"  # TINY's overrides name the group


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An older single run, then a two-seed sweep of the same group, then an SDLM run."""
    require_data("usps")
    tmp = tmp_path_factory.mktemp("report")
    for args in (("seed=9",), ("seed=1,2",), ("optim=sdlm", "seed=1")):
        sweep = ("-m",) if "," in args[0] else ()
        result = train(tmp, *sweep, *TINY, *args)
        assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return tmp, client, client.get_experiment_by_name("lecun1989").experiment_id


def test_report_tables_equal_the_latest_sweep_in_mlflow(store):
    tmp, client, exp = store
    (parent,) = client.search_runs([exp], "tags.sweep = 'parent'")
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    written = report_build.build(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "reports", ["lecun1989"])
    faithful = written["lecun1989"][GROUP]
    assert sorted(faithful["runs"]) == sorted(c.info.run_id for c in children)  # not the older seed-9 run
    errors = {c.info.run_id: c.data.metrics["test/error"] for c in children}
    assert errors[faithful["best"]] == min(errors.values())
    mean = sum(errors.values()) / 2
    sd = abs(list(errors.values())[0] - list(errors.values())[1]) / 2**0.5
    html = (tmp / "reports" / "index.html").read_text()
    md = (tmp / "reports" / "results.md").read_text()
    cell = f"{mean:.4g} ± {sd:.2g} (2)"
    assert cell in html and cell in md
    assert f"{min(errors.values()):.4g}" in md and f"{max(errors.values()):.4g}" in md
    assert faithful["best"] in html and parent.info.run_id in md
    # Provenance of the best run: how it computed (TF32 or true float32, precision, device).
    assert "precision 32-true, float32 matmul highest" in md and "float32 matmul highest" in html
    # The SDLM run is its own group, from all its finished runs.
    assert "sdlm" in " ".join(written["lecun1989"]) and "its one finished run" in md
    # Self-contained: figures are embedded, none is fetched.
    assert html.count("data:image/png;base64,") >= 4 and 'src="http' not in html
    curves = "lecun1989_faithful-sgd_data.train_subset_300_trainer.max_epochs_2_curves"
    assert re.search(rf"!\[{curves}\]\(figures/{curves}\.png\)", md)
    assert (tmp / "reports" / "figures" / f"{curves}.png").stat().st_size > 1000
    # The page opens with the papers side by side; these 2-pass runs are no recipe run, and say so.
    top = md.split("\n## ")[0]
    assert "| LeCun et al. 1989 | test error after 23 passes (%) | 5 | no recipe run yet (`make reproduce-lecun1989`)" \
        in top
    assert '<a href="#lecun1989">LeCun et al. 1989</a>' in html and '<h2 id="lecun1989">' in html
    listed = md[md.index("Runs with overrides"):].splitlines()
    assert any(line.startswith(f"- {GROUP}: 2 run(s), test/error {mean:.4g} (above)") for line in listed), listed
    # Two passes on 300 digits are not the paper's recipe: no verdict beside the paper.
    assert "not the recipe" in md and "| reproduced |" not in md and "| missed |" not in md


def test_rerun_gives_identical_metrics_and_links_the_runs(store):
    tmp, client, exp = store
    (original,) = [r for r in client.search_runs([exp], "tags.seed = '9'") if "rerun.of" not in r.data.tags]
    env_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    import os

    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp), "MLFLOW_TRACKING_URI": env_uri}
    result = subprocess.run([sys.executable, "-m", "convrepro.rerun", original.info.run_id,
                             f"hydra.run.dir={tmp}/outputs/rerun"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (rerun,) = client.search_runs([exp], f"tags.`rerun.of` = '{original.info.run_id}'")
    assert rerun.info.run_id != original.info.run_id and rerun.info.status == "FINISHED"
    for key in ("train/error", "test/error", "test/mse", "train/mse", "test/misses"):
        assert rerun.data.metrics[key] == original.data.metrics[key], key
    assert rerun.info.run_name == original.info.run_name


def test_rerun_restores_values_the_config_files_no_longer_give(store):
    from convrepro.rerun import composed, drift_overrides

    stored = {"optim": {"lr": 0.5, "momentum": 0.0}, "trainer": {"max_epochs": 2},
              "paths": {"root": "/elsewhere"}, "model": {"h2_table": [[0, 1], [2, 3]]}}
    today = composed(["experiment=lecun1989", "trainer.max_epochs=2"])
    drift = drift_overrides(stored, today)
    assert "optim.lr=0.5" in drift and "model.h2_table=[[0,1],[2,3]]" in drift
    assert not any(d.startswith(("paths", "trainer.max_epochs", "optim.momentum")) for d in drift)


def test_compare_lists_config_and_metric_differences(store, capsys):
    tmp, client, exp = store
    (sdlm,) = client.search_runs([exp], "tags.`hydra.choice.optim` = 'sdlm'")
    (sgd,) = client.search_runs([exp], "tags.seed = '1' and tags.`hydra.choice.optim` = 'sgd'")
    assert compare_main([sgd.info.run_id, sdlm.info.run_id, "--uri", f"sqlite:///{tmp / 'mlflow.db'}"]) == 0
    out = capsys.readouterr().out
    assert "optim._target_" in out and "convrepro.training.sdlm.SDLM" in out
    assert "test/loss" in out and "dataset.fingerprint: same" in out
    # Equal metrics are left out unless asked for.
    equal = [k for k in ("test/error", "train/error") if sgd.data.metrics[k] == sdlm.data.metrics[k]]
    assert all(f"│ {k} " not in out for k in equal)
    compare_main([sgd.info.run_id, sdlm.info.run_id, "--uri", f"sqlite:///{tmp / 'mlflow.db'}", "--all-metrics"])
    assert "│ test/error " in capsys.readouterr().out
    assert compare_main([sgd.info.run_id, "nope", "--uri", f"sqlite:///{tmp / 'mlflow.db'}"]) == 2
    assert "no run whose id begins with 'nope'" in capsys.readouterr().err
    # The 8-character ids the report and the tables show are accepted; an ambiguous prefix is named.
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert compare_main([sgd.info.run_id[:8], sdlm.info.run_id[:8], "--uri", uri]) == 0
    out = capsys.readouterr().out  # (the title wraps with the table's width)
    assert f"A={sgd.info.run_id}" in out and f"B={sdlm.info.run_id}" in out
    assert compare_main(["", sdlm.info.run_id, "--uri", uri]) == 2
    assert "is the beginning of" in capsys.readouterr().err


def test_a_job_without_the_environment_finds_its_sweep_parent_by_folder(tmp_path):
    """Jobs on other machines (submitit on SLURM) do not inherit CONVREPRO_PARENT_RUN_ID."""
    from convrepro.tracking.runs import parent_of_job

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("lecun1989")
    old = client.create_run(exp, tags={"sweep": "parent", "sweep.dir": "/runs/multirun/a"}).info.run_id
    mine = client.create_run(exp, tags={"sweep": "parent", "sweep.dir": "/runs/multirun/b"}).info.run_id
    client.create_run(exp, tags={"sweep.dir": "/runs/multirun/b"})  # not a parent
    assert parent_of_job(client, exp, "/runs/multirun/b") == mine
    assert parent_of_job(client, exp, "/runs/multirun/a") == old
    assert parent_of_job(client, exp, "/runs/multirun/c") is None


def test_summary_takes_experiment_names_and_names_the_ones_that_exist(tmp_path, capsys):
    from convrepro.report.cli import main as summary_main

    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    assert summary_main(["lecun89", "--uri", uri]) == 2
    err = capsys.readouterr().err
    assert "no paper or experiment named 'lecun89': choose one of krizhevsky2012" in err and "lecun1989_modern" in err
    assert summary_main(["lecun1989_modern", "--uri", uri]) == 2  # no store there: said, not created
    assert "there is no tracking store at" in capsys.readouterr().err and not (tmp_path / "empty.db").exists()
    from convrepro.tracking.store import check

    check(uri)  # a new, empty store
    assert summary_main(["lecun1989_modern", "--uri", uri]) == 0
    assert "lecun1989_modern is an experiment of lecun1989" in capsys.readouterr().out


@pytest.mark.parametrize("override,why", [
    ("++scheduler.factory._target_=builtins.open", "names code for Hydra to call"),
    ("model.init={_target_:os.system,_args_:[id]}", "names code for Hydra to call"),
    ("hydra/launcher=basic", "changes Hydra itself"),
    ("hydra.job.chdir=true", "changes Hydra itself"),
    ("+optim@hydra.callbacks.evil=sgd", "changes Hydra itself"),  # a package override reaching Hydra
    ("+optim@evil=sgd", "adds a key (+ or ++)"),
    ("optim@model=sgd", "moves a config to another package (@)"),
    ("+brand.new_key=1", "adds a key (+ or ++)"),
    ("++optim.lr=0.1", "adds a key (+ or ++)"),
    ("~seed", "deletes a key"),
    ("optim.lr='${oc.env:MLFLOW_TRACKING_PASSWORD}'", "holds an interpolation"),
    (r"logger.experiment_name=$\{oc.env:SECRET_TOKEN\}", "holds an interpolation"),  # escaped: still refused
    ("logger.tracking_uri=http://127.0.0.1:9", "sets where the run reads or writes"),  # credentials elsewhere
    ("paths.output_dir=/tmp/x", "sets where the run reads or writes"),
    ("experiment=../../../store/mlartifacts/1/abc/artifacts/cfg_notes", "chooses no file of conf/experiment/"),
    ("optim=../../x", "chooses no file of conf/optim/"),
    ("training=1", "replaces a whole config section"),
    ("brand_new=1", "sets a key the project's config does not have"),
    ("seed=1,2", "is a sweep"),
    ("optim.lr=[a,{b:1}]", "not a plain number, string, bool or list"),
])
def test_stored_overrides_outside_the_allow_list_are_refused(override, why):
    from convrepro.errors import ConfigError
    from convrepro.rerun import checked_overrides

    with pytest.raises(ConfigError, match=re.escape(why)):
        checked_overrides(["experiment=lecun1989", override], "abc")
    fine = ["experiment=lecun1989", "optim=sdlm", "seed=3", "trainer.max_epochs=2", "optim.lr=0.1",
            "data.train_subset=1000", "model.h2_table=[[0,1],[2]]"]
    assert checked_overrides(fine, "abc") == fine


def test_a_tampered_config_artifact_restores_only_plain_values_of_existing_keys():
    from convrepro.rerun import composed, drift_overrides

    today = composed(["experiment=lecun1989"])
    stored = {"optim": {"lr": 0.25, "_target_": "builtins.exec"}, "seed": "${oc.env:HOME}",
              "planted": {"_target_": "os.system"}, "scheduler": {}}  # an empty section: nothing to restore
    dropped: list[str] = []
    assert drift_overrides(stored, today, dropped) == ["optim.lr=0.25"]
    assert sorted(dropped) == ["optim._target_ (its stored value names code for Hydra to call)",
                               "planted (not in today's config)", "seed (its stored value holds an interpolation)"]


@pytest.mark.parametrize("attack", ["callback", "path", "server", "package"])
def test_a_rerun_of_a_run_whose_tag_was_edited_runs_nothing(store, tmp_path, capsys, attack):
    """The attacks of a user who can write a shared store's tags and artifacts: a Hydra callback
    that empties a file, a group choice reaching a YAML planted as an artifact, a tracking URI
    that would receive the rerunning user's credentials, a package override into Hydra."""
    import socket

    from convrepro.rerun import main as rerun_main

    tmp, client, exp = store
    (original,) = [r for r in client.search_runs([exp], "tags.seed = '9'") if "rerun.of" not in r.data.tags]
    run_id, tag = original.info.run_id, original.data.tags["hydra.overrides"]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = tmp_path / "cfg_notes.yaml"
    planted.write_text(f"hydra:\n  callbacks:\n    evil:\n      _target_: builtins.open\n      _args_: [{victim}, w]\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    edited = {"callback": f"++scheduler.factory._target_=builtins.open ++scheduler.factory._args_=[{victim},w]",
              "path": "experiment=" + os.path.relpath(planted.with_suffix(""), REPO / "conf" / "experiment"),
              "server": f"logger.tracking_uri=http://127.0.0.1:{listener.getsockname()[1]}",
              "package": "+optim@hydra.callbacks.evil=sgd"}[attack]
    client.set_tag(run_id, "hydra.overrides", f"{tag} {edited}")
    try:
        assert rerun_main([run_id, "--uri", f"sqlite:///{tmp / 'mlflow.db'}"]) == 2
    finally:
        client.set_tag(run_id, "hydra.overrides", tag)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: run {run_id} cannot be rerun: its stored override ")
    assert victim.read_text() == "precious"
    with pytest.raises(TimeoutError):  # nothing connected to the host named in the store
        listener.accept()
    listener.close()


def test_runs_are_pooled_only_with_the_same_configuration_and_a_rerun_counts_once(store, capsys, monkeypatch):
    """A smoke run (another max_epochs) is its own group, labelled by what differs; a rerun of a
    run in a group does not count twice; neither is set beside the paper as the recipe."""
    from convrepro.report.cli import main as summary_main
    from convrepro.report.summary import finished_runs, groups_of

    tmp, client, exp = store
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    result = train(tmp, "experiment=lecun1989", "trainer.max_epochs=1", "data.train_subset=300", "seed=7",
                   "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-2000:]
    originals = client.search_runs([exp], "tags.seed = '9'")
    if not any("rerun.of" in r.data.tags for r in originals):  # the rerun test may have made one already
        original = next(r for r in originals if "rerun.of" not in r.data.tags)
        env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp), "MLFLOW_TRACKING_URI": uri}
        rerun = subprocess.run([sys.executable, "-m", "convrepro.rerun", original.info.run_id,
                                f"hydra.run.dir={tmp}/outputs/rerun2"], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
    groups = groups_of(finished_runs(client, "lecun1989"))
    assert set(groups) == {GROUP, "faithful-sgd [data.train_subset=300 trainer.max_epochs=1]",
                           "faithful-sdlm [data.train_subset=300 trainer.max_epochs=2]"}
    assert sorted(r.data.tags["seed"] for r in groups[GROUP]) == ["1", "2", "9"]  # the rerun of 9 counted once
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    assert summary_main(["lecun1989", "--uri", uri]) == 0
    out = capsys.readouterr().out
    assert "(overrides)" in out and "(1 run)" in out and "± 0 " not in out


def test_summary_headers_tell_groups_apart_at_80_columns_and_durations_read_as_the_run_table(store, monkeypatch,
                                                                                            capsys):
    from convrepro.report.cli import main as summary_main

    tmp, _, _ = store
    monkeypatch.setenv("COLUMNS", "80")
    assert summary_main(["lecun1989", "--uri", f"sqlite:///{tmp / 'mlflow.db'}"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines() if line.startswith(("┃", "│"))) <= 80
    header = " ".join(line for line in out.splitlines() if line.startswith("┃"))
    assert "[1]" in header and "[2]" in header and "faithful-sdlm" in header and "faithful-sgd" in header
    legend = [line for line in out.splitlines() if line.startswith("[")]
    assert len(legend) >= 2 and legend[0].startswith("[1] faithful-sdlm [") and ": runs " in legend[0]
    wall = next(line for line in out.splitlines() if line.startswith("│ wall time"))
    assert "3 days" in wall and "259200" not in wall and " s " in wall  # the paper's and the runs' durations


def test_the_reports_top_in_a_browser_is_the_papers_side_by_side(store, tmp_path):
    """The page as a reader first sees it (headless Chromium, 1,400 px): the papers' table before
    any section, each paper a link to its section.  A screenshot is kept for a person to look at."""
    from .test_mlflow_server import seen_at_1400_px

    tmp, _, _ = store
    report_build.build(f"sqlite:///{tmp / 'mlflow.db'}", tmp_path / "reports")
    dom, _ = seen_at_1400_px((tmp_path / "reports" / "index.html").as_uri(), tmp_path, budget_ms=5000)
    first_table, first_section = dom.index("<table>"), dom.index("<h2")
    assert first_table < first_section
    top = dom[first_table:dom.index("</table>")]
    assert "<th>headline measure</th>" in top
    for paper in ("krizhevsky2012", "lecun1989", "waibel1989"):
        assert f'<a href="#{paper}">' in top and f'<h2 id="{paper}">' in dom
