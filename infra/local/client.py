"""Talk to a running local stack through the AWS APIs, as any user script would.

``StackClient(data_dir)`` reads ``<data_dir>/endpoints.json`` and hands out
boto3 clients bound to the local endpoints, plus the reads the CLI and the
demo need (item counts by state, jobs, champion, notifications).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from infra.local.stack import DEFAULT_DATA_DIR, endpoints


def wait_until(predicate: Any, timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


STATES = ("unlabeled", "auto_labeled", "needs_review", "human_labeled", "rejected")
STATE_INDEX = "state-index"  # ItemsTable's GSI: state (hash), updated_at (range)
_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"}, read_timeout=900, connect_timeout=5
)


class StackClient:
    def __init__(self, data_dir: Path | str = DEFAULT_DATA_DIR) -> None:
        self.info = endpoints(data_dir)
        self.env = self.info["environment"]
        self.outputs = self.info["outputs"]
        self.resources = self.info["resources"]
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            service_id = {
                "events": "EVENTBRIDGE",
                "sagemaker-runtime": "SAGEMAKER_RUNTIME",
                "logs": "CLOUDWATCH_LOGS",
            }.get(service, service.upper())
            url = self.env.get(f"AWS_ENDPOINT_URL_{service_id}", self.env["AWS_ENDPOINT_URL"])
            self._clients[service] = boto3.client(
                service,
                endpoint_url=url,
                region_name=self.info["region"],
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=_CONFIG,
            )
        return self._clients[service]

    # -- names --------------------------------------------------------------------

    @property
    def upload_bucket(self) -> str:
        return self.outputs["UploadBucketName"]

    @property
    def data_bucket(self) -> str:
        return self.outputs["DataBucketName"]

    @property
    def items_table(self) -> str:
        return self.outputs["ItemsTableName"]

    @property
    def endpoint_name(self) -> str:
        return self.outputs["EndpointName"]

    @property
    def champion_parameter(self) -> str:
        return self.outputs["ChampionParameterName"]

    def function_name(self, logical_id: str) -> str:
        return self.info["functions"][logical_id]

    # -- reads --------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Items by state: one ``Select=COUNT`` Query per state on the state index (paginated
        at 1 MB of index entries; no item bodies travel).

        The index is eventually consistent and an item moving between states while the
        queries run can be counted in both or neither: right for progress, not for a census
        (``items()`` reads the table consistently).
        """
        return {state: self.count(state) for state in STATES}

    def count(self, state: str, filter_expression: str | None = None, **values: Any) -> int:
        """Items in ``state`` (optionally also matching ``filter_expression`` over the
        ``:name`` values given as keyword arguments, e.g. ``model_version <> :v``)."""
        ddb = self.client("dynamodb")
        kwargs: dict[str, Any] = {
            "TableName": self.items_table,
            "IndexName": STATE_INDEX,
            "KeyConditionExpression": "#s = :state",
            "ExpressionAttributeNames": {"#s": "state"},
            "ExpressionAttributeValues": {":state": {"S": state}}
            | {f":{k}": {"S": str(v)} for k, v in values.items()},
            "Select": "COUNT",
        }
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
        total = 0
        for page in ddb.get_paginator("query").paginate(**kwargs):
            total += page["Count"]
        return total

    def items(self, states: tuple[str, ...] = STATES) -> list[dict[str, Any]]:
        """Items in ``states``, each exactly once, from one consistent Scan of the table.

        Querying the state GSI state by state double-counts items that move between states
        while the query pages (a relabel sweep moves thousands), and the GSI is eventually
        consistent; a strongly consistent Scan of the base table sees each key once.
        """
        from boto3.dynamodb.types import TypeDeserializer

        ddb, de, wanted = self.client("dynamodb"), TypeDeserializer(), set(states)
        out: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {}
        while True:
            page = ddb.scan(TableName=self.items_table, ConsistentRead=True, **kwargs)
            for raw in page["Items"]:
                item = {k: de.deserialize(v) for k, v in raw.items()}
                if item.get("state") in wanted:
                    out.setdefault(item["item_id"], item)
            if "LastEvaluatedKey" not in page:
                return list(out.values())
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def champion(self) -> dict[str, Any] | None:
        ssm = self.client("ssm")
        try:
            return json.loads(ssm.get_parameter(Name=self.champion_parameter)["Parameter"]["Value"])
        except ssm.exceptions.ParameterNotFound:
            return None

    def queue_depths(self) -> dict[str, int]:
        sqs = self.client("sqs")
        out = {}
        for lid, url in self.resources.items():
            if not isinstance(url, str) or "/123456789012/" not in url:
                continue
            attrs = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            out[lid] = int(attrs["ApproximateNumberOfMessages"]) + int(
                attrs["ApproximateNumberOfMessagesNotVisible"]
            )
        return out

    def training_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        if not self.env.get("AWS_ENDPOINT_URL_SAGEMAKER"):
            return []
        sm = self.client("sagemaker")
        return sm.list_training_jobs(
            MaxResults=limit, SortBy="CreationTime", SortOrder="Descending"
        ).get("TrainingJobSummaries", [])

    def tuning_jobs(self, limit: int = 10) -> list[dict[str, Any]]:
        if not self.env.get("AWS_ENDPOINT_URL_SAGEMAKER"):
            return []
        sm = self.client("sagemaker")
        return sm.list_hyper_parameter_tuning_jobs(
            MaxResults=limit, SortBy="CreationTime", SortOrder="Descending"
        ).get("HyperParameterTuningJobSummaries", [])

    def notifications(self, wait_s: int = 0) -> list[dict[str, Any]]:
        """Drain the SNS tap: each notification published since the last call."""
        sqs, url = self.client("sqs"), self.resources["_NotificationsTap"]
        out = []
        while True:
            msgs = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s
            ).get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                body = json.loads(m["Body"])
                try:
                    message = json.loads(body.get("Message", ""))
                except ValueError:
                    message = body.get("Message")
                out.append({"subject": body.get("Subject"), "message": message})
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            wait_s = 0

    def router_status(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(
            self.info["endpoints"]["lambda"] + "/_flywheel/status", timeout=10
        ) as r:
            return json.loads(r.read())

    def fire_schedule(self, function_logical_id: str) -> Any:
        import urllib.request

        req = urllib.request.Request(
            f"{self.info['endpoints']['lambda']}/_flywheel/schedules/{function_logical_id}",
            method="POST",
            data=b"",
        )
        with urllib.request.urlopen(req, timeout=900) as r:
            body = json.loads(r.read())
            if r.headers.get("X-Amz-Function-Error"):
                raise RuntimeError(
                    f"{function_logical_id} failed: {body.get('errorType')}: "
                    f"{body.get('errorMessage')}"
                )
            return body

    def inject_fault(
        self, function: str, delay_s: float, match: dict[str, Any] | None = None, times: int = 1
    ) -> dict[str, Any]:
        """Local test hook: the next ``times`` synchronous invokes of ``function`` whose event
        has ``match``'s keys answer ``delay_s`` late (the function itself runs at once)."""
        import urllib.request

        body = {"function": function, "delay_s": delay_s, "times": times, "match": match or {}}
        req = urllib.request.Request(
            f"{self.info['endpoints']['lambda']}/_flywheel/faults",
            method="POST",
            data=json.dumps(body).encode(),
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        """Invoke a function synchronously; raise RuntimeError with its message if it fails."""
        resp = self.client("lambda").invoke(
            FunctionName=self.function_name(logical_id), Payload=json.dumps(event).encode()
        )
        payload = json.loads(resp["Payload"].read() or b"null")
        if resp.get("FunctionError"):
            raise RuntimeError(
                f"{logical_id} failed: {payload.get('errorType')}: {payload.get('errorMessage')}"
            )
        return payload

    def status(self) -> dict[str, Any]:
        jobs = self.training_jobs()
        review = self.client("s3").list_objects_v2(Bucket=self.data_bucket, Prefix="review/")
        return {
            "items": self.counts(),
            "champion": self.champion(),
            "queues": self.queue_depths(),
            "training_jobs": Counter(j["TrainingJobStatus"] for j in jobs),
            "latest_job": jobs[0] if jobs else None,
            "tuning_jobs": [
                {
                    "name": t["HyperParameterTuningJobName"],
                    "status": t["HyperParameterTuningJobStatus"],
                }
                for t in self.tuning_jobs()
            ],
            "review_batches": sorted(
                o["Key"] for o in review.get("Contents", []) if o["Key"].endswith(".csv")
            ),
            "latest_evaluation": self.evaluation(jobs[0]["TrainingJobName"]) if jobs else None,
        }

    def evaluation(self, job_name: str) -> dict[str, Any] | None:
        """The metrics.json promote filed for a job (gate inputs, certificate), if any."""
        try:
            body = (
                self.client("s3")
                .get_object(
                    Bucket=self.data_bucket, Key=f"models/{job_name}/evaluation/metrics.json"
                )["Body"]
                .read()
            )
        except self.client("s3").exceptions.NoSuchKey:
            return None
        metrics = json.loads(body)
        return {
            "model_version": metrics.get("model_version"),
            "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
            "champion_test_accuracy": (metrics.get("champion_test") or {}).get("accuracy"),
            "test_n": (metrics.get("test") or {}).get("n"),
            "threshold": metrics.get("threshold"),
        }

    def wait(self, predicate: Any, timeout: float, every: float = 2.0, what: str = "") -> Any:
        return wait_until(predicate, timeout, what or "the stack", every)
