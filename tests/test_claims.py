"""AlexNet's claims: the ablations as seed sweeps, the table, its verdicts, the floor stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

from convrepro.claims import main as claims_main
from convrepro.claims import variant_overrides
from convrepro.models.krizhevsky2012 import AlexNet
from convrepro.report.claims import Delta, delta, load_claims, verdict

from .conftest import REPO, require_data

TINY = ["trainer=cpu", "data.image_size=73", "data.crop_size=64", "model.conv1_padding=2", "data.train_subset=96",
        "data.val_subset=40", "data.batch_size=16", "data.eval_batch_size=20", "data.num_workers=0",
        "model.fc_width=256", "model.width=0.25", "trainer.max_epochs=2", "trainer.enable_progress_bar=false"]


def test_delta_is_the_difference_of_means_with_the_standard_error_of_that_difference():
    d = delta([10.0, 12.0], [8.0, 8.0])  # sd 1.414 and 0, n 2 each: se = sqrt(2/2 + 0/2) = 1
    assert (round(d.mean, 9), round(d.se, 9), d.n) == (3.0, 1.0, (2, 2))
    assert verdict(d) == "holds, outside the seeds' spread"
    assert verdict(Delta(1.5, 1.0, (3, 3))) == "holds, within the seeds' spread"
    assert verdict(Delta(-3.0, 1.0, (3, 3))) == "reversed, outside the seeds' spread"
    assert verdict(Delta(0.5, None, (1, 3))) == "direction holds; too few seeds to tell from noise"
    assert verdict(None) == "no finished runs"


def test_a_claims_width_halves_the_commands_and_its_keys_win():
    assert variant_overrides(["model.groups=1", "model.width=0.5"], ["model.width=0.25", "model.groups=2",
                                                                      "trainer=cpu"]) == [
        "trainer=cpu", "model.groups=1", "model.width=0.125"]
    assert variant_overrides(["model.width=0.5"], []) == ["model.width=0.5"]


def test_every_claim_of_the_paper_is_in_the_claims_file():
    names = [c["name"] for c in load_claims()]
    assert names == ["default", "lrn", "overlapping_pooling", "two_gpus", "pca_noise", "dropout", "relu"]


@pytest.mark.parametrize("argv,message", [
    (["--only", "lrm"], "--only 'lrm': unknown claim 'lrm'; choose from default, lrn, overlapping_pooling"),
    (["--seeds", ""], "--seeds '' names no seed: give at least one"),
    (["--seeds", "1,x"], "--seeds: 'x' is not a seed"),
    (["seed=3"], "'seed=3': overrides are key=value for every run (seeds go in --seeds)"),
])
def test_bad_input_is_one_line_and_nothing_runs(argv, message, capsys):
    assert claims_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_tanh_replaces_every_relu_of_alexnet():
    torch.manual_seed(0)
    relu, tanh = AlexNet(num_classes=10, input_size=67, width=0.25, fc_width=32), \
        AlexNet(num_classes=10, input_size=67, width=0.25, fc_width=32, nonlinearity="tanh")
    tanh.load_state_dict(relu.state_dict())
    assert isinstance(tanh.activation, torch.nn.Tanh) and isinstance(relu.activation, torch.nn.ReLU)
    x = torch.randn(2, 3, 67, 67)
    relu.eval(), tanh.eval()
    assert not torch.allclose(relu(x), tanh(x))


def _env(tmp_path, prepared):
    return {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "CONVREPRO_PREPARED_DIR": str(prepared.parent),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


@pytest.mark.slow
def test_a_run_whose_plateau_rule_is_at_its_floor_stops_and_says_why(tmp_path, imagenette_store):
    require_data("imagenette2-224")
    result = subprocess.run([sys.executable, "-m", "convrepro.train", "experiment=krizhevsky2012_claims", *TINY,
                             "trainer.max_epochs=5", "scheduler.factory.min_lr=0.01", f"hydra.run.dir={tmp_path}/o"],
                            cwd=REPO, env=_env(tmp_path, imagenette_store), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("krizhevsky2012").experiment_id])
    assert run.data.metrics["passes"] == 1  # the floor is the starting rate: nothing to learn after pass 1
    assert run.data.tags["stop.reason"] == ("the plateau rule reached its floor (learning rate 0.01) after pass 1")


@pytest.mark.slow
def test_make_claims_runs_every_variant_as_a_sweep_and_the_report_shows_the_table(tmp_path, imagenette_store):
    """The whole table end to end with tiny settings through ARGS, as a user would on a GPU."""
    require_data("imagenette2-224")
    out = tmp_path / "claims.json"
    result = subprocess.run(["make", "claims-krizhevsky2012", "SEEDS=2", "STORE_SIZE=73", f"CLAIMS_JSON={out}",
                             f"ARGS={' '.join(TINY)}"], cwd=REPO, env=_env(tmp_path, imagenette_store),
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    data = json.loads(out.read_text())
    assert list(data["variants"]) == [c["name"] for c in load_claims()]
    for name, variant in data["variants"].items():
        assert variant["status"] == "FINISHED" and sorted(variant["seeds"]) == ["1", "2"], name
        for seed in variant["seeds"].values():
            assert 0 <= seed["top1_10crop"] <= 100 and 0 <= seed["top5_centre"] <= 100 and seed["passes"] == 2
    assert data["variants"]["two_gpus"]["overrides"] == ["model.groups=1", "model.width=0.5"]
    assert data["precision"] == "32-true" and data["resolution"] == {"store": "73", "crop": "64"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("krizhevsky2012").experiment_id
    parents = client.search_runs([experiment], "tags.sweep = 'parent'")
    assert sorted(p.data.tags["variant"] for p in parents) == sorted(f"claims-{n}" for n in data["variants"])
    two_gpus = next(p for p in parents if p.data.tags["variant"] == "claims-two_gpus")
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{two_gpus.info.run_id}'")
    assert len(children) == 2 and {c.data.params["model.width"] for c in children} == {"0.125"}  # half of 0.25

    report = subprocess.run([sys.executable, "-m", "convrepro.report.build", "--out", str(tmp_path / "rep"),
                             "--paper", "krizhevsky2012"], cwd=REPO, env=_env(tmp_path, imagenette_store),
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    md = (tmp_path / "rep/results.md").read_text()
    table = md[md.index("### AlexNet's claims"):]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 8, rows  # six claims, the ReLU/tanh speed, 10 crops against the centre
    assert rows[0].startswith("| local response normalisation (section 3.3) | +1.4 / +1.2 | ") and "(n 2/2)" in rows[0]
    assert "passes to 25 % training error, tanh / ReLU | ratio 6 |" in table
    assert (tmp_path / "rep/figures/krizhevsky2012_claims.png").stat().st_size > 5000


@pytest.mark.slow
def test_a_variant_that_fails_leaves_its_parent_failed_with_the_reason_and_the_others_run(tmp_path, imagenette_store):
    require_data("imagenette2-224")
    claims = tmp_path / "claims.yaml"
    claims.write_text("claims:\n"
                      "  - {name: diverges, claim: a rate that diverges, overrides: [optim.lr=1e9], paper: [null, null]}\n"
                      "  - {name: lrn, claim: LRN, overrides: [model.lrn=false], paper: [1.4, 1.2]}\n")
    result = subprocess.run([sys.executable, "-m", "convrepro.claims", "--seeds", "1", "--claims", str(claims),
                             "--json", str(tmp_path / "c.json"), *TINY, "trainer.max_epochs=1"], cwd=REPO,
                            env=_env(tmp_path, imagenette_store), capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "claims: diverges failed (exit 1); its parent run says why; the others go on" in result.stderr
    assert "claims: 1 variant(s) failed: diverges" in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("krizhevsky2012").experiment_id
    parents = {p.data.tags["variant"]: p for p in client.search_runs([experiment], "tags.sweep = 'parent'")}
    assert parents["claims-diverges"].info.status == "FAILED"
    assert "failed: FloatingPointError: the training loss became nan" in parents["claims-diverges"].data.tags["error"]
    assert parents["claims-lrn"].info.status == "FINISHED" and parents["claims-default"].info.status == "FINISHED"
