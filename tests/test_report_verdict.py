"""A verdict beside the paper says which tolerance it used, and the tolerance is the spread
two training runs can show: the seeds' own spread, or the binomial one for a single run."""

from __future__ import annotations

import math

import pytest

from convrepro.report.paper import judge, load_paper, run_note


def _row(experiment, key):
    return next(m for m in load_paper(experiment).metrics if m.key == key)


def test_one_lecun_run_against_the_paper_uses_the_binomial_spread_of_its_error_counts():
    test, train = _row("lecun1989", "test/error"), _row("lecun1989", "train/error")
    sigma = 100 * math.sqrt(0.05 * 0.95 / 2007)  # 5 % of 2007 test digits
    judged = judge(test, 5.78)
    assert judged.verdict == "reproduced" and judged.rule.startswith(f"±{2 * sigma * math.sqrt(2):.2g} ")
    assert "binomial sd on 2,007 patterns" in judged.rule
    assert judge(test, 5.0 + 2 * sigma * math.sqrt(2) + 0.01).verdict == "missed"
    # 21 training misses against the paper's 10 (of 7291) is not within chance
    assert judge(train, 0.288).verdict == "missed"
    assert judge(train, 0.15).verdict == "reproduced"


def test_three_or_more_seeds_are_judged_by_their_own_spread():
    test = _row("lecun1989", "test/error")
    judged = judge(test, 5.89, sd=0.28, n=5)  # the five-seed SGD sweep
    assert judged.rule.startswith(f"±{2 * 0.28 * math.sqrt(1.2):.2g} ") and "sd of the 5 seeds" in judged.rule
    assert judged.verdict == "missed"  # 0.89 off, 0.61 allowed
    assert judge(test, 5.5, sd=0.28, n=5).verdict == "reproduced"
    # two seeds: their sd says too little; the binomial spread, narrowed by sqrt(1 + 1/2)
    two = judge(test, 5.0, sd=0.01, n=2)
    assert "binomial" in two.rule and two.rule.startswith(f"±{2 * 100 * math.sqrt(.05 * .95 / 2007) * math.sqrt(1.5):.2g} ")


@pytest.mark.parametrize("experiment,key,value,verdict", [
    ("waibel1989", "test/error", 4.9, "goal met"),
    ("waibel1989", "test/error", 6.4, "goal missed"),
    ("krizhevsky2012", "val_10crop/error", 21.3, "goal met"),
    ("lecun1989", "test/mse", 0.04, "-"),        # no defensible tolerance: no verdict
    ("lecun1989", "test/error", None, "not measured"),
])
def test_goals_and_rows_without_a_tolerance(experiment, key, value, verdict):
    judged = judge(_row(experiment, key), value)
    assert judged.verdict == verdict
    if verdict.startswith("goal"):
        assert judged.rule.startswith("goal ≤ ") and "(" in judged.rule  # the goal and its reason


def test_the_run_note_shows_each_rows_tolerance_and_no_verdict_for_a_deviation():
    note = run_note("lecun1989", {"test/error": 5.78, "train/error": 0.288}, "r")
    row = next(line for line in note.splitlines() if line.startswith("| test error"))
    assert row.endswith("| reproduced |") and "binomial sd on 2,007 patterns" in row
    assert next(line for line in note.splitlines() if line.startswith("| train error")).endswith("| missed |")
    off = run_note("lecun1989", {"test/error": 5.78}, "r", deviations=["trainer.max_epochs=1"])
    assert "| reproduced |" not in off and "no verdict" in off
