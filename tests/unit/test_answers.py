"""The review app's request rules, leases and what a reviewer is shown (pure)."""

from __future__ import annotations

import pytest
from flywheel.domain.answers import (
    Answer,
    labels_per_minute,
    lease_holder,
    offered_classes,
    parse_answer,
    parse_count,
    restorable,
    suggestion,
)
from flywheel.errors import BadRequest, Conflict, NotFound, http_status

ID = "ab" * 32


def test_answers_parse_to_a_label_or_an_action():
    assert parse_answer({"item_id": ID, "label": "cat"}) == Answer(ID, "label", "cat")
    assert parse_answer({"item_id": ID, "action": "skip"}) == Answer(ID, "skip")
    for bad in (
        {"item_id": ID},
        {"item_id": ID, "label": "cat", "action": "reject"},
        {"item_id": ID.upper(), "label": "cat"},
        {"item_id": ID + "\n", "label": "cat"},
        {"item_id": ID, "action": "../skip"},
        {"item_id": ID, "label": "cat", "bucket": "x"},
        ["not", "an", "object"],
    ):
        with pytest.raises(BadRequest):
            parse_answer(bad)


def test_counts_are_small_positive_integers_or_400():
    assert parse_count(None) == 5 and parse_count("") == 5 and parse_count("50") == 50
    for bad in ("0", "51", "-1", "1.0", " 1", "1 ", "0x10", "١"):
        with pytest.raises(BadRequest):
            parse_count(bad)


def test_a_lease_is_held_until_it_expires():
    item = {"lease_owner": "alice", "lease_expires": 100}
    assert lease_holder(item, 99.5) == "alice"
    assert lease_holder(item, 100) is None
    assert lease_holder({}, 0) is None


def test_audit_and_cold_start_items_are_blind():
    model = {"label": "dog", "label_source": "model", "confidence": 0.6, "state": "needs_review"}
    top_k = [{"label": "dog", "confidence": 0.6}, {"label": "cat", "confidence": 0.3}]
    shown = suggestion({**model, "review_reason": "uncertain", "top_k": top_k})
    assert shown is not None and [t["label"] for t in shown["top_k"]] == ["dog", "cat"]
    assert suggestion({**model, "review_reason": "audit"}) is None
    assert suggestion({"state": "unlabeled"}) is None


def test_undo_restores_the_item_without_any_lease():
    assert restorable({"item_id": ID, "lease_owner": "a", "lease_expires": 1, "x": 2}) == {
        "item_id": ID,
        "x": 2,
    }


def test_labels_per_minute_over_the_recent_window():
    assert labels_per_minute([], 1000) == 0.0
    assert labels_per_minute([1000 - 120 + 12 * i for i in range(10)], 1000) == 5.0
    assert labels_per_minute([0.0], 10_000) == 0.0  # older than the window


def test_the_app_offers_classnames_else_the_champions_classes_else_none():
    assert offered_classes(("cat", "dog"), ["x"]) == ["cat", "dog"]
    assert offered_classes((), ["zero", "one"]) == ["zero", "one"]
    assert offered_classes((), None) == []


def test_client_errors_map_to_their_status_codes_in_one_place():
    assert [http_status(e("x")) for e in (BadRequest, NotFound, Conflict)] == [400, 404, 409]
    assert http_status(RuntimeError("boom")) == 500
