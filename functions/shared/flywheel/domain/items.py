"""Items: one per image, keyed by the sha256 of the uploaded bytes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum


class State(StrEnum):
    UNLABELED = "unlabeled"
    AUTO_LABELED = "auto_labeled"
    NEEDS_REVIEW = "needs_review"
    HUMAN_LABELED = "human_labeled"
    REJECTED = "rejected"


# Meta record (no `state`, so it never shows in the state-index GSI).
TRAINING_META_ID = "meta#training"


def content_item_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rejected_item_id(bucket: str, key: str, etag: str) -> str:
    """Id of an upload whose bytes are unusable (contract: sha256 of bucket/key/etag)."""
    return hashlib.sha256(f"{bucket}/{key}/{etag}".encode()).hexdigest()


def image_key(item_id: str) -> str:
    return f"images/{item_id}.png"


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
