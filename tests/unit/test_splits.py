"""Split assignment and snapshots: by sampling, deterministic, stable, proportions about right."""

from collections import Counter

import pytest
from flywheel.domain.splits import SnapshotError, assign_split, build_snapshot, manifest_lines


def ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def labeled(n: int, sampling: str = "random") -> list[tuple[str, str, str]]:
    return [(i, "cat" if k % 2 else "dog", sampling) for k, i in enumerate(ids(n))]


def test_split_is_a_pure_function_of_the_item_id():
    assert [assign_split(i) for i in ids(200)] == [assign_split(i) for i in ids(200)]


def test_random_labels_split_about_80_20_and_there_is_no_validation():
    counts = Counter(assign_split(i, "random") for i in ids(5000))
    assert set(counts) == {"train", "test"}
    assert 0.17 < counts["test"] / 5000 < 0.23


def test_selected_labels_always_train_never_test():
    # Review answers are a biased sample: they must never certify or measure accuracy
    assert {assign_split(i, "selected") for i in ids(2000)} == {"train"}
    snapshot = build_snapshot(labeled(300, "selected"))
    assert {e.split for e in snapshot.entries} == {"train"}
    assert snapshot.counts == {"train": 300}


def test_unknown_sampling_counts_as_selected():
    snapshot = build_snapshot([(i, lb, "") for i, lb, _ in labeled(50)])
    assert {(e.sampling, e.split) for e in snapshot.entries} == {("selected", "train")}


def test_an_image_never_changes_split_when_more_labels_arrive():
    small = build_snapshot(labeled(50))
    large = build_snapshot(labeled(500))
    before = {e.item_id: e.split for e in small.entries}
    after = {e.item_id: e.split for e in large.entries}
    assert all(after[i] == s for i, s in before.items())
    assert small.snapshot_id != large.snapshot_id


def test_snapshot_id_ignores_input_order_and_duplicates():
    triples = labeled(20)
    assert (
        build_snapshot(triples).snapshot_id
        == build_snapshot(list(reversed(triples)) + triples[:3]).snapshot_id
    )


def test_a_relabel_or_a_change_of_sampling_changes_the_snapshot():
    triples = labeled(20)
    relabeled = [(triples[0][0], "bird", "random")] + triples[1:]
    resampled = [(triples[0][0], triples[0][1], "selected")] + triples[1:]
    ids_ = {build_snapshot(t).snapshot_id for t in (triples, relabeled, resampled)}
    assert len(ids_) == 3


def test_manifest_lines_carry_sampling_and_point_into_their_channel():
    snapshot = build_snapshot(labeled(100, "random") + labeled(400, "selected")[100:])
    for split in ("train", "test"):
        lines = manifest_lines(snapshot, "bkt", "job", "2024-01-01T00:00:00", split)
        assert lines and all(
            line["source-ref"].startswith(f"s3://bkt/datasets/{snapshot.snapshot_id}/{split}/")
            for line in lines
        )
    test_lines = manifest_lines(snapshot, "bkt", "job", "2024-01-01T00:00:00", "test")
    assert {line["label-metadata"]["sampling"] for line in test_lines} == {"random"}
    meta = test_lines[0]["label-metadata"]
    assert meta["human-annotated"] == "yes" and "class-name" in meta and "job-name" in meta


def test_one_class_is_not_a_dataset():
    with pytest.raises(SnapshotError):
        build_snapshot([(i, "cat", "random") for i in ids(10)])
