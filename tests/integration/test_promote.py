"""promote: job state change -> gate -> model + endpoint config -> the rollout state machine.

What happens after the gate (deploy, bake, champion, relabel sweep) is the rollout state
machine's: tests/integration/test_rollout.py runs it. Here the execution is only started
(moto records it without running it).
"""

from __future__ import annotations

import io
import json
import tarfile

import promote
import pytest
from botocore.exceptions import ClientError
from flywheel.adapters import sagemaker as sm_adapter
from flywheel.adapters import storage
from flywheel.services.promote import promote_job
from flywheel.settings import PromoteSettings
from integration_kit import STACK, load_event, metrics_doc, model_tar, outcomes, tap_notifications

JOB = "dfw-0123456789abcdef"


@pytest.fixture
def env(stack):
    stack.use("PromoteFunction")
    stack.sfn = stack.session.client("stepfunctions")
    # Observe SNS outcomes through a subscribed queue.
    tap_notifications(stack)
    return stack


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


def executions(stack) -> list[dict]:
    """The rollouts started: each execution's name and input."""
    arn = stack.physical["RolloutStateMachine"]
    listed = stack.sfn.list_executions(stateMachineArn=arn)["executions"]
    return [
        {
            "name": e["name"],
            "input": json.loads(
                stack.sfn.describe_execution(executionArn=e["executionArn"])["input"]
            ),
        }
        for e in listed
    ]


def test_first_model_above_the_floor_gets_its_model_and_config_and_a_rollout(env, context):
    # Given a finished job (no champion yet)
    finished_job(env, JOB, metrics_doc(JOB, 0.93))

    # When promote handles the Completed event
    result = promote.handler(event_for(JOB), context)

    # Then the model and a serverless endpoint config exist...
    assert result["outcome"] == "deploying"
    model = env.sm.describe_model(ModelName=JOB)
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith(f"{JOB}/output/model.tar.gz")
    assert model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.6-cpu-py312")
    (execution,) = executions(env)
    rollout = execution["input"]["rollout"]
    config = env.sm.describe_endpoint_config(EndpointConfigName=rollout["endpoint_config"])
    assert config["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert config["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] == 3072
    # ...and one rollout of this model version started, with what its steps need
    assert execution["name"] == f"rollout-{JOB}"
    assert result["execution_arn"].endswith(
        f":execution:{env.physical['RolloutStateMachine'].rsplit(':', 1)[1]}:rollout-{JOB}"
    )
    assert rollout["mode"] == "serverless" and rollout["previous_config"] is None
    assert rollout["champion"]["threshold"] == 0.8 and rollout["champion"]["model_version"] == JOB
    assert rollout["package"]["ModelPackageGroupName"] == f"{STACK}-classifier"
    assert rollout["timing"] == {
        "poll_s": 30,
        "bake_s": 600,
        "step_timeout_s": 120,
        "max_polls": 120,
        "bake_checks": 20,
    }
    # Nothing is champion, registered or announced before the rollout records its outcome
    assert env.champion() is None and packages(env) == [] and outcomes(env) == []


def test_challenger_that_loses_changes_nothing(env, context):
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
    assert executions(env) == []
    assert env.champion()["model_version"] == "dfw-champion00000"
    assert [o["outcome"] for o in outcomes(env)] == ["rejected"]


def test_failed_training_job_notifies_and_changes_nothing(env, monkeypatch, context):
    # Given a job SageMaker reports as Failed (moto jobs always complete: typed fake describe)
    event = load_event("sagemaker_training_job_failed.json")
    monkeypatch.setattr(sm_adapter, "describe_training_job", lambda name: event["detail"])

    # When promote handles the Failed event
    result = promote.handler(event, context)

    # Then people are told why, and nothing else happened
    assert result["outcome"] == "failed" and "CUDA out of memory" in result["reason"]
    assert outcomes(env)[0]["reason"] == "AlgorithmError: CUDA out of memory"
    assert env.champion() is None and env.sm.list_models()["Models"] == []


@pytest.mark.parametrize(
    ("artifact", "why"),
    [
        ("bad metrics", "test.accuracy"),
        ("not a tar", "is not a readable tar.gz"),
        ("truncated", "is not a readable tar.gz"),
        ("no metrics", "metrics.json not found"),
    ],
)
def test_a_model_whose_artifact_cannot_be_judged_is_a_recorded_failure(env, context, artifact, why):
    # Given a finished job whose model.tar.gz breaks the contract (a custom training script)
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    key = f"models/{JOB}/output/model.tar.gz"
    if artifact == "bad metrics":
        doc = metrics_doc(JOB, 0.93)
        doc["test"]["accuracy"] = "high"
        body = model_tar(doc)
    elif artifact == "not a tar":
        body = b"PK\x03\x04 a zip file"
    elif artifact == "truncated":  # an upload cut short
        body = model_tar(metrics_doc(JOB, 0.93))[:200]
    else:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            info = tarfile.TarInfo("model.pt")
            info.size = 7
            tar.addfile(info, io.BytesIO(b"weights"))
        body = raw.getvalue()
    env.s3.put_object(Bucket=env.data_bucket, Key=key, Body=body)

    # When promote handles its Completed event, then again (a redelivery)
    result = promote.handler(event_for(JOB), context)
    again = promote.handler(event_for(JOB), context)

    # Then it is a failure with the reason, told once, and nothing was created or started
    assert result["outcome"] == "failed" and why in result["reason"], result
    assert again == result
    told = outcomes(env)
    assert [t["outcome"] for t in told] == ["failed"] and why in told[0]["reason"]
    assert env.champion() is None and env.sm.list_models()["Models"] == []
    assert executions(env) == []


def test_a_throttled_artifact_read_is_retried_not_recorded(env, context, monkeypatch):
    # Given a finished job whose model.tar.gz S3 will not serve right now
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    s3 = storage.client("s3")
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "GetObject")
    answers = s3.get_object

    def get_object(**kwargs):
        if not throttled:
            return answers(**kwargs)
        raise slow

    throttled = True
    monkeypatch.setattr(s3, "get_object", get_object)

    # When promote handles its event, the error propagates (Lambda retries the event)
    with pytest.raises(ClientError, match="SlowDown"):
        promote.handler(event_for(JOB), context)
    # and nobody was told anything; the retry, once S3 answers, promotes as usual
    assert outcomes(env) == []
    throttled = False
    assert promote.handler(event_for(JOB), context)["outcome"] == "deploying"


def test_redelivered_event_is_idempotent(env, context):
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    first = promote.handler(event_for(JOB), context)
    second = promote.handler(event_for(JOB), context)
    assert first == second
    assert len(executions(env)) == 1


def test_a_second_promotion_of_the_same_model_starts_no_second_rollout(env):
    # Given a model whose rollout already ran (say, rolled back), when its job's event comes
    # again after the idempotency record expired, then no second rollout is started
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    settings = PromoteSettings.from_env()
    first = promote_job(settings, "training", JOB)
    again = promote_job(settings, "training", JOB)
    # (Step Functions answers a running execution's name and input with that execution, a
    # finished one's with ExecutionAlreadyExists: either way the same one)
    assert again.execution_arn == first.execution_arn
    assert len(executions(env)) == 1


def test_tuning_job_rolls_out_its_best_training_job(env, monkeypatch, context):
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

    assert result["outcome"] == "deploying" and result["model_version"] == best
    (execution,) = executions(env)
    assert execution["input"]["rollout"]["champion"]["training_job"] == best
