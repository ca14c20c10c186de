"""teardown: custom resource Delete removes the pipeline's endpoint, configs, models, champion."""

from __future__ import annotations

import json

import pytest
import teardown
from flywheel.adapters import cfn_response
from integration_kit import STACK, load_event


@pytest.fixture
def responses(monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(
        cfn_response,
        "send",
        lambda event, status, reason, physical_id, data=None: sent.append(
            {"status": status, "reason": reason, "id": physical_id, "data": data}
        ),
    )
    return sent


def make_model(stack, name: str, stack_tag: str) -> None:
    tags = [{"Key": "flywheel:stack", "Value": stack_tag}]
    stack.sm.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"},
        Tags=tags,
    )
    stack.sm.create_endpoint_config(
        EndpointConfigName=f"{name}-abc123",
        Tags=tags,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1},
            }
        ],
    )


def test_delete_removes_only_this_stacks_sagemaker_resources(stack, responses, context):
    # Given the pipeline's endpoint, models and configs, plus another stack's model
    stack.use("TeardownFunction")
    make_model(stack, "dfw-0000000000000001", STACK)
    make_model(stack, "dfw-0000000000000002", STACK)
    make_model(stack, "dfw-0000000000000003", "someone-else")
    stack.sm.create_endpoint(
        EndpointName=f"{STACK}-classifier", EndpointConfigName="dfw-0000000000000002-abc123"
    )
    stack.ssm.put_parameter(Name=f"/{STACK}/champion", Type="String", Value=json.dumps({"x": 1}))

    # When CloudFormation deletes the stack
    teardown.handler(load_event("cfn_custom_resource_delete.json"), context)

    # Then
    assert responses[0]["status"] == "SUCCESS"
    assert stack.sm.list_endpoints()["Endpoints"] == []
    assert [m["ModelName"] for m in stack.sm.list_models()["Models"]] == ["dfw-0000000000000003"]
    assert [
        c["EndpointConfigName"] for c in stack.sm.list_endpoint_configs()["EndpointConfigs"]
    ] == ["dfw-0000000000000003-abc123"]
    assert stack.champion() is None


def test_create_and_update_do_nothing_but_answer(stack, responses, context):
    stack.use("TeardownFunction")
    event = load_event("cfn_custom_resource_delete.json")
    event["RequestType"] = "Create"
    event.pop("PhysicalResourceId")
    teardown.handler(event, context)
    assert responses == [
        {
            "status": "SUCCESS",
            "reason": "nothing to do",
            "id": "PipelineTeardown-teardown",
            "data": {},
        }
    ]
