"""The items table (DynamoDB)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.domain.items import TRAINING_META_ID, State, now_iso
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
    table: str, item_id: str, state: State, label: str, confidence: float, model_version: str
) -> bool:
    """Record a model label; never touches human-labeled or rejected items. False if skipped."""
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"item_id": {"S": item_id}},
            UpdateExpression=(
                "SET #s = :s, #l = :l, label_source = :src, confidence = :c, "
                "model_version = :v, updated_at = :now"
            ),
            ConditionExpression="attribute_exists(item_id) AND #s IN (:unl, :auto, :rev)",
            ExpressionAttributeNames={"#s": "state", "#l": "label"},
            ExpressionAttributeValues={
                ":s": {"S": state.value},
                ":l": {"S": label},
                ":src": {"S": "model"},
                ":c": _to_ddb(round(confidence, 6)),
                ":v": {"S": model_version},
                ":now": {"S": now_iso()},
                ":unl": {"S": State.UNLABELED.value},
                ":auto": {"S": State.AUTO_LABELED.value},
                ":rev": {"S": State.NEEDS_REVIEW.value},
            },
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def set_human_label(table: str, item_id: str, label: str) -> str:
    """'applied', 'unchanged' (same human label already) or 'unknown' (no such usable item)."""
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"item_id": {"S": item_id}},
            UpdateExpression=(
                "SET #s = :h, #l = :l, label_source = :src, updated_at = :now "
                "REMOVE confidence, model_version"
            ),
            ConditionExpression=(
                "attribute_exists(item_id) AND #s <> :rej AND NOT (#s = :h AND #l = :l)"
            ),
            ExpressionAttributeNames={"#s": "state", "#l": "label"},
            ExpressionAttributeValues={
                ":h": {"S": State.HUMAN_LABELED.value},
                ":l": {"S": label},
                ":src": {"S": "human"},
                ":now": {"S": now_iso()},
                ":rej": {"S": State.REJECTED.value},
            },
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        current = get(table, item_id)
        if current is None or current.get("state") == State.REJECTED:
            return "unknown"
        return "unchanged"
    return "applied"


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
