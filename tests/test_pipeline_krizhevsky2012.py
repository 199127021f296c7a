"""AlexNet through the real pipeline: a tiny run into a temporary MLflow store, and two DDP
processes (gloo, CPU) that must end with identical weights and one MLflow run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from .conftest import require_data
from .test_pipeline import train

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`

TINY = ("experiment=krizhevsky2012_cpu", "data.train_subset=96", "data.val_subset=40", "data.image_size=73",
        "data.crop_size=64", "data.batch_size=16", "data.eval_batch_size=20", "data.num_workers=0",
        "trainer.enable_progress_bar=false", "model.fc_width=256", "model.width=0.5")


def _only_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("krizhevsky2012")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs


def test_tiny_alexnet_run_records_top1_top5_and_ten_crop(tmp_path, imagenette_store):
    require_data("imagenette2-224")
    result = train(tmp_path, *TINY, "trainer.max_epochs=2", "seed=3")
    assert result.returncode == 0, result.stderr[-4000:]
    client, (run,) = _only_run(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_name == "cpu-sgd-seed3"
    rid = run.info.run_id
    for key in ("val/error", "val/top5_error", "train/running_error", "throughput/train_patterns_per_second"):
        assert [m.step for m in client.get_metric_history(rid, key)] == [1, 2], key
    # AlexNet's checkpoint at most once a minute: these passes take seconds, so the last one only
    assert [m.step for m in client.get_metric_history(rid, "time/checkpoint_seconds")] == [2]
    # The rate each pass trained with: linear decay to 0 over the 2 passes, stepped after each.
    rates = [(h.step, h.value) for h in client.get_metric_history(rid, "train/learning_rate")]
    assert rates == [(1, pytest.approx(0.01)), (2, pytest.approx(0.005))]
    m = run.data.metrics
    assert 0 <= m["val/top5_error"] <= m["val/error"] <= 100
    assert 0 <= m["val_10crop/top5_error"] <= m["val_10crop/error"] <= 100
    # 40 validation images: every error is a multiple of 2.5 %.
    assert (m["val_10crop/error"] / 2.5) == pytest.approx(round(m["val_10crop/error"] / 2.5))
    p, t = run.data.params, run.data.tags
    assert p["data.count.train"] == "96" and p["data.count.val"] == "40"
    assert p["model.input_size"] == "64" and p["model.init"] == "he"
    assert t["dataset.files"] == "136" and len(t["dataset.fingerprint"]) == 64
    artifacts = {a.path for a in client.list_artifacts(rid, "figures")}
    assert {"figures/learning_curves.png", "figures/confusion_val.png",
            "figures/first_layer_kernels.png"} <= artifacts
    # A shrunken network on a subset is not the paper's recipe: the table says so, with no verdict.
    assert "top-1 error, 10-crop" in result.stdout and "not the paper's recipe" in result.stdout
    assert "goal" not in result.stdout


def test_two_ddp_processes_end_identical_and_write_one_run(tmp_path, imagenette_store):
    require_data("imagenette2-224")
    result = train(tmp_path, *TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   "trainer.max_epochs=1", "data.ten_crop=false", "trainer.deterministic=false")
    assert result.returncode == 0, result.stderr[-4000:]
    client, runs = _only_run(tmp_path)
    assert len(runs) == 1  # rank 1 trained but did not record
    run = runs[0]
    assert run.info.status == "FINISHED"
    t = run.data.tags
    assert t["ddp.world_size"] == "2"
    digests = t["ddp.replica_weight_digests"].split()
    assert len(digests) == 2 and digests[0] == digests[1] and t["ddp.replicas_identical"] == "true"
    # Each process trained on its own half of the 96 images (3 steps of 16); the pass's
    # figures are summed over both processes.
    m = run.data.metrics
    assert m["throughput/train_patterns_per_second"] * m["time/pass_seconds"] == pytest.approx(96)
    # The validation error is over all 40 images, both shards together: a multiple of 2.5 %.
    assert m["val/error"] / 2.5 == pytest.approx(round(m["val/error"] / 2.5))
    # Only rank 0 wrote a checkpoint, into the run's own folder.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [run.info.run_id]
