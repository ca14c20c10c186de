"""Calibration and threshold choice: pure functions on simulated data."""

import numpy as np
import pytest
from classifier import calibration


def test_temperature_lowers_ece_of_an_overconfident_model():
    # Given logits whose true class probabilities are softmax(logits / 3): the model is
    # three times too confident
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 5))
    true_probs = calibration.softmax(logits, 3.0)
    labels = np.array([rng.choice(5, p=p) for p in true_probs])

    # When a temperature is fitted
    t = calibration.fit_temperature(logits, labels)

    # Then it recovers about 3 and the calibration error drops
    def ece(temperature):
        probs = calibration.softmax(logits, temperature)
        return calibration.expected_calibration_error(probs.max(1), probs.argmax(1) == labels)

    assert 2.6 < t < 3.4
    assert ece(t) < 0.03 < ece(1.0)


def test_clopper_pearson_matches_the_known_bound():
    # 59 correct of 59 certifies 95% at 95% confidence, 58 of 58 does not
    assert calibration.lower_confidence_bound(59, 59) == pytest.approx(0.05 ** (1 / 59))
    assert (
        calibration.lower_confidence_bound(59, 59)
        > 0.95
        > calibration.lower_confidence_bound(58, 58)
    )
    assert calibration.min_samples_for(0.95) == 59
    assert calibration.lower_confidence_bound(0, 10) == 0.0


def simulate(rng, n):
    """Confidence c, correct with probability c**1.5: an overconfident model."""
    confidences = rng.uniform(0.3, 1.0, n) ** 0.5
    return confidences, rng.random(n) < confidences**1.5


def true_accuracy_curve(rng):
    """The true accuracy above any threshold, from a very large sample of the same model."""
    population = np.sort(rng.uniform(0.3, 1.0, 2_000_000) ** 0.5)[::-1]
    cumulative = np.cumsum(population**1.5)

    def true_accuracy(threshold):
        m = np.searchsorted(-population, -threshold, side="right")
        return cumulative[m - 1] / m

    return true_accuracy


def test_the_certified_threshold_reaches_the_target_in_95_percent_of_draws():
    # Given an overconfident model whose true accuracy above each threshold is known
    rng = np.random.default_rng(1)
    true_accuracy = true_accuracy_curve(rng)

    # When thresholds are certified on many independent calibration sets of 2,000
    outcomes, coverages = [], []
    for _ in range(200):
        choice = calibration.certify_threshold(*simulate(rng, 2000), target_accuracy=0.9)
        outcomes.append(not choice.reached or true_accuracy(choice.threshold) >= 0.9)
        coverages.append(choice.coverage)

    # Then auto-labels are at least 90% accurate in at least ~95% of the draws (in fact far
    # more: Bonferroni over the sequences is conservative), and a useful share is auto-labeled
    # (the oracle threshold covers ~35%; an uncalibrated model costs power, never validity)
    assert np.mean(outcomes) >= 0.95
    assert np.mean(coverages) > 0.15


def test_a_model_just_below_the_target_is_almost_never_certified():
    # Given a model whose every confidence band is 97.5% accurate, and a target of 98%
    rng = np.random.default_rng(3)
    certified = 0
    for _ in range(300):
        confidences = rng.uniform(0.97, 1.0, 2000)
        correct = rng.random(2000) < 0.975
        certified += calibration.certify_threshold(confidences, correct, 0.98).reached
    # Then a certificate (which would be wrong) comes out in at most 5% of the draws
    assert certified / 300 <= 0.05


def test_power_grows_with_the_number_of_random_labels():
    # Given a calibrated model (correct with probability = its confidence), target 95%
    rng = np.random.default_rng(4)

    def draw(n):
        confidences = rng.beta(20, 0.6, n)
        return confidences, rng.random(n) < confidences

    # Then more labels certify more coverage, never less accuracy than promised
    small = np.mean([calibration.certify_threshold(*draw(100), 0.95).coverage for _ in range(50)])
    large = np.mean([calibration.certify_threshold(*draw(3000), 0.95).coverage for _ in range(50)])
    assert large > small and large > 0.85


def test_one_confident_error_at_the_top_ends_one_sequence_not_the_certificate():
    # Given 600 correct samples and the single most confident one wrong
    rng = np.random.default_rng(5)
    confidences = np.sort(rng.uniform(0.96, 1.0, 600))[::-1]
    correct = np.ones(600, bool)
    correct[0] = False
    # Then the other sequences still certify 95%
    choice = calibration.certify_threshold(confidences, correct, 0.95)
    assert choice.reached and choice.coverage > 0.9 and choice.lower_bound >= 0.95


def test_no_certifiable_threshold_auto_labels_nothing():
    # Given 40 held-out samples, all correct: too few to certify 95% (59 needed)
    choice = calibration.certify_threshold(
        np.full(40, 0.99), np.ones(40, bool), target_accuracy=0.95
    )
    assert not choice.reached
    assert choice.threshold > 1.0 and choice.coverage == 0.0


def test_threshold_is_a_certified_sample_and_its_bound_holds():
    # Given 400 confident correct samples and 50 unsure wrong ones, target 98%
    rng = np.random.default_rng(2)
    confidences = np.concatenate([rng.uniform(0.98, 1.0, 400), rng.uniform(0.3, 0.5, 50)])
    correct = np.concatenate([np.ones(400, bool), np.zeros(50, bool)])
    choice = calibration.certify_threshold(confidences, correct, target_accuracy=0.98)
    # Then the threshold is the least confident selected sample (never an unobserved grid point),
    # a few of the wrong ones may come along, and the selected set still clears the target
    assert choice.reached and choice.threshold in confidences
    assert choice.n_selected == int((confidences >= choice.threshold).sum())
    assert 400 <= choice.n_selected < 420 and choice.lower_bound >= 0.98
    assert choice.accuracy == pytest.approx(400 / choice.n_selected)


def test_labels_needed_projects_how_many_random_labels_unlock_coverage():
    # Given 200 labels where the most confident 80% are 99.4% right and the rest 60%
    rng = np.random.default_rng(6)
    confidences = rng.uniform(0, 1, 200)
    correct = np.where(confidences > 0.2, rng.random(200) < 0.994, rng.random(200) < 0.6)
    rows = {r["coverage"]: r for r in calibration.labels_needed(confidences, correct, 0.98)}
    # Then covering 80% at 98% needs more than the 200 labels there are, and covering
    # everything cannot be reached by more labels at all (the model is below the target there)
    assert rows[0.8]["labels"] > 200
    assert rows[0.95]["labels"] is None and rows[0.95]["observed_accuracy"] < 0.98


def test_min_samples_for_is_what_the_procedure_needs_with_no_error():
    # Given all-correct samples at one confidence: the count certify_threshold needs at least
    need = calibration.min_samples_for(0.98, 0.95, len(calibration.START_MULTIPLES))
    assert need == 217
    assert calibration.certify_threshold(np.full(need, 0.99), np.ones(need, bool), 0.98).reached
    assert not calibration.certify_threshold(
        np.full(need - 1, 0.99), np.ones(need - 1, bool), 0.98
    ).reached


def test_choosing_between_learners_on_the_certifying_labels_is_paid_for_by_families():
    # Given two learners with the same overconfident curve, scored on the same 2,000 random
    # labels, and the worst way to choose between them: the one whose certificate covers more
    rng = np.random.default_rng(7)
    true_accuracy = true_accuracy_curve(rng)
    outcomes = []
    for _ in range(200):
        confidences = rng.uniform(0.3, 1.0, 2000) ** 0.5
        draws = [rng.random(2000) < confidences**1.5 for _ in range(2)]
        choices = [calibration.certify_threshold(confidences, correct, 0.9, families=2)
                   for correct in draws]  # fmt: skip
        chosen = max(choices, key=lambda c: c.coverage)
        outcomes.append(not chosen.reached or true_accuracy(chosen.threshold) >= 0.9)
    # Then the chosen one's auto-labels still reach the target in >= 95% of draws
    assert np.mean(outcomes) >= 0.95
    # and the price is power: each family is tested at half the level, so more all-correct
    # samples are needed (the fewest for 95% at 95%: 59 for one sequence, 99 for 4 x 2)
    assert calibration.min_samples_for(0.95, 0.95, len(calibration.START_MULTIPLES) * 2) == 99
    need = 99
    assert not calibration.certify_threshold(np.full(need - 1, 0.99), np.ones(need - 1, bool),
                                             0.95, families=2).reached  # fmt: skip
    assert calibration.certify_threshold(np.full(need, 0.99), np.ones(need, bool), 0.95,
                                         families=2).reached  # fmt: skip
