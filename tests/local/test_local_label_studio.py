"""The Label Studio round trip and the review CSV on a running local stack, through the CLI.

``flywheel review export --format label-studio`` writes tasks whose image URLs open (moto's
presigned GETs) and the labeling config; a Label Studio JSON export of those tasks, given
to ``flywheel review import``, goes up under labels/ and through the stack's own
notification to the human_labels function, like every labels file.
"""

from __future__ import annotations

import csv
import json

import pytest
import requests

from dataflywheel import cli
from dataflywheel.stack_client import StackClient
from samlocal.stack import LocalStack

UNCERTAIN, AUDIT = "1" * 64, "2" * 64


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("ls-stack")
    s = LocalStack(data, sagemaker=False, schedules=False)
    s.start()
    c = StackClient(data)
    ddb, s3 = c.client("dynamodb"), c.client("s3")
    for item_id, extra in (
        (
            UNCERTAIN,
            {
                "label": {"S": "cat"},
                "confidence": {"N": "0.58"},
                "model_version": {"S": "dfw-1"},
                "review_reason": {"S": "uncertain"},
            },
        ),
        (AUDIT, {"review_reason": {"S": "audit"}}),
    ):
        ddb.put_item(
            TableName=c.items_table,
            Item={
                "item_id": {"S": item_id},
                "state": {"S": "needs_review"},
                "image_key": {"S": f"images/{item_id}.png"},
                "source_key": {"S": f"phone/{item_id[:4]}.jpg"},
                "source_keys": {"SS": [f"phone/{item_id[:4]}.jpg"]},
                "created_at": {"S": "2026-11-30T00:00:00.000000Z"},
                "updated_at": {"S": "2026-11-30T00:00:00.000000Z"},
                **extra,
            },
        )
        s3.put_object(Bucket=c.data_bucket, Key=f"images/{item_id}.png", Body=item_id[:4].encode())
    yield s
    s.stop()


def flywheel(stack, *args: str) -> int:
    return cli.main(["--data-dir", str(stack.data_dir), *args])


def test_the_review_csv_links_images_a_person_can_open(stack, tmp_path, capsys):
    assert flywheel(stack, "review", "export", "-o", str(tmp_path)) == 0
    (path,) = tmp_path.glob("*.csv")
    rows = {r["image_id_or_key"]: r for r in csv.DictReader(path.open())}
    assert set(rows) == {UNCERTAIN, AUDIT}
    for item_id, row in rows.items():
        assert requests.get(row["image_url"], timeout=10).content == item_id[:4].encode()
        assert json.loads(row["upload_keys"]) == [f"phone/{item_id[:4]}.jpg"]
        assert row["image_url_expires"].endswith("Z")
    assert "image links expire at" in capsys.readouterr().out


def test_label_studio_tasks_go_out_and_the_export_comes_back_as_human_labels(
    stack, tmp_path, capsys
):
    # Given the batch exported for Label Studio
    assert flywheel(stack, "review", "export", "--format", "label-studio", "-o", str(tmp_path)) == 0
    (tasks_file,) = tmp_path.glob("*.label-studio.json")
    (config_file,) = tmp_path.glob("*.label-studio.xml")
    tasks = json.loads(tasks_file.read_text())
    assert [t["data"]["item_id"] for t in tasks] == [AUDIT, UNCERTAIN]
    assert "predictions" not in tasks[0]  # the audit item is blind
    assert tasks[1]["predictions"][0]["result"][0]["value"] == {"choices": ["cat"]}
    assert '<Choice value="cat"/>' in config_file.read_text()
    for task in tasks:
        got = requests.get(task["data"]["image"], timeout=10)
        assert got.content == task["data"]["item_id"][:4].encode()

    # When a person labels them in Label Studio (accepts one suggestion, answers the audit
    # item, a second person skips it) and the project is exported as JSON
    def annotation(n: int, label: str | None, user: int) -> dict:
        result = (
            [
                {
                    "id": f"r{n}",
                    "from_name": "label",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [label]},
                    "origin": "manual",
                }
            ]
            if label
            else []
        )
        return {
            "id": n,
            "completed_by": user,
            "result": result,
            "was_cancelled": label is None,
            "ground_truth": False,
            "lead_time": 2.5,
            "task": 100 + n,
            "project": 1,
        }

    exported = [
        {**tasks[0], "id": 100, "annotations": [annotation(1, "dog", 1), annotation(2, None, 2)]},
        {**tasks[1], "id": 101, "annotations": [annotation(3, "cat", 1)]},
    ]
    export_file = tmp_path / "project-1-at-2026-11-30-10-00-3f9a.json"
    export_file.write_text(json.dumps(exported))
    capsys.readouterr()
    assert flywheel(stack, "review", "import", str(export_file), "--timeout", "120") == 0

    # Then both are human labels, through the labels/ notification like any labels file
    out = capsys.readouterr().out
    assert "-project-1-at-2026-11-30-10-00-3f9a.label-studio.json" in out
    report = json.loads(out[out.index("{") :])
    assert (report["applied"], report["errors"]) == (2, [])
    items = {i["item_id"]: i for i in StackClient(stack.data_dir).items(("human_labeled",))}
    assert {k: v["label"] for k, v in items.items()} == {AUDIT: "dog", UNCERTAIN: "cat"}
    assert (items[AUDIT]["label_sampling"], items[AUDIT]["label_origin"]) == ("random", "audit")


def test_import_refuses_a_file_that_is_no_labels_file(stack, tmp_path, capsys):
    bad = tmp_path / "answers.txt"
    bad.write_text("x")
    assert flywheel(stack, "review", "import", str(bad)) != 0
    assert "Label Studio JSON export" in capsys.readouterr().err
