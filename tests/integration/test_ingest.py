"""ingest: S3 notification (in SQS) -> normalised PNG in the data bucket + item in DynamoDB."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from urllib.parse import quote_plus

import cv2
import ingest
import numpy as np
import pytest
from integration_kit import s3_sqs_event


def jpeg(width: int, height: int, exif_orientation: int | None = None, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    data = data.tobytes()
    if exif_orientation is None:
        return data
    # APP1 Exif segment with one IFD0 entry: Orientation (0x0112), SHORT.
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, exif_orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00" * 64
        + b"IEND\xaeB`\x82"
    )


def upload(stack, key: str, data: bytes) -> None:
    stack.s3.put_object(Bucket=stack.upload_bucket, Key=key, Body=data)


def png_size(data: bytes) -> tuple[int, int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return image.shape[1], image.shape[0], image.shape[2]


@pytest.fixture
def env(stack):
    stack.use("IngestFunction")
    return stack


def test_key_with_space_and_plus_becomes_a_human_labeled_item(env, context):
    # Given an upload under labeled/cat/ whose key has a space and a plus sign
    data = jpeg(64, 48)
    upload(env, "labeled/cat/my photo+1.jpg", data)
    event = s3_sqs_event([(env.upload_bucket, "labeled/cat/my+photo%2B1.jpg", len(data))])

    # When ingest handles the notification
    response = ingest.handler(event, context)

    # Then the item is human-labeled with the decoded key and a PNG exists
    assert response == {"batchItemFailures": []}
    item_id = hashlib.sha256(data).hexdigest()
    item = env.item(item_id)
    assert item["state"] == "human_labeled"
    assert item["label"] == "cat" and item["label_source"] == "human"
    assert item["source_key"] == "labeled/cat/my photo+1.jpg"
    assert png_size(env.read(f"images/{item_id}.png")) == (64, 48, 3)
    assert env.drain("LabelQueue") == []


def test_unlabeled_upload_is_oriented_resized_and_queued(env, context):
    # Given a 2000x1000 photo whose EXIF says "rotate 90 degrees"
    data = jpeg(2000, 1000, exif_orientation=6)
    upload(env, "phone/IMG 0001.jpg", data)

    # When it is ingested
    ingest.handler(s3_sqs_event([(env.upload_bucket, "phone/IMG+0001.jpg", len(data))]), context)

    # Then the stored PNG is upright (portrait) with its longest side at MAX_IMAGE_SIDE
    item_id = hashlib.sha256(data).hexdigest()
    assert png_size(env.read(f"images/{item_id}.png")) == (512, 1024, 3)
    assert env.item(item_id)["state"] == "unlabeled"
    assert env.drain("LabelQueue") == [{"item_id": item_id, "image_key": f"images/{item_id}.png"}]


def test_corrupt_records_are_rejected_without_failing_the_batch(env, context):
    # Given a batch with a good image, a truncated JPEG, a text file and a decompression bomb
    good, truncated = jpeg(32, 32, seed=1), jpeg(32, 32, seed=2)[:-300]
    files = {
        "a.jpg": good,
        "b.jpg": truncated,
        "c.jpg": b"hello, not an image",
        "d.png": png_bomb(),
    }
    for key, data in files.items():
        upload(env, key, data)
    event = s3_sqs_event([(env.upload_bucket, k, len(v)) for k, v in files.items()])

    # When ingest handles the batch
    response = ingest.handler(event, context)

    # Then nothing is retried, the good image is an item and the others are rejected with reasons
    assert response == {"batchItemFailures": []}
    by_key = {i["source_key"]: i for i in env.all_items()}
    assert by_key["a.jpg"]["state"] == "unlabeled"
    assert by_key["b.jpg"]["state"] == "rejected" and "truncated" in by_key["b.jpg"]["reason"]
    assert by_key["c.jpg"]["state"] == "rejected" and "not an image" in by_key["c.jpg"]["reason"]
    assert by_key["d.png"]["state"] == "rejected" and "bomb" in by_key["d.png"]["reason"]
    assert "image_key" not in by_key["d.png"]
    assert env.keys("images/") == [f"images/{hashlib.sha256(good).hexdigest()}.png"]


def test_redelivered_and_duplicate_uploads_change_nothing(env, context):
    # Given an image ingested once
    data = jpeg(40, 40, seed=3)
    upload(env, "labeled/dog/x.jpg", data)
    event = s3_sqs_event([(env.upload_bucket, "labeled/dog/x.jpg", len(data))])
    ingest.handler(event, context)
    before = env.all_items()

    # When the same message is re-delivered and the same bytes are uploaded under another key
    ingest.handler(event, context)
    upload(env, "other/copy.jpg", data)
    ingest.handler(s3_sqs_event([(env.upload_bucket, "other/copy.jpg", len(data))]), context)

    # Then the one item is unchanged (same label, same timestamps) but for the key it gained
    (after,) = env.all_items()
    assert after.pop("source_keys") == ["labeled/dog/x.jpg", "other/copy.jpg"]
    assert before[0].pop("source_keys") == ["labeled/dog/x.jpg"]
    assert [after] == before
    assert len(env.keys("images/")) == 1


def test_every_version_of_an_overwritten_key_is_ingested(env, context):
    # Given a key uploaded twice with different images (the upload bucket is versioned)
    first, second = jpeg(20, 20, seed=8), jpeg(20, 20, seed=9)
    v1 = env.s3.put_object(Bucket=env.upload_bucket, Key="same.jpg", Body=first)["VersionId"]
    v2 = env.s3.put_object(Bucket=env.upload_bucket, Key="same.jpg", Body=second)["VersionId"]

    # When both notifications arrive after the overwrite (each names its version)
    event = s3_sqs_event(
        [
            (env.upload_bucket, "same.jpg", len(first), v1),
            (env.upload_bucket, "same.jpg", len(second), v2),
        ]
    )
    assert ingest.handler(event, context) == {"batchItemFailures": []}

    # Then each version is its own item, read from exactly that version
    ids = {hashlib.sha256(data).hexdigest() for data in (first, second)}
    assert {i["item_id"] for i in env.all_items()} == ids
    assert all(i["source_keys"] == ["same.jpg"] for i in env.all_items())


def test_a_failing_record_is_reported_and_the_rest_still_apply(env, context):
    # Given a batch where one notification names a bucket that does not exist
    data = jpeg(32, 32, seed=4)
    upload(env, "ok.jpg", data)
    event = s3_sqs_event(
        [("no-such-bucket", "x.jpg", 10), (env.upload_bucket, "ok.jpg", len(data))],
        message_ids=["broken", "fine"],
    )

    # When ingest runs
    response = ingest.handler(event, context)

    # Then only the broken message is retried
    assert response == {"batchItemFailures": [{"itemIdentifier": "broken"}]}
    assert env.item(hashlib.sha256(data).hexdigest())["state"] == "unlabeled"


def test_oversized_upload_is_rejected_before_download(env, context):
    stack = env
    stack.use("IngestFunction", MAX_UPLOAD_BYTES="100")
    data = jpeg(32, 32, seed=5)
    upload(stack, "big.jpg", data)
    ingest.handler(s3_sqs_event([(stack.upload_bucket, "big.jpg", len(data))]), context)
    (item,) = stack.all_items()
    assert item["state"] == "rejected" and "too large" in item["reason"]


def test_s3_test_event_is_ignored(env, context):
    event = s3_sqs_event([(env.upload_bucket, "x", 1)])
    event["Records"][0]["body"] = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})
    assert ingest.handler(event, context) == {"batchItemFailures": []}
    assert env.all_items() == []


def logged(caplog, level: str) -> list:
    """Log records of a level; Powertools' extra keys are their attributes."""
    return [r for r in caplog.records if r.levelname == level]


@pytest.mark.parametrize(
    "key",
    [
        "labeled/../../../../../outside/x/a.jpg",
        "labeled/%2e%2e/a.jpg",
        "labeled/..\\..\\x/a.jpg",
        "labeled/" + "x" * 100 + "/a.jpg",
    ],
)
def test_a_class_that_is_not_a_class_name_leaves_the_upload_unlabeled(env, context, caplog, key):
    # Given an upload whose labeled/<class>/ part is a path, not a class name (no ClassNames)
    data = jpeg(24, 24, seed=7)
    upload(env, key, data)

    # When ingest handles it
    response = ingest.handler(
        s3_sqs_event([(env.upload_bucket, quote_plus(key), len(data))]), context
    )

    # Then the item is unlabeled with the reason, queued for auto-labeling, and a WARNING says why
    assert response == {"batchItemFailures": []}
    item = env.item(hashlib.sha256(data).hexdigest())
    assert item["state"] == "unlabeled" and "label" not in item
    assert item["reason"].startswith("invalid class name") and "upload path" in item["reason"]
    assert len(env.drain("LabelQueue")) == 1
    (warning,) = logged(caplog, "WARNING")
    assert warning.reason == item["reason"] and warning.key == key


def test_a_malformed_message_is_logged_as_an_error_and_retried(env, context, caplog):
    # Given a message on the ingest queue whose body is not JSON
    event = s3_sqs_event([(env.upload_bucket, "x.jpg", 1)], message_ids=["garbled"])
    event["Records"][0]["body"] = "{not json"

    # When ingest handles it
    response = ingest.handler(event, context)

    # Then it is reported for retry (then the DLQ) and an ERROR line gives the reason
    assert response == {"batchItemFailures": [{"itemIdentifier": "garbled"}]}
    (error,) = logged(caplog, "ERROR")
    assert error.getMessage() == "ingest message failed" and error.message_id == "garbled"
    assert "JSONDecodeError" in error.reason and error.exc_info is not None


def test_a_seed_declared_random_is_a_random_label_and_others_are_selected(env, context):
    # Given two labeled uploads, one declared a random sample (as upload --random-sample does)
    declared, plain = jpeg(40, 40, seed=1), jpeg(40, 40, seed=2)
    env.s3.put_object(
        Bucket=env.upload_bucket,
        Key="labeled/cat/a.jpg",
        Body=declared,
        Metadata={"flywheel-sampling": "random"},
    )
    upload(env, "labeled/dog/b.jpg", plain)

    # When both are ingested
    ingest.handler(
        s3_sqs_event(
            [
                (env.upload_bucket, "labeled/cat/a.jpg", len(declared)),
                (env.upload_bucket, "labeled/dog/b.jpg", len(plain)),
            ]
        ),
        context,
    )

    # Then only the declared one may certify
    a = env.item(hashlib.sha256(declared).hexdigest())
    b = env.item(hashlib.sha256(plain).hexdigest())
    assert (a["state"], a["label_sampling"], a["label_origin"]) == (
        "human_labeled",
        "random",
        "seed",
    )
    assert (b["state"], b["label_sampling"], b["label_origin"]) == (
        "human_labeled",
        "selected",
        "upload",
    )


def test_audit_draws_go_to_people_blind_and_are_not_queued(stack, context):
    # Given every unlabeled upload is drawn for the audit stream
    stack.use("IngestFunction", AUDIT_FRACTION="1")
    data = jpeg(40, 40, seed=3)
    upload(stack, "batch/x.jpg", data)

    # When it is ingested (twice: a re-delivery must not queue it either)
    event = s3_sqs_event([(stack.upload_bucket, "batch/x.jpg", len(data))])
    ingest.handler(event, context)
    ingest.handler(event, context)

    # Then it waits for a person, flagged as audit, and never reaches the label queue
    item = stack.item(hashlib.sha256(data).hexdigest())
    assert (item["state"], item["review_reason"]) == ("needs_review", "audit")
    assert "label" not in item and "label_sampling" not in item
    assert stack.drain("LabelQueue") == []


def test_no_audit_fraction_means_every_unlabeled_upload_is_queued(stack, context):
    stack.use("IngestFunction", AUDIT_FRACTION="0")
    uploads = [jpeg(40, 40, seed=10 + n) for n in range(20)]
    for n, data in enumerate(uploads):
        upload(stack, f"u/{n}.jpg", data)
    ingest.handler(
        s3_sqs_event([(stack.upload_bucket, f"u/{n}.jpg", len(d)) for n, d in enumerate(uploads)]),
        context,
    )
    assert len(stack.drain("LabelQueue")) == 20


def test_a_batch_of_uploads_is_queued_for_labeling_in_one_send(env, context):
    # Given ten unlabeled uploads in one Lambda batch
    blobs = [jpeg(16, 16, seed=100 + n) for n in range(10)]
    for n, data in enumerate(blobs):
        upload(env, f"u{n}.jpg", data)
    event = s3_sqs_event([(env.upload_bucket, f"u{n}.jpg", len(d)) for n, d in enumerate(blobs)])

    # When ingest runs
    response = ingest.handler(event, context)

    # Then every item is recorded, and each unlabeled one (not the audit draws) queued once
    assert response == {"batchItemFailures": []}
    assert len(env.all_items()) == 10
    queued = env.drain("LabelQueue")
    assert sorted(m["item_id"] for m in queued) == sorted(
        i["item_id"] for i in env.all_items() if i["state"] == "unlabeled"
    )
    assert len(queued) == len({m["item_id"] for m in queued})


def test_a_label_message_sqs_refuses_fails_only_its_upload(env, context):
    # Given three unlabeled uploads, and SQS refusing the second's label message
    from botocore.stub import Stubber
    from flywheel.adapters import aws

    blobs = [jpeg(16, 16, seed=200 + n) for n in range(3)]
    for n, data in enumerate(blobs):
        upload(env, f"v{n}.jpg", data)
    event = s3_sqs_event(
        [(env.upload_bucket, f"v{n}.jpg", len(d)) for n, d in enumerate(blobs)],
        message_ids=["m0", "m1", "m2"],
    )
    ids = [hashlib.sha256(d).hexdigest() for d in blobs]
    url = os.environ["LABEL_QUEUE_URL"]
    sqs = Stubber(aws.client("sqs"))
    sqs.add_response(
        "send_message_batch",
        {
            "Successful": [
                {"Id": "0", "MessageId": "a", "MD5OfMessageBody": "x"},
                {"Id": "2", "MessageId": "c", "MD5OfMessageBody": "x"},
            ],
            "Failed": [{"Id": "1", "SenderFault": True, "Code": "InvalidParameterValue"}],
        },
        {
            "QueueUrl": url,
            "Entries": [
                {
                    "Id": str(n),
                    "MessageBody": json.dumps({"item_id": i, "image_key": f"images/{i}.png"}),
                }
                for n, i in enumerate(ids)
            ],
        },
    )

    # When ingest runs
    with sqs:
        response = ingest.handler(event, context)

    # Then only the second upload's message is retried; all three items are recorded
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert all(env.item(i)["state"] == "unlabeled" for i in ids)


def _count_calls(service: str) -> dict[str, int]:
    """The API calls the handler makes to ``service`` from now on, by operation name."""
    from collections import Counter

    from flywheel.adapters import aws

    calls: Counter[str] = Counter()
    aws.client(service).meta.events.register(
        f"before-call.{service}", lambda model, **_: calls.update([model.name])
    )
    return calls


def test_a_batch_of_new_uploads_is_looked_up_in_one_call(env, context):
    # Given ten new uploads in one Lambda batch
    blobs = [jpeg(16, 16, seed=300 + n) for n in range(10)]
    for n, data in enumerate(blobs):
        upload(env, f"w{n}.jpg", data)
    event = s3_sqs_event([(env.upload_bucket, f"w{n}.jpg", len(d)) for n, d in enumerate(blobs)])
    ddb, s3 = _count_calls("dynamodb"), _count_calls("s3")

    # When ingest runs
    assert ingest.handler(event, context) == {"batchItemFailures": []}

    # Then DynamoDB saw one BatchGetItem for all ten and one conditional write each; S3 one
    # read and one write per upload
    assert dict(ddb) == {"BatchGetItem": 1, "PutItem": 10}
    assert dict(s3) == {"GetObject": 10, "PutObject": 10}
    assert len(env.all_items()) == 10


def test_the_same_bytes_twice_in_one_batch_are_one_item_with_both_keys(env, context):
    # Given one image uploaded under two keys, both notifications in one batch
    data = jpeg(24, 24, seed=400)
    upload(env, "a/one.jpg", data)
    upload(env, "b/two.jpg", data)
    event = s3_sqs_event(
        [(env.upload_bucket, "a/one.jpg", len(data)), (env.upload_bucket, "b/two.jpg", len(data))]
    )

    # When ingest runs
    assert ingest.handler(event, context) == {"batchItemFailures": []}

    # Then there is one item, one stored image, both keys, and one label message
    (item,) = env.all_items()
    assert item["source_keys"] == ["a/one.jpg", "b/two.jpg"]
    assert len(env.keys("images/")) == 1
    assert [m["item_id"] for m in env.drain("LabelQueue")] == [item["item_id"]]


def test_corrupt_bytes_twice_in_one_batch_are_rejected_under_each_key(env, context):
    # Given a truncated JPEG uploaded under two keys, both in one batch
    data = jpeg(64, 64, seed=401)[:300]
    upload(env, "c/one.jpg", data)
    upload(env, "c/two.jpg", data)
    event = s3_sqs_event(
        [(env.upload_bucket, "c/one.jpg", len(data)), (env.upload_bucket, "c/two.jpg", len(data))]
    )

    # When ingest runs
    assert ingest.handler(event, context) == {"batchItemFailures": []}

    # Then each key has its rejection, with the same reason, and nothing is stored
    rejected = {i["source_key"]: i for i in env.all_items()}
    assert set(rejected) == {"c/one.jpg", "c/two.jpg"}
    assert {i["state"] for i in rejected.values()} == {"rejected"}
    assert rejected["c/one.jpg"]["reason"] == rejected["c/two.jpg"]["reason"]
    assert env.keys("images/") == []


def test_an_item_another_batch_created_meanwhile_is_left_as_it_is(env, context, monkeypatch):
    # Given a human-labeled item, and a copy of its bytes under another key
    from flywheel.adapters import items

    data = jpeg(24, 24, seed=402)
    upload(env, "labeled/cat/first.jpg", data)
    ingest.handler(s3_sqs_event([(env.upload_bucket, "labeled/cat/first.jpg", len(data))]), context)
    upload(env, "later/copy.jpg", data)

    # When the copy's batch looked it up before the item existed (another batch's race)
    monkeypatch.setattr(items, "get_many", lambda table, ids: {})
    event = s3_sqs_event([(env.upload_bucket, "later/copy.jpg", len(data))])
    assert ingest.handler(event, context) == {"batchItemFailures": []}

    # Then the item keeps its label and gains the key; nothing is queued for auto-labeling
    (item,) = env.all_items()
    assert (item["state"], item["label"]) == ("human_labeled", "cat")
    assert item["source_keys"] == ["labeled/cat/first.jpg", "later/copy.jpg"]
    assert env.drain("LabelQueue") == []
