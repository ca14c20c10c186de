"""Deterministic train/validation/test split and dataset snapshots.

The split depends only on the item id, so an image never changes split between
runs and the test set of old items is frozen: a challenger and the champion are
compared on the same test images (test_set_id in metrics.json).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from flywheel.domain.labels import InvalidLabel, validate_label

SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
_BUCKETS = 10_000


def assign_split(
    item_id: str,
    validation_fraction: float = VALIDATION_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> str:
    # Salted so the split is independent of anything else keyed on the same hash.
    bucket = int(hashlib.sha256(f"split:{item_id}".encode()).hexdigest()[:8], 16) % _BUCKETS
    if bucket < test_fraction * _BUCKETS:
        return "test"
    if bucket < (test_fraction + validation_fraction) * _BUCKETS:
        return "validation"
    return "train"


@dataclass(frozen=True)
class SnapshotEntry:
    item_id: str
    label: str
    split: str

    @property
    def image_key(self) -> str:
        return f"images/{self.item_id}.png"

    def channel_key(self, snapshot_id: str) -> str:
        return f"datasets/{snapshot_id}/{self.split}/{self.label}/{self.item_id}.png"


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    entries: tuple[SnapshotEntry, ...]
    classes: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"datasets/{self.snapshot_id}"

    def channel_uri(self, bucket: str, split: str) -> str:
        return f"s3://{bucket}/{self.prefix}/{split}/"


class SnapshotError(ValueError):
    """The labeled data cannot make a training set yet."""


def build_snapshot(labeled: list[tuple[str, str]]) -> Snapshot:
    """``labeled`` is (item_id, label) pairs; the id is a hash of exactly this content."""
    pairs = sorted(set(labeled))
    for item_id, label in pairs:  # defence in depth: labels become S3 key parts below
        try:
            validate_label(label)
        except InvalidLabel as exc:
            raise SnapshotError(f"item {item_id}: {exc.reason}") from exc
    entries = tuple(SnapshotEntry(i, label, assign_split(i)) for i, label in pairs)
    classes = tuple(sorted({e.label for e in entries}))
    if len(classes) < 2:
        raise SnapshotError(f"need at least 2 classes with human labels, have {len(classes)}")
    counts = Counter(e.split for e in entries)
    if not counts.get("train"):
        raise SnapshotError("no training images")
    digest = hashlib.sha256("\n".join(f"{e.item_id},{e.label}" for e in entries).encode())
    return Snapshot(digest.hexdigest()[:16], entries, classes, dict(counts))


def manifest_lines(snapshot: Snapshot, bucket: str, job_name: str, created: str) -> list[dict]:
    """Ground Truth augmented manifest of the snapshot (label attribute ``label``)."""
    index = {c: n for n, c in enumerate(snapshot.classes)}
    return [
        {
            "source-ref": f"s3://{bucket}/{e.channel_key(snapshot.snapshot_id)}",
            "split": e.split,
            "label": index[e.label],
            "label-metadata": {
                "class-name": e.label,
                "confidence": 1.0,
                "human-annotated": "yes",
                "job-name": job_name,
                "creation-date": created,
                "type": "groundtruth/image-classification",
            },
        }
        for e in snapshot.entries
    ]
