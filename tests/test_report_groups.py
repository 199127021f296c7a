"""Which overrides make a run something other than its experiment's recipe."""

from __future__ import annotations

from convrepro.report.summary import extra_overrides


def test_a_changed_value_of_a_named_group_is_a_deviation_but_the_choice_and_the_seed_are_not():
    overrides = ["experiment=lecun1989", "optim=sdlm", "seed=3", "data.root=/data", "resume=auto",
                 "trainer.enable_progress_bar=false", "optim.lr=0.1", "+trainer.max_epochs=1", "seedling=2"]
    assert extra_overrides(overrides) == ["+trainer.max_epochs=1", "optim.lr=0.1", "seedling=2"]


def test_the_machine_a_run_is_placed_on_is_not_a_deviation_but_more_processes_are():
    # `make reproduce-krizhevsky2012` runs the recipe with trainer=gpu: it must keep its verdict
    assert extra_overrides(["experiment=krizhevsky2012_imagenette", "trainer=gpu"]) == []
    assert extra_overrides(["trainer=cpu", "seed=1"]) == []
    assert extra_overrides(["trainer=ddp", "trainer.devices=8"]) == ["trainer.devices=8", "trainer=ddp"]
    assert extra_overrides(["trainer=gpu", "trainer.precision=bf16-mixed"]) == ["trainer.precision=bf16-mixed"]
