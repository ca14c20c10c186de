"""The review app's answer log (the ReviewAnswersTable): one record per answer.

Key: ``reviewer`` (hash) + ``answered_at`` (range, ISO time with microseconds), so a
reviewer's answers read newest first (undo) or since a time (progress). A record keeps
the item as it was before the answer (``previous``) and the item's ``updated_at`` after
it, which is how undo knows the item was not changed since.
"""

from __future__ import annotations

from typing import Any

from flywheel.adapters.aws import client
from flywheel.adapters.items import _from_ddb, _to_ddb

# Answer records expire after this long (DynamoDB TTL on ``expires_at``).
KEEP_SECONDS = 90 * 24 * 3600


def put_entry(table: str, record: dict) -> dict:
    """A TransactWriteItems entry that stores ``record`` (written with the item's change)."""
    item = {
        **record,
        "expires_at": int(record["answered_epoch"]) + KEEP_SECONDS,
    }
    return {
        "Put": {
            "TableName": table,
            "Item": {k: _to_ddb(v) for k, v in item.items() if v is not None},
            "ConditionExpression": "attribute_not_exists(answered_at)",
        }
    }


def delete_entry(table: str, reviewer: str, answered_at: str) -> dict:
    return {
        "Delete": {
            "TableName": table,
            "Key": {"reviewer": {"S": reviewer}, "answered_at": {"S": answered_at}},
            "ConditionExpression": "attribute_exists(answered_at)",
        }
    }


def put(table: str, record: dict) -> None:
    entry = put_entry(table, record)["Put"]
    client("dynamodb").put_item(**entry)


def last(table: str, reviewer: str) -> dict | None:
    got = client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="reviewer = :r",
        ExpressionAttributeValues={":r": {"S": reviewer}},
        ScanIndexForward=False,
        Limit=1,
        ConsistentRead=True,
    )
    return _record(got["Items"][0]) if got.get("Items") else None


def since(table: str, reviewer: str, answered_after: str) -> list[dict]:
    """The reviewer's answers after a time, oldest first (without the ``previous`` copies)."""
    paginator = client("dynamodb").get_paginator("query")
    out: list[dict] = []
    for page in paginator.paginate(
        TableName=table,
        KeyConditionExpression="reviewer = :r AND answered_at > :t",
        ExpressionAttributeValues={":r": {"S": reviewer}, ":t": {"S": answered_after}},
        ProjectionExpression="answered_at, answered_epoch, item_id, #a",
        ExpressionAttributeNames={"#a": "action"},
        ConsistentRead=True,
    ):
        out.extend(_record(raw) for raw in page.get("Items", []))
    return out


def _record(raw: dict[str, Any]) -> dict:
    return {k: _from_ddb(v) for k, v in raw.items()}


def delete(table: str, reviewer: str, answered_at: str) -> None:
    entry = delete_entry(table, reviewer, answered_at)["Delete"]
    entry.pop("ConditionExpression")
    client("dynamodb").delete_item(**entry)
