"""What the flywheel keeps about its models, as records in the items table (no ``state``, so
they never show in the state index): per champion its spot-check tally and suspension
(``meta#audit#<model_version>``), the rounds (``meta#rounds``: one entry per promoted model)
and the gate's last decision (``meta#gate``)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

# The module, not its names: items imports this module for ``tally_entry``.
from flywheel.adapters import items
from flywheel.adapters.aws import client, error_code
from flywheel.domain.audit import Observation, tally_id
from flywheel.domain.items import now_iso

ROUNDS_ID = "meta#rounds"
GATE_ID = "meta#gate"


def tally_entry(table: str, o: Observation) -> dict:
    """A TransactWriteItems entry adding an observation to its champion's tally (written in
    the same transaction as the answer, so it counts exactly when the answer does)."""
    return {
        "Update": {
            "TableName": table,
            "Key": {"item_id": {"S": tally_id(o.model_version)}},
            "UpdateExpression": "SET model_version = :v, updated_at = :now "
            "ADD answered :a, correct :c",
            "ExpressionAttributeValues": {
                ":v": {"S": o.model_version},
                ":now": {"S": now_iso()},
                ":a": {"N": str(o.answered)},
                ":c": {"N": str(o.correct)},
            },
        }
    }


def count_decisions(table: str, model_version: str, decided: int, auto_labeled: int) -> None:
    """How many items the champion labeled, and how many of those it auto-labeled (its
    realised coverage; a skipped re-delivery is not written, so it is not counted again)."""
    client("dynamodb").update_item(
        TableName=table,
        Key={"item_id": {"S": tally_id(model_version)}},
        UpdateExpression="SET model_version = :v ADD decided :d, auto_labeled :a",
        ExpressionAttributeValues={
            ":v": {"S": model_version},
            ":d": {"N": str(decided)},
            ":a": {"N": str(auto_labeled)},
        },
    )


def tally(table: str, model_version: str) -> dict | None:
    return items.get(table, tally_id(model_version))


def tallies(table: str, model_versions: list[str]) -> dict[str, dict]:
    """Tallies by model version (BatchGetItem, 100 keys a call)."""
    out: dict[str, dict] = {}
    versions = sorted(set(model_versions))
    for start in range(0, len(versions), 100):
        keys: list[dict[str, Any]] = [
            {"item_id": {"S": tally_id(v)}} for v in versions[start : start + 100]
        ]
        request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            got = client("dynamodb").batch_get_item(RequestItems=request)
            for raw in got.get("Responses", {}).get(table, []):
                record = items._item(raw)
                out[str(record.get("model_version"))] = record
            request = got.get("UnprocessedKeys") or {}
    return out


def suspend(table: str, model_version: str, reason: str, figures: dict) -> bool:
    """Mark the champion suspended; True only for the call that made the transition."""
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"item_id": {"S": tally_id(model_version)}},
            UpdateExpression="SET suspended_at = :now, suspended_reason = :why, "
            "suspended_figures = :f, model_version = :v",
            ConditionExpression="attribute_not_exists(suspended_at)",
            ExpressionAttributeValues={
                ":now": {"S": now_iso()},
                ":why": {"S": reason},
                ":f": items._to_ddb(figures),
                ":v": {"S": model_version},
            },
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def put_round(table: str, record: dict) -> None:
    """One round per promoted model version (a repeated promotion rewrites the same entry)."""
    client("dynamodb").update_item(
        TableName=table,
        Key={"item_id": {"S": ROUNDS_ID}},
        UpdateExpression="SET #r = if_not_exists(#r, :empty)",
        ExpressionAttributeNames={"#r": "rounds"},
        ExpressionAttributeValues={":empty": {"M": {}}},
    )
    client("dynamodb").update_item(
        TableName=table,
        Key={"item_id": {"S": ROUNDS_ID}},
        UpdateExpression="SET #r.#v = :round",
        ExpressionAttributeNames={"#r": "rounds", "#v": str(record["model_version"])},
        ExpressionAttributeValues={":round": items._to_ddb(record)},
    )


def rounds(table: str) -> list[dict]:
    record = items.get(table, ROUNDS_ID) or {}
    return list((record.get("rounds") or {}).values())


def put_gate(table: str, record: dict, *, first_for_candidate: bool = False) -> bool:
    """Write the gate's last decision; False when ``first_for_candidate`` and the record is
    already about this candidate (a re-delivered promote must not overwrite the rollout's
    final word with "deploying")."""
    item = {"item_id": GATE_ID, **record}
    condition = (
        {
            "ConditionExpression": "attribute_not_exists(candidate) OR candidate <> :c",
            "ExpressionAttributeValues": {":c": {"S": str(record["candidate"])}},
        }
        if first_for_candidate
        else {}
    )
    try:
        client("dynamodb").put_item(
            TableName=table,
            Item={k: items._to_ddb(v) for k, v in item.items() if v is not None},
            **condition,
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def last_gate(table: str) -> dict | None:
    record = items.get(table, GATE_ID)
    if record:
        record.pop("item_id", None)
    return record
