"""The loop end to end, through the AWS APIs only (boto3 against the local endpoints).

Order matters (one stack for the module): ingest -> train -> promote -> serve ->
auto-label, then the fault paths and a restart on the same data directory.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_support import job_status, wait_for  # noqa: I001

from dataflywheel import cli
from dataflywheel.demo import digits

pytestmark = pytest.mark.e2e

DATA = digits(0.2, seed=3)  # ~360 digits, stratified
LABELED = [d for n, d in enumerate(DATA) if n % 2 == 0]  # ~180 human labels
UNLABELED = [d for n, d in enumerate(DATA) if n % 2 == 1][:120]
LATE = [d for n, d in enumerate(DATA) if n % 2 == 1][120:150]  # uploaded just before a restart
TRUTH = {d["item_id"]: d["label"] for d in DATA}
CORRUPT = b"\x89PNG\r\n\x1a\n this is not an image"
STATE: dict = {}


def upload(c, items, labeled: bool, prefix: str = "e2e") -> None:
    s3 = c.client("s3")

    def put(d):
        key = (
            f"labeled/{d['label']}/{prefix} {d['index']}.png"
            if labeled
            else f"{prefix}/digit {d['index']}.png"
        )
        # Labeled uploads are a random draw of the digits: declared so, they may certify.
        extra = {"Metadata": {"flywheel-sampling": "random"}} if labeled else {}
        s3.put_object(Bucket=c.upload_bucket, Key=key, Body=d["png"], **extra)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, items))


def items_by_id(c):
    return {i["item_id"]: i for i in c.items()}


def test_uploads_are_ingested_and_a_corrupt_one_is_rejected(running_stack):
    c = running_stack.client
    # Given human-labeled and unlabeled uploads, and a corrupt file in the same batch
    c.client("s3").put_object(Bucket=c.upload_bucket, Key="labeled/3/broken file.png", Body=CORRUPT)
    upload(c, LABELED, labeled=True)
    upload(c, UNLABELED, labeled=False)
    # Then every upload becomes an item; the corrupt one is rejected with its reason
    expected = len(LABELED) + len(UNLABELED) + 1
    wait_for(lambda: sum(c.counts().values()) >= expected, 240, "ingest")
    items = c.items()
    rejected = [i for i in items if i["state"] == "rejected"]
    assert [i["source_key"] for i in rejected] == ["labeled/3/broken file.png"]
    assert rejected[0]["reason"]
    by_id = {i["item_id"]: i for i in items}
    assert all(
        by_id[d["item_id"]]["state"] == "human_labeled"
        and by_id[d["item_id"]]["label"] == d["label"]
        for d in LABELED
    )
    assert all(
        by_id[d["item_id"]]["label_sampling"] == "random"
        and by_id[d["item_id"]]["label_origin"] == "seed"
        for d in LABELED
    )
    # Unlabeled uploads wait for the model, except the audit draws, which wait for people
    assert all(
        (by_id[d["item_id"]]["state"], by_id[d["item_id"]].get("review_reason"))
        in (("unlabeled", None), ("needs_review", "audit"))
        for d in UNLABELED
    )
    head = c.client("s3").head_object(
        Bucket=c.data_bucket, Key=f"images/{LABELED[0]['item_id']}.png"
    )
    assert head["ContentLength"] > 0


def test_a_training_job_runs_and_promote_updates_the_endpoint(running_stack, capsys):
    c = running_stack.client
    # When a person starts training and waits: `flywheel train --no-tuning --wait`
    code = cli.main(
        ["--data-dir", str(running_stack.data_dir), "train", "--no-tuning", "--wait"]
        + ["--timeout", "900"]
    )
    out = capsys.readouterr().out
    job = json.loads(out.splitlines()[0])["job_name"]
    sm = c.client("sagemaker")
    # Then it showed the job's epochs as they were logged and returned after promote decided
    assert code == 0, out
    assert f"training job {job} started" in out
    epochs = [line for line in out.splitlines() if line.startswith(f"  {job}  epoch ")]
    assert len(epochs) >= 2 and all("val_accuracy=" in line for line in epochs), out
    assert f"training job {job} Completed" in out
    assert f"promoted: {job}  test_accuracy=" in out and "(no champion before)" in out
    assert job_status(c, job) == "Completed"
    # And promote had recorded it as champion
    champion = c.champion()
    assert champion["training_job"] == job
    endpoint = wait_for(
        lambda: (e := sm.describe_endpoint(EndpointName=c.endpoint_name))["EndpointStatus"]
        == "InService"
        and e,
        120,
        "the endpoint",
    )
    assert endpoint["EndpointConfigName"] == champion["endpoint_config"]
    # And InvokeEndpoint answers with the new model
    rt = c.client("sagemaker-runtime")
    body = json.loads(
        rt.invoke_endpoint(
            EndpointName=c.endpoint_name, ContentType="image/png", Body=UNLABELED[0]["png"]
        )["Body"].read()
    )
    assert body["model_version"] == champion["model_version"]
    assert body["predictions"][0]["label"] in [str(i) for i in range(10)]
    STATE["champion"] = champion
    STATE["job"] = sm.describe_training_job(TrainingJobName=job)


def test_auto_labels_appear_in_the_items_table(running_stack):
    c = running_stack.client
    version = STATE["champion"]["model_version"]
    wait_for(lambda: c.counts()["unlabeled"] == 0, 300, "the relabel sweep", every=2)
    waiting = [i for i in c.items(("auto_labeled", "needs_review")) if i["item_id"] in TRUTH]
    audit = [i for i in waiting if i.get("review_reason") == "audit"]
    labeled = [i for i in waiting if i.get("review_reason") != "audit"]
    assert len(labeled) + len(audit) == len(UNLABELED)
    assert all("label" not in i for i in audit), "audit items must stay blind"
    assert all(i["model_version"] == version and i["label_source"] == "model" for i in labeled)
    auto = [i for i in labeled if i["state"] == "auto_labeled"]
    assert auto, "the champion auto-labeled nothing"
    accuracy = sum(i["label"] == TRUTH[i["item_id"]] for i in auto) / len(auto)
    assert accuracy >= 0.8


def test_cli_status_predict_and_export(running_stack, tmp_path):
    import subprocess
    import sys

    from e2e_support import REPO

    def flywheel(*args):
        return subprocess.run(
            [sys.executable, "-m", "dataflywheel.cli", "--data-dir", str(running_stack.data_dir)]
            + list(args),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    status = flywheel("status")
    assert status.returncode == 0, status.stderr
    assert "champion   " + STATE["champion"]["model_version"] in status.stdout
    image = tmp_path / "digit.png"
    image.write_bytes(UNLABELED[1]["png"])
    predict = flywheel("predict", str(image))
    assert predict.returncode == 0 and STATE["champion"]["model_version"] in predict.stdout
    for fmt, out in (
        ("manifest", tmp_path / "d.manifest"),
        ("csv", tmp_path / "d.csv"),
        ("imagefolder", tmp_path / "folder"),
    ):
        r = flywheel("export", "--format", fmt, "-o", str(out))
        assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "d.manifest").read_text().splitlines()]
    human = [x for x in lines if x["label-metadata"]["human-annotated"] == "yes"]
    assert len(human) == len(LABELED)
    assert all(x["source-ref"].startswith("s3://") for x in lines)
    assert sum(1 for p in (tmp_path / "folder").rglob("*.png")) == len(lines)
    none = subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", "--data-dir", str(tmp_path / "none"), "status"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert none.returncode == 1 and len(none.stderr.strip().splitlines()) == 1


def test_a_failed_training_job_notifies_and_changes_no_champion(running_stack):
    c = running_stack.client
    sm = c.client("sagemaker")
    c.notifications()  # drain earlier outcomes
    good = STATE["job"]
    name = f"dfw-bad-{uuid.uuid4().hex[:8]}"
    # Given a job with a bad hyperparameter, created through the SageMaker API
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification=good["AlgorithmSpecification"],
        RoleArn=good["RoleArn"],
        HyperParameters={**good["HyperParameters"], "arch": "no_such_arch"},
        InputDataConfig=good["InputDataConfig"],
        OutputDataConfig=good["OutputDataConfig"],
        ResourceConfig=good["ResourceConfig"],
        StoppingCondition=good["StoppingCondition"],
    )
    wait_for(
        lambda: sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Failed",
        300,
        f"{name} to fail",
        every=2,
    )
    # Then SNS carries a failure notification and the champion is unchanged
    notes = wait_for(
        lambda: [n for n in c.notifications(wait_s=1) if name in json.dumps(n)],
        120,
        "the failure notification",
    )
    assert "fail" in json.dumps(notes).lower()
    assert c.champion()["model_version"] == STATE["champion"]["model_version"]


def test_a_message_that_keeps_failing_ends_in_the_dlq(running_stack):
    c = running_stack.client
    sqs = c.client("sqs")
    sqs.send_message(QueueUrl=c.outputs["IngestQueueUrl"], MessageBody='{"Records": "not a list"}')
    dlq = c.outputs["IngestQueueDLQUrl"]
    msgs = wait_for(
        lambda: sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages"
        ),
        120,
        "the poisoned message in IngestQueueDLQ",
    )
    assert msgs[0]["Body"] == '{"Records": "not a list"}'


def test_stopping_and_restarting_mid_run_loses_nothing(running_stack):
    c = running_stack.client
    before = c.counts()
    # Given uploads still being ingested when the stack stops
    upload(c, LATE, labeled=False, prefix="late")
    running_stack.stop()
    # When it starts again on the same data directory
    c = running_stack.start()
    # Then every upload is ingested and labeled by the same champion, still served
    total = sum(before.values()) + len(LATE)
    wait_for(
        lambda: sum(c.counts().values()) >= total and c.counts()["unlabeled"] == 0,
        300,
        "the late uploads after the restart",
        every=2,
    )
    by_id = items_by_id(c)
    assert all(by_id[d["item_id"]]["state"] in ("auto_labeled", "needs_review") for d in LATE)
    assert c.champion()["model_version"] == STATE["champion"]["model_version"]
    rt = c.client("sagemaker-runtime")
    body = json.loads(
        rt.invoke_endpoint(
            EndpointName=c.endpoint_name, ContentType="image/png", Body=LATE[0]["png"]
        )["Body"].read()
    )
    assert body["model_version"] == STATE["champion"]["model_version"]
