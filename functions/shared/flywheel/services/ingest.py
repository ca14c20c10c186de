"""Ingest uploaded objects: validate, normalise, record, queue for auto-labeling.

A Lambda batch's uploads are ingested a few at a time (each is mostly waiting on S3 and
DynamoDB) and their label messages go out together with SendMessageBatch.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flywheel.adapters import items, queues, storage
from flywheel.contracts.images import InvalidImage, check_image
from flywheel.domain.items import State, content_item_id, image_key, rejected_item_id
from flywheel.domain.labels import InvalidLabel, label_from_upload_key, validate_label
from flywheel.domain.sampling import AUDIT, is_audit_draw, seed_provenance
from flywheel.errors import RetryableError
from flywheel.settings import IngestSettings

Normaliser = Callable[[bytes, int], bytes]
# Uploads of one batch ingested at once: each waits on ~4 S3/DynamoDB calls, and the decode
# releases the GIL. More than a few only queue up behind one vCPU.
PARALLEL_UPLOADS = 4


@dataclass(frozen=True)
class Upload:
    """One object of an S3 notification (key already URL-decoded)."""

    bucket: str
    key: str
    size: int | None
    etag: str
    version_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    item_id: str
    state: str
    created: bool
    reason: str | None = None

    @property
    def log(self) -> dict:
        return {
            "item_id": self.item_id,
            "state": self.state,
            "new_item": self.created,
            "reason": self.reason,
        }


def _reject(s: IngestSettings, bucket: str, key: str, etag: str, reason: str) -> Outcome:
    item_id = rejected_item_id(bucket, key, etag)
    created = items.put_new(
        s.ITEMS_TABLE,
        {
            "item_id": item_id,
            "state": State.REJECTED.value,
            "source_key": key,
            "reason": reason,
        },
    )
    return Outcome(item_id, State.REJECTED.value, created, reason)


def ingest_object(
    s: IngestSettings,
    bucket: str,
    key: str,
    size: int | None,
    etag: str,
    normalise: Normaliser,
    version_id: str | None = None,
) -> Outcome | None:
    """None when there is nothing to ingest (folder marker, object already deleted).

    With the event's ``version_id`` that exact version is read, so overwriting a key
    ingests every version; the same bytes under several keys are one item whose
    ``source_keys`` holds them all. An item left ``unlabeled`` still has to be queued for
    auto-labeling (``queue_for_labeling``): also on re-delivery, so a crash between the put
    and the send cannot strand it.
    """
    if key.endswith("/"):
        return None
    if size is not None and size > s.MAX_UPLOAD_BYTES:
        return _reject(
            s, bucket, key, etag, f"file too large ({size} bytes > {s.MAX_UPLOAD_BYTES})"
        )
    got = storage.get_with_metadata(bucket, key, version_id)
    if got is None:
        return None
    data, etag, metadata = got[0], got[1] or etag, got[2]
    item_id = content_item_id(data)
    existing = items.get(s.ITEMS_TABLE, item_id)
    created = False
    if existing is None:  # re-deliveries and duplicate uploads skip the decode entirely
        try:
            check_image(data, max_bytes=s.MAX_UPLOAD_BYTES)
            png = normalise(data, s.MAX_IMAGE_SIDE)
        except InvalidImage as exc:
            return _reject(s, bucket, key, etag, exc.reason)
        storage.put_bytes(s.DATA_BUCKET, image_key(item_id), png, "image/png")
        label, reason = label_from_upload_key(key), None
        try:
            label = validate_label(label, s.CLASS_NAMES) if label else None
        except InvalidLabel as exc:  # recorded on the item, which stays unlabeled
            label, reason = None, f"{exc.reason} in the upload path"
        human = bool(label)
        sampling, origin = seed_provenance(metadata) if human else (None, None)
        # The audit stream goes to people blind and is never auto-labeled (it certifies).
        audit = not human and is_audit_draw(item_id, s.AUDIT_FRACTION)
        initial = State.HUMAN_LABELED if human else State.NEEDS_REVIEW if audit else State.UNLABELED
        item: dict[str, Any] = {
            "item_id": item_id,
            "state": initial.value,
            "source_key": key,
            "source_keys": {key},
            "image_key": image_key(item_id),
            "label": label if human else None,
            "label_source": "human" if human else None,
            "label_sampling": sampling,
            "label_origin": origin,
            "review_reason": AUDIT if audit else None,
            "reason": reason,
        }
        created = items.put_new(s.ITEMS_TABLE, item)
        existing = item if created else items.get(s.ITEMS_TABLE, item_id)
    known = (existing or {}).get("source_keys") or [(existing or {}).get("source_key")]
    if existing is not None and key not in known:  # the same bytes under another key
        items.add_source_keys(s.ITEMS_TABLE, item_id, {key, *filter(None, known)})
    state = str((existing or {}).get("state"))
    return Outcome(item_id, state, created, (existing or {}).get("reason"))


@dataclass
class Ingested:
    """Per SQS message id: what each of its uploads became (None: nothing to ingest), or
    the error for which that message alone is retried."""

    outcomes: dict[str, list[tuple[Upload, Outcome | None]]] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)


def ingest_messages(
    s: IngestSettings, messages: list[tuple[str, list[Upload]]], normalise: Normaliser
) -> Ingested:
    """Ingest every message's uploads; one failing message does not fail the others."""
    result = Ingested()

    def one(uploads: list[Upload]) -> list[tuple[Upload, Outcome | None]]:
        return [
            (u, ingest_object(s, u.bucket, u.key, u.size, u.etag, normalise, u.version_id))
            for u in uploads
        ]

    with ThreadPoolExecutor(max(1, min(PARALLEL_UPLOADS, len(messages)))) as pool:
        futures = {message_id: pool.submit(one, uploads) for message_id, uploads in messages}
    for message_id, future in futures.items():
        try:
            result.outcomes[message_id] = future.result()
        except Exception as exc:  # noqa: BLE001 - reported for this message only
            result.errors[message_id] = exc
    queue_for_labeling(s, result)
    return result


def queue_for_labeling(s: IngestSettings, result: Ingested) -> None:
    """One label message per unlabeled item of the batch, sent 10 per SendMessageBatch call;
    a message whose item could not be queued gets an error (SQS redelivers it, and its
    re-ingest only re-queues: the item already exists)."""
    wanted: dict[str, list[str]] = {}  # item id -> the messages that need it queued
    for message_id, outcomes in result.outcomes.items():
        for _, outcome in outcomes:
            if outcome is not None and outcome.state == State.UNLABELED:
                wanted.setdefault(outcome.item_id, []).append(message_id)
    bodies = [(i, {"item_id": i, "image_key": image_key(i)}) for i in wanted]
    for item_id, reason in queues.send_batch(s.LABEL_QUEUE_URL, bodies).items():
        for message_id in wanted[str(item_id)]:
            result.errors.setdefault(
                message_id, RetryableError(f"label message for item {item_id} not sent: {reason}")
            )
