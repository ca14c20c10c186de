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


def test_the_chosen_threshold_reaches_the_target_in_95_percent_of_draws():
    # Given the true accuracy above any threshold, from a very large sample of the model
    rng = np.random.default_rng(1)
    population = np.sort(rng.uniform(0.3, 1.0, 2_000_000) ** 0.5)[::-1]
    cumulative = np.cumsum(population**1.5)

    def true_accuracy(threshold):
        m = np.searchsorted(-population, -threshold, side="right")
        return cumulative[m - 1] / m

    # When thresholds are chosen on many independent calibration sets of 300
    outcomes, coverages = [], []
    for _ in range(400):
        choice = calibration.choose_threshold(*simulate(rng, 300), target_accuracy=0.9)
        outcomes.append(not choice.reached or true_accuracy(choice.threshold) >= 0.9)
        coverages.append(choice.coverage)

    # Then auto-labels are at least 90% accurate in at least ~95% of the draws, and the
    # threshold still auto-labels a useful share
    assert np.mean(outcomes) >= 0.94
    assert np.mean(coverages) > 0.1


def test_no_certifiable_threshold_auto_labels_nothing():
    # Given 40 held-out samples, all correct: too few to certify 95% (59 needed)
    choice = calibration.choose_threshold(
        np.full(40, 0.99), np.ones(40, bool), target_accuracy=0.95
    )
    assert not choice.reached
    assert choice.threshold > 1.0 and choice.coverage == 0.0


def test_threshold_is_the_least_confident_certified_sample():
    # Given 400 confident correct samples and 50 unsure wrong ones; 400/400 certifies 99%,
    # one error more does not
    rng = np.random.default_rng(2)
    confidences = np.concatenate([rng.uniform(0.9, 1.0, 400), rng.uniform(0.3, 0.5, 50)])
    correct = np.concatenate([np.ones(400, bool), np.zeros(50, bool)])
    choice = calibration.choose_threshold(confidences, correct, target_accuracy=0.99)
    assert choice.reached
    assert choice.threshold == pytest.approx(confidences[:400].min())
    assert choice.coverage == pytest.approx(400 / 450)
    assert choice.lower_bound >= 0.99
