"""Integration tier helpers: real handlers under moto's mock_aws, resources from template.yaml.

``stack`` provisions the template's buckets/tables/queues/topics with samlocal/cfn.py and
sets a function's environment exactly as the template would (``stack.use("IngestFunction")``).
Events come from tests/events/ in their real shapes.
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

# Powertools reads these when a handler module is imported (as Lambda's environment would).
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "DataFlywheel")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tests")

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
for _folder in sorted((ROOT / "functions").iterdir()):
    if _folder.is_dir() and str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from flywheel.adapters import aws  # noqa: E402

from samlocal.cfn import function_environment, load_template, provision, resolve  # noqa: E402

STACK = "dataflywheel"
TRAINING_CODE = Path(__file__).parent / "fixtures" / "training_code"
METRICS_FIXTURE = ROOT / "tests" / "fixtures" / "contracts" / "metrics.json"


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@dataclass
class LambdaContext:
    function_name: str = "dataflywheel-fn"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:dataflywheel-fn"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


class Stack:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, params: dict | None = None):
        self.monkeypatch = monkeypatch
        self.resolved = resolve(load_template(ROOT / "template.yaml"), STACK, params or {})
        self.session = boto3.Session(region_name="us-east-1")
        self.physical = provision(self.resolved, self.session)
        self.s3 = self.session.client("s3")
        self.ddb = self.session.client("dynamodb")
        self.sqs = self.session.client("sqs")
        self.sm = self.session.client("sagemaker")
        self.ssm = self.session.client("ssm")
        self.upload_bucket = self.physical["UploadBucket"]
        self.data_bucket = self.physical["DataBucket"]
        self.table = self.physical["ItemsTable"]
        self.topic_messages: list[dict] = []

    def use(self, logical_id: str, **overrides: str) -> dict[str, str]:
        """Set os.environ to the function's template environment (plus test overrides)."""
        env = function_environment(self.resolved, logical_id, self.physical)
        env.update(overrides)
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        aws.reset_all()
        return env

    def register(self) -> list[str]:
        """Register this stack in (moto's) CloudFormation with the template's Outputs, as
        a deployment would; returns the CLI's arguments that reach it."""
        from samlocal.provision import register_stack, stack_outputs

        outputs = stack_outputs(self.resolved, self.physical)
        register_stack(self.resolved, outputs, self.session.client("cloudformation"))
        return ["--stack", STACK, "--region", "us-east-1"]

    # ---- observations ------------------------------------------------------------
    def item(self, item_id: str) -> dict | None:
        from flywheel.adapters import items

        return items.get(self.table, item_id)

    def all_items(self) -> list[dict]:
        from flywheel.adapters.items import _item

        pages = self.ddb.get_paginator("scan").paginate(TableName=self.table)
        return [_item(raw) for page in pages for raw in page["Items"]]

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.data_bucket, Prefix=prefix
        )
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def read(self, key: str, bucket: str | None = None) -> bytes:
        return self.s3.get_object(Bucket=bucket or self.data_bucket, Key=key)["Body"].read()

    def drain(self, logical_id: str) -> list[dict]:
        url = self.physical[logical_id]
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
            if not got.get("Messages"):
                return out
            for m in got["Messages"]:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def champion(self) -> dict | None:
        try:
            value = self.ssm.get_parameter(Name=f"/{STACK}/champion")["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return None
        return json.loads(value)


# ---- event builders ------------------------------------------------------------------


def tap_notifications(stack: Stack) -> str:
    """An SQS queue subscribed to the NotificationsTopic (raw delivery), as ``Outcomes``."""
    url = stack.sqs.create_queue(QueueName="outcomes")["QueueUrl"]
    arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    stack.session.client("sns").subscribe(
        TopicArn=stack.physical["NotificationsTopic"],
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    stack.physical["Outcomes"] = url
    return url


def outcomes(stack: Stack) -> list[dict]:
    """The notifications the tap received since the last call."""
    url = stack.physical["Outcomes"]
    got = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    # Deleted once read: on a slow host a message left in flight would come back after the
    # queue's visibility timeout and be read twice.
    for m in got:
        stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return [json.loads(m["Body"]) for m in got]


def s3_sqs_event(
    records: list[tuple[str, str, int]] | list[tuple[str, str, int, str | None]],
    message_ids: list[str] | None = None,
) -> dict:
    """One SQS message per (bucket, url-encoded key, size[, version id]), in the real
    S3-in-SQS shape; without a version id the record has no ``versionId`` (an unversioned
    bucket; moto's notifications too)."""
    template = load_event("sqs_s3_notification.json")["Records"][0]
    out = []
    for n, (bucket, encoded_key, size, *version) in enumerate(records):
        body = json.loads(template["body"])
        s3 = body["Records"][0]["s3"]
        s3["object"].pop("versionId")
        if version and version[0]:
            s3["object"]["versionId"] = version[0]
        s3["bucket"]["name"] = bucket
        s3["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
        s3["object"]["key"] = encoded_key
        s3["object"]["size"] = size
        record = copy.deepcopy(template)
        record["body"] = json.dumps(body)
        record["messageId"] = (message_ids or [])[n] if message_ids else f"msg-{n}"
        out.append(record)
    return {"Records": out}


def sqs_event(bodies: list[dict], queue: str = "LabelQueue") -> dict:
    template = load_event("sqs_s3_notification.json")["Records"][0]
    records = []
    for n, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["body"] = json.dumps(body)
        record["messageId"] = f"msg-{n}"
        record["eventSourceARN"] = f"arn:aws:sqs:us-east-1:123456789012:{STACK}-{queue}"
        records.append(record)
    return {"Records": records}


def model_tar(metrics: dict) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in (
            ("model.pt", b"weights"),
            ("model_config.json", json.dumps({"classes": metrics["classes"]}).encode()),
            ("metrics.json", json.dumps(metrics).encode()),
            ("code/inference.py", b"# inference"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def metrics_doc(
    version: str,
    accuracy: float,
    champion_accuracy: float | None = None,
    test_set_id: str = "f" * 64,
    champion_version: str = "dfw-champion00000",
) -> dict[str, Any]:
    """A metrics.json train.py wrote (tests/fixtures/contracts/metrics.json) for two classes,
    with the gate's inputs set: promote reads it through flywheel.contracts.metrics."""
    doc = json.loads(METRICS_FIXTURE.read_text())
    test = {
        "n": 40,
        "accuracy": accuracy,
        "per_class": {},
        "confusion_matrix": {"labels": ["cat", "dog"], "matrix": [[20, 0], [0, 20]]},
    }
    doc.update(
        model_version=version,
        classes=["cat", "dog"],
        test=test,
        test_set_id=test_set_id,
        champion_test=None
        if champion_accuracy is None
        else {**test, "accuracy": champion_accuracy, "model_version": champion_version},
    )
    doc["calibration"].update(temperature=1.3, ece_before=0.08, ece_after=0.02)
    doc["threshold"].update(target_accuracy=0.95, threshold=0.8, coverage=0.7, lower_bound=0.95)
    doc["epochs"] = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": accuracy}]
    return doc
