"""Talk to a stack through the AWS APIs, as any user script would.

    StackClient(".flywheel")                        # the local stack (flywheel up) in that folder
    StackClient(None, stack="flywheel", region="eu-west-1", profile="dev")   # a deployed stack

Both go one way: ``DescribeStacks`` on the stack's CloudFormation (``dataflywheel.stack_ref``)
gives every name and URL from the template's Outputs. For the local stack,
``<data_dir>/endpoints.json`` only says where its endpoints listen (moto, the local
SageMaker, the Lambda API); ``flywheel up`` registered the stack in moto's CloudFormation.
On top: the reads the CLI and the demo need (item counts by state, jobs, champion,
promotion decisions, queue depths, notifications).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from dataflywheel.stack_ref import (
    Connection,
    StackNotFound,
    StackRefError,
    aws_connection,
    describe,
    require_output,
)
from samlocal.stack import DEFAULT_DATA_DIR, DEFAULT_TEMPLATE, endpoints


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
# Outputs named <queue logical id>Url whose key ends so are the stack's queues.
QUEUE_OUTPUT_SUFFIXES = ("QueueUrl", "DLQUrl")
# The local stack's registration adds this output: a queue subscribed to every topic.
NOTIFICATIONS_TAP_OUTPUT = "NotificationsTapUrl"
ENDPOINT_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack"}
JOB_RUNNING = {"InProgress", "Stopping"}


def local_connection(data_dir: Path | str) -> tuple[Connection, dict[str, Any]]:
    """The local stack's endpoints (``<data_dir>/endpoints.json``) as a Connection."""
    info = endpoints(data_dir)
    urls = {
        key.removeprefix("AWS_ENDPOINT_URL").lstrip("_"): url
        for key, url in info["environment"].items()
        if key.startswith("AWS_ENDPOINT_URL") and url
    }
    session = boto3.Session(
        aws_access_key_id="testing",  # moto takes any key; never the user's real ones
        aws_secret_access_key="testing",
        region_name=info["region"],
    )
    return Connection(session, f"the local stack in {info['data_dir']}", urls), info


def queue_outputs(outputs: dict[str, str]) -> dict[str, str]:
    """Queue logical id -> URL, from the ``<LogicalId>Url`` outputs."""
    return {
        key.removesuffix("Url"): url
        for key, url in outputs.items()
        if key.endswith(QUEUE_OUTPUT_SUFFIXES)
    }


def schedule_event(function: str, template: Path = DEFAULT_TEMPLATE) -> Any:
    """What a function's (first) template schedule delivers: its Input, or a Scheduled Event."""
    from samlocal.cfn import load_template

    resource = load_template(template)["Resources"].get(function) or {}
    events = (resource.get("Properties") or {}).get("Events") or {}
    for event in events.values():
        if event.get("Type") in ("Schedule", "ScheduleV2"):
            payload = (event.get("Properties") or {}).get("Input")
            if payload:
                return json.loads(payload)
            return {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "resources": [],
                "detail": {},
            }
    raise StackRefError(f"{function} has no schedule in {template.name}")


class StackClient:
    def __init__(
        self,
        data_dir: Path | str | None = DEFAULT_DATA_DIR,
        *,
        stack: str | None = None,
        region: str | None = None,
        profile: str | None = None,
    ) -> None:
        """``data_dir``: the local stack there; None: the deployed ``stack`` in AWS."""
        local: dict[str, Any] = {}
        if data_dir is None:
            if not stack:
                raise StackRefError("name the deployed stack: --stack NAME")
            self.connection = aws_connection(profile, region)
        else:
            if region or profile:
                raise StackRefError(
                    "--region and --profile reach AWS; --data-dir names a local stack: "
                    "pass --stack NAME without --data-dir for a deployed one"
                )
            self.connection, local = local_connection(data_dir)
        try:
            self.ref = describe(self.connection, stack or local["stack_name"])
        except StackNotFound as exc:
            if not local:
                raise
            raise StackNotFound(
                f"no stack named {stack} in {self.connection.where}: it serves "
                f"{local['stack_name']} (leave out --stack, or pass --stack without --data-dir "
                "for a deployed stack)"
            ) from exc
        self.stack_name = self.ref.name
        self.outputs: dict[str, str] = dict(self.ref.outputs)
        self.parameters = dict(self.ref.parameters)
        self.local = local
        # pid, endpoints of the local runtime (empty for AWS); the stack's name and region.
        self.info = {
            **local,
            "stack_name": self.stack_name,
            "region": self.ref.region,
            "parameters": self.parameters,
        }
        self.profile = profile
        self._clients: dict[str, Any] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment for code that makes its own boto3 clients (the functions' adapters):
        the local endpoints and test keys, or the deployed stack's region and profile."""
        if self.local:
            return dict(self.local["environment"])
        env = {"AWS_REGION": self.ref.region, "AWS_DEFAULT_REGION": self.ref.region}
        if self.profile:
            env["AWS_PROFILE"] = self.profile
        return env

    @property
    def where(self) -> str:
        return self.connection.where

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.connection.client(service)
        return self._clients[service]

    # -- names --------------------------------------------------------------------

    def output(self, key: str) -> str:
        return require_output(self.outputs, key, getattr(self, "stack_name", "?"))

    @property
    def upload_bucket(self) -> str:
        return self.output("UploadBucketName")

    @property
    def data_bucket(self) -> str:
        return self.output("DataBucketName")

    @property
    def items_table(self) -> str:
        return self.output("ItemsTableName")

    @property
    def endpoint_name(self) -> str:
        return self.output("EndpointName")

    @property
    def champion_parameter(self) -> str:
        return self.output("ChampionParameterName")

    @property
    def model_package_group(self) -> str:
        return self.output("ModelPackageGroupName")

    def function_name(self, logical_id: str) -> str:
        return self.output(f"{logical_id}Name")

    @property
    def has_sagemaker(self) -> bool:
        """A local stack may run without its SageMaker (tests); AWS always has one."""
        return not self.local or bool(self.local["environment"].get("AWS_ENDPOINT_URL_SAGEMAKER"))

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

    def queue_depths(self, dlqs: bool = True) -> dict[str, int]:
        """Messages waiting or in flight per queue (logical id), from the queue outputs."""
        sqs = self.client("sqs")
        out = {}
        for lid, url in queue_outputs(self.outputs).items():
            if not dlqs and lid.endswith("DLQ"):
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

    def _job_filter(self) -> dict[str, Any]:
        # The account may hold other stacks' jobs: this stack's start with its JobPrefix.
        prefix = self.outputs.get("JobPrefix")
        return {"NameContains": f"{prefix}-"} if prefix else {}

    def training_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        if not self.has_sagemaker:
            return []
        sm = self.client("sagemaker")
        return sm.list_training_jobs(
            MaxResults=limit, SortBy="CreationTime", SortOrder="Descending", **self._job_filter()
        ).get("TrainingJobSummaries", [])

    def tuning_jobs(self, limit: int = 10) -> list[dict[str, Any]]:
        if not self.has_sagemaker:
            return []
        sm = self.client("sagemaker")
        return sm.list_hyper_parameter_tuning_jobs(
            MaxResults=limit, SortBy="CreationTime", SortOrder="Descending", **self._job_filter()
        ).get("HyperParameterTuningJobSummaries", [])

    def notifications(self, wait_s: int = 0) -> list[dict[str, Any]]:
        """Drain the local SNS tap: each notification published since the last call.

        A deployed stack has no tap: its notifications go to the topic's subscribers.
        """
        if NOTIFICATIONS_TAP_OUTPUT not in self.outputs:
            raise StackRefError(
                f"stack {self.stack_name} has no notifications tap (only the local stack has "
                "one); subscribe to its NotificationsTopicArn output instead"
            )
        sqs, url = self.client("sqs"), self.outputs[NOTIFICATIONS_TAP_OUTPUT]
        out: list[dict[str, Any]] = []
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
        """The local router's counters (local stack only)."""
        import urllib.request

        if not self.local:
            raise StackRefError("the router status is the local stack's")
        with urllib.request.urlopen(
            self.local["endpoints"]["lambda"] + "/_flywheel/status", timeout=10
        ) as r:
            return json.loads(r.read())

    def fire_schedule(self, function_logical_id: str) -> dict[str, Any]:
        """Run a function's template schedule now: invoke it with what the schedule sends."""
        return {"result": self.invoke(function_logical_id, schedule_event(function_logical_id))}

    def inject_fault(
        self, function: str, delay_s: float, match: dict[str, Any] | None = None, times: int = 1
    ) -> dict[str, Any]:
        """Local test hook: the next ``times`` synchronous invokes of ``function`` whose event
        has ``match``'s keys answer ``delay_s`` late (the function itself runs at once)."""
        import urllib.request

        if not self.local:
            raise StackRefError("fault injection is the local stack's test hook")
        body = {"function": function, "delay_s": delay_s, "times": times, "match": match or {}}
        req = urllib.request.Request(
            f"{self.local['endpoints']['lambda']}/_flywheel/faults",
            method="POST",
            data=json.dumps(body).encode(),
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def invoke(self, logical_id: str, event: Any) -> Any:
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
            "learner": metrics.get("learner"),
        }

    # -- promotion decisions and activity ------------------------------------------

    def decision(self, model_version: str, recent: int = 20) -> dict[str, Any] | None:
        """Promote's decision on a model, from the model registry; None while undecided.

        Promote registers every judged model (Approved or Rejected, with its reason and
        both test accuracies); an Approved one is decided once it is the champion too.
        """
        sm = self.client("sagemaker")
        try:
            packages = sm.list_model_packages(
                ModelPackageGroupName=self.model_package_group,
                SortBy="CreationTime",
                SortOrder="Descending",
                MaxResults=recent,
            )["ModelPackageSummaryList"]
        except ClientError as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None  # nothing judged yet
            raise
        for summary in packages:
            package = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            meta = package.get("CustomerMetadataProperties") or {}
            if meta.get("training_job") != model_version:
                continue
            approved = package.get("ModelApprovalStatus") == "Approved"
            champion = self.champion() or {}
            if approved and champion.get("model_version") != model_version:
                return None  # registered; the champion parameter is written next
            return {
                "model_version": model_version,
                "outcome": "promoted" if approved else "rejected",
                "reason": meta.get("reason", ""),
                "test_accuracy": meta.get("test_accuracy"),
                "champion_test_accuracy": meta.get("champion_test_accuracy"),
            }
        return None

    def judged_version(self, kind: str, job_name: str) -> str | None:
        """The model promote judges for a finished job: the job, or a tuning job's best."""
        sm = self.client("sagemaker")
        if kind == "tuning":
            tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name)
            return (tuning.get("BestTrainingJob") or {}).get("TrainingJobName")
        return job_name

    def activity(self) -> list[str]:
        """What keeps the stack busy now; empty when it is idle.

        Idle: no message waiting or in flight in a work queue (dead-letter queues do not
        count), no training or tuning job running, the endpoint not being created or
        updated, and the latest finished job's model judged by promote.
        """
        busy = [f"{q}={n}" for q, n in self.queue_depths(dlqs=False).items() if n]
        if not self.has_sagemaker:
            return busy
        jobs = self.training_jobs(limit=10)
        tunings = self.tuning_jobs(limit=5)
        running = [j["TrainingJobName"] for j in jobs if j["TrainingJobStatus"] in JOB_RUNNING]
        running += [
            t["HyperParameterTuningJobName"]
            for t in tunings
            if t["HyperParameterTuningJobStatus"] in JOB_RUNNING
        ]
        busy += [f"job {name} running" for name in running]
        sm = self.client("sagemaker")
        try:
            endpoint = sm.describe_endpoint(EndpointName=self.endpoint_name)
            if endpoint["EndpointStatus"] in ENDPOINT_BUSY:
                busy.append(f"endpoint {endpoint['EndpointStatus']}")
        except ClientError:
            pass  # no endpoint yet
        if not running:
            pending = self._undecided_model(jobs, tunings)
            if pending:
                busy.append(f"promotion of {pending} pending")
        return busy

    def _undecided_model(
        self, jobs: list[dict[str, Any]], tunings: list[dict[str, Any]]
    ) -> str | None:
        finished = [
            ("training", j["TrainingJobName"], j["CreationTime"])
            for j in jobs
            if j["TrainingJobStatus"] == "Completed"
        ]
        finished += [
            ("tuning", t["HyperParameterTuningJobName"], t["CreationTime"])
            for t in tunings
            if t["HyperParameterTuningJobStatus"] == "Completed"
        ]
        if not finished:
            return None
        kind, name, _ = max(finished, key=lambda f: f[2])
        if kind == "training":
            parent = self.client("sagemaker").describe_training_job(TrainingJobName=name)
            if parent.get("TuningJobArn"):  # a trial: its tuning job's best is judged
                tuning = parent["TuningJobArn"].rsplit("/", 1)[-1]
                kind, name = "tuning", tuning
        version = self.judged_version(kind, name)
        if version is None or self.decision(version) is not None:
            return None
        return version

    def wait(self, predicate: Any, timeout: float, every: float = 2.0, what: str = "") -> Any:
        return wait_until(predicate, timeout, what or "the stack", every)
