"""What the flywheel keeps about its models, as records in the items table (no ``state``, so
they never show in the state index): per champion its spot-check tally and suspension
(``meta#audit#<model_version>``), the rounds (``meta#rounds``: one entry per promoted model)
and the gate's last decision (``meta#gate``); and per labels file key the checkpoint of
its application (``meta#labels#<hash of bucket/key>``, ``domain/label_runs.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

# The module, not its names: items imports this module for ``tally_entry``.
from flywheel.adapters import items
from flywheel.adapters.aws import client, error_code
from flywheel.domain.audit import Observation, tally_id
from flywheel.domain.items import now_iso
from flywheel.domain.label_runs import APPLYING_STATUS as APPLYING
from flywheel.domain.label_runs import DONE_STATUS as DONE
from flywheel.errors import RetryableError

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


# -- labels file checkpoints ------------------------------------------------------------


@dataclass(frozen=True)
class LabelsCheckpoint:
    """Where applying one revision of a labels file stands."""

    revision: str
    status: str  # "applying" or "done"
    next_row: int
    outcomes: str  # one character per row done (domain/label_runs.py)
    invocations: int
    started_at: str
    lease_owner: str | None = None
    lease_expires: float = 0.0


@dataclass(frozen=True)
class Claim:
    """``claimed`` (this invocation holds the lease), ``done`` (that revision is finished),
    ``busy`` (another invocation holds the lease until ``lease_expires``) or ``superseded``
    (the record is about another revision, which a resuming message must not reset)."""

    kind: str
    checkpoint: LabelsCheckpoint | None = None
    lease_expires: float = 0.0


CLAIM_ATTEMPTS = 5


def _checkpoint(record: dict) -> LabelsCheckpoint:
    return LabelsCheckpoint(
        revision=str(record.get("revision")),
        status=str(record.get("status")),
        next_row=int(record.get("next_row") or 0),
        outcomes=str(record.get("outcomes") or ""),
        invocations=int(record.get("invocations") or 0),
        started_at=str(record.get("started_at") or ""),
        lease_owner=record.get("lease_owner"),
        lease_expires=float(record.get("lease_expires") or 0),
    )


def claim_labels_run(
    table: str,
    record_id: str,
    file: str,
    revision: str,
    owner: str,
    lease_expires: float,
    now: float,
    may_start: bool,
) -> Claim:
    """Take the lease on applying ``revision`` of a labels file, from its checkpoint.

    A record about another revision is reset to this one (row 1) only when ``may_start``
    (the file's S3 event: a newer upload) and nobody holds its lease. Read, decide, then a
    conditional write; a lost race reads again.
    """
    ddb = client("dynamodb")
    for _ in range(CLAIM_ATTEMPTS):
        current = items.get(table, record_id)
        ours = current is not None and current.get("revision") == revision
        if ours and current is not None and current.get("status") == DONE:
            return Claim("done", _checkpoint(current))
        if current is not None:
            held = current.get("lease_owner") and float(current.get("lease_expires") or 0) > now
            if held and current.get("lease_owner") != owner:
                return Claim("busy", lease_expires=float(current["lease_expires"]))
        if current is not None and not ours and not may_start:
            return Claim("superseded", _checkpoint(current))
        now_text = now_iso()
        try:
            if ours:
                got = ddb.update_item(
                    TableName=table,
                    Key={"item_id": {"S": record_id}},
                    UpdateExpression="SET lease_owner = :me, lease_expires = :exp, "
                    "updated_at = :now ADD invocations :one",
                    ConditionExpression="revision = :r AND #st = :applying AND "
                    "(attribute_not_exists(lease_owner) OR lease_expires <= :t)",
                    ExpressionAttributeNames={"#st": "status"},
                    ExpressionAttributeValues={
                        ":me": {"S": owner},
                        ":exp": items._to_ddb(lease_expires),
                        ":now": {"S": now_text},
                        ":one": {"N": "1"},
                        ":r": {"S": revision},
                        ":applying": {"S": APPLYING},
                        ":t": items._to_ddb(now),
                    },
                    ReturnValues="ALL_NEW",
                )
                return Claim("claimed", _checkpoint(items._item(got["Attributes"])))
            record = {
                "item_id": record_id,
                "file": file,
                "revision": revision,
                "status": APPLYING,
                "next_row": 0,
                "outcomes": "",
                "invocations": 1,
                "started_at": now_text,
                "updated_at": now_text,
                "lease_owner": owner,
                "lease_expires": lease_expires,
            }
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(item_id)"}
            if current is not None:  # another revision, its lease free: start this one over it
                condition = {
                    "ConditionExpression": "revision = :old AND "
                    "(attribute_not_exists(lease_owner) OR lease_expires <= :t)",
                    "ExpressionAttributeValues": {
                        ":old": {"S": str(current.get("revision"))},
                        ":t": items._to_ddb(now),
                    },
                }
            ddb.put_item(
                TableName=table,
                Item={k: items._to_ddb(v) for k, v in record.items()},
                **condition,
            )
            return Claim("claimed", _checkpoint(record))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
    raise RetryableError(f"the checkpoint of {file} kept changing while it was claimed")


def save_labels_chunk(
    table: str, record_id: str, revision: str, owner: str, start: int, outcomes: str
) -> bool:
    """Record the rows done through ``len(outcomes)``; False when this invocation no longer
    holds the lease or another one already moved the checkpoint (it then stops)."""
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"item_id": {"S": record_id}},
            UpdateExpression="SET next_row = :n, outcomes = :o, updated_at = :now",
            ConditionExpression="revision = :r AND lease_owner = :me AND next_row = :s",
            ExpressionAttributeValues={
                ":n": {"N": str(len(outcomes))},
                ":o": {"S": outcomes},
                ":now": {"S": now_iso()},
                ":r": {"S": revision},
                ":me": {"S": owner},
                ":s": {"N": str(start)},
            },
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def end_labels_lease(table: str, record_id: str, owner: str, *, done: bool) -> bool:
    """Give the lease up (the rest is handed on), or mark the revision done; False when
    this invocation did not hold it any more."""
    values: dict[str, Any] = {":me": {"S": owner}, ":now": {"S": now_iso()}}
    sets = "SET updated_at = :now"
    if done:
        sets += ", #st = :done, finished_at = :now"
        values[":done"] = {"S": DONE}
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"item_id": {"S": record_id}},
            UpdateExpression=f"{sets} REMOVE lease_owner, lease_expires",
            ConditionExpression="lease_owner = :me",
            ExpressionAttributeValues=values,
            **({"ExpressionAttributeNames": {"#st": "status"}} if done else {}),
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True
