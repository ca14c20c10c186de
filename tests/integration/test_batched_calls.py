"""The batched AWS calls: SendMessageBatch in tens with per-entry failures, BatchGetItem with
UnprocessedKeys asked again, parallel S3 reads. moto serves the calls; where a failure must
be injected (a refused entry, unprocessed keys) botocore's Stubber plays the service."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber
from flywheel.adapters import aws, items, queues, storage
from flywheel.errors import RetryableError


@pytest.fixture
def env(stack):
    stack.use("IngestFunction")
    return stack


def test_more_than_ten_messages_go_out_in_batches_of_ten(env):
    # Given 23 message bodies
    bodies = [{"item_id": f"i{n}"} for n in range(23)]
    # When they are sent (SQS refuses more than 10 entries per SendMessageBatch)
    failed = queues.send_batch(env.physical["LabelQueue"], list(enumerate(bodies)))
    # Then all 23 are on the queue, once each
    assert failed == {}
    assert sorted(m["item_id"] for m in env.drain("LabelQueue")) == sorted(
        b["item_id"] for b in bodies
    )


def _ok(*ids: str) -> list[dict]:
    return [{"Id": i, "MessageId": f"m{i}", "MD5OfMessageBody": "x"} for i in ids]


def test_refused_entries_are_reported_and_server_side_failures_sent_again(env):
    url = env.physical["LabelQueue"]
    entries = [(f"tag{n}", {"n": n}) for n in range(12)]
    stub = Stubber(aws.client("sqs"))
    # first call (entries 0-9): 3 fails on SQS's side, 5 is the sender's fault
    stub.add_response(
        "send_message_batch",
        {
            "Successful": _ok(*(str(n) for n in range(10) if n not in (3, 5))),
            "Failed": [
                {"Id": "3", "SenderFault": False, "Code": "InternalError"},
                {"Id": "5", "SenderFault": True, "Code": "InvalidMessageContents"},
            ],
        },
        {
            "QueueUrl": url,
            "Entries": [{"Id": str(n), "MessageBody": json.dumps({"n": n})} for n in range(10)],
        },
    )
    # entry 3 alone, sent again
    stub.add_response(
        "send_message_batch",
        {"Successful": _ok("3"), "Failed": []},
        {"QueueUrl": url, "Entries": [{"Id": "3", "MessageBody": json.dumps({"n": 3})}]},
    )
    # second call (entries 10-11): the whole call fails
    stub.add_client_error("send_message_batch", "AWS.SimpleQueueService.NonExistentQueue")
    with stub:
        failed = queues.send_batch(url, entries)
    stub.assert_no_pending_responses()
    assert set(failed) == {"tag5", "tag10", "tag11"}
    assert "InvalidMessageContents" in failed["tag5"]
    assert "NonExistentQueue" in failed["tag10"]


def test_send_json_raises_when_any_message_is_refused(env):
    stub = Stubber(aws.client("sqs"))
    stub.add_response(
        "send_message_batch",
        {"Successful": _ok("0"), "Failed": [{"Id": "1", "SenderFault": True, "Code": "X"}]},
    )
    with stub, pytest.raises(RetryableError, match="refused 1 of 2"):
        queues.send_json(env.physical["LabelQueue"], [{"a": 1}, {"a": 2}])


def test_get_many_reads_more_than_a_hundred_items(env):
    # Given 150 items
    ids = [f"{n:064x}" for n in range(150)]
    for i in ids:
        items.put_new(env.table, {"item_id": i, "state": "unlabeled"})
    # When 150 of them, one twice and one unknown id are asked for (100 keys per call)
    found = items.get_many(env.table, [*ids, ids[0], "unknown"])
    # Then each item comes back once and the unknown id is absent
    assert sorted(found) == ids
    assert found[ids[7]]["state"] == "unlabeled"


def _key(i: str) -> dict:
    return {"item_id": {"S": i}}


def test_unprocessed_keys_are_asked_again(env):
    table, slept = env.table, []
    stub = Stubber(aws.client("dynamodb"))
    stub.add_response(
        "batch_get_item",
        {
            "Responses": {table: [{"item_id": {"S": "a"}, "state": {"S": "unlabeled"}}]},
            "UnprocessedKeys": {table: {"Keys": [_key("b")], "ConsistentRead": True}},
        },
        {"RequestItems": {table: {"Keys": [_key("a"), _key("b")], "ConsistentRead": True}}},
    )
    stub.add_response(
        "batch_get_item",
        {"Responses": {table: [{"item_id": {"S": "b"}, "state": {"S": "auto_labeled"}}]}},
        {"RequestItems": {table: {"Keys": [_key("b")], "ConsistentRead": True}}},
    )
    with stub:
        found = items.get_many(table, ["a", "b"], sleep=slept.append)
    assert {k: v["state"] for k, v in found.items()} == {"a": "unlabeled", "b": "auto_labeled"}
    assert len(slept) == 1  # backed off once before asking again


def test_keys_left_unprocessed_are_an_error_not_absent_items(env):
    table = env.table
    stub = Stubber(aws.client("dynamodb"))
    for _ in range(items.BATCH_GET_ATTEMPTS):
        stub.add_response(
            "batch_get_item",
            {
                "Responses": {table: []},
                "UnprocessedKeys": {table: {"Keys": [_key("a")], "ConsistentRead": True}},
            },
        )
    with stub, pytest.raises(RetryableError, match="1 keys"):
        items.get_many(table, ["a"], sleep=lambda s: None)


def test_get_many_reads_objects_in_parallel_with_per_key_outcomes(env):
    env.s3.put_object(Bucket=env.data_bucket, Key="images/a.png", Body=b"A")
    env.s3.put_object(Bucket=env.data_bucket, Key="images/b.png", Body=b"B")
    got = storage.get_many(env.data_bucket, ["images/a.png", "images/b.png", "images/gone.png"])
    assert got == {"images/a.png": b"A", "images/b.png": b"B", "images/gone.png": None}
    failing = storage.get_many("no-such-bucket", ["k"])
    assert isinstance(failing["k"], Exception)
