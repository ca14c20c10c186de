"""samlocal/cfn.py: intrinsic resolution against the real template (no AWS)."""

from pathlib import Path

import pytest

from samlocal.cfn import function_environment, load_template, resolve

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def test_short_tags_load_as_long_form():
    template = load_template(TEMPLATE)
    queue = template["Resources"]["IngestQueue"]["Properties"]["RedrivePolicy"]
    assert queue["deadLetterTargetArn"] == {"Fn::GetAtt": ["IngestQueueDLQ", "Arn"]}


def test_resolve_sub_if_findinmap_and_conditions():
    resolved = resolve(
        load_template(TEMPLATE),
        "demo",
        {"EndpointMode": "instance"},
        region="eu-west-1",
        account="111122223333",
    )
    env = function_environment(resolved, "StartTrainingFunction")
    assert env["TRAINING_GPU_IMAGE_URI"] == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.6-gpu-py312"
    )
    assert env["TRAINING_CPU_IMAGE_URI"].endswith("/pytorch-training:2.6-cpu-py312")
    assert env["TRAINING_IMAGE_URI"] == ""  # no override: start_training picks by instance type
    assert env["SAGEMAKER_ROLE_ARN"] == "arn:aws:iam::111122223333:role/demo-SageMakerExecutionRole"
    assert env["CHAMPION_PARAMETER"] == "/demo/champion"
    promote = function_environment(resolved, "PromoteFunction")
    assert promote["ENDPOINT_MODE"] == "instance"
    assert promote["ROLLOUT_STATE_MACHINE_ARN"] == (
        "arn:aws:states:eu-west-1:111122223333:stateMachine:demo-RolloutStateMachine"
    )
    rollout = function_environment(resolved, "RolloutFunction")
    assert rollout["ROLLBACK_ALARMS"] == "demo-endpoint-5xx,demo-endpoint-latency"
    assert "NotificationsEmailSubscription" not in resolved["Resources"]  # condition false


def test_overrides_and_physical_names():
    image = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/my/image:1"
    resolved = resolve(load_template(TEMPLATE), "demo", {"TrainingImageUri": image})
    physical = {"LabelQueue": "http://localhost:5000/123456789012/demo-LabelQueue"}
    env = function_environment(resolved, "IngestFunction", physical)
    assert env["LABEL_QUEUE_URL"] == physical["LabelQueue"]
    assert env["DATA_BUCKET"] == "demo-databucket"
    assert function_environment(resolved, "StartTrainingFunction")["TRAINING_IMAGE_URI"] == image
    role = resolved["Resources"]["SageMakerExecutionRole"]["Properties"]["Policies"]
    pulls = [s for p in role for s in p["PolicyDocument"]["Statement"] if s["Sid"] == "PullImages"]
    assert "arn:aws:ecr:eu-west-1:111122223333:repository/my*" in pulls[0]["Resource"]


def test_a_parameter_cloudformation_would_refuse_is_refused_locally():
    with pytest.raises(ValueError, match="TrainingImageUri.*ECR image URI"):
        resolve(load_template(TEMPLATE), "demo", {"TrainingImageUri": "my/image:1"})


def test_state_machine_definition_gets_its_substitutions_and_invokes_only_the_rollout_steps():
    import json

    from samlocal.cfn import state_machine_definition

    resolved = resolve(load_template(TEMPLATE), "demo", {})
    definition = json.loads(state_machine_definition(resolved, "RolloutStateMachine"))
    tasks = [s for s in definition["States"].values() if s["Type"] == "Task"]
    assert {t["Resource"] for t in tasks} == {
        "arn:aws:lambda:us-east-1:123456789012:function:demo-RolloutFunction"
    }
    for task in tasks:  # every step is retried when its answer is lost or late
        assert task["TimeoutSecondsPath"] == "$.rollout.timing.step_timeout_s"
        retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
        assert {"States.Timeout", "Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= (
            retried
        )
