"""human_labels (labels files -> human_labeled + result.json), review_export (review/)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, urlparse

import human_labels
import pytest
import requests
import review_export
from flywheel.adapters import items
from integration_kit import s3_sqs_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "label_studio"

CHAMPION = json.dumps(
    {
        "model_version": "dfw-old",
        "training_job": "dfw-old",
        "model_name": "dfw-old",
        "endpoint_config": "dfw-old-abc",
        "threshold": 0.8,
        "target_accuracy": 0.95,
        "model_data": "s3://b/models/dfw-old/output/model.tar.gz",
        "test_accuracy": 0.9,
        "classes": ["cat", "dog"],
        "test_set_id": "x",
        "promoted_at": "now",
    }
)


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
    before, report = env.item(a), env.read("labels/x.csv.result.json")
    # The same message again (at-least-once delivery): that file is done, nothing changes
    human_labels.handler(event, context)
    assert env.item(a) == before
    assert env.read("labels/x.csv.result.json") == report
    # The same answers in another file: the label is already there
    human_labels.handler(labels_event(env, "labels/y.csv", f"{a},cat\n"), context)
    assert env.item(a) == before
    assert json.loads(env.read("labels/y.csv.result.json"))["unchanged"] == 1


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
    # And each answer records that the model picked the item: it trains, never certifies
    assert {(stack.item(i)["label_sampling"], stack.item(i)["label_origin"]) for i in ids} == {
        ("selected", "review")
    }


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


def test_answers_record_how_each_item_was_drawn(env, context):
    # Given an audit item, an uncertain item, an unlabeled one and an auto-labeled one
    audit = f"{9:064x}"
    items.put_new(
        env.table,
        {
            "item_id": audit,
            "state": "needs_review",
            "review_reason": "audit",
            "image_key": f"images/{audit}.png",
        },
    )
    review = seed(env, 2, "needs_review", 0.4, "cat")
    unlabeled, auto = seed(env, 3, "unlabeled"), seed(env, 4, "auto_labeled", 0.99, "cat")

    # When people label all four through one labels file
    body = f"{audit},cat\n{review},dog\n{unlabeled},cat\n{auto},dog\n"
    human_labels.handler(labels_event(env, "labels/mixed.csv", body), context)

    # Then only the audit answer is a random label
    provenance = {
        i: (env.item(i)["label_sampling"], env.item(i)["label_origin"])
        for i in (audit, review, unlabeled, auto)
    }
    assert provenance == {
        audit: ("random", "audit"),
        review: ("selected", "review"),
        unlabeled: ("selected", "import"),
        auto: ("selected", "import"),
    }
    # And a later correction keeps how the item was drawn
    human_labels.handler(labels_event(env, "labels/fix.csv", f"{audit},dog\n"), context)
    assert (env.item(audit)["label"], env.item(audit)["label_sampling"]) == ("dog", "random")


def test_review_export_puts_audit_items_first_and_blind(stack, context):
    # Given a champion, an audit item and uncertain items of two predicted classes
    stack.use("ReviewExportFunction")
    stack.ssm.put_parameter(Name="/dataflywheel/champion", Type="String", Value=CHAMPION)
    uncertain = [
        seed(stack, n, "needs_review", conf, label)
        for n, conf, label in ((1, 0.5, "cat"), (2, 0.55, "cat"), (3, 0.9, "dog"))
    ]
    audit = f"{7:064x}"
    items.put_new(
        stack.table,
        {
            "item_id": audit,
            "state": "needs_review",
            "review_reason": "audit",
            "image_key": f"images/{audit}.png",
        },
    )
    seed(stack, 8, "unlabeled")  # with a champion, unlabeled items wait for the model

    # When the export runs
    result = review_export.handler({"reason": "manual"}, context)

    # Then the audit item comes first with no model opinion shown, then classes take turns
    rows = list(
        csv.DictReader(io.StringIO(stack.read(f"review/{result['batch_id']}.csv").decode()))
    )
    assert [r["image_id_or_key"] for r in rows] == [audit, uncertain[0], uncertain[2], uncertain[1]]
    assert (rows[0]["model_label"], rows[0]["confidence"], rows[0]["review_reason"]) == (
        "",
        "",
        "audit",
    )
    assert rows[1]["model_label"] == "cat" and rows[1]["review_reason"] == "uncertain"
    assert result["reasons"] == {"audit": 1, "uncertain": 3}


def test_without_a_champion_review_export_offers_unlabeled_items(stack, context):
    # Given no champion yet (e.g. the gate rejected the first model) and only unlabeled items
    stack.use("ReviewExportFunction")
    ids = {seed(stack, n, "unlabeled") for n in range(1, 6)}
    seed(stack, 9, "human_labeled", label="cat")

    # When the export runs
    result = review_export.handler({"reason": "manual"}, context)

    # Then people get the unlabeled items to label, so the loop does not stall
    rows = list(
        csv.DictReader(io.StringIO(stack.read(f"review/{result['batch_id']}.csv").decode()))
    )
    assert {r["image_id_or_key"] for r in rows} == ids and result["items"] == 5
    assert {r["review_reason"] for r in rows} == {"cold_start"}


def test_review_csv_has_a_url_a_person_can_open_and_the_upload_keys(stack, context):
    # Given an uncertain item whose bytes were uploaded under two keys
    stack.use("ReviewExportFunction")
    item_id = seed(stack, 1, "needs_review", 0.4, "cat")
    items.add_source_keys(stack.table, item_id, {"1.jpg", "again/1 copy.jpg"})
    stack.s3.put_object(Bucket=stack.data_bucket, Key=f"images/{item_id}.png", Body=b"png!")

    # When the export runs
    before = datetime.now(UTC)
    result = review_export.handler({"reason": "manual"}, context)

    # Then the CSV row has a presigned GET that opens the image, its expiry, and both keys
    (row,) = csv.DictReader(io.StringIO(stack.read(f"review/{result['batch_id']}.csv").decode()))
    assert requests.get(row["image_url"], timeout=10).content == b"png!"
    query = parse_qs(urlparse(row["image_url"]).query)
    expires = datetime.fromisoformat(row["image_url_expires"])
    assert abs((expires - before).total_seconds() - 21600) < 60
    if "X-Amz-Expires" in query:  # SigV4 (a regional endpoint), else the legacy query form
        assert query["X-Amz-Expires"] == ["21600"]
    else:
        assert abs(int(query["Expires"][0]) - expires.timestamp()) < 60
    assert result["image_urls_expire"] == row["image_url_expires"]
    assert json.loads(row["upload_keys"]) == ["1.jpg", "again/1 copy.jpg"]

    # And the file, extra columns and all, is still a labels file
    row["label"] = "dog"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    stack.use("HumanLabelsFunction")
    human_labels.handler(labels_event(stack, "labels/round.csv", out.getvalue()), context)
    assert stack.item(item_id)["label"] == "dog"
    assert json.loads(stack.read("labels/round.csv.result.json"))["applied"] == 1


def test_label_studio_tasks_pre_annotate_uncertain_items_and_leave_audit_blind(stack, context):
    # Given a champion, an audit item and an uncertain item with the model's top-k
    stack.use("ReviewExportFunction", CLASS_NAMES="")
    stack.ssm.put_parameter(Name="/dataflywheel/champion", Type="String", Value=CHAMPION)
    uncertain = seed(stack, 1, "needs_review", 0.55, "cat")
    audit = f"{7:064x}"
    items.put_new(
        stack.table,
        {
            "item_id": audit,
            "state": "needs_review",
            "review_reason": "audit",
            "image_key": f"images/{audit}.png",
            "source_key": "a.jpg",
        },
    )
    seed(stack, 9, "human_labeled", label="bird")  # a class people used: offered too

    # When the export runs, once with presigned links and once with s3:// URIs
    result = review_export.handler({"reason": "manual"}, context)
    tasks = json.loads(stack.read(f"review/{result['batch_id']}.label-studio.json"))
    config = stack.read(f"review/{result['batch_id']}.label-studio.xml").decode()
    s3_mode = review_export.handler({"reason": "manual", "image_urls": "s3"}, context)
    s3_tasks = json.loads(stack.read(f"review/{s3_mode['batch_id']}.label-studio.json"))

    # Then the audit task has no pre-annotation and the uncertain one the model's label
    assert [t["data"]["item_id"] for t in tasks] == [audit, uncertain]
    assert "predictions" not in tasks[0]
    (prediction,) = tasks[1]["predictions"]
    assert prediction["model_version"] == "dfw-old" and prediction["score"] == 0.55
    assert prediction["result"][0]["value"] == {"choices": ["cat"]}
    assert f"/images/{uncertain}.png?" in tasks[1]["data"]["image"]
    assert tasks[1]["data"]["upload_keys"] == ["1.jpg"]
    # and the config offers the champion's classes and the human labels
    assert [c for c in ("bird", "cat", "dog") if f'<Choice value="{c}"/>' in config] == [
        "bird",
        "cat",
        "dog",
    ]
    assert s3_mode["batch_id"] == result["batch_id"] and "image_urls_expire" not in s3_mode
    assert s3_tasks[1]["data"]["image"] == f"s3://{stack.data_bucket}/images/{uncertain}.png"
    assert "image_url_expires" not in s3_tasks[1]["data"]


def test_a_label_studio_export_uploaded_under_labels_is_applied_and_reported(env, context):
    # Given the items of the JSON export fixture (all but 0xbad, which the stack never saw)
    ids = {n: seed(env, n, "needs_review", 0.5, "cat") for n in (1, 2, 3, 4, 5, 6, 8, 9, 10)}
    body = (FIXTURES / "export.json").read_text()

    # When the export is uploaded as a Label Studio labels file
    key = "labels/20261130T100000-project 3.label-studio.json"
    assert human_labels.handler(labels_event(env, key, body), context) == {"batchItemFailures": []}

    # Then agreed answers are human labels, every other task is in the report
    assert {
        n: env.item(i)["label"] for n, i in ids.items() if env.item(i)["state"] == "human_labeled"
    } == {1: "cat", 2: "dog", 6: "dog", 10: "cat"}
    report = json.loads(env.read(f"{key}.result.json"))
    assert (report["applied"], report["unchanged"], report["skipped_empty"]) == (4, 0, 1)
    assert {e["task"] for e in report["errors"] if "task" in e} == {43, 45, 48}
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (3, "cancelled"),
        (5, "conflict"),
        (7, "unknown_image"),
        (8, "several_choices"),
        (9, "unknown_class"),
    ]

    # And the same message again (a redelivery) changes nothing, not even the report
    labels = {n: env.item(i) for n, i in ids.items()}
    human_labels.handler(s3_sqs_event([(env.data_bucket, quote_plus(key), len(body))]), context)
    assert {n: env.item(i) for n, i in ids.items()} == labels
    assert json.loads(env.read(f"{key}.result.json")) == report
    # and the same export uploaded again as another file finds every answer there already
    again_key = "labels/20261130T100500-project 3.label-studio.json"
    human_labels.handler(labels_event(env, again_key, body), context)
    again = json.loads(env.read(f"{again_key}.result.json"))
    assert (again["applied"], again["unchanged"]) == (0, 4)


def test_review_export_never_links_a_row_whose_id_is_not_an_item_id(stack, context):
    # Given a real item and a row written by hand whose id would make another key
    stack.use("ReviewExportFunction")
    real = seed(stack, 1, "needs_review", 0.4, "cat")
    items.put_new(stack.table, {"item_id": "../labels/x", "state": "needs_review"})

    # When the export runs, Then it lists the real item only, linked by its own id
    result = review_export.handler({"reason": "manual"}, context)
    rows = list(
        csv.DictReader(io.StringIO(stack.read(f"review/{result['batch_id']}.csv").decode()))
    )
    assert [r["image_id_or_key"] for r in rows] == [real]
    assert f"images/{real}.png?" in rows[0]["image_url"]
    tasks = json.loads(stack.read(f"review/{result['batch_id']}.label-studio.json"))
    assert [t["data"]["item_id"] for t in tasks] == [real]
