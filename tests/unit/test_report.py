"""The demo report's per-round figures, from items as the items table holds them."""

from dataflywheel.report import accuracy_text, round_metrics

TRUTH = {"a": "1", "b": "2", "c": "3", "d": "4"}


def _item(item_id, state, label=None, confidence=None):
    return {"item_id": item_id, "state": state, "label": label, "confidence": confidence}


def test_coverage_and_accuracy_count_only_model_labels_against_the_truth():
    # Given one human label, two auto-labels (one wrong) and one item left for review
    items = [
        _item("a", "human_labeled", "1"),
        _item("b", "auto_labeled", "2", 0.99),
        _item("c", "auto_labeled", "8", 0.97),
        _item("d", "needs_review", "4", 0.40),
    ]
    # When the round is measured (three images were uploaded without a label)
    m = round_metrics(items, TRUTH, n_uploaded_unlabeled=3, champion={"model_version": "v1"})
    # Then coverage is over the unlabeled uploads and accuracy over the auto-labels
    assert m["auto_labeled"] == 2
    assert m["coverage_of_unlabeled_uploads"] == 2 / 3
    assert m["auto_label_accuracy"] == 0.5
    assert m["human_label_share"] == 0.25
    assert accuracy_text(m) == "50.00%"


def test_a_round_that_auto_labels_nothing_reports_no_accuracy_rather_than_zero():
    items = [_item(k, "needs_review", v, 0.5) for k, v in TRUTH.items()]
    m = round_metrics(items, TRUTH, n_uploaded_unlabeled=4, champion=None)
    assert m["auto_labeled"] == 0
    assert accuracy_text(m) == "n/a"
