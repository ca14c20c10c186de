"""Helpers for the local SageMaker tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from samlocal.sagemaker import LocalSageMaker

FIXTURES = Path(__file__).parent / "fixtures"
BUCKET = "sm-local-test"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
TERMINAL = ("Completed", "Failed", "Stopped")
TRAINING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-gpu-py312"


class EventLog:
    """Events received through the in-process callback."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of(self, detail_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["detail-type"] == detail_type]


def start_service(data_dir: Path, moto_url: str, on_event: Any = None) -> LocalSageMaker:
    return LocalSageMaker(
        data_dir,
        s3_endpoint=moto_url,
        events_endpoint=moto_url,
        cloudwatch_endpoint=moto_url,
        on_event=on_event,
        stop_grace_seconds=2,
        bake_seconds=1.5,
        health_timeout_seconds=60,
    ).start()


def client(service_name: str, url: str) -> Any:
    return boto3.client(service_name, endpoint_url=url, region_name="us-east-1")


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


METRICS = [
    {"Name": "val_accuracy", "Regex": "val_accuracy=([0-9.]+)"},
    {"Name": "test_accuracy", "Regex": "test_accuracy=([0-9.]+)"},
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def training_request(
    name: str, checkpoint: bool = False, max_runtime: int = 600, **hps: Any
) -> dict[str, Any]:
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": TRAINING_IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": METRICS,
        },
        "RoleArn": ROLE,
        "HyperParameters": {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": f"s3://{BUCKET}/code/sourcedir.tar.gz",
            **{k.replace("_", "-"): str(v) for k, v in hps.items()},
        },
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{BUCKET}/data/train/",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models/"},
        "ResourceConfig": {
            "InstanceType": "ml.g5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }
    if checkpoint:
        req["CheckpointConfig"] = {"S3Uri": f"s3://{BUCKET}/checkpoints/{name}/"}
    return req


def wait_for(
    fn: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60, interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value: {value}")
        time.sleep(interval)


def wait_training(sm: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: sm.describe_training_job(TrainingJobName=name),
        lambda d: d["TrainingJobStatus"] in TERMINAL,
        timeout,
    )


def wait_endpoint(sm: Any, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: sm.describe_endpoint(EndpointName=name),
        lambda d: d["EndpointStatus"] not in ("Creating", "Updating"),
        timeout,
    )


def drain_queue(
    moto_url: str,
    queue_url: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 20,
) -> list[dict[str, Any]]:
    """Read EventBridge events off the SQS queue until `until(events)` holds."""
    sqs = client("sqs", moto_url)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            seen.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        if until(seen):
            return seen
    raise AssertionError(
        f"events never arrived; got {[(e['detail-type'], e['detail']) for e in seen]}"
    )
