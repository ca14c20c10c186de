"""The local stack is provisioned from template.yaml's own resource properties."""

from __future__ import annotations

import json

import pytest

from dataflywheel.stack_client import StackClient
from samlocal import cfn
from samlocal.moto_server import client
from samlocal.stack import DEFAULT_TEMPLATE, LocalStack, StackError, endpoints


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("stack")
    s = LocalStack(data, sagemaker=False, schedules=False)
    s.start()
    yield s
    s.stop()


def template_resources(kind):
    t = cfn.load_template(DEFAULT_TEMPLATE)
    return [lid for lid, r in t["Resources"].items() if r["Type"] == kind and "Condition" not in r]


def test_every_queue_table_bucket_topic_of_the_template_exists(stack):
    url = stack.moto.url
    queues = {u.rsplit("/", 1)[1] for u in client("sqs", url).list_queues()["QueueUrls"]}
    assert {f"flywheel-{q}" for q in template_resources("AWS::SQS::Queue")} <= queues
    tables = set(client("dynamodb", url).list_tables()["TableNames"])
    assert {f"flywheel-{t}" for t in template_resources("AWS::DynamoDB::Table")} <= tables
    buckets = {b["Name"] for b in client("s3", url).list_buckets()["Buckets"]}
    assert {f"flywheel-{b}".lower() for b in template_resources("AWS::S3::Bucket")} <= buckets
    topics = {t["TopicArn"].rsplit(":", 1)[1] for t in client("sns", url).list_topics()["Topics"]}
    assert {f"flywheel-{t}" for t in template_resources("AWS::SNS::Topic")} <= topics


def test_redrive_and_gsi_come_from_the_template(stack):
    sqs = client("sqs", stack.moto.url)
    attrs = sqs.get_queue_attributes(
        QueueUrl=stack.physical["IngestQueue"], AttributeNames=["All"]
    )["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":flywheel-IngestQueueDLQ")
    assert int(redrive["maxReceiveCount"]) == 5
    table = client("dynamodb", stack.moto.url).describe_table(TableName="flywheel-ItemsTable")[
        "Table"
    ]
    assert [g["IndexName"] for g in table["GlobalSecondaryIndexes"]] == ["state-index"]


def test_bucket_notifications_come_from_the_template(stack):
    s3 = client("s3", stack.moto.url)
    upload = s3.get_bucket_notification_configuration(Bucket="flywheel-uploadbucket")
    assert upload["QueueConfigurations"][0]["QueueArn"].endswith(":flywheel-IngestQueue")
    conf = s3.get_bucket_notification_configuration(Bucket="flywheel-databucket")
    filters = [
        [r["Value"] for r in c["Filter"]["Key"]["FilterRules"]] for c in conf["QueueConfigurations"]
    ]
    assert ["labels/", ".csv"] in filters


def test_functions_get_local_environment_and_layers(stack):
    specs = {s.logical_id: s for s in stack.router.specs}
    assert set(specs) >= {
        "IngestFunction",
        "AutoLabelFunction",
        "HumanLabelsFunction",
        "ReviewExportFunction",
        "StartTrainingFunction",
        "PromoteFunction",
    }
    env = specs["StartTrainingFunction"].environment
    assert env["TRAINING_CODE_DIR"].endswith("training_jobs")
    assert env["ITEMS_TABLE"] == "flywheel-ItemsTable"
    assert specs["IngestFunction"].environment["LABEL_QUEUE_URL"] == stack.physical["LabelQueue"]
    assert any(str(p).endswith("functions/shared") for p in specs["IngestFunction"].layer_paths)
    assert specs["PromoteFunction"].timeout_s == 120  # the long waits are the state machine's
    assert specs["PromoteFunction"].on_failure.endswith(":flywheel-AsyncFailureDLQ")
    assert specs["TeardownFunction"].async_max_attempts == 1  # MaximumRetryAttempts: 0


def test_eventbridge_rules_and_schedules_are_wired(stack):
    rules = client("events", stack.moto.url).list_rules()["Rules"]
    patterns = [json.loads(r["EventPattern"]) for r in rules]
    assert {
        "SageMaker Training Job State Change",
        "SageMaker HyperParameter Tuning Job State Change",
    } <= {p["detail-type"][0] for p in patterns}
    assert set(stack.router.schedules) >= {
        "StartTrainingFunction.Retrain",
        "ReviewExportFunction.Daily",
    }


def test_endpoints_file_and_second_stack_refused(stack):
    info = endpoints(stack.data_dir)
    assert "outputs" not in info  # names come from DescribeStacks (test_local_cli.py)
    assert info["stack_name"] == "flywheel"
    assert info["environment"]["AWS_ENDPOINT_URL_S3"] == stack.moto.url
    assert info["environment"]["AWS_ENDPOINT_URL_CLOUDFORMATION"] == stack.moto.url
    with pytest.raises(StackError):
        endpoints(stack.data_dir / "nowhere")


def test_the_rollout_state_machine_is_provisioned_from_its_definition_file(stack):
    sfn = client("stepfunctions", stack.moto.url)
    arn = stack.physical["RolloutStateMachine"]
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
    resources = {s["Resource"] for s in definition["States"].values() if s["Type"] == "Task"}
    assert resources == {"arn:aws:lambda:us-east-1:123456789012:function:flywheel-RolloutFunction"}
    promote = {s.logical_id: s for s in stack.router.specs}["PromoteFunction"]
    assert promote.environment["ROLLOUT_STATE_MACHINE_ARN"] == arn
    assert stack.info["environment"]["AWS_ENDPOINT_URL_SFN"] == stack.moto.url


def _run(sfn, machine: str, payload: dict, timeout: float = 60) -> dict:
    import time
    import uuid

    # (moto leaves an unnamed execution's name None: name it, as AWS would)
    arn = sfn.start_execution(
        stateMachineArn=machine, name=uuid.uuid4().hex, input=json.dumps(payload)
    )["executionArn"]
    deadline = time.monotonic() + timeout
    while (done := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still running"
        time.sleep(0.3)
    return done | {"history": sfn.get_execution_history(executionArn=arn)["events"]}


def test_state_machine_lambda_tasks_run_the_local_functions_and_late_answers_are_retried(stack):
    # Given a one-step machine whose task is the rollout's bake step (it reads the template's
    # rollback alarms from moto), run by moto, its Lambda task going to the local runner
    sfn = client("stepfunctions", stack.moto.url)
    step = {
        "Type": "Task",
        "Resource": "arn:aws:lambda:us-east-1:123456789012:function:flywheel-RolloutFunction",
        "Parameters": {"action": "bake", "execution.$": "$$.Execution.Name", "state.$": "$"},
        "TimeoutSeconds": 4,
        "Retry": [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 2}],
        "ResultPath": "$.bake",
        "End": True,
    }
    machine = sfn.create_state_machine(
        name="bake-probe",
        definition=json.dumps({"StartAt": "Bake", "States": {"Bake": step}}),
        roleArn="arn:aws:iam::123456789012:role/probe",
    )["stateMachineArn"]
    state = {"rollout": {"timing": {"bake_checks": 1}}}

    # When it runs with the alarms quiet, Then the local function answered
    quiet = _run(sfn, machine, state)
    assert quiet["status"] == "SUCCEEDED", quiet
    assert json.loads(quiet["output"])["bake"]["verdict"] == "passed"

    # When the 5XX alarm fires, Then the same step says roll back
    cw = client("cloudwatch", stack.moto.url)
    cw.set_alarm_state(AlarmName="flywheel-endpoint-5xx", StateValue="ALARM", StateReason="test")
    try:
        firing = _run(sfn, machine, state)
    finally:
        cw.set_alarm_state(AlarmName="flywheel-endpoint-5xx", StateValue="OK", StateReason="test")
    assert json.loads(firing["output"])["bake"]["verdict"] == "rollback"

    # When the function's first answer comes after the task's timeout (the local fault hook),
    # Then Step Functions times the task out and the retry succeeds
    StackClient(stack.data_dir).inject_fault("RolloutFunction", delay_s=6, match={"action": "bake"})
    late = _run(sfn, machine, state)
    assert late["status"] == "SUCCEEDED", late
    assert [e["type"] for e in late["history"]].count("LambdaFunctionTimedOut") == 1
