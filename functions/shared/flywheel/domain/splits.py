"""Deterministic train/test split by how each label was obtained, and dataset snapshots.

Only labels drawn at random from the uploads (``sampling == "random"``: a declared random
seed, the audit stream) can measure accuracy or certify a threshold, so only they may
enter ``test``; labels given to items the model picked (``"selected"``: review answers,
other uploads, imports) always train. Among random labels the split depends only on the
item id, so an image never changes split between runs and the test set of old items is
frozen: a challenger and the champion are compared on the same test images (test_set_id
in metrics.json). There is no validation channel: train.py carves its own folds.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from flywheel.contracts import manifest
from flywheel.domain.labels import InvalidLabel, validate_label

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
_BUCKETS = 10_000
RANDOM, SELECTED = "random", "selected"


def assign_split(item_id: str, sampling: str = RANDOM, test_fraction: float = TEST_FRACTION) -> str:
    """``selected`` labels always train; random ones go to ``test`` by a salted id hash."""
    if sampling != RANDOM:
        return "train"
    # Salted so the split is independent of anything else keyed on the same hash.
    bucket = int(hashlib.sha256(f"split:{item_id}".encode()).hexdigest()[:8], 16) % _BUCKETS
    return "test" if bucket < test_fraction * _BUCKETS else "train"


@dataclass(frozen=True)
class SnapshotEntry:
    item_id: str
    label: str
    split: str
    sampling: str = SELECTED

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


def build_snapshot(labeled: list[tuple[str, str, str]]) -> Snapshot:
    """``labeled`` is (item_id, label, sampling); the id is a hash of exactly this content.

    A sampling other than ``random`` counts as ``selected`` (unknown provenance never
    certifies).
    """
    triples = sorted({(i, label, RANDOM if s == RANDOM else SELECTED) for i, label, s in labeled})
    for item_id, label, _ in triples:  # defence in depth: labels become S3 key parts below
        try:
            validate_label(label)
        except InvalidLabel as exc:
            raise SnapshotError(f"item {item_id}: {exc.reason}") from exc
    entries = tuple(SnapshotEntry(i, label, assign_split(i, s), s) for i, label, s in triples)
    classes = tuple(sorted({e.label for e in entries}))
    if len(classes) < 2:
        raise SnapshotError(f"need at least 2 classes with human labels, have {len(classes)}")
    counts = Counter(e.split for e in entries)
    if not counts.get("train"):
        raise SnapshotError("no training images")
    digest = hashlib.sha256(
        "\n".join(f"{e.item_id},{e.label},{e.sampling}" for e in entries).encode()
    )
    return Snapshot(digest.hexdigest()[:16], entries, classes, dict(counts))


def manifest_line(
    snapshot: Snapshot, e: SnapshotEntry, bucket: str, job_name: str, created: str
) -> dict:
    """Ground Truth augmented manifest line (label attribute ``label``) plus ``sampling``."""
    return manifest.labeled_line(
        f"s3://{bucket}/{e.channel_key(snapshot.snapshot_id)}",
        e.label,
        snapshot.classes.index(e.label),
        human=True,
        job_name=job_name,
        creation_date=created,
        sampling=e.sampling,
        fields={"split": e.split},
    )


def manifest_lines(
    snapshot: Snapshot, bucket: str, job_name: str, created: str, split: str | None = None
) -> list[dict]:
    """The snapshot's manifest, or one split's (written inside that split's channel)."""
    return [
        manifest_line(snapshot, e, bucket, job_name, created)
        for e in snapshot.entries
        if split is None or e.split == split
    ]
