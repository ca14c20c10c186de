"""Ingest uploaded objects: validate, normalise, record, queue for auto-labeling.

A Lambda batch's uploads move through ingest together, a step at a time: S3 calls one per
upload in parallel, DynamoDB and SQS calls one for the whole batch where the API allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from flywheel.adapters import items, queues, storage
from flywheel.contracts.images import InvalidImage, check_image
from flywheel.domain.items import State, content_item_id, image_key, rejected_item_id
from flywheel.domain.labels import InvalidLabel, label_from_upload_key, validate_label
from flywheel.domain.sampling import AUDIT, is_audit_draw, seed_provenance
from flywheel.errors import RetryableError
from flywheel.settings import IngestSettings

Normaliser = Callable[[bytes, int], bytes]
# S3 calls (and decodes, which release the GIL) of one batch in flight at once; more than a
# few only queue up behind one vCPU.
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


def _rejected(u: Upload, reason: str) -> dict[str, Any]:
    return {
        "item_id": rejected_item_id(u.bucket, u.key, u.etag),
        "state": State.REJECTED.value,
        "source_key": u.key,
        "reason": reason,
    }


def _new_item(s: IngestSettings, item_id: str, key: str, metadata: dict[str, str]) -> dict:
    """The item a new, valid image becomes: human-labeled by its upload path, drawn for the
    audit stream, or unlabeled (then auto-labeled)."""
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
    return {
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


@dataclass
class _Upload:
    """One upload on its way through a batch."""

    message_id: str
    upload: Upload
    data: bytes | None = None  # None: nothing to ingest (a folder marker, deleted since)
    metadata: dict[str, str] = field(default_factory=dict)
    item_id: str | None = None
    new: dict[str, Any] | None = None  # the item it creates unless that exists already
    created: bool = False


def _read(s: IngestSettings, w: _Upload) -> None:
    """Read that exact version of the upload (so overwriting a key ingests every version);
    an upload over the size limit is rejected unread."""
    u = w.upload
    if u.key.endswith("/"):
        return
    if u.size is not None and u.size > s.MAX_UPLOAD_BYTES:
        w.new = _rejected(u, f"file too large ({u.size} bytes > {s.MAX_UPLOAD_BYTES})")
        w.item_id = w.new["item_id"]
        return
    got = storage.get_with_metadata(u.bucket, u.key, u.version_id)
    if got is None:
        return
    w.data, w.metadata = got[0], got[2]
    w.upload = replace(u, etag=got[1] or u.etag)
    w.item_id = content_item_id(w.data)


def _decode(s: IngestSettings, normalise: Normaliser, w: _Upload) -> None:
    """A new image: the full decode check, its normalised PNG stored; or its rejection."""
    assert w.data is not None and w.item_id is not None
    try:
        check_image(w.data, max_bytes=s.MAX_UPLOAD_BYTES)
        png = normalise(w.data, s.MAX_IMAGE_SIDE)
    except InvalidImage as exc:
        w.new = _rejected(w.upload, exc.reason)
        w.item_id = w.new["item_id"]
        return
    storage.put_bytes(s.DATA_BUCKET, image_key(w.item_id), png, "image/png")
    w.new = _new_item(s, w.item_id, w.upload.key, w.metadata)


@dataclass
class Ingested:
    """Per SQS message id: what each of its uploads became (None: nothing to ingest), or
    the error for which that message alone is retried."""

    outcomes: dict[str, list[tuple[Upload, Outcome | None]]] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)


class _Batch:
    """The uploads of one Lambda batch, moved through ingest one step at a time; an error
    fails the message of the upload it happened to (SQS retries that message alone)."""

    def __init__(self, messages: list[tuple[str, list[Upload]]], pool: ThreadPoolExecutor):
        self.uploads = [_Upload(mid, u) for mid, uploads in messages for u in uploads]
        self.pool = pool
        self.result = Ingested()

    def live(self) -> list[_Upload]:
        return [w for w in self.uploads if w.message_id not in self.result.errors]

    def firsts(self, wanted: Callable[[_Upload], bool]) -> dict[str, _Upload]:
        """Per item id, the first live upload ``wanted`` picks: the one that does the work
        for every copy of the same bytes in the batch."""
        out: dict[str, _Upload] = {}
        for w in self.live():
            if wanted(w):
                out.setdefault(str(w.item_id), w)
        return out

    def fail(self, uploads: Iterable[_Upload], error: Exception) -> None:
        for w in uploads:
            self.result.errors.setdefault(w.message_id, error)

    def each(self, step: Callable[[_Upload], None], uploads: list[_Upload]) -> None:
        """``step`` on each upload, in parallel (each mostly waits on S3 or DynamoDB)."""

        def attempt(w: _Upload) -> Exception | None:
            try:
                step(w)
            except Exception as exc:  # noqa: BLE001 - returned, for this upload's message only
                return exc
            return None

        for w, error in zip(uploads, self.pool.map(attempt, uploads), strict=True):
            if error is not None:
                self.fail([w], error)


def ingest_messages(
    s: IngestSettings, messages: list[tuple[str, list[Upload]]], normalise: Normaliser
) -> Ingested:
    """Ingest every message's uploads; one failing message does not fail the others.

    Each step is one call for the whole batch or one call per upload, in parallel: read
    the uploads (GetObject); look their items up (BatchGetItem); decode, normalise and
    store each new image once (PutObject); create the new items (conditional PutItem);
    record every key of bytes uploaded under several keys; queue the unlabeled items for
    auto-labeling (SendMessageBatch). Re-deliveries and duplicate uploads skip the decode.
    An item left ``unlabeled`` is queued on re-delivery too, so a crash between the write
    and the send cannot strand it.
    """
    uploads = sum(len(u) for _, u in messages)
    with ThreadPoolExecutor(max(1, min(PARALLEL_UPLOADS, uploads))) as pool:
        batch = _Batch(messages, pool)
        batch.each(partial(_read, s), batch.live())
        existing = _lookup(s, batch)
        firsts = batch.firsts(lambda w: w.data is not None and w.item_id not in existing)
        batch.each(partial(_decode, s, normalise), list(firsts.values()))
        for w in batch.live():  # identical bytes again in the batch: rejected like the first
            first = firsts.get(str(w.item_id))
            if first and first is not w and first.new and first.new["state"] == State.REJECTED:
                w.new = _rejected(w.upload, first.new["reason"])
                w.item_id = w.new["item_id"]
        _create(s, batch, existing)
        _record_keys(s, batch, existing)
    for w in batch.live():
        if w.item_id is not None and w.item_id not in existing:  # its first copy failed
            batch.fail([w], RetryableError(f"item {w.item_id} was not recorded"))
    result = batch.result
    for w in batch.live():
        outcome = None
        if w.item_id is not None:
            item = existing[w.item_id]
            outcome = Outcome(w.item_id, str(item.get("state")), w.created, item.get("reason"))
        result.outcomes.setdefault(w.message_id, []).append((w.upload, outcome))
    queue_for_labeling(s, result)
    return result


def _lookup(s: IngestSettings, batch: _Batch) -> dict[str, dict]:
    """The batch's items that exist already (one BatchGetItem per 100)."""
    found = [w for w in batch.live() if w.item_id is not None]
    try:
        return items.get_many(s.ITEMS_TABLE, [str(w.item_id) for w in found])
    except Exception as exc:  # noqa: BLE001 - throttled: the messages that read something retry
        batch.fail(found, exc)
        return {}


def _create(s: IngestSettings, batch: _Batch, existing: dict[str, dict]) -> None:
    """Create the new items, one conditional PutItem each, in parallel (DynamoDB's batched
    writes cannot be conditional); one created meanwhile by another batch is read instead."""

    def create(w: _Upload) -> None:
        assert w.new is not None
        w.created = items.put_new(s.ITEMS_TABLE, w.new)
        item = w.new if w.created else items.get(s.ITEMS_TABLE, str(w.item_id))
        if item is not None:
            existing[str(w.item_id)] = item

    new = batch.firsts(lambda w: w.new is not None and w.item_id not in existing)
    batch.each(create, list(new.values()))


def _record_keys(s: IngestSettings, batch: _Batch, existing: dict[str, dict]) -> None:
    """The same bytes under another key: the item gets every key (one call per item)."""
    keys: dict[str, set[str]] = {}
    for w in batch.live():
        item = existing.get(str(w.item_id))
        if w.data is None or item is None or item.get("state") == State.REJECTED.value:
            continue
        known = set(item.get("source_keys") or [item.get("source_key")])
        if w.upload.key not in known:
            keys.setdefault(str(w.item_id), set(filter(None, known))).add(w.upload.key)
    batch.each(
        lambda w: items.add_source_keys(s.ITEMS_TABLE, str(w.item_id), keys[str(w.item_id)]),
        list(batch.firsts(lambda w: str(w.item_id) in keys).values()),
    )
    for item_id, k in keys.items():
        existing[item_id] = {**existing[item_id], "source_keys": sorted(k)}


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
