"""Threshold use and request batching for auto-labeling."""

import pytest
from flywheel.domain.autolabel import batches_by_size, decide, parse_predictions
from flywheel.domain.items import State
from flywheel.errors import InvalidArtifact


def test_confidence_at_or_above_the_champion_threshold_is_auto_labeled():
    assert decide("cat", 0.80, threshold=0.80).state == State.AUTO_LABELED
    assert decide("cat", 0.79, threshold=0.80).state == State.NEEDS_REVIEW


def test_batches_respect_count_and_payload_size():
    assert batches_by_size([10] * 5, max_count=2) == [[0, 1], [2, 3], [4]]
    assert batches_by_size([2_000_000, 2_000_000, 10], max_count=8, max_bytes=4_000_000) == [
        [0],
        [1, 2],
    ]
    assert batches_by_size([], max_count=8) == []


def test_prediction_count_must_match_the_request():
    body = {"predictions": [{"label": "a", "confidence": 0.9}]}
    assert parse_predictions(body, 1) == [("a", 0.9)]
    with pytest.raises(InvalidArtifact):
        parse_predictions(body, 2)
