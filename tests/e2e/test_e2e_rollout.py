"""The rollout state machine on a real local stack: trained models, the local SageMaker's
endpoints, moto running statemachines/rollout.asl.json, its Lambda tasks on the local runner.

Per endpoint mode, one stack and two models: the first is promoted (serverless: its deploy
step answers late, so Step Functions times it out and retries it); the second trips the 5XX
rollback alarm (CloudWatch SetAlarmState) while it is being rolled out and is rolled back:
serverless by the state machine's own bake, instance by SageMaker's blue/green canary. The
rollback is recorded once and announced once (serverless: its record step answers late too).
Late answers come from the local Lambda API's fault hook (``StackClient.inject_fault``).
"""

from __future__ import annotations

import time

import pytest
from e2e_support import E2E_PARAMETERS, RunningStack, job_status, wait_for  # noqa: I001

from dataflywheel.demo import digits

pytestmark = pytest.mark.e2e

DATA = digits(0.12, seed=11)  # ~215 digits
FIRST = DATA[: len(DATA) // 2]
MORE = DATA[len(DATA) // 2 :][:40]  # new labels: the second model is a new snapshot
STEP_TIMEOUT_S = 15
ALARM = "flywheel-endpoint-5xx"
PARAMETERS = {
    **E2E_PARAMETERS,
    "TrainingEpochs": "3",  # the rollout decides, not the model's accuracy: the shortest job
    "TrainingArch": "small_cnn",
    "MinTestAccuracy": "0",  # any model clears the floor
    "PromotionMargin": "-1",  # any challenger passes the gate: the rollout decides
    "AuditFraction": "0",
    "RolloutStepTimeoutSeconds": str(STEP_TIMEOUT_S),
    "RolloutBakeSeconds": "8",
}


class Outcomes:
    """Every notification seen (the tap is drained on read)."""

    def __init__(self, c) -> None:
        self.c, self.seen = c, []

    def about(self, job: str, wait_s: float = 0) -> list[dict]:
        deadline = time.monotonic() + wait_s
        while True:
            self.seen += self.c.notifications(wait_s=1)
            found = [n["message"] for n in self.seen if n["message"].get("job") == job]
            if found or time.monotonic() >= deadline:
                return found

    def outcome(self, job: str, timeout: float = 600) -> dict:
        (note,) = wait_for(lambda: self.about(job), timeout, f"the outcome of {job}")
        return note


def upload(c, items, tag: str) -> None:
    s3 = c.client("s3")
    for d in items:
        s3.put_object(
            Bucket=c.upload_bucket,
            Key=f"labeled/{d['label']}/{tag} {d['index']}.png",
            Body=d["png"],
            Metadata={"flywheel-sampling": "random"},
        )


def train(c) -> str:
    result = c.invoke("StartTrainingFunction", {"reason": "manual", "tuning": False})
    assert result["started"] and result["new_job"], result
    assert job_status(c, result["job_name"], timeout=900) == "Completed"
    return result["job_name"]


def execution(c, job: str) -> dict:
    sfn = c.client("stepfunctions")
    arn = c.output("RolloutStateMachineArn")
    name = f"rollout-{job}"
    found = [e for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["name"] == name]
    assert found, f"no rollout execution for {job}"
    done = wait_for(
        lambda: (d := sfn.describe_execution(executionArn=found[0]["executionArn"]))["status"]
        != "RUNNING"
        and d,
        300,
        f"the end of {name}",
    )
    events = sfn.get_execution_history(executionArn=done["executionArn"], maxResults=1000)
    return done | {"events": events["events"]}


def lambda_steps(events: list[dict]) -> list[tuple[str, str]]:
    """(state entered, Lambda event type) in order: which step was scheduled, timed out..."""
    out, state = [], ""
    for e in events:
        if e["type"] == "TaskStateEntered":
            state = e["stateEnteredEventDetails"]["name"]
        elif e["type"].startswith("LambdaFunction"):
            out.append((state, e["type"]))
    return out


def start(tmp_path_factory, mode: str):
    running = RunningStack(
        tmp_path_factory.mktemp(f"rollout-{mode}") / "data", {**PARAMETERS, "EndpointMode": mode}
    )
    running.data_dir.mkdir(parents=True)
    running.start()
    return running


@pytest.fixture(scope="module")
def serverless(tmp_path_factory):
    running = start(tmp_path_factory, "serverless")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    running = start(tmp_path_factory, "instance")
    yield running
    running.stop()


def first_model(c, tag: str, late_deploy: bool) -> str:
    upload(c, FIRST, tag)
    wait_for(lambda: sum(c.counts().values()) >= len(FIRST), 240, "ingest")
    if late_deploy:
        c.inject_fault("RolloutFunction", STEP_TIMEOUT_S + 5, match={"action": "deploy"})
    return train(c)


def test_serverless_promote_with_a_late_deploy_step_then_an_alarm_rolls_back(serverless):
    c = serverless.client
    outcomes = Outcomes(c)
    sm, cw = c.client("sagemaker"), c.client("cloudwatch")

    # Given a first model whose rollout's deploy step answers after the task's timeout
    first = first_model(c, "a", late_deploy=True)

    # Then it is promoted once: the step was timed out and retried, nothing asked twice
    note = outcomes.outcome(first)
    assert note["outcome"] == "promoted", note
    run = execution(c, first)
    assert run["status"] == "SUCCEEDED"
    steps = lambda_steps(run["events"])
    assert ("Deploy", "LambdaFunctionTimedOut") in steps
    assert [s for s, kind in steps if kind == "LambdaFunctionScheduled"][:2] == ["Deploy", "Deploy"]
    assert ("Bake", "LambdaFunctionSucceeded") in steps  # serverless: the state machine baked
    champion = c.champion()
    assert champion["model_version"] == first
    endpoint = sm.describe_endpoint(EndpointName=c.endpoint_name)
    assert endpoint["EndpointConfigName"] == champion["endpoint_config"]

    # Given a second model (new labels), whose record step will answer late too
    upload(c, MORE, "b")
    wait_for(lambda: sum(c.counts().values()) >= len(FIRST) + len(MORE), 240, "ingest")
    c.inject_fault("RolloutFunction", STEP_TIMEOUT_S + 5, match={"action": "record"})
    result = c.invoke("StartTrainingFunction", {"reason": "manual", "tuning": False})
    second = result["job_name"]
    assert job_status(c, second, timeout=900) == "Completed"

    # When the endpoint switches to it and the 5XX alarm fires during the bake
    wait_for(
        lambda: sm.describe_endpoint(EndpointName=c.endpoint_name)["EndpointConfigName"]
        != champion["endpoint_config"],
        300,
        "the switch to the second model",
        every=0.3,
    )
    cw.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="e2e: 5XX")
    try:
        run = execution(c, second)
    finally:
        cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="e2e")

    # Then the state machine rolled the endpoint back to the champion's config
    assert run["status"] == "FAILED" and run["error"] == "RolledBack", run
    endpoint = wait_for(
        lambda: (e := sm.describe_endpoint(EndpointName=c.endpoint_name))["EndpointStatus"]
        == "InService"
        and e,
        120,
        "the endpoint",
    )
    assert endpoint["EndpointConfigName"] == champion["endpoint_config"]
    assert c.champion()["model_version"] == first
    # And recorded it once, announced once, though the record step ran twice
    steps = lambda_steps(run["events"])
    assert ("RecordRolledBack", "LambdaFunctionTimedOut") in steps
    note = outcomes.outcome(second)
    assert note["outcome"] == "rolled_back" and ALARM in note["reason"], note
    assert len(outcomes.about(second, wait_s=3)) == 1


def test_instance_promote_then_the_canary_alarm_rolls_back_in_sagemaker(instance):
    c = instance.client
    outcomes = Outcomes(c)
    sm, cw = c.client("sagemaker"), c.client("cloudwatch")

    # Given a first model on an instance endpoint
    first = first_model(c, "a", late_deploy=False)
    note = outcomes.outcome(first)
    assert note["outcome"] == "promoted", note
    # CreateEndpoint has no canary: the state machine baked the new endpoint itself
    assert ("Bake", "LambdaFunctionSucceeded") in lambda_steps(execution(c, first)["events"])
    champion = c.champion()

    # When a second model's blue/green update is under way and the 5XX alarm fires
    upload(c, MORE, "b")
    wait_for(lambda: sum(c.counts().values()) >= len(FIRST) + len(MORE), 240, "ingest")
    second = train(c)
    wait_for(
        lambda: sm.describe_endpoint(EndpointName=c.endpoint_name)["EndpointStatus"] == "Updating",
        300,
        "the blue/green update",
        every=0.2,
    )
    cw.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="e2e: 5XX")
    try:
        run = execution(c, second)
    finally:
        cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="e2e")

    # Then SageMaker rolled it back, and the state machine read that and recorded it once
    assert run["status"] == "FAILED" and run["error"] == "RolledBack", run
    endpoint = sm.describe_endpoint(EndpointName=c.endpoint_name)
    assert endpoint["EndpointConfigName"] == champion["endpoint_config"]
    assert "rolled back" in endpoint.get("FailureReason", "").lower()
    deploys = [s for s, kind in lambda_steps(run["events"]) if kind == "LambdaFunctionScheduled"]
    assert deploys.count("Deploy") == 1 and "RollBack" not in deploys  # SageMaker did it
    note = outcomes.outcome(second)
    assert note["outcome"] == "rolled_back", note
    assert len(outcomes.about(second, wait_s=3)) == 1
    assert c.champion()["model_version"] == first
