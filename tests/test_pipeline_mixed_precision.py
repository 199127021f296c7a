"""Each paper trains to the end under Lightning's ``bf16-mixed`` (autocast on this CPU)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from .conftest import require_data
from .test_pipeline import train
from .test_pipeline_krizhevsky2012 import TINY

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`

CASES = {
    "lecun1989": ("usps", ("experiment=lecun1989", "data.train_subset=300")),
    "waibel1989": ("speech/fraser", ("experiment=waibel1989", "data.progress=false")),
    "krizhevsky2012": ("imagenette2-224", TINY),
}


@pytest.mark.parametrize("paper", sorted(CASES))
def test_bf16_mixed_run_finishes(tmp_path, paper, request):
    data, overrides = CASES[paper]
    require_data(data)
    if paper == "krizhevsky2012":
        request.getfixturevalue("imagenette_store")
    result = train(tmp_path, *overrides, "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                   "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(paper).experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.precision"] == "bf16-mixed"
    error = run.data.metrics["val/error" if paper == "krizhevsky2012" else "test/error"]
    assert 0 <= error < 100
