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
