"""Review ordering: audit first and blind, then OOD, then uncertain by margin across classes."""

import csv
import io
import json

from flywheel.domain.review import (
    order_for_review,
    render_csv,
    render_manifest,
    round_robin_by_class,
)


def item(n: int, reason: str = "uncertain", label: str = "cat", margin: float = 0.5) -> dict:
    return {
        "item_id": f"{n:064x}",
        "state": "needs_review",
        "review_reason": reason,
        "label": label,
        "confidence": 0.6,
        "margin": margin,
        "image_key": f"images/{n:064x}.png",
    }


def ids(items: list[dict]) -> list[int]:
    return [int(i["item_id"], 16) for i in items]


def test_audit_then_ood_then_uncertain_whatever_the_input_order():
    batch = [item(1, margin=0.01), item(2, "out_of_distribution"), item(3, "audit")]
    assert ids(order_for_review(batch, 10)) == [3, 2, 1]
    assert ids(order_for_review(list(reversed(batch)), 10)) == [3, 2, 1]


def test_uncertain_items_smallest_margin_first_but_classes_take_turns():
    # Given the five least certain items all predicted "cat", and two "dog" ones
    cats = [item(n, label="cat", margin=0.01 * n) for n in range(1, 6)]
    dogs = [item(10 + n, label="dog", margin=0.2 + 0.01 * n) for n in range(1, 3)]
    # When four are picked
    picked = order_for_review(cats + dogs, 4)
    # Then the batch covers both classes instead of spending all on cats
    assert ids(picked) == [1, 11, 2, 12]
    assert ids(round_robin_by_class(cats)) == [1, 2, 3, 4, 5]


def test_limit_cuts_the_uncertain_tail_never_the_audit_items():
    batch = [item(n, margin=0.0) for n in range(1, 20)] + [item(50 + n, "audit") for n in range(3)]
    picked = order_for_review(batch, 3)
    assert sorted(ids(picked)) == [50, 51, 52]


def test_cold_start_items_come_last_in_a_stable_random_order():
    unlabeled = [
        {"item_id": f"{n:064x}", "state": "unlabeled", "image_key": "k"} for n in range(30)
    ]
    first = order_for_review([item(99, "audit")], 10, unlabeled)
    again = order_for_review([item(99, "audit")], 10, list(reversed(unlabeled)))
    assert ids(first) == ids(again) and ids(first)[0] == 99
    assert ids(first)[1:] != sorted(ids(first)[1:])  # hash order, not id order


def test_margin_falls_back_to_confidence_for_older_items():
    old = [{**item(n), "confidence": c} for n, c in ((1, 0.9), (2, 0.3))]
    for o in old:
        del o["margin"]
    assert ids(order_for_review(old, 2)) == [2, 1]


def test_audit_items_are_blind_in_the_csv_and_the_manifest():
    rows = list(csv.DictReader(io.StringIO(render_csv([item(1, "audit"), item(2)], "b"))))
    assert (rows[0]["model_label"], rows[0]["confidence"]) == ("", "")
    assert (rows[1]["model_label"], rows[1]["confidence"]) == ("cat", "0.6000")
    lines = [json.loads(x) for x in render_manifest([item(1, "audit"), item(2)], "b").splitlines()]
    assert "model-label" not in lines[0] and lines[1]["model-label"] == "cat"
    assert lines[0]["review-reason"] == "audit"
