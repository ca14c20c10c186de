"""The items table (DynamoDB)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from flywheel.adapters import ledger
from flywheel.adapters.aws import client, error_code
from flywheel.domain.audit import Observation, observation, reverse
from flywheel.domain.items import TRAINING_META_ID, State, now_iso
from flywheel.domain.sampling import AUDIT, answer_provenance
from flywheel.errors import Conflict, FlywheelError, RetryableError

STATE_INDEX = "state-index"


def _to_ddb(value: Any) -> dict:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float, Decimal)):
        return {"N": str(Decimal(str(value)))}
    if isinstance(value, dict):
        return {"M": {k: _to_ddb(v) for k, v in value.items()}}
    if isinstance(value, (set, frozenset)):
        return {"SS": sorted(str(v) for v in value)}
    if isinstance(value, (list, tuple)):
        return {"L": [_to_ddb(v) for v in value]}
    return {"S": str(value)}


def _from_ddb(attr: dict) -> Any:
    ((kind, value),) = attr.items()
    if kind == "N":
        number = Decimal(value)
        return (
            int(number)
            if number == number.to_integral_value() and "." not in value
            else float(number)
        )
    if kind == "M":
        return {k: _from_ddb(v) for k, v in value.items()}
    if kind == "L":
        return [_from_ddb(v) for v in value]
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "SS":
        return sorted(value)
    return value


def _item(raw: dict) -> dict:
    return {k: _from_ddb(v) for k, v in raw.items()}


def get(table: str, item_id: str) -> dict | None:
    raw = client("dynamodb").get_item(
        TableName=table, Key={"item_id": {"S": item_id}}, ConsistentRead=True
    )
    return _item(raw["Item"]) if "Item" in raw else None


BATCH_GET_KEYS = 100  # a DynamoDB limit per BatchGetItem call
BATCH_GET_ATTEMPTS = 6


def get_many(
    table: str, item_ids: Iterable[str], sleep: Callable[[float], None] = time.sleep
) -> dict[str, dict]:
    """Items by id (strongly consistent, 100 keys per BatchGetItem); absent ids are left out.

    UnprocessedKeys (throttling, the 16 MB response limit) are asked again with backoff;
    RetryableError if some are still unanswered, so an unread item is never taken for absent.
    """
    ddb, found = client("dynamodb"), {}
    ids = list(dict.fromkeys(item_ids))  # a key twice in one request is a ValidationException
    for start in range(0, len(ids), BATCH_GET_KEYS):
        keys = [{"item_id": {"S": i}} for i in ids[start : start + BATCH_GET_KEYS]]
        request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(BATCH_GET_ATTEMPTS):
            response = ddb.batch_get_item(RequestItems=request)
            for raw in response.get("Responses", {}).get(table, []):
                item = _item(raw)
                found[item["item_id"]] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            sleep(min(2.0, 0.05 * 2**attempt))
        if request:
            left = len(request.get(table, {}).get("Keys", []))
            raise RetryableError(f"DynamoDB left {left} keys of {table} unprocessed")
    return found


def put_new(table: str, item: dict) -> bool:
    """Create the item unless it exists; False when it already did (duplicate / re-delivery)."""
    now = now_iso()
    record = {"created_at": now, "updated_at": now, **item}
    try:
        client("dynamodb").put_item(
            TableName=table,
            Item={k: _to_ddb(v) for k, v in record.items() if v is not None},
            ConditionExpression="attribute_not_exists(item_id)",
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def set_model_label(
    table: str,
    item_id: str,
    state: State,
    label: str,
    confidence: float,
    model_version: str,
    *,
    review_reason: str | None = None,
    margin: float | None = None,
    top_k: list[tuple[str, float]] | tuple = (),
    ood: bool = False,
) -> bool:
    """Record a model label; never touches human-labeled, rejected or audit items.

    False if skipped. Audit items are guarded here too (not only by the caller): they are
    the random sample that certifies, so a model label must never reach them. Once per
    model version: an item this model already labeled is skipped, so a re-delivered or
    duplicate message (a relabel sweep sent again after a restart) is neither written nor
    counted twice.
    """
    values: dict[str, Any] = {
        ":s": {"S": state.value},
        ":l": {"S": label},
        ":src": {"S": "model"},
        ":c": _to_ddb(round(confidence, 6)),
        ":v": {"S": model_version},
        ":now": {"S": now_iso()},
        ":unl": {"S": State.UNLABELED.value},
        ":auto": {"S": State.AUTO_LABELED.value},
        ":rev": {"S": State.NEEDS_REVIEW.value},
        ":audit": {"S": AUDIT},
        ":ood": {"BOOL": bool(ood)},
        ":topk": _to_ddb([{"label": lb, "confidence": round(c, 6)} for lb, c in top_k]),
    }
    sets = (
        "#s = :s, #l = :l, label_source = :src, confidence = :c, model_version = :v, "
        "updated_at = :now, ood = :ood, top_k = :topk"
    )
    removes = []
    if margin is not None:
        sets += ", margin = :m"
        values[":m"] = _to_ddb(round(margin, 6))
    else:
        removes.append("margin")
    if review_reason:
        sets += ", review_reason = :why"
        values[":why"] = {"S": review_reason}
    else:
        removes.append("review_reason")
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"item_id": {"S": item_id}},
            UpdateExpression=f"SET {sets}" + (f" REMOVE {', '.join(removes)}" if removes else ""),
            ConditionExpression=(
                "attribute_exists(item_id) AND #s IN (:unl, :auto, :rev) "
                "AND (attribute_not_exists(review_reason) OR review_reason <> :audit) "
                "AND (attribute_not_exists(model_version) OR model_version <> :v)"
            ),
            ExpressionAttributeNames={"#s": "state", "#l": "label"},
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


class _ConditionFailed(Exception):
    """The conditional write found the item changed (or the lease taken) since the read."""


def _write(update: dict, log: dict | list[dict] | None = None) -> None:
    """One conditional item update; with ``log`` (TransactWriteItems entries, e.g. the
    answer record, a spot-check tally) all are written in one transaction, or none."""
    extra = [log] if isinstance(log, dict) else list(log or [])
    try:
        if not extra:
            client("dynamodb").update_item(**update)
        else:
            client("dynamodb").transact_write_items(TransactItems=[{"Update": update}, *extra])
    except ClientError as exc:
        code = error_code(exc)
        if code == "ConditionalCheckFailedException":
            raise _ConditionFailed from exc
        if code == "TransactionCanceledException":
            reasons = exc.response.get("CancellationReasons") or []  # type: ignore[attr-defined]
            # TransactionConflict: another transaction held one of the records (a hot
            # spot-check tally); nothing was written, so read and decide again.
            if any(
                r.get("Code") in ("ConditionalCheckFailed", "TransactionConflict") for r in reasons
            ):
                raise _ConditionFailed from exc
        raise


LEASE_FREE = "(attribute_not_exists(lease_owner) OR lease_owner = :me OR lease_expires <= :t)"


@dataclass(frozen=True)
class Written:
    """What a human answer did: 'applied', 'unchanged' or 'unknown'; on 'applied' the item
    as it was before (``previous``), its new ``updated_at`` and, for a spot-check item, the
    observation added to its champion's tally."""

    outcome: str
    previous: dict | None = None
    updated_at: str | None = None
    observation: Observation | None = None


@dataclass(frozen=True)
class Answerer:
    """Who answers through the review app: their lease is checked, the answer recorded."""

    reviewer: str
    now_epoch: float
    # item as read -> attributes SET on it with the answer (who, when, the suggestion)
    attributes: Callable[[dict], dict] | None = None
    log: Callable[[dict, str], dict] | None = None  # (previous item, updated_at) -> log entry


def _lease_clause(by: Answerer | None, values: dict) -> str:
    if by is None:
        return ""
    values[":me"] = {"S": by.reviewer}
    values[":t"] = _to_ddb(by.now_epoch)
    return f" AND {LEASE_FREE}"


def _check_lease(current: dict, by: Answerer | None) -> None:
    owner, expires = current.get("lease_owner"), float(current.get("lease_expires") or 0)
    if by is not None and owner and owner != by.reviewer and expires > by.now_epoch:
        raise Conflict("another reviewer holds this item", "leased_by_other")


def _answer_sets(by: Answerer | None, current: dict, values: dict) -> str:
    if by is None or by.attributes is None:
        return ""
    parts = []
    for n, (name, value) in enumerate(sorted(by.attributes(current).items())):
        if value is None:
            continue
        values[f":a{n}"] = _to_ddb(value)
        parts.append(f"{name} = :a{n}")
    return "".join(f", {p}" for p in parts)


def set_human_label(table: str, item_id: str, label: str) -> str:
    """'applied', 'unchanged' (same human label already) or 'unknown' (no such usable item)."""
    return apply_human_label(table, item_id, label).outcome


def apply_human_label(
    table: str,
    item_id: str,
    label: str,
    by: Answerer | None = None,
    known: Mapping[str, dict] | None = None,
) -> Written:
    """Record a person's label: THE write of human labels (labels files and the review app).

    Records how the label was obtained (``label_sampling``, ``label_origin``) from the
    state the person answered: read, decide, then write only if that state still holds.
    The item's lease is released. With ``by`` (the review app) another reviewer's live
    lease is a Conflict, and the answer's attributes and log record go in the same write.
    ``known``: items as a batch read (``get_many``) found them, absent ids left out; the
    first decision uses it instead of a GetItem (the write's condition still checks it).
    """
    for attempt in range(5):
        current = known.get(item_id) if known is not None and attempt == 0 else get(table, item_id)
        if current is None or current.get("state") == State.REJECTED:
            return Written("unknown")
        if current.get("state") == State.HUMAN_LABELED and current.get("label") == label:
            return Written("unchanged")
        _check_lease(current, by)
        sampling, origin = answer_provenance(current)
        now = now_iso()
        names = {"#s": "state", "#l": "label"}
        values = {
            ":h": {"S": State.HUMAN_LABELED.value},
            ":l": {"S": label},
            ":src": {"S": "human"},
            ":now": {"S": now},
            ":prev": {"S": str(current.get("state"))},
            ":smp": {"S": sampling},
            ":org": {"S": origin},
        }
        condition = "#s = :prev" + _state_guard(current, values) + _lease_clause(by, values)
        seen = observation(current, label)
        extra = [by.log(current, now)] if by and by.log else []
        spot = ""
        if seen is not None:
            # The model's hidden answer stays on the item; the tally moves in the same
            # transaction, and only if the item is still exactly as read.
            spot = ", spot_check = :spot"
            values[":spot"] = _to_ddb(seen.record)
            values[":read_at"] = {"S": str(current.get("updated_at"))}
            condition += " AND updated_at = :read_at"
            if seen.answered or seen.correct:
                extra.append(ledger.tally_entry(table, seen))
        update = {
            "TableName": table,
            "Key": {"item_id": {"S": item_id}},
            "UpdateExpression": (
                "SET #s = :h, #l = :l, label_source = :src, updated_at = :now, "
                "label_sampling = :smp, label_origin = :org"
                + spot
                + _answer_sets(by, current, values)
                + " REMOVE confidence, model_version, margin, top_k, ood, lease_owner, "
                "lease_expires"
            ),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        try:
            _write(update, extra)
        except _ConditionFailed:
            continue  # the item changed between the read and the write: decide again
        return Written("applied", current, now, seen)
    raise FlywheelError(f"item {item_id} kept changing while a human label was applied")


def _state_guard(current: dict, values: dict) -> str:
    """The read's review reason must still hold (an audit draw must stay an audit answer)."""
    if current.get("review_reason") is None:
        return " AND attribute_not_exists(review_reason)"
    values[":why"] = {"S": str(current["review_reason"])}
    return " AND review_reason = :why"


def reject(table: str, item_id: str, reason: str, by: Answerer) -> Written:
    """A person says the image is not usable: state ``rejected`` with the reason."""
    for _ in range(5):
        current = get(table, item_id)
        if current is None:
            return Written("unknown")
        if current.get("state") == State.REJECTED:
            return Written("unchanged")
        _check_lease(current, by)
        now = now_iso()
        values = {
            ":r": {"S": State.REJECTED.value},
            ":why_rejected": {"S": reason},
            ":now": {"S": now},
            ":prev": {"S": str(current.get("state"))},
        }
        update = {
            "TableName": table,
            "Key": {"item_id": {"S": item_id}},
            "UpdateExpression": (
                "SET #s = :r, reason = :why_rejected, updated_at = :now"
                + _answer_sets(by, current, values)
                + " REMOVE lease_owner, lease_expires"
            ),
            "ConditionExpression": "#s = :prev" + _lease_clause(by, values),
            "ExpressionAttributeNames": {"#s": "state"},
            "ExpressionAttributeValues": values,
        }
        try:
            _write(update, by.log(current, now) if by.log else None)
        except _ConditionFailed:
            continue
        return Written("applied", current, now)
    raise FlywheelError(f"item {item_id} kept changing while it was rejected")


# -- leases ---------------------------------------------------------------------------


def take_lease(
    table: str, item_id: str, owner: str, now_epoch: float, until: float, states: tuple[State, ...]
) -> bool:
    """Lease the item to ``owner`` until ``until`` if it is in ``states`` and its lease is
    free, expired or already the owner's. False when someone else holds it (or it moved on).
    """
    values: dict[str, Any] = {
        ":me": {"S": owner},
        ":t": _to_ddb(now_epoch),
        ":until": _to_ddb(until),
    }
    placeholders = []
    for n, state in enumerate(states):
        values[f":s{n}"] = {"S": state.value}
        placeholders.append(f":s{n}")
    try:
        _write(
            {
                "TableName": table,
                "Key": {"item_id": {"S": item_id}},
                "UpdateExpression": "SET lease_owner = :me, lease_expires = :until",
                "ConditionExpression": (
                    f"attribute_exists(item_id) AND #s IN ({', '.join(placeholders)}) "
                    f"AND {LEASE_FREE}"
                ),
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": values,
            }
        )
    except _ConditionFailed:
        return False
    return True


def release_lease(table: str, item_id: str, owner: str, log: dict | None = None) -> bool:
    """Give the item back (a skip); False when ``owner`` did not hold it."""
    try:
        _write(
            {
                "TableName": table,
                "Key": {"item_id": {"S": item_id}},
                "UpdateExpression": "REMOVE lease_owner, lease_expires",
                "ConditionExpression": "lease_owner = :me",
                "ExpressionAttributeValues": {":me": {"S": owner}},
            },
            log,
        )
    except _ConditionFailed:
        return False
    return True


def restore(
    table: str, previous: dict, changed_at: str, lease: dict, log: dict, label: str | None = None
) -> bool:
    """Undo: put the item back as ``previous`` (plus ``lease``) if it still is as the answer
    left it (``updated_at == changed_at``); ``log`` (deleting the answer) goes with it, and
    so does taking back the spot-check observation the answer ``label`` made, if any."""
    item = {**previous, **lease}
    if isinstance(item.get("source_keys"), list):  # a string set, read back as a list
        item["source_keys"] = set(item["source_keys"]) or None
    put = {
        "TableName": table,
        "Item": {k: _to_ddb(v) for k, v in item.items() if v is not None},
        "ConditionExpression": "updated_at = :after",
        "ExpressionAttributeValues": {":after": {"S": changed_at}},
    }
    try:
        entries = [{"Put": put}, log]
        seen = observation(previous, label) if label is not None else None
        if seen is not None and (seen.answered or seen.correct):
            entries.append(ledger.tally_entry(table, reverse(seen)))
        client("dynamodb").transact_write_items(TransactItems=entries)
    except ClientError as exc:
        reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
        if error_code(exc) == "TransactionCanceledException" and any(
            r.get("Code") == "ConditionalCheckFailed" for r in reasons
        ):
            return False
        raise
    return True


def query_state(
    table: str, state: State, *, since: str | None = None, count_only: bool = False
) -> Iterator[dict]:
    """Items in a state (GSI ``state-index``), oldest update first; ``since`` is exclusive."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": STATE_INDEX,
        "KeyConditionExpression": "#s = :s" + (" AND updated_at > :since" if since else ""),
        "ExpressionAttributeNames": {"#s": "state"},
        "ExpressionAttributeValues": {":s": {"S": state.value}},
    }
    if since:
        kwargs["ExpressionAttributeValues"][":since"] = {"S": since}
    if count_only:
        kwargs["Select"] = "COUNT"
    paginator = client("dynamodb").get_paginator("query")
    for page in paginator.paginate(**kwargs):
        if count_only:
            yield {"count": page["Count"]}
        else:
            yield from (_item(raw) for raw in page.get("Items", []))


def count_state(table: str, state: State, since: str | None = None) -> int:
    return sum(p["count"] for p in query_state(table, state, since=since, count_only=True))


def get_training_meta(table: str) -> dict:
    return get(table, TRAINING_META_ID) or {}


def put_training_meta(table: str, meta: dict) -> None:
    item = {"item_id": TRAINING_META_ID, **meta}
    if "state" in item:
        raise FlywheelError("the training meta record must not have a state")
    client("dynamodb").put_item(TableName=table, Item={k: _to_ddb(v) for k, v in item.items()})


def add_source_keys(table: str, item_id: str, keys: set[str]) -> None:
    """Record more upload keys of the same bytes (a string set: adding twice is a no-op).

    ``updated_at`` is left alone: another copy of an image is not a new label.
    """
    client("dynamodb").update_item(
        TableName=table,
        Key={"item_id": {"S": item_id}},
        UpdateExpression="ADD source_keys :k",
        ConditionExpression="attribute_exists(item_id)",
        ExpressionAttributeValues={":k": {"SS": sorted(keys)}},
    )
