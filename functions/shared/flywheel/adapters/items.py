"""The items table (DynamoDB)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.domain.items import TRAINING_META_ID, State, now_iso
from flywheel.domain.sampling import AUDIT, answer_provenance
from flywheel.errors import FlywheelError

STATE_INDEX = "state-index"


def _to_ddb(value: Any) -> dict:
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
    the random sample that certifies, so a model label must never reach them.
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
                "AND (attribute_not_exists(review_reason) OR review_reason <> :audit)"
            ),
            ExpressionAttributeNames={"#s": "state", "#l": "label"},
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def set_human_label(table: str, item_id: str, label: str) -> str:
    """'applied', 'unchanged' (same human label already) or 'unknown' (no such usable item).

    Records how the label was obtained (``label_sampling``, ``label_origin``) from the
    state the person answered: read, decide, then write only if that state still holds.
    """
    for _ in range(5):
        current = get(table, item_id)
        if current is None or current.get("state") == State.REJECTED:
            return "unknown"
        if current.get("state") == State.HUMAN_LABELED and current.get("label") == label:
            return "unchanged"
        sampling, origin = answer_provenance(current)
        names = {"#s": "state", "#l": "label"}
        values = {
            ":h": {"S": State.HUMAN_LABELED.value},
            ":l": {"S": label},
            ":src": {"S": "human"},
            ":now": {"S": now_iso()},
            ":prev": {"S": str(current.get("state"))},
            ":smp": {"S": sampling},
            ":org": {"S": origin},
        }
        condition = "#s = :prev"
        if current.get("review_reason") is None:
            condition += " AND attribute_not_exists(review_reason)"
        else:
            condition += " AND review_reason = :why"
            values[":why"] = {"S": str(current["review_reason"])}
        try:
            client("dynamodb").update_item(
                TableName=table,
                Key={"item_id": {"S": item_id}},
                UpdateExpression=(
                    "SET #s = :h, #l = :l, label_source = :src, updated_at = :now, "
                    "label_sampling = :smp, label_origin = :org "
                    "REMOVE confidence, model_version, margin, top_k, ood"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            continue  # the item changed between the read and the write: decide again
        return "applied"
    raise FlywheelError(f"item {item_id} kept changing while a human label was applied")


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
