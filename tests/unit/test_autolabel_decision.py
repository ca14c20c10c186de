"""Threshold use and request batching for auto-labeling."""

import pytest
from flywheel.domain.autolabel import Prediction, batches_by_size, decide, parse_predictions
from flywheel.domain.items import State
from flywheel.errors import InvalidArtifact


def test_confidence_at_or_above_the_champion_threshold_is_auto_labeled():
    assert decide(Prediction("cat", 0.80), threshold=0.80).state == State.AUTO_LABELED
    low = decide(Prediction("cat", 0.79), threshold=0.80)
    assert low.state == State.NEEDS_REVIEW and low.review_reason == "uncertain"


def test_an_out_of_distribution_input_goes_to_review_however_confident():
    # Given noise the model calls "8" at 0.99999 but flags as unlike its training data
    decision = decide(Prediction("8", 0.99999, ood=True), threshold=0.3)
    # Then it is not auto-labeled, and people see why
    assert decision.state == State.NEEDS_REVIEW
    assert decision.review_reason == "out_of_distribution"


def test_batches_respect_count_and_payload_size():
    assert batches_by_size([10] * 5, max_count=2) == [[0, 1], [2, 3], [4]]
    assert batches_by_size([2_000_000, 2_000_000, 10], max_count=8, max_bytes=4_000_000) == [
        [0],
        [1, 2],
    ]
    assert batches_by_size([], max_count=8) == []


def test_prediction_count_must_match_the_request():
    body = {"predictions": [{"label": "a", "confidence": 0.9}]}
    assert parse_predictions(body, 1) == [Prediction("a", 0.9, False, (("a", 0.9),))]
    with pytest.raises(InvalidArtifact):
        parse_predictions(body, 2)


def test_predictions_carry_ood_top_k_and_margin():
    body = {
        "predictions": [
            {
                "label": "cat",
                "confidence": 0.6,
                "ood": True,
                "auto_label": False,
                "top_k": [
                    {"label": "dog", "confidence": 0.3},
                    {"label": "cat", "confidence": 0.6},
                    {"label": "cow", "confidence": 0.1},
                ],
            }
        ]
    }
    (p,) = parse_predictions(body, 1)
    assert p.ood and p.top_k == (("cat", 0.6), ("dog", 0.3), ("cow", 0.1))
    assert p.margin == pytest.approx(0.3)
    assert Prediction("a", 0.7).margin == pytest.approx(0.7)  # no runner-up known
