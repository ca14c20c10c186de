"""promote: job state change -> gate -> registry -> model/config/endpoint -> champion -> sweep.

moto records models, endpoint configs, model packages and training jobs; it has no
UpdateEndpoint, so the endpoint calls go to ``FakeEndpoints`` (a typed fake of the
``Endpoints`` adapter) that can complete, roll back or stay Updating.
"""

from __future__ import annotations

import copy
import json

import promote
import pytest
from flywheel.adapters import items
from flywheel.adapters import sagemaker as sm_adapter
from flywheel.errors import EndpointNotReady
from integration_kit import STACK, load_event, metrics_doc, model_tar

JOB = "dfw-0123456789abcdef"


class FakeEndpoints(sm_adapter.Endpoints):
    """Endpoint lifecycle.

    'complete' switches config, 'rollback' keeps the old one, 'stuck' stays Updating.
    """

    def __init__(self, behaviour: str = "complete"):
        self.behaviour = behaviour
        self.state: dict[str, dict] = {}
        self.updates: list[dict] = []

    def describe(self, name: str) -> dict | None:
        return copy.deepcopy(self.state.get(name))

    def create(self, name: str, config: str, tags: list[dict]) -> None:
        status = "Creating" if self.behaviour == "stuck" else "InService"
        self.state[name] = {
            "EndpointName": name,
            "EndpointConfigName": config,
            "EndpointStatus": status,
        }

    def update(self, request: dict) -> None:
        self.updates.append(request)
        current = self.state[request["EndpointName"]]
        if self.behaviour == "complete":
            current["EndpointConfigName"] = request["EndpointConfigName"]
        elif self.behaviour == "stuck":
            current["EndpointStatus"] = "Updating"
        # rollback: alarms fired, SageMaker restored the old config; status back to InService


@pytest.fixture
def endpoints(monkeypatch):
    fake = FakeEndpoints()
    monkeypatch.setattr(sm_adapter, "endpoints", lambda: fake)
    return fake


@pytest.fixture
def env(stack):
    stack.use("PromoteFunction", ENDPOINT_WAIT_SECONDS="0")
    # Observe SNS outcomes through a subscribed queue.
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
    return stack


def outcomes(stack) -> list[dict]:
    got = stack.sqs.receive_message(QueueUrl=stack.physical["Outcomes"], MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


def finished_job(stack, name: str, metrics: dict) -> None:
    """A Completed training job in moto plus its model.tar.gz where moto says it is."""
    stack.sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/dataflywheel-SageMakerExecutionRole",
        OutputDataConfig={"S3OutputPath": f"s3://{stack.data_bucket}/models"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{stack.data_bucket}/datasets/x/train/",
                    }
                },
            }
        ],
    )
    stack.s3.put_object(
        Bucket=stack.data_bucket, Key=f"models/{name}/output/model.tar.gz", Body=model_tar(metrics)
    )


def event_for(name: str) -> dict:
    event = load_event("sagemaker_training_job_completed.json")
    event["detail"]["TrainingJobName"] = name
    return event


def set_champion(stack, version: str) -> None:
    stack.ssm.put_parameter(
        Name=f"/{STACK}/champion",
        Type="String",
        Value=json.dumps(
            {
                "model_version": version,
                "training_job": version,
                "model_name": version,
                "endpoint_config": f"{version}-aaaaaa",
                "model_data": f"s3://x/models/{version}/output/model.tar.gz",
                "threshold": 0.8,
                "target_accuracy": 0.95,
                "test_accuracy": 0.95,
                "classes": ["cat", "dog"],
                "test_set_id": "t" * 64,
                "promoted_at": "2026-11-28T00:00:00.000000Z",
            }
        ),
    )


def packages(stack) -> list[dict]:
    summaries = stack.sm.list_model_packages(ModelPackageGroupName=f"{STACK}-classifier")
    return [
        stack.sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
        for p in summaries["ModelPackageSummaryList"]
    ]


def test_first_model_above_the_floor_is_deployed_and_becomes_champion(env, endpoints, context):
    # Given a finished job (no champion yet) and items waiting for a model
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    for n, state in enumerate(["unlabeled", "needs_review", "auto_labeled", "human_labeled"]):
        items.put_new(
            env.table, {"item_id": f"{n:064x}", "state": state, "image_key": f"images/{n:064x}.png"}
        )
    audit = f"{9:064x}"  # the audit stream waits for people, blind: never re-queued
    items.put_new(
        env.table,
        {"item_id": audit, "state": "needs_review", "review_reason": "audit", "image_key": "k"},
    )

    # When promote handles the Completed event
    result = promote.handler(event_for(JOB), context)

    # Then the model is live on a serverless endpoint, the champion is recorded...
    assert result["outcome"] == "promoted"
    model = env.sm.describe_model(ModelName=JOB)
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith(f"{JOB}/output/model.tar.gz")
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6-cpu-py312")
    endpoint = endpoints.describe(f"{STACK}-classifier")
    config = env.sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert config["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] == 3072
    champion = env.champion()
    assert champion["model_version"] == JOB and champion["threshold"] == 0.8
    assert champion["endpoint_config"] == endpoint["EndpointConfigName"]
    # ...registered as Approved, announced, and unlabeled + needs_review items are re-queued
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["CustomerMetadataProperties"]["training_job"] == JOB
    assert sorted(m["item_id"] for m in env.drain("LabelQueue")) == [f"{0:064x}", f"{1:064x}"]
    assert [o["outcome"] for o in outcomes(env)] == ["promoted"]


def test_challenger_that_loses_changes_nothing(env, endpoints, context):
    # Given a champion and a challenger that is worse on the same test set
    set_champion(env, "dfw-champion00000")
    finished_job(env, JOB, metrics_doc(JOB, 0.91, champion_accuracy=0.95))

    # When promote handles its event
    result = promote.handler(event_for(JOB), context)

    # Then it is rejected: registry says why, no model / endpoint change, champion unchanged
    assert result["outcome"] == "rejected" and "does not beat" in result["reason"]
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert env.sm.list_models()["Models"] == []
    assert endpoints.state == {}
    assert env.champion()["model_version"] == "dfw-champion00000"
    assert [o["outcome"] for o in outcomes(env)] == ["rejected"]


def test_failed_training_job_notifies_and_changes_nothing(env, endpoints, monkeypatch, context):
    # Given a job SageMaker reports as Failed (moto jobs always complete: typed fake describe)
    event = load_event("sagemaker_training_job_failed.json")
    monkeypatch.setattr(sm_adapter, "describe_training_job", lambda name: event["detail"])

    # When promote handles the Failed event
    result = promote.handler(event, context)

    # Then people are told why, and nothing else happened
    assert result["outcome"] == "failed" and "CUDA out of memory" in result["reason"]
    assert outcomes(env)[0]["reason"] == "AlgorithmError: CUDA out of memory"
    assert env.champion() is None and env.sm.list_models()["Models"] == []


def test_update_that_rolls_back_keeps_the_old_champion(env, endpoints, context):
    # Given an instance endpoint serving the champion, and a better challenger
    env.use("PromoteFunction", ENDPOINT_WAIT_SECONDS="0", ENDPOINT_MODE="instance")
    set_champion(env, "dfw-champion00000")
    endpoints.state[f"{STACK}-classifier"] = {
        "EndpointName": f"{STACK}-classifier",
        "EndpointConfigName": "dfw-champion00000-aaaaaa",
        "EndpointStatus": "InService",
    }
    endpoints.behaviour = "rollback"
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))

    # When promote deploys it and the alarms roll the canary back
    result = promote.handler(event_for(JOB), context)

    # Then the blue/green request carried the rollback alarms, and the champion is unchanged
    (update,) = endpoints.updates
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": f"{STACK}-endpoint-5xx"},
        {"AlarmName": f"{STACK}-endpoint-latency"},
    ]
    assert result["outcome"] == "rolled_back"
    assert env.champion()["model_version"] == "dfw-champion00000"
    assert packages(env)[0]["ModelApprovalStatus"] == "Rejected"
    assert env.drain("LabelQueue") == []


def test_endpoint_still_updating_fails_so_the_event_retries(env, endpoints, context):
    endpoints.behaviour = "stuck"
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    with pytest.raises(EndpointNotReady):
        promote.handler(event_for(JOB), context)
    assert env.champion() is None
    # the retry (endpoint now in service with our config) completes the promotion
    endpoints.state[f"{STACK}-classifier"]["EndpointStatus"] = "InService"
    assert promote.handler(event_for(JOB), context)["outcome"] == "promoted"
    assert env.champion()["model_version"] == JOB


def test_redelivered_event_is_idempotent(env, endpoints, context):
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    first = promote.handler(event_for(JOB), context)
    second = promote.handler(event_for(JOB), context)
    assert first == second
    assert len(packages(env)) == 1
    assert len(outcomes(env)) == 1


def test_tuning_job_promotes_its_best_training_job(env, endpoints, monkeypatch, context):
    best = "dfw-h0123456789abcde-003-1a2b3c4d"
    finished_job(env, best, metrics_doc(best, 0.94))
    event = load_event("sagemaker_tuning_job_completed.json")
    monkeypatch.setattr(
        sm_adapter,
        "describe_tuning_job",
        lambda name: {
            **event["detail"],
            "BestTrainingJob": {"TrainingJobName": best, "TrainingJobStatus": "Completed"},
        },
    )

    result = promote.handler(event, context)

    assert result["outcome"] == "promoted" and result["model_version"] == best
    assert env.champion()["training_job"] == best
