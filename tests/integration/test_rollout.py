"""The rollout state machine, run: statemachines/rollout.asl.json under moto's ASL interpreter.

promote starts the execution as in AWS; moto runs the definition (Wait, Choice, Retry,
Catch, TimeoutSecondsPath); each Lambda task runs RolloutFunction's real handler in this
process (``infra.local.moto_stepfunctions.install``, the hook the local stack uses with its
Lambda API). moto has no UpdateEndpoint, so the endpoint is ``FakeEndpoints``: an update
takes one DescribeEndpoint to finish, and with ``blue_green_rolls_back`` an update carrying
SageMaker's AutoRollbackConfiguration ends InService on the old config, as a canary whose
alarms fired does.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable

import promote
import pytest
import rollout
from flywheel.adapters import sagemaker as sm_adapter
from flywheel.domain.rollout import execution_name
from flywheel.services.promote import promote_job
from flywheel.settings import PromoteSettings
from integration_kit import STACK, LambdaContext, load_event, metrics_doc, model_tar

from infra.cfn import provision_state_machines
from infra.local import moto_stepfunctions

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
            if rec["EndpointStatus"] in ("Creating", "Updating"):
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


@pytest.fixture
def endpoints(monkeypatch):
    fake = FakeEndpoints()
    monkeypatch.setattr(sm_adapter, "endpoints", lambda: fake)
    return fake


@pytest.fixture
def env(stack):
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
    sns = stack.session.client("sns")
    url = stack.sqs.create_queue(QueueName="outcomes")["QueueUrl"]
    arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=stack.physical["NotificationsTopic"],
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    stack.physical["Outcomes"] = url
    stack.fn = Lambda(stack.resolved["Refs"]["RolloutFunction"])
    uninstall = moto_stepfunctions.install(stack.fn)
    # The executing backend is moto's parser backend: create the state machine there.
    provision_state_machines(stack.resolved, stack.session, stack.physical)
    yield stack
    uninstall()


def outcomes(stack) -> list[dict]:
    got = stack.sqs.receive_message(QueueUrl=stack.physical["Outcomes"], MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


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


def promote_and_wait(stack, context, timeout: float = 90) -> dict:
    """promote handles the job's Completed event; the rollout it starts runs to its end."""
    event = load_event("sagemaker_training_job_completed.json")
    event["detail"]["TrainingJobName"] = JOB
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


def test_serverless_first_model_is_deployed_baked_and_becomes_champion(env, endpoints, context):
    # Given a finished job, no champion, and an item waiting for a model
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    from flywheel.adapters import items

    items.put_new(env.table, {"item_id": "0" * 64, "state": "unlabeled", "image_key": "k"})

    # When promote starts the rollout and it runs
    done = promote_and_wait(env, context)

    # Then the endpoint was created with the new config, baked (alarms read while quiet)...
    assert done["status"] == "SUCCEEDED", done
    (config,) = endpoints.creates
    assert endpoints.updates == []
    assert endpoints.state[ENDPOINT]["EndpointConfigName"] == config
    assert env.fn.actions().count("bake") == 2  # bake_s 2 / poll_s 1
    # ...and only then recorded: champion, Approved package, relabel sweep, one notification
    champion = env.champion()
    assert champion["model_version"] == JOB and champion["endpoint_config"] == config
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Approved"
    assert [m["item_id"] for m in env.drain("LabelQueue")] == ["0" * 64]
    (note,) = outcomes(env)
    assert note["outcome"] == "promoted" and note["model_version"] == JOB


def test_serverless_alarm_during_the_bake_rolls_back_once_even_if_the_record_is_retried(
    env, endpoints, context
):
    # Given a champion served from its config, and a better challenger whose serving trips
    # the 5XX alarm as soon as it takes traffic
    set_champion(env)
    endpoints.serving(CHAMPION_CONFIG)
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))
    alarm = f"{STACK}-endpoint-5xx"

    def trip(config: str) -> None:
        if config != CHAMPION_CONFIG:
            env.cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5XX")

    endpoints.on_switch = trip
    # and the record step's first answer arrives after the task's timeout
    env.fn.late["record"] = STEP_TIMEOUT_S + 2

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then the state machine rolled the endpoint back to the champion's config: one update
    # to the new config, one back, never the new one again
    assert done["status"] == "FAILED" and done["error"] == "RolledBack", done
    assert [u["EndpointConfigName"] for u in endpoints.updates][1:] == [CHAMPION_CONFIG]
    assert len(endpoints.updates) == 2
    assert "DeploymentConfig" not in endpoints.updates[0]  # serverless: no blue/green
    assert endpoints.state[ENDPOINT]["EndpointConfigName"] == CHAMPION_CONFIG
    # the record step ran twice (timed out, retried) and recorded once
    assert env.fn.actions().count("record") == 2
    assert any(e["type"] == "LambdaFunctionTimedOut" for e in history(env, done["executionArn"]))
    (note,) = outcomes(env)
    assert note["outcome"] == "rolled_back" and alarm in note["reason"]
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert env.champion()["model_version"] == CHAMPION
    assert env.drain("LabelQueue") == []


def test_instance_canary_rolled_back_by_sagemaker_is_recorded_not_resent(env, endpoints, context):
    # Given an instance endpoint serving the champion, whose canary's alarms will fire
    env.use("PromoteFunction", ENDPOINT_MODE="instance", **TIMING)
    env.use("RolloutFunction", ENDPOINT_MODE="instance")
    set_champion(env)
    endpoints.serving(CHAMPION_CONFIG)
    endpoints.blue_green_rolls_back = True
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then the one blue/green request carried the rollback alarms; SageMaker rolled back, and
    # the state machine recorded it without asking for the update again
    assert done["status"] == "FAILED" and done["error"] == "RolledBack", done
    (update,) = endpoints.updates
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": f"{STACK}-endpoint-5xx"},
        {"AlarmName": f"{STACK}-endpoint-latency"},
    ]
    assert "bake" not in env.fn.actions()  # SageMaker's canary is the bake
    (note,) = outcomes(env)
    assert note["outcome"] == "rolled_back" and "Update rolled back" in note["reason"]
    assert env.champion()["model_version"] == CHAMPION


def test_instance_deploy_step_answering_late_is_retried_and_asks_sagemaker_once(
    env, endpoints, context
):
    # Given an instance endpoint serving the champion, and a deploy step whose first answer
    # arrives after the task's timeout (the update was requested all the same)
    env.use("PromoteFunction", ENDPOINT_MODE="instance", **TIMING)
    env.use("RolloutFunction", ENDPOINT_MODE="instance")
    set_champion(env)
    endpoints.serving(CHAMPION_CONFIG)
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))
    env.fn.late["deploy"] = STEP_TIMEOUT_S + 2

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then Step Functions timed the step out and retried it; the retry asked nothing again
    assert done["status"] == "SUCCEEDED", done
    events = history(env, done["executionArn"])
    assert "LambdaFunctionTimedOut" in [e["type"] for e in events]
    assert env.fn.actions()[:2] == ["deploy", "deploy"]
    (update,) = endpoints.updates
    assert env.champion()["endpoint_config"] == update["EndpointConfigName"]
    assert [n["outcome"] for n in outcomes(env)] == ["promoted"]


def test_an_endpoint_that_fails_is_recorded_failed_and_no_champion(env, endpoints, context):
    # Given a first model whose endpoint will fail to come up
    endpoints.creation_fails = True
    finished_job(env, JOB, metrics_doc(JOB, 0.93))

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then it ends DeploymentFailed, the failure recorded once with SageMaker's reason
    assert done["status"] == "FAILED" and done["error"] == "DeploymentFailed", done
    (note,) = outcomes(env)
    assert note["outcome"] == "failed" and "did not pass /ping" in note["reason"]
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert env.champion() is None
    assert "bake" not in env.fn.actions()


def test_a_finished_rollout_is_not_started_again(env, endpoints, context):
    # Given a model whose rollout ran to its end
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    done = promote_and_wait(env, context)
    assert done["status"] == "SUCCEEDED"
    outcomes(env)

    # When its job's event is handled again (after the idempotency record expired)
    again = promote_job(PromoteSettings.from_env(), "training", JOB)

    # Then nothing starts: the champion is this model
    assert again.outcome == "already_champion"
    executions = env.sfn.list_executions(stateMachineArn=env.physical["RolloutStateMachine"])
    assert [e["name"] for e in executions["executions"]] == [execution_name(JOB)]
    assert outcomes(env) == []
