"""Training jobs through boto3: the container contract, metrics, failure, stop, events."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sm_support import BUCKET, drain_queue, training_request, unique, wait_for, wait_training


def test_training_job_completes_with_model_metrics_and_checkpoints(
    sm: Any, s3: Any, bucket: str, service: Any
) -> None:
    # Given a job with a checkpoint config and a boolean hyperparameter
    name = unique("train-ok")
    sm.create_training_job(
        **training_request(name, checkpoint=True, epochs=3, quality=0.9, flag="true")
    )

    # When it runs to the end
    job = wait_training(sm, name)

    # Then it completed, with the model uploaded where SageMaker puts it
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{BUCKET}/models/{name}/output/model.tar.gz"
    body = s3.get_object(Bucket=BUCKET, Key=f"models/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert {"model.json", "code/inference.py"} <= set(tar.getnames())
    # the last value of each metric, from the log
    final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert final == pytest.approx({"val_accuracy": 0.9, "test_accuracy": 0.9})
    # checkpoints synced to S3
    ckpt = s3.get_object(Bucket=BUCKET, Key=f"checkpoints/{name}/state.json")["Body"].read()
    assert json.loads(ckpt) == {"epoch": 3}
    # secondary statuses and timestamps like the real thing
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert job["TrainingStartTime"] <= job["TrainingEndTime"]
    # the log: hyperparameters JSON-decoded like the toolkit (true -> True), sagemaker_* stripped
    log = urllib.request.urlopen(f"{service.url}/_local/logs/{name}").read().decode()
    assert "'--flag', 'True'" in log and "sagemaker_program" not in log.split("argv")[1]
    assert "--checkpoint-dir" in log and "files ['img0.txt', 'img1.txt', 'img2.txt']" in log
    # and it is listed
    names = [
        j["TrainingJobName"]
        for j in sm.list_training_jobs(NameContains="train-ok")["TrainingJobSummaries"]
    ]
    assert name in names


def test_failing_job_reports_failure_reason(sm: Any, bucket: str) -> None:
    name = unique("train-bad")
    sm.create_training_job(**training_request(name, lr=-1))
    job = wait_training(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert "lr must be positive, got -1.0" in job["FailureReason"]
    assert "ModelArtifacts" not in job


def test_stop_training_job(sm: Any, bucket: str) -> None:
    name = unique("train-stop")
    sm.create_training_job(**training_request(name, epochs=100, sleep=0.5))
    wait_for(
        lambda: sm.describe_training_job(TrainingJobName=name),
        lambda d: d["SecondaryStatus"] == "Training",
    )
    sm.stop_training_job(TrainingJobName=name)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in (
        "Stopping",
        "Stopped",
    )
    job = wait_training(sm, name, timeout=20)
    assert job["TrainingJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as err:
        sm.stop_training_job(TrainingJobName=name)
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_max_runtime_stops_the_job(sm: Any, bucket: str) -> None:
    name = unique("train-slow")
    sm.create_training_job(**training_request(name, max_runtime=2, epochs=100, sleep=0.5))
    job = wait_training(sm, name, timeout=30)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")


def test_resumes_from_existing_checkpoint(sm: Any, s3: Any, bucket: str, service: Any) -> None:
    # Given a checkpoint left by an interrupted run (a managed spot restart)
    name = unique("train-resume")
    s3.put_object(
        Bucket=BUCKET, Key=f"checkpoints/{name}/state.json", Body=json.dumps({"epoch": 2})
    )
    sm.create_training_job(**training_request(name, checkpoint=True, epochs=3))
    job = wait_training(sm, name)
    assert job["TrainingJobStatus"] == "Completed"
    log = urllib.request.urlopen(f"{service.url}/_local/logs/{name}").read().decode()
    assert "resuming from epoch 2" in log and "epoch=1 " not in log and "epoch=3 " in log


def test_errors_have_the_aws_shape(sm: Any, bucket: str) -> None:
    name = unique("train-dup")
    sm.create_training_job(**training_request(name))
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**training_request(name))
    assert err.value.response["Error"]["Code"] == "ResourceInUse"
    with pytest.raises(ClientError) as err:
        sm.describe_training_job(TrainingJobName="no-such-job")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    wait_training(sm, name)


def test_state_change_events_reach_eventbridge_and_the_callback(
    sm: Any, bucket: str, moto_url: str, event_queue: str, callback_events: Any
) -> None:
    name = unique("train-events")
    sm.create_training_job(
        **training_request(name, quality=0.7), Tags=[{"Key": "app", "Value": "dfw"}]
    )
    wait_training(sm, name)

    def completed(events: list[dict[str, Any]]) -> bool:
        return any(
            e["detail"].get("TrainingJobName") == name
            and e["detail"]["TrainingJobStatus"] == "Completed"
            for e in events
        )

    events = drain_queue(moto_url, event_queue, completed)
    event = next(
        e
        for e in events
        if e["detail"].get("TrainingJobName") == name
        and e["detail"]["TrainingJobStatus"] == "Completed"
    )
    assert event["source"] == "aws.sagemaker"
    assert event["detail-type"] == "SageMaker Training Job State Change"
    assert event["resources"] == [event["detail"]["TrainingJobArn"]]
    assert event["detail"]["ModelArtifacts"]["S3ModelArtifacts"].endswith(
        f"/{name}/output/model.tar.gz"
    )
    assert event["detail"]["HyperParameters"]["quality"] == "0.7"
    assert event["detail"]["Tags"] == {"app": "dfw"}
    assert isinstance(event["detail"]["CreationTime"], int)  # epoch millis
    assert any(
        e["detail"]["TrainingJobName"] == name
        for e in callback_events.of("SageMaker Training Job State Change")
    )


def test_augmented_manifest_channel(sm: Any, s3: Any, bucket: str, service: Any) -> None:
    # Given a Ground Truth augmented manifest pointing at two images
    name = unique("train-manifest")
    lines = []
    for i in range(2):
        s3.put_object(Bucket=BUCKET, Key=f"gt/images/{i}.png", Body=b"png")
        lines.append(
            {
                "source-ref": f"s3://{BUCKET}/gt/images/{i}.png",
                "label": i,
                "label-metadata": {"class-name": str(i)},
            }
        )
    s3.put_object(
        Bucket=BUCKET,
        Key="gt/train.manifest",
        Body="".join(json.dumps(line) + "\n" for line in lines),
    )
    request = training_request(name)
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"] = {
        "S3DataType": "AugmentedManifestFile",
        "S3Uri": f"s3://{BUCKET}/gt/train.manifest",
        "AttributeNames": ["source-ref", "label", "label-metadata"],
    }

    # When the job runs, the channel holds the manifest and the objects it refers to
    sm.create_training_job(**request)
    assert wait_training(sm, name)["TrainingJobStatus"] == "Completed"
    log = urllib.request.urlopen(f"{service.url}/_local/logs/{name}").read().decode()
    assert "files ['0.png', '1.png', 'train.manifest']" in log


def test_hyperparameters_become_flags_like_the_toolkit() -> None:
    from samlocal.sagemaker.training import decode_hyperparameters, to_cmd_args

    hps = {
        "lr": "0.01",
        "pretrained": "true",
        "arch": "resnet18",
        "quoted": '"text"',
        "sagemaker_program": "train.py",
        "x": '{"a": 1}',
    }
    decoded = decode_hyperparameters(hps)
    assert decoded == {
        "lr": 0.01,
        "pretrained": True,
        "arch": "resnet18",
        "quoted": "text",
        "x": {"a": 1},
    }
    assert to_cmd_args(decoded) == [
        "--arch",
        "resnet18",
        "--lr",
        "0.01",
        "--pretrained",
        "True",
        "--quoted",
        "text",
        "-x",
        "a=1",
    ]


HOSTILE_PARTS = [
    "../x",
    "/abs",
    "a/../../b",
    "..",
    "con\x00",
    "../../../../../outside/x",
    "x/" + "../" * 40 + "tmp/x",
    "y" * 300,
]


@pytest.mark.parametrize("part", HOSTILE_PARTS)
def test_no_key_part_resolves_outside_the_channel_directory(tmp_path: Any, part: str) -> None:
    from samlocal.sagemaker.aws import UnsafeKey, confined

    channel = tmp_path / "train"
    try:
        target = confined(channel, f"{part}/img.png")
    except (UnsafeKey, OSError):
        return
    assert target.is_relative_to(channel.resolve())


def channel_job(name: str, source: dict[str, Any]) -> dict[str, Any]:
    request = training_request(name)
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"] = source
    return request


def test_a_key_that_escapes_the_channel_fails_the_job_and_writes_nothing_outside(
    sm: Any, s3: Any, bucket: str, service: Any
) -> None:
    # Given three channels, each naming an object whose key climbs out of the job directory:
    # an S3 prefix (a dataset label "../../../../../outside/x"), a manifest with an absolute
    # entry, a Ground Truth manifest whose source-ref climbs out
    hostile = "evil/train/../../../../../outside/x/0.png"
    absolute = service.data_dir.resolve().parent / "outside-absolute"
    s3.put_object(Bucket=BUCKET, Key=hostile, Body=b"png")
    s3.put_object(Bucket=BUCKET, Key="evil/ok/0.png", Body=b"png")
    s3.put_object(
        Bucket=BUCKET,
        Key="evil/list.manifest",
        Body=json.dumps([{"prefix": f"s3://{BUCKET}/evil/"}, "ok/0.png", f"{absolute}/0.png"]),
    )
    ref = {"source-ref": f"s3://{BUCKET}/{hostile}", "label": 0, "label-metadata": {}}
    s3.put_object(Bucket=BUCKET, Key="evil/gt.manifest", Body=json.dumps(ref) + "\n")
    sources = {
        "prefix": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/evil/train/"},
        "manifest": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/evil/list.manifest"},
        "augmented": {
            "S3DataType": "AugmentedManifestFile",
            "S3Uri": f"s3://{BUCKET}/evil/gt.manifest",
            "AttributeNames": ["source-ref", "label"],
        },
    }

    for kind, source in sources.items():
        # When a job reads the channel
        name = unique(f"train-escape-{kind}")
        sm.create_training_job(**channel_job(name, source))
        job = wait_training(sm, name)

        # Then it fails like SageMaker fails a bad input (a ClientError reason), before training
        assert job["TrainingJobStatus"] == "Failed", kind
        assert job["FailureReason"].startswith("ClientError: Data download failed"), job
        assert "outside train/" in job["FailureReason"]
        assert "Training" not in [t["Status"] for t in job["SecondaryStatusTransitions"]]

    # and nothing was written outside any job's directory
    root = service.data_dir.resolve()
    assert not [p for p in root.parent.rglob("outside")]
    assert not absolute.exists()
