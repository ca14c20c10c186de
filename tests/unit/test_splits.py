"""Split assignment and snapshots: deterministic, stable, proportions about right."""

from collections import Counter

import pytest
from flywheel.domain.splits import SnapshotError, assign_split, build_snapshot


def ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def test_split_is_a_pure_function_of_the_item_id():
    assert [assign_split(i) for i in ids(200)] == [assign_split(i) for i in ids(200)]


def test_split_proportions_are_close_to_80_10_10():
    counts = Counter(assign_split(i) for i in ids(5000))
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["test"] / 5000 < 0.12


def test_an_image_never_changes_split_when_more_labels_arrive():
    small = build_snapshot([(i, "cat" if n % 2 else "dog") for n, i in enumerate(ids(50))])
    large = build_snapshot([(i, "cat" if n % 2 else "dog") for n, i in enumerate(ids(500))])
    before = {e.item_id: e.split for e in small.entries}
    after = {e.item_id: e.split for e in large.entries}
    assert all(after[i] == s for i, s in before.items())
    assert small.snapshot_id != large.snapshot_id


def test_snapshot_id_ignores_input_order_and_duplicates():
    pairs = [(i, "cat" if n % 2 else "dog") for n, i in enumerate(ids(20))]
    assert (
        build_snapshot(pairs).snapshot_id
        == build_snapshot(list(reversed(pairs)) + pairs[:3]).snapshot_id
    )


def test_a_relabel_changes_the_snapshot():
    pairs = [(i, "cat" if n % 2 else "dog") for n, i in enumerate(ids(20))]
    changed = [(pairs[0][0], "bird")] + pairs[1:]
    assert build_snapshot(pairs).snapshot_id != build_snapshot(changed).snapshot_id


def test_one_class_is_not_a_dataset():
    with pytest.raises(SnapshotError):
        build_snapshot([(i, "cat") for i in ids(10)])
