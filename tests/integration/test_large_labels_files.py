"""human_labels on files larger than one invocation: chunks, a checkpoint, hand-offs.

The queue is LabelsFileQueue itself: moto delivers the DataBucket's S3 notifications there,
and the function hands the rest of a file on in messages to it. ``pump`` plays the Lambda
event source mapping: receive, invoke with a context whose deadline the test chooses,
delete what succeeded.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import human_labels
import pytest
from flywheel.adapters import items, ledger
from flywheel.domain import label_runs
from integration_kit import LambdaContext

# moto's UpdateItem costs ~40 ms (its expression parser): small chunks keep the tests quick.
CHUNK = 20


@dataclass
class DeadlineContext(LambdaContext):
    """A Lambda context whose invocation ends ``seconds`` after it is created."""

    seconds: float = 300.0

    def __post_init__(self) -> None:
        self.ends = time.time() + self.seconds

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return max(0, int((self.ends - time.time()) * 1000))


@pytest.fixture
def env(stack):
    stack.use("HumanLabelsFunction", CLASS_NAMES="cat,dog", LABELS_CHUNK_ROWS=str(CHUNK))
    stack.drain("LabelsFileQueue")  # S3's s3:TestEvent from setting the notifications up
    return stack


def seed(stack, ids: list[str]) -> None:
    table = stack.session.resource("dynamodb").Table(stack.table)
    with table.batch_writer() as batch:
        for item_id in ids:
            batch.put_item(
                Item={
                    "item_id": item_id,
                    "state": "unlabeled",
                    "image_key": f"images/{item_id}.png",
                    "updated_at": "2026-11-01T00:00:00.000000Z",
                }
            )


def ids(first: int, n: int) -> list[str]:
    return [f"{i:064x}" for i in range(first, first + n)]


def receive(stack) -> list[dict]:
    url = stack.physical["LabelsFileQueue"]
    got = stack.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"], VisibilityTimeout=0
    )
    return got.get("Messages", [])


def invoke(stack, message: dict, seconds: float = 300.0) -> dict:
    """One Lambda invocation of one queue message (BatchSize 1, as the template says)."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{stack.physical['LabelsFileQueue']}",
        "awsRegion": "us-east-1",
    }
    return human_labels.handler({"Records": [record]}, DeadlineContext(seconds=seconds))


def pump(stack, seconds: float = 300.0, limit: int = 50) -> list[dict]:
    """Deliver LabelsFileQueue's messages until it is empty; the bodies delivered."""
    url, delivered = stack.physical["LabelsFileQueue"], []
    for _ in range(limit):
        messages = receive(stack)
        if not messages:
            return delivered
        (m,) = messages
        delivered.append(json.loads(m["Body"]))
        response = invoke(stack, m, seconds)
        assert response == {"batchItemFailures": []}
        stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    raise AssertionError(f"LabelsFileQueue still had messages after {limit} deliveries")


def delete(stack, message: dict) -> None:
    url = stack.physical["LabelsFileQueue"]
    stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def result(stack, key: str) -> dict | None:
    try:
        return json.loads(stack.read(f"{key}.result.json"))
    except stack.s3.exceptions.NoSuchKey:
        return None


def progress(stack, key: str) -> dict:
    return json.loads(stack.read(f"{key}.progress.json"))


def progress_lines(caplog) -> list[tuple[int, int]]:
    return [(r.rows_done, r.rows_total) for r in caplog.records if r.msg == "labels file progress"]


def big_file(known: list[str], unknown: list[str], malformed: bool = False) -> str:
    """A header, the known ids labeled cat, a malformed line if asked, the unknown ids."""
    lines = ["image_id_or_key,label", *(f"{i},cat" for i in known)]
    lines += ["just-one-column"] * malformed + [f"images/{i}.png,dog" for i in unknown]
    return "\n".join(lines) + "\n"


def test_a_file_cut_by_short_deadlines_resumes_and_applies_every_row_once(env, caplog):
    caplog.set_level(logging.INFO)
    # Given 45 known items and a file naming them plus 5 unknown ids: two and a half chunks
    known, unknown = ids(1, 45), ids(5000, 5)
    seed(env, known)
    key = "labels/big.csv"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=big_file(known, unknown, True).encode())

    # When the first invocation has too little time for more than one chunk
    (event,) = receive(env)
    assert invoke(env, event, seconds=1) == {"batchItemFailures": []}
    delete(env, event)

    # Then it applied one chunk, said how far it got, and handed the rest on
    assert result(env, key) is None
    assert (progress(env, key)["status"], progress(env, key)["rows_done"]) == ("applying", CHUNK)
    assert progress(env, key)["rows_total"] == 50
    assert sum(env.item(i)["state"] == "human_labeled" for i in known) == CHUNK

    # When the continuations are delivered, each with as little time
    delivered = pump(env, seconds=1)

    # Then the file finished from its checkpoint, one chunk per invocation
    assert [b["labels_file"]["key"] for b in delivered] == [key, key]
    assert progress_lines(caplog) == [(20, 50), (40, 50), (50, 50)]
    # and every row was applied exactly once: a row applied twice would say "unchanged"
    report = result(env, key)
    assert (report["applied"], report["unchanged"]) == (45, 0)
    assert {env.item(i)["label"] for i in known} == {"cat"}
    # and the report is complete, in line order, as if one invocation had done it all
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(47, "malformed")] + [
        (48 + n, "unknown_image") for n in range(5)
    ]
    assert report["progress"] | {"started_at": None, "updated_at": None} == {
        "status": "done",
        "rows_done": 50,
        "rows_total": 50,
        "applied": 45,
        "unchanged": 0,
        "unknown": 5,
        "invocations": 3,
        "started_at": None,
        "updated_at": None,
    }
    assert progress(env, key) == report["progress"]
    # and each refused row has its WARNING line, once
    warned = [r.line for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [e["line"] for e in report["errors"]]


def test_a_redelivered_message_after_completion_changes_nothing(env):
    # Given a file applied over two invocations
    known = ids(1, CHUNK + 10)
    seed(env, known)
    key = "labels/done.csv"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=big_file(known, []).encode())
    delivered = pump(env, seconds=1)
    assert len(delivered) == 2
    before_items = [env.item(i) for i in known]
    before_result = env.read(f"{key}.result.json")

    # When both messages are delivered again (at-least-once delivery)
    for body in delivered:
        env.sqs.send_message(QueueUrl=env.physical["LabelsFileQueue"], MessageBody=json.dumps(body))
    again = pump(env)

    # Then nothing changed: no item, not the result file, and nothing was handed on
    assert len(again) == 2
    assert [env.item(i) for i in known] == before_items
    assert env.read(f"{key}.result.json") == before_result


def test_duplicate_deliveries_while_a_file_is_applied_apply_each_row_once(env):
    # Given a file of three chunks whose S3 notification arrives twice
    known = ids(1, 2 * CHUNK + 7)
    seed(env, known)
    key = "labels/twice.csv"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=big_file(known, []).encode())
    (event,) = receive(env)
    env.sqs.send_message(QueueUrl=env.physical["LabelsFileQueue"], MessageBody=event["Body"])

    # When every message (duplicates and continuations) is delivered with little time each
    pump(env, seconds=1)

    # Then the file is complete and no row was applied twice
    report = result(env, key)
    assert (report["applied"], report["unchanged"], report["errors"]) == (len(known), 0, [])
    assert report["progress"]["rows_done"] == len(known)


def test_a_failed_invocation_is_retried_from_its_checkpoint(env, monkeypatch):
    # Given a file of three chunks, its first chunk applied and handed on
    known = ids(1, 2 * CHUNK + 3)
    seed(env, known)
    key = "labels/retry.csv"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=big_file(known, []).encode())
    (event,) = receive(env)
    invoke(env, event, seconds=1)
    delete(env, event)

    # When the next invocation applies a chunk, then cannot hand the rest on
    (continuation,) = receive(env)
    good_queue = env.physical["LabelsFileQueue"]
    monkeypatch.setenv("LABELS_FILE_QUEUE_URL", good_queue + "-gone")
    failed = invoke(env, continuation, seconds=1)

    # Then the message fails (SQS will deliver it again) with the chunk's rows recorded
    assert failed == {"batchItemFailures": [{"itemIdentifier": continuation["MessageId"]}]}
    assert progress(env, key)["rows_done"] == 2 * CHUNK

    # When SQS delivers it again
    monkeypatch.setenv("LABELS_FILE_QUEUE_URL", good_queue)
    pump(env, seconds=1)

    # Then it resumed at the checkpoint: the last rows applied, none twice
    report = result(env, key)
    assert (report["applied"], report["unchanged"]) == (len(known), 0)
    assert report["progress"]["invocations"] == 3


def test_a_message_waits_while_another_invocation_holds_the_file(env):
    # Given another invocation applying the file (its lease runs 60 s more)
    known = ids(1, 20)
    seed(env, known)
    key = "labels/busy.csv"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=big_file(known, []).encode())
    got = env.s3.get_object(Bucket=env.data_bucket, Key=key)
    revision = label_runs.revision(None, got["ETag"], got["LastModified"])
    record_id = label_runs.run_id(env.data_bucket, key)
    now = time.time()
    claim = ledger.claim_labels_run(
        env.table, record_id, key, revision, "other", now + 60, now, True
    )
    assert claim.kind == "claimed"

    # When the file's notification arrives
    (event,) = receive(env)
    assert invoke(env, event) == {"batchItemFailures": []}
    delete(env, event)

    # Then nothing is applied twice over the other's work: it looks again once the lease ends
    assert {env.item(i)["state"] for i in known} == {"unlabeled"}
    attributes = env.sqs.get_queue_attributes(
        QueueUrl=env.physical["LabelsFileQueue"], AttributeNames=["All"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_a_checkpoint_lease_is_taken_over_only_when_it_ends(env):
    record_id, now = label_runs.run_id("b", "labels/x.csv"), time.time()
    first = ledger.claim_labels_run(
        env.table, record_id, "labels/x.csv", "r1", "a", now + 5, now, True
    )
    assert first.kind == "claimed" and first.checkpoint.next_row == 0
    busy = ledger.claim_labels_run(
        env.table, record_id, "labels/x.csv", "r1", "b", now + 5, now, True
    )
    assert (busy.kind, busy.lease_expires) == ("busy", pytest.approx(now + 5))
    later = now + 6
    taken = ledger.claim_labels_run(
        env.table, record_id, "labels/x.csv", "r1", "b", later + 5, later, False
    )
    assert (taken.kind, taken.checkpoint.invocations) == ("claimed", 2)
    # the first holder outlived its lease: its checkpoint write is refused
    assert not ledger.save_labels_chunk(env.table, record_id, "r1", "a", 0, "a")
    assert ledger.save_labels_chunk(env.table, record_id, "r1", "b", 0, "a")
    # a resuming message of an older revision never resets a newer one
    assert ledger.end_labels_lease(env.table, record_id, "b", done=False)
    stale = ledger.claim_labels_run(
        env.table, record_id, "labels/x.csv", "r0", "c", later + 5, later, False
    )
    assert stale.kind == "superseded"
    assert items.get(env.table, record_id)["next_row"] == 1


def test_a_new_version_of_the_key_starts_from_row_one(env):
    # Given a file handed on after its first chunk
    known = ids(1, CHUNK + 50)
    seed(env, known)
    key = "labels/v.csv"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=big_file(known, []).encode())
    (event,) = receive(env)
    invoke(env, event, seconds=1)
    delete(env, event)

    # When a new version of the same key replaces it (every row now says dog)
    body = "\n".join(f"{i},dog" for i in known) + "\n"
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=body.encode())
    pump(env)

    # Then the old version's rest is dropped and the new one is applied from its first row
    report = result(env, key)
    assert (report["applied"], report["unchanged"], report["errors"]) == (len(known), 0, [])
    assert {env.item(i)["label"] for i in known} == {"dog"}
    assert report["progress"]["invocations"] == 1


def test_twenty_thousand_unknown_ids_finish_within_the_timeout(env, capsys):
    # Given a 20,000-row file of ids the stack never saw
    key = "labels/unknown.csv"
    env.s3.put_object(
        Bucket=env.data_bucket, Key=key, Body=big_file([], ids(1, 20_000), True).encode()
    )
    (event,) = receive(env)

    # When one invocation with the template's 300 s timeout and chunk size gets it
    env.use("HumanLabelsFunction", CLASS_NAMES="cat,dog")
    began = time.monotonic()
    assert invoke(env, event, seconds=300) == {"batchItemFailures": []}
    took = time.monotonic() - began

    # Then it finished well inside the timeout, every row reported with its reason
    report = result(env, key)
    assert report["progress"]["status"] == "done" and report["progress"]["invocations"] == 1
    assert len(report["errors"]) == 20_001  # the malformed line and 20,000 unknown images
    assert took < 300 - label_runs.HANDOFF_RESERVE_S
    with capsys.disabled():
        print(f"\n20,000 unknown ids: {took:.1f} s in moto (limit 300 s)")
