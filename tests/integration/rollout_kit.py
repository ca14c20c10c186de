"""The rollout state machine under moto's interpreter, for integration tests: a fake
SageMaker endpoint, RolloutFunction's handler as the state machine's Lambda, and promote
driven until its rollout ends (used by test_rollout, test_dashboard, test_spot_checks)."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable

import promote
import rollout
from flywheel.adapters import sagemaker as sm_adapter
from integration_kit import STACK, LambdaContext, load_event, model_tar, tap_notifications

from samlocal import moto_stepfunctions
from samlocal.cfn import provision_state_machines

JOB = "dfw-0123456789abcdef"
CHAMPION = "dfw-champion00000"
CHAMPION_CONFIG = f"{CHAMPION}-aaaaaa"
ENDPOINT = f"{STACK}-classifier"
STEP_TIMEOUT_S = 6  # roomy: a step on a loaded CI machine must not time out by itself
TIMING = {
    "ROLLOUT_POLL_SECONDS": "1",
    "ROLLOUT_BAKE_SECONDS": "2",
    "ROLLOUT_STEP_TIMEOUT_SECONDS": str(STEP_TIMEOUT_S),
}


class FakeEndpoints(sm_adapter.Endpoints):
    def __init__(self) -> None:
        self.state: dict[str, dict] = {}
        self.creates: list[str] = []
        self.updates: list[dict] = []
        self.deletes: list[str] = []
        self.blue_green_rolls_back = False
        self.creation_fails = False
        self.on_switch: Callable[[str], None] = lambda config: None
        self._lock = threading.Lock()

    def serving(self, config: str) -> None:
        self.state[ENDPOINT] = {
            "EndpointName": ENDPOINT,
            "EndpointConfigName": config,
            "EndpointStatus": "InService",
        }

    def describe(self, name: str) -> dict | None:
        with self._lock:
            rec = self.state.get(name)
            if rec is None:
                return None
            if rec["EndpointStatus"] == "Deleting" and rec.pop("_read", False):
                del self.state[name]  # gone on the read after the one that saw it Deleting
                return None
            if rec["EndpointStatus"] in ("Creating", "Updating", "Deleting"):
                if rec.pop("_read", False):
                    self._finish(rec)
                else:
                    rec["_read"] = True
            return {k: v for k, v in copy.deepcopy(rec).items() if not k.startswith("_")}

    def _finish(self, rec: dict) -> None:
        pending = rec.pop("PendingDeploymentSummary", None)
        rec["EndpointStatus"] = "InService"
        if pending is None and self.creation_fails:
            rec.update(EndpointStatus="Failed", FailureReason="model server did not pass /ping")
        elif pending is None:  # created
            self.on_switch(rec["EndpointConfigName"])
        elif self.blue_green_rolls_back and rec.pop("_blue_green"):
            rec["FailureReason"] = "Update rolled back: CloudWatch alarm(s) in ALARM state"
        else:
            rec["EndpointConfigName"] = pending["EndpointConfigName"]
            self.on_switch(rec["EndpointConfigName"])

    def create(self, name: str, config: str, tags: list[dict]) -> None:
        with self._lock:
            self.creates.append(config)
            self.state[name] = {
                "EndpointName": name,
                "EndpointConfigName": config,
                "EndpointStatus": "Creating",
            }

    def delete(self, name: str) -> bool:
        with self._lock:
            self.deletes.append(name)
            rec = self.state.get(name)
            if rec is None:
                return False
            assert rec["EndpointStatus"] == "InService", "DeleteEndpoint on a busy endpoint"
            rec["EndpointStatus"] = "Deleting"
            return True

    def update(self, request: dict) -> None:
        with self._lock:
            self.updates.append(copy.deepcopy(request))
            rec = self.state[request["EndpointName"]]
            assert rec["EndpointStatus"] == "InService", "UpdateEndpoint on a busy endpoint"
            rec.update(
                EndpointStatus="Updating",
                PendingDeploymentSummary={"EndpointConfigName": request["EndpointConfigName"]},
                _blue_green="DeploymentConfig" in request,
                FailureReason=None,
            )


class Lambda:
    """RolloutFunction's handler, invoked by the state machine; answers can be made late."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.calls: list[dict] = []
        self.late: dict[str, float] = {}  # action -> seconds its first answer comes late

    def __call__(self, function: str, payload: bytes) -> tuple[int, bytes, str | None]:
        assert function.endswith(f":function:{self.function_name}"), function
        event = json.loads(payload)
        self.calls.append(event)
        try:
            body, error = rollout.handler(event, LambdaContext()), None
        except Exception as exc:  # what Lambda returns for an unhandled error
            body, error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}, "Unhandled"
        delay = self.late.pop(event["action"], 0)
        time.sleep(delay)  # the function ran; its answer comes after the task's timeout
        return 200, json.dumps(body).encode(), error

    def actions(self) -> list[str]:
        return [c["action"] for c in self.calls]


def fake_endpoints(monkeypatch) -> FakeEndpoints:
    """SageMaker's endpoint calls go to a FakeEndpoints (moto has no UpdateEndpoint)."""
    fake = FakeEndpoints()
    monkeypatch.setattr(sm_adapter, "endpoints", lambda: fake)
    return fake


@contextlib.contextmanager
def rollouts(stack):
    """The stack with the rollout state machine provisioned in moto's executing backend, its
    Lambda tasks running RolloutFunction's handler here, the rollback alarms and an SQS tap on
    the notifications topic (``outcomes``)."""
    stack.use("PromoteFunction", **TIMING)
    stack.use("RolloutFunction")  # the same values where the two environments overlap
    stack.sfn = stack.session.client("stepfunctions")
    stack.cw = stack.session.client("cloudwatch")
    for lid in ("Endpoint5XXAlarm", "EndpointLatencyAlarm"):
        props = stack.resolved["Resources"][lid]["Properties"]
        stack.cw.put_metric_alarm(
            AlarmName=props["AlarmName"],
            Namespace=props["Namespace"],
            MetricName=props["MetricName"],
            Dimensions=props["Dimensions"],
            Statistic="Sum",
            Period=int(props["Period"]),
            EvaluationPeriods=int(props["EvaluationPeriods"]),
            Threshold=float(props["Threshold"]),
            ComparisonOperator=props["ComparisonOperator"],
        )
    tap_notifications(stack)
    stack.fn = Lambda(stack.resolved["Refs"]["RolloutFunction"])
    uninstall = moto_stepfunctions.install(stack.fn)
    # The executing backend is moto's parser backend: create the state machine there.
    provision_state_machines(stack.resolved, stack.session, stack.physical)
    yield stack
    uninstall()


def finished_job(stack, name: str, metrics: dict) -> None:
    stack.sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/dataflywheel-SageMakerExecutionRole",
        OutputDataConfig={"S3OutputPath": f"s3://{stack.data_bucket}/models"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    stack.s3.put_object(
        Bucket=stack.data_bucket, Key=f"models/{name}/output/model.tar.gz", Body=model_tar(metrics)
    )


def set_champion(stack) -> None:
    stack.ssm.put_parameter(
        Name=f"/{STACK}/champion",
        Type="String",
        Value=json.dumps(
            {
                "model_version": CHAMPION,
                "training_job": CHAMPION,
                "model_name": CHAMPION,
                "endpoint_config": CHAMPION_CONFIG,
                "model_data": f"s3://x/models/{CHAMPION}/output/model.tar.gz",
                "threshold": 0.8,
                "target_accuracy": 0.95,
                "test_accuracy": 0.90,
                "classes": ["cat", "dog"],
                "test_set_id": "t" * 64,
                "promoted_at": "2026-11-28T00:00:00.000000Z",
            }
        ),
    )


def promote_and_wait(stack, context, timeout: float = 90, job: str = JOB) -> dict:
    """promote handles the job's Completed event; the rollout it starts runs to its end."""
    event = load_event("sagemaker_training_job_completed.json")
    event["detail"]["TrainingJobName"] = job
    started = promote.handler(event, context)
    assert started["outcome"] == "deploying", started
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = stack.sfn.describe_execution(executionArn=started["execution_arn"])
        if done["status"] != "RUNNING":
            return done
        time.sleep(0.5)
    raise AssertionError(f"rollout still running after {timeout} s; steps: {stack.fn.actions()}")


def history(stack, execution_arn: str) -> list[dict]:
    return stack.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def packages(stack) -> list[dict]:
    summaries = stack.sm.list_model_packages(ModelPackageGroupName=f"{STACK}-classifier")
    return [
        stack.sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
        for p in summaries["ModelPackageSummaryList"]
    ]
