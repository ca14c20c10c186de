"""human_labels (labels files -> human_labeled + result.json), review_export (review/)."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import quote_plus

import human_labels
import pytest
import review_export
from flywheel.adapters import items
from integration_kit import s3_sqs_event


def seed(
    stack, n: int, state: str, confidence: float | None = None, label: str | None = None
) -> str:
    item_id = f"{n:064x}"
    items.put_new(
        stack.table,
        {
            "item_id": item_id,
            "state": state,
            "image_key": f"images/{item_id}.png",
            "source_key": f"{n}.jpg",
            "confidence": confidence,
            "label": label,
            "label_source": "model" if label else None,
        },
    )
    return item_id


def labels_event(stack, key: str, body: str) -> dict:
    stack.s3.put_object(Bucket=stack.data_bucket, Key=key, Body=body.encode())
    return s3_sqs_event([(stack.data_bucket, quote_plus(key), len(body))])


@pytest.fixture
def env(stack):
    stack.use("HumanLabelsFunction", CLASS_NAMES="cat,dog")
    return stack


def test_csv_applies_good_lines_and_reports_unknown_images_and_classes(env, context):
    # Given two known items and a labels file with good and bad lines
    a, b = seed(env, 1, "needs_review", 0.4, "cat"), seed(env, 2, "unlabeled")
    body = (
        f"image_id_or_key,label\n{a},dog\nimages/{b}.png,cat\n"
        f"{'f' * 64},cat\n{a[:10]},dog\n{b},zebra\n"
    )

    # When the file (key with a space) is uploaded under labels/
    response = human_labels.handler(labels_event(env, "labels/round 1.csv", body), context)

    # Then good lines are applied and the rest is in the result object
    assert response == {"batchItemFailures": []}
    assert (env.item(a)["state"], env.item(a)["label"], env.item(a)["label_source"]) == (
        "human_labeled",
        "dog",
        "human",
    )
    assert "confidence" not in env.item(a)
    assert env.item(b)["label"] == "cat"
    result = json.loads(env.read("labels/round 1.csv.result.json"))
    assert result["applied"] == 2
    assert sorted(e["error"] for e in result["errors"]) == [
        "not an item id or images/<item_id>.png key",
        "unknown class 'zebra'",
        "unknown image",
    ]


def test_applying_the_same_file_twice_changes_nothing(env, context):
    a = seed(env, 1, "unlabeled")
    event = labels_event(env, "labels/x.csv", f"{a},cat\n")
    human_labels.handler(event, context)
    before = env.item(a)
    human_labels.handler(event, context)
    assert env.item(a) == before
    assert json.loads(env.read("labels/x.csv.result.json"))["unchanged"] == 1


def test_ground_truth_manifest_lines_set_human_labels(env, context):
    a = seed(env, 1, "needs_review", 0.3, "cat")
    line = {
        "source-ref": f"s3://{env.data_bucket}/images/{a}.png",
        "animal": 1,
        "animal-metadata": {
            "class-name": "dog",
            "confidence": 0.99,
            "human-annotated": "yes",
            "job-name": "labeling-job/pets",
            "creation-date": "2026-11-29T10:00:00",
        },
    }
    human_labels.handler(
        labels_event(env, "labels/pets.manifest", json.dumps(line) + "\nnot json\n"), context
    )
    assert env.item(a)["label"] == "dog" and env.item(a)["state"] == "human_labeled"
    result = json.loads(env.read("labels/pets.manifest.result.json"))
    assert result["applied"] == 1 and result["errors"][0]["line"] == 2


def test_every_bad_row_is_reported_and_logged_and_good_rows_still_apply(stack, context, caplog):
    # Given no ClassNames, four items and a file with a bad byte, an unbalanced quote,
    # hostile labels, two rows that disagree about one image and good rows after them all
    stack.use("HumanLabelsFunction")
    a, b, c, d = (seed(stack, n, "unlabeled") for n in (1, 2, 3, 4))
    body = (
        b"image_id_or_key,label\n"
        + f"{a},cat\n".encode()
        + b"\xff"
        + f"{b},dog\n".encode()
        + f'"{b},dog\n'.encode()
        + f"{b},../../../../../outside/x\n{b},/abs\n".encode()
        + f"{c},cat\n{c},dog\n".encode()
        + f"{'e' * 64},cat\n".encode()
        + f"{d},dog\n".encode()
    )
    stack.s3.put_object(Bucket=stack.data_bucket, Key="labels/hostile.csv", Body=body)
    event = s3_sqs_event([(stack.data_bucket, "labels/hostile.csv", len(body))])

    # When the file is applied
    assert human_labels.handler(event, context) == {"batchItemFailures": []}

    # Then the good rows (before and after the bad ones) are applied, nothing else is
    assert [stack.item(i).get("label") for i in (a, b, c, d)] == ["cat", None, None, "dog"]
    # and each bad row is in the result, in line order, with a code and a reason
    result = json.loads(stack.read("labels/hostile.csv.result.json"))
    assert result["applied"] == 2
    assert [(e["line"], e["code"]) for e in result["errors"]] == [
        (3, "encoding"),
        (4, "malformed"),
        (5, "invalid_label"),
        (6, "invalid_label"),
        (7, "conflict"),
        (8, "conflict"),
        (9, "unknown_image"),
    ]
    assert all(e["error"] for e in result["errors"])
    # and a WARNING log line per bad row with the same reason
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [(r.line, r.error) for r in warnings] == [
        (e["line"], e["error"]) for e in result["errors"]
    ]


def test_review_export_is_most_uncertain_first_and_its_csv_is_a_labels_file(stack, context):
    # Given three items needing review and one already labeled
    stack.use("ReviewExportFunction")
    ids = [
        seed(stack, n, "needs_review", conf, "cat") for n, conf in ((1, 0.7), (2, 0.2), (3, 0.5))
    ]
    seed(stack, 4, "auto_labeled", 0.99, "cat")

    # When the export runs
    result = review_export.handler({"reason": "manual"}, context)

    # Then the CSV lists them lowest confidence first, with an empty label column
    rows = list(
        csv.DictReader(io.StringIO(stack.read(f"review/{result['batch_id']}.csv").decode()))
    )
    assert [r["image_id_or_key"] for r in rows] == [ids[1], ids[2], ids[0]]
    assert all(r["label"] == "" for r in rows)
    manifest = stack.read(f"review/{result['batch_id']}.manifest").decode().splitlines()
    assert json.loads(manifest[0])["source-ref"] == f"s3://{stack.data_bucket}/images/{ids[1]}.png"

    # And once a person fills the label column, uploading it under labels/ applies it
    for row in rows:
        row["label"] = "dog"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    stack.use("HumanLabelsFunction")
    human_labels.handler(labels_event(stack, "labels/reviewed.csv", out.getvalue()), context)
    assert {stack.item(i)["state"] for i in ids} == {"human_labeled"}


def test_a_labels_message_that_fails_is_logged_as_an_error_and_retried(env, context, caplog):
    # Given a labels-file notification naming a bucket that does not exist
    event = s3_sqs_event([("no-such-bucket", "labels/x.csv", 10)], message_ids=["lost"])

    # When it is handled, Then it is retried and an ERROR line gives the reason first
    assert human_labels.handler(event, context) == {
        "batchItemFailures": [{"itemIdentifier": "lost"}]
    }
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert (error.getMessage(), error.message_id) == ("labels message failed", "lost")
    assert "NoSuchBucket" in error.reason
