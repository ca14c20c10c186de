"""The CLI reaches the local stack through CloudFormation, as it reaches a deployed one.

`flywheel up` registers the stack in moto's CloudFormation; `--data-dir` only says where
the local endpoints listen. Each command here goes DescribeStacks -> Outputs -> resource.
"""

from __future__ import annotations

import csv
import json

import pytest

from dataflywheel import cli
from dataflywheel.demo import digits
from samlocal.moto_server import MotoServer, client
from samlocal.provision import register_stack
from samlocal.stack import ENDPOINTS_FILE, LocalStack

DIGITS = digits(0.02, seed=1)  # 2 per class
LABELED, UNLABELED = DIGITS[:6], DIGITS[6:10]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("cli") / "data"
    # Every unlabeled upload is an audit draw: it goes to people, no model needed.
    s = LocalStack(
        data,
        sagemaker=False,
        schedules=False,
        parameters={"AuditFraction": "1"},
    )
    s.start()
    yield s
    s.stop()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_up_registers_the_stack_and_endpoints_json_holds_no_names(stack):
    cfn = client("cloudformation", stack.moto.url)
    (described,) = cfn.describe_stacks(StackName="flywheel")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    params = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    assert outputs == {k: str(v) for k, v in stack.info["outputs"].items()}
    assert outputs["IngestQueueDLQUrl"] == stack.physical["IngestQueueDLQ"]
    assert outputs["ReviewApiUrl"] == stack.http_api.url
    assert params["AuditFraction"] == "1" and params["JobPrefix"] == "dfw"
    on_disk = json.loads((stack.data_dir / ENDPOINTS_FILE).read_text())
    assert set(on_disk) == {
        "pid",
        "stack_name",
        "region",
        "data_dir",
        "started_at",
        "endpoints",
        "environment",
        "moto_recovery",  # what moto's start replayed: a runtime fact, not a name
    }


def test_upload_wait_and_status_with_options_before_or_after(stack, tmp_path, capsys):
    d = str(stack.data_dir)
    for item in LABELED:
        (tmp_path / "seed" / item["label"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "seed" / item["label"] / f"{item['index']}.png").write_bytes(item["png"])
    (tmp_path / "new").mkdir()
    for item in UNLABELED:
        (tmp_path / "new" / f"{item['index']}.png").write_bytes(item["png"])

    # When images are uploaded (--data-dir after, then before the command) and we wait
    assert (
        run(capsys, "upload", str(tmp_path / "seed"), "--labels-from-dirs", "--data-dir", d)[0] == 0
    )
    assert (
        run(capsys, "--data-dir", d, "upload", str(tmp_path / "new"), "--prefix", "cam 1")[0] == 0
    )
    code, out, _ = run(capsys, "wait", "--timeout", "120", "--every", "0.5", "--data-dir", d)

    # Then the wait saw the work and returned once it was done
    assert code == 0
    assert "busy: " in out and out.rstrip().endswith("idle")
    code, out, _ = run(capsys, "--data-dir", d, "--stack", "flywheel", "status", "--json")
    status = json.loads(out)
    assert status["items"]["human_labeled"] == len(LABELED)
    assert status["items"]["needs_review"] == len(UNLABELED)  # audit draws
    assert status["queues"] == {
        "IngestQueue": 0,
        "LabelQueue": 0,
        "LabelsFileQueue": 0,
        "IngestQueueDLQ": 0,
        "LabelQueueDLQ": 0,
        "LabelsFileQueueDLQ": 0,
        "AsyncFailureDLQ": 0,
    }
    code, out, _ = run(capsys, "status", "--data-dir", d)
    assert out.startswith(f"stack flywheel (the local stack in {stack.data_dir})")


def test_review_export_and_import_go_through_the_stack_outputs(stack, tmp_path, capsys):
    d = str(stack.data_dir)
    code, out, _ = run(capsys, "review", "export", "-o", str(tmp_path), "--data-dir", d)
    assert code == 0
    (batch,) = tmp_path.glob("*.csv")
    rows = list(csv.reader(batch.open()))
    truth = {i["item_id"]: i["label"] for i in UNLABELED}
    assert sorted(r[0] for r in rows[1:]) == sorted(truth)
    for r in rows[1:]:
        r[1] = truth[r[0]]
    batch.write_text("\n".join(",".join(r) for r in rows) + "\n")

    code, out, _ = run(capsys, "--data-dir", d, "review", "import", str(batch), "--timeout", "120")

    assert code == 0 and "waiting for it to be applied" in out
    code, out, _ = run(capsys, "status", "--json", "--data-dir", d)
    assert json.loads(out)["items"]["human_labeled"] == len(LABELED) + len(UNLABELED)


def test_export_and_schedule(stack, tmp_path, capsys):
    d = str(stack.data_dir)
    out_csv = tmp_path / "labels.csv"
    code, out, _ = run(capsys, "export", "--format", "csv", "-o", str(out_csv), "--data-dir", d)
    assert code == 0
    rows = list(csv.DictReader(out_csv.open()))
    bucket = stack.info["outputs"]["DataBucketName"]
    assert len(rows) == len(DIGITS[:10])
    assert all(r["image_uri"].startswith(f"s3://{bucket}/images/") for r in rows)

    # A template schedule runs now, with the Input the template gives it
    code, out, _ = run(capsys, "--data-dir", d, "schedule", "ReviewExportFunction")
    assert code == 0 and json.loads(out)["items"] == 0  # everything is labeled


def test_a_wrong_stack_name_or_a_stopped_stack_is_one_clear_line(stack, tmp_path, capsys):
    code, _, err = run(capsys, "status", "--data-dir", str(stack.data_dir), "--stack", "other")
    assert code == 1
    assert "no stack named other in the local stack in" in err and "it serves flywheel" in err
    code, _, err = run(capsys, "status", "--data-dir", str(tmp_path))
    assert code == 1 and "no local stack is running on" in err


def test_the_registered_stack_survives_a_restart(tmp_path):
    server = MotoServer(tmp_path)
    server.start()
    resolved = {"StackName": "kept", "Parameters": {"JobPrefix": "dfw"}, "Outputs": {}}
    register_stack(resolved, {"UploadBucketName": "kept-up"}, client("cloudformation", server.url))
    server.stop()

    server = MotoServer(tmp_path)
    server.start()
    try:
        (described,) = client("cloudformation", server.url).describe_stacks(StackName="kept")[
            "Stacks"
        ]
        assert described["Outputs"] == [{"OutputKey": "UploadBucketName", "OutputValue": "kept-up"}]
        # and the next `flywheel up` updates it in place
        register_stack(
            resolved, {"UploadBucketName": "moved"}, client("cloudformation", server.url)
        )
        (described,) = client("cloudformation", server.url).describe_stacks(StackName="kept")[
            "Stacks"
        ]
        assert described["Outputs"][0]["OutputValue"] == "moved"
    finally:
        server.stop()
