"""Spot checks of auto-labels: the interval, the suspension decision, what an answer counts.

Synthetic answers with a known true accuracy: the Clopper-Pearson interval covers it at
least as often as promised, and a champion that does meet its target is suspended rarely
(at most 1 - confidence over all its answers, however often one looks), while one below
it is suspended within a few hundred answers.
"""

from __future__ import annotations

import random

import pytest
from flywheel.domain.audit import (
    Measurement,
    clopper_pearson,
    is_spot_check_draw,
    log_evidence_below,
    measurement,
    observation,
    reverse,
)
from flywheel.domain.autolabel import Prediction, decide
from flywheel.domain.items import State
from flywheel.domain.sampling import answer_provenance, is_audit_draw
from scipy.stats import beta

CASES = [
    (0, 1),
    (1, 1),
    (0, 12),
    (3, 12),
    (12, 12),
    (39, 40),
    (95, 100),
    (480, 500),
    (19_000, 20_000),
]


@pytest.mark.parametrize("k,n", CASES)
def test_the_interval_is_scipys_clopper_pearson(k, n):
    # calibration.py certifies with scipy.stats.beta.ppf: the functions' pure-Python
    # quantiles must give the same bounds
    low, high = clopper_pearson(k, n, 0.95)
    assert low == pytest.approx(0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1), abs=1e-9)
    assert high == pytest.approx(1.0 if k == n else beta.ppf(0.975, k + 1, n - k), abs=1e-9)


@pytest.mark.parametrize("p,n", [(0.95, 30), (0.8, 60), (0.99, 200)])
def test_the_interval_covers_the_true_accuracy_at_least_as_often_as_promised(p, n):
    rng = random.Random(7)
    runs = 400
    covered = 0
    for _ in range(runs):
        k = sum(rng.random() < p for _ in range(n))
        low, high = clopper_pearson(k, n, 0.95)
        covered += low <= p <= high
    assert covered / runs >= 0.93  # >= 0.95 in expectation; 400 runs: ~1.1 % standard error


def _first_alarm(p: float, target: float, answers: int, rng: random.Random) -> int | None:
    """The answer after which a champion with true accuracy p is first suspended, looking
    after every answer (the evidence first: the full rule adds the interval's bound)."""
    k = 0
    for n in range(1, answers + 1):
        k += rng.random() < p
        # the cheap evidence (log 20 = alpha 0.05) first, then the full rule
        evident = log_evidence_below(k, n, target) >= 2.995732273553991
        if evident and Measurement("m", n, k, target, 0.95).below_target:
            return n
    return None


def test_a_champion_at_its_target_is_rarely_suspended_however_often_one_looks():
    # Given champions whose true accuracy is exactly the target (the hardest true case)
    rng = random.Random(11)
    runs, answers = 200, 400
    # When each of their 400 answers is followed by the check
    alarms = sum(_first_alarm(0.95, 0.95, answers, rng) is not None for _ in range(runs))
    # Then at most 5 % are suspended (Ville's inequality; a per-look interval alone
    # suspends ~18 % of them over 2,000 answers, see docs/certification.md)
    assert alarms / runs <= 0.05


def test_a_champion_well_below_its_target_is_suspended_within_a_few_hundred_answers():
    rng = random.Random(5)
    delays = [_first_alarm(0.85, 0.95, 400, rng) for _ in range(100)]
    caught = sorted(d for d in delays if d is not None)
    assert len(caught) >= 95
    assert caught[len(caught) // 2] <= 100  # median answers to the alarm


def test_the_alarm_needs_the_upper_bound_below_the_target():
    # 0 right of 2: the interval's upper bound 0.84 < 0.95 and the evidence is strong
    assert Measurement("m", 2, 0, 0.95, 0.95).below_target
    # one wrong answer is not enough; nor are 9 right of 12: the upper bound 0.945 is below
    # the target, but a check after every answer needs more evidence than one look would
    assert not Measurement("m", 1, 0, 0.95, 0.95).below_target
    assert Measurement("m", 12, 9, 0.95, 0.95).interval[1] < 0.95
    assert not Measurement("m", 12, 9, 0.95, 0.95).below_target
    assert not Measurement("m", 40, 38, 0.95, 0.95).below_target
    assert not Measurement("m", 0, 0, 0.95, 0.95).below_target
    m = measurement({"model_version": "v", "answered": 20, "correct": 10}, 0.95, 0.95)
    assert m.below_target and m.describe().startswith("audited accuracy 0.50 (95% CI 0.27-0.73")


def test_spot_check_draws_are_a_share_independent_of_the_audit_stream_and_per_champion():
    ids = [f"{n:064x}" for n in range(20_000)]
    drawn = [i for i in ids if is_spot_check_draw(i, "dfw-a", 0.02)]
    assert 0.017 <= len(drawn) / len(ids) <= 0.023
    audit = {i for i in ids if is_audit_draw(i, 0.05)}
    overlap = sum(i in audit for i in drawn) / len(drawn)
    assert 0.03 <= overlap <= 0.07  # independent: 5 % of spot checks are audit draws too
    other = {i for i in ids if is_spot_check_draw(i, "dfw-b", 0.02)}
    assert len(other & set(drawn)) < 0.1 * len(drawn)  # another champion draws anew


def test_spot_checks_and_suspension_only_take_what_would_be_auto_labeled():
    sure, unsure = Prediction("cat", 0.97), Prediction("cat", 0.5)
    assert decide(sure, 0.9, spot_check=True).review_reason == "spot_check"
    assert decide(sure, 0.9, suspended=True).review_reason == "suspended"
    assert decide(sure, 0.9, spot_check=True, suspended=True).review_reason == "suspended"
    assert decide(unsure, 0.9, spot_check=True).review_reason == "uncertain"
    assert decide(Prediction("cat", 0.99, ood=True), 0.9, spot_check=True).review_reason == (
        "out_of_distribution"
    )
    assert decide(sure, 0.9).state == State.AUTO_LABELED


SPOT = {
    "item_id": "a" * 64,
    "state": "needs_review",
    "review_reason": "spot_check",
    "label": "cat",
    "label_source": "model",
    "confidence": 0.97,
    "model_version": "dfw-a",
}


def test_an_answer_to_a_spot_check_is_one_observation_and_a_correction_moves_it():
    right, wrong = observation(SPOT, "cat"), observation(SPOT, "dog")
    assert (right.model_version, right.answered, right.correct) == ("dfw-a", 1, 1)
    assert (wrong.answered, wrong.correct) == (1, 0)
    assert right.record == {
        "model_version": "dfw-a",
        "model_label": "cat",
        "confidence": 0.97,
        "correct": True,
    }
    # the answered item keeps the record; correcting it to the model's label flips correct
    answered = {**SPOT, "state": "human_labeled", "label": "dog", "spot_check": wrong.record}
    fixed = observation(answered, "cat")
    assert (fixed.answered, fixed.correct, fixed.record["correct"]) == (0, 1, True)
    assert observation(answered, "bird").correct == 0  # still wrong: nothing moves
    # undo takes exactly the answer's change back
    assert (reverse(right).answered, reverse(right).correct) == (-1, -1)
    # other items are no observation
    assert observation({**SPOT, "review_reason": "uncertain"}, "cat") is None
    assert observation({**SPOT, "review_reason": "audit"}, "cat") is None


def test_spot_check_answers_are_selected_labels_that_never_certify():
    assert answer_provenance(SPOT) == ("selected", "spot_check")
