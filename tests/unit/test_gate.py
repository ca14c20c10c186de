"""The promotion gate."""

import json
from pathlib import Path

import pytest
from flywheel.domain.champion import Champion
from flywheel.domain.gate import decide, parse_metrics
from flywheel.errors import InvalidArtifact

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "metrics.json"


def metrics(acc: float, champ: float | None = None, version: str = "dfw-new", n: int = 50) -> dict:
    """A metrics.json train.py wrote, with the gate's inputs set."""
    doc = json.loads(FIXTURE.read_text())
    doc["model_version"] = version
    doc["test"].update(accuracy=acc, n=n)
    doc["test_set_id"] = "5" * 64
    doc["champion_test"] = (
        None if champ is None else {**doc["test"], "accuracy": champ, "model_version": "dfw-old"}
    )
    return doc


CHAMPION = Champion(
    model_version="dfw-old",
    training_job="dfw-old",
    model_name="dfw-old",
    endpoint_config="c",
    model_data="s3://b/k",
    threshold=0.8,
    target_accuracy=0.95,
    test_accuracy=0.9,
    classes=["a", "b"],
    test_set_id="s0",
    promoted_at="t",
)


def gate(doc, champion=None, floor=0.8, margin=0.0):
    return decide(parse_metrics(doc), champion, min_test_accuracy=floor, margin=margin)


def test_first_model_needs_the_floor():
    assert gate(metrics(0.85)).promote
    assert not gate(metrics(0.75)).promote


def test_challenger_must_beat_the_champion_on_the_same_test_set_by_the_margin():
    assert gate(metrics(0.93, champ=0.90), CHAMPION, margin=0.02).promote
    assert not gate(metrics(0.91, champ=0.90), CHAMPION, margin=0.02).promote
    assert not gate(
        metrics(0.90, champ=0.90), CHAMPION
    ).promote  # a tie does not churn the endpoint


def test_without_a_champion_evaluation_there_is_no_fair_comparison():
    decision = gate(metrics(0.99), CHAMPION)
    assert not decision.promote and "test set" in decision.reason


def test_champion_evaluated_on_another_test_set_is_refused():
    doc = metrics(0.99, champ=0.5)
    doc["champion_test"]["test_set_id"] = "other"
    assert not gate(doc, CHAMPION).promote


def test_the_champion_itself_is_not_promoted_again():
    assert not gate(metrics(0.99, champ=0.99, version="dfw-old"), CHAMPION).promote


def test_broken_metrics_are_an_invalid_artifact():
    with pytest.raises(InvalidArtifact):
        parse_metrics({"model_version": "x"})


def test_a_comparison_with_a_former_champion_does_not_count():
    doc = metrics(0.99, champ=0.5)
    doc["champion_test"]["model_version"] = "dfw-older"
    decision = gate(doc, CHAMPION)
    assert not decision.promote and "dfw-older" in decision.reason
    doc["champion_test"]["model_version"] = "dfw-old"
    assert gate(doc, CHAMPION).promote
