"""The local stack is provisioned from template.yaml's own resource properties."""

from __future__ import annotations

import json

import pytest

from infra import cfn
from infra.local.moto_server import client
from infra.local.stack import DEFAULT_TEMPLATE, LocalStack, StackError, endpoints


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
    assert specs["PromoteFunction"].timeout_s == 900
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
    assert info["outputs"]["UploadBucketName"] == "flywheel-uploadbucket"
    assert info["environment"]["AWS_ENDPOINT_URL_S3"] == stack.moto.url
    with pytest.raises(StackError):
        endpoints(stack.data_dir / "nowhere")
