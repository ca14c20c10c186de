"""Label Studio round trip: the tasks and config the export writes, the exports the import reads.

Fixtures (tests/fixtures/label_studio/README.md) are Label Studio's JSON and JSON-MIN
export shapes; JSON-MIN was produced by label-studio-sdk's own converter.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest
from flywheel.domain.labels import check_rows, parse_label_file
from flywheel.domain.review import ImageLink, label_studio_config, label_studio_tasks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "label_studio"
KEY = "labels/20261130T100000-project-3.label-studio.json"


def iid(n: int) -> str:
    return f"{n:064x}"


def outcome(name: str, class_names=("cat", "dog")) -> tuple[dict, list, int]:
    parsed = parse_label_file(KEY, (FIXTURES / name).read_bytes())
    rows = check_rows(parsed, class_names)
    applied = {r.item_id: r.label for r in rows}
    errors = sorted((e["line"], e["code"]) for e in parsed.errors)
    return applied, errors, parsed.skipped


def test_a_json_export_applies_agreed_answers_and_names_every_other_task():
    applied, errors, skipped = outcome("export.json")

    # an accepted pre-annotation, two agreeing annotators, a live answer next to a
    # cancelled one, and a task found by its image URL
    assert applied == {
        iid(1): "cat",
        iid(2): "dog",
        iid(6): "dog",
        iid(0xBAD): "cat",
        iid(10): "cat",
    }
    # (the unknown item 0xbad is refused when applied: tests/integration)
    assert errors == [
        (3, "cancelled"),
        (5, "conflict"),
        (8, "several_choices"),
        (9, "unknown_class"),
    ]
    assert skipped == 1  # task 4: nobody annotated it yet


def test_json_errors_say_what_happened_and_which_task():
    parsed = parse_label_file(KEY, (FIXTURES / "export.json").read_bytes())
    check_rows(parsed, ("cat", "dog"))
    by_code = {e["code"]: e for e in parsed.errors}
    assert by_code["conflict"]["task"] == 45
    assert "'cat' by user 1; 'dog' by user 2" in by_code["conflict"]["error"]
    assert by_code["cancelled"]["reference"] == iid(3)
    assert "2 classes chosen" in by_code["several_choices"]["error"]


def test_a_json_min_export_gives_the_same_labels():
    applied, errors, skipped = outcome("export-min.json")

    assert applied == {
        iid(1): "cat",
        iid(2): "dog",
        iid(6): "dog",
        iid(0xBAD): "cat",
        iid(10): "cat",
    }
    # JSON-MIN leaves cancelled annotations out; disagreeing annotators are two records
    assert errors == [
        (5, "conflict"),
        (6, "conflict"),
        (9, "several_choices"),
        (10, "unknown_class"),
    ]
    assert skipped == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'[{"data": {"item_id": "x"', "malformed"),
        (b'{"tasks": 1}', "malformed"),
        (b"[1]", "malformed"),
        (b'[{"data": {"item_id": "' + b"a" * 64 + b'"}, "annotations": [7]}]', "malformed"),
        (b'[{"data": {"text": "no image"}, "annotations": []}]', "malformed"),
        (b"\xff[]", "encoding"),
        (
            b'[{"data": {"item_id": "../../etc/passwd"}, "annotations": [{"result": '
            b'[{"type": "choices", "from_name": "label", "value": {"choices": ["cat"]}}]}]}]',
            "bad_reference",
        ),
        (
            b'[{"data": {"item_id": "' + b"a" * 64 + b'"}, "annotations": [{"result": '
            b'[{"type": "choices", "from_name": "label", "value": {"choices": ["../x"]}}]}]}]',
            "invalid_label",
        ),
        (
            b'[{"data": {"item_id": "' + b"a" * 64 + b'"}, "annotations": [{"result": []}]}]',
            "no_choice",
        ),
        (
            b'[{"data": {"item_id": "' + b"a" * 64 + b'"}, "annotations": [{"result": '
            b'[{"type": "choices", "from_name": "label", "value": "cat"}]}]}]',
            "malformed",
        ),
    ],
)
def test_broken_exports_are_reported_never_applied(body, code):
    parsed = parse_label_file(KEY, body)
    assert check_rows(parsed, ("cat", "dog")) == []
    assert [e["code"] for e in parsed.errors] == [code]


def item(n: int, reason: str = "uncertain", **extra) -> dict:
    return {
        "item_id": iid(n),
        "state": "needs_review",
        "image_key": f"images/{iid(n)}.png",
        "source_key": f"phone/{n}.jpg",
        "source_keys": {f"phone/{n}.jpg", f"backup/{n}.jpg"},
        "review_reason": reason,
        "label": "dog",
        "confidence": 0.61,
        "model_version": "dfw-7",
        **extra,
    }


def links(*ns: int) -> dict[str, ImageLink]:
    return {
        iid(n): ImageLink(f"https://b.s3.amazonaws.com/images/{iid(n)}.png?X-Amz-Expires=60", "T")
        for n in ns
    }


def test_tasks_carry_the_model_label_as_a_pre_annotation_and_blind_items_none():
    tasks = label_studio_tasks(
        [item(1, "audit"), item(2), item(3, state="unlabeled", review_reason=None)], links(1, 2, 3)
    )

    audit, uncertain, cold = tasks
    assert "predictions" not in audit and "predictions" not in cold
    assert uncertain["predictions"] == [
        {
            "model_version": "dfw-7",
            "score": 0.61,
            "result": [
                {
                    "from_name": "label",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": ["dog"]},
                }
            ],
        }
    ]
    assert uncertain["data"] == {
        "image": f"https://b.s3.amazonaws.com/images/{iid(2)}.png?X-Amz-Expires=60",
        "item_id": iid(2),
        "review_reason": "uncertain",
        "upload_keys": ["backup/2.jpg", "phone/2.jpg"],
        "image_url_expires": "T",
    }
    assert (audit["data"]["review_reason"], cold["data"]["review_reason"]) == (
        "audit",
        "cold_start",
    )


def test_the_labeling_config_matches_the_one_label_studio_accepted():
    assert label_studio_config(["dog", "cat", "cat"]) == (FIXTURES / "config.xml").read_text()
    empty = label_studio_config([])  # no class known yet: no choices, a hint to add them
    assert ElementTree.fromstring(empty).findall(".//Choice") == []
    assert "ClassNames" in empty


def test_an_export_of_our_own_tasks_comes_back_to_the_same_items():
    # Given the tasks we export, labeled in Label Studio (one accepted, one corrected)
    tasks = label_studio_tasks([item(1), item(2)], links(1, 2))
    for n, (task, answer) in enumerate(zip(tasks, ("dog", "cat"), strict=True)):
        task.update(
            id=100 + n,
            annotations=[
                {
                    "id": n,
                    "completed_by": 1,
                    "was_cancelled": False,
                    "result": [
                        {**task["predictions"][0]["result"][0], "value": {"choices": [answer]}}
                    ],
                }
            ],
        )

    # When the export is read back
    parsed = parse_label_file(KEY, json.dumps(tasks).encode())

    # Then each answer is for the item the task was made from
    assert [(r.item_id, r.label) for r in check_rows(parsed)] == [(iid(1), "dog"), (iid(2), "cat")]


# label-studio-sdk brings 37 packages (nltk, lxml, black...) and pins its own: like
# aws-sam-cli it lives in a virtual environment of its own (the Makefile's LSVENV).
LS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-labelstudio" / "bin" / "python"
SDK_CHECK = """
import json, sys
from label_studio_sdk.label_interface import LabelInterface
given = json.load(sys.stdin)
li = LabelInterface(given["config"])
li.validate()
print(json.dumps({
    "predictions": [li.validate_prediction(p, return_errors=True) for p in given["predictions"]],
    "annotations": [bool(li.validate_annotation(a)) for a in given["annotations"]],
}))
"""


def test_what_we_write_passes_label_studio_sdk_validation():
    if not LS_PYTHON.exists():
        pytest.fail(
            f"{LS_PYTHON} is missing. Create it with: python3.11 -m venv .venv-labelstudio && "
            ".venv-labelstudio/bin/pip install label-studio-sdk==2.1.2 (or `make setup`)."
        )
    # Given the config and tasks the export writes, and the fixture export's annotations
    tasks = label_studio_tasks([item(1), item(2, label="cat")], links(1, 2))
    exported = json.loads((FIXTURES / "export.json").read_text())
    annotations = [(t["id"], a) for t in exported for a in t["annotations"]]
    given = {
        "config": label_studio_config(["cat", "dog"]),
        "predictions": [t["predictions"][0] for t in tasks],
        "annotations": [a for _, a in annotations],
    }

    # When label-studio-sdk (pinned in the Makefile) validates them
    done = subprocess.run(
        [str(LS_PYTHON), "-c", SDK_CHECK],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)

    # Then the predictions have no errors, and every annotation is valid but the one
    # whose class is outside this config (task 49: the import refuses it too)
    assert verdict["predictions"] == [[] for _ in tasks]
    assert verdict["annotations"] == [task_id != 49 for task_id, _ in annotations]
