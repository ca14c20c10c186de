"""dataflywheel/stack_ref.py: one DescribeStacks call, and a clear line for each way it can fail."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from dataflywheel.stack_ref import (
    MissingOutput,
    NoCredentials,
    StackNotFound,
    StackNotUsable,
    aws_connection,
    describe_with,
)


def stack(status: str, **extra) -> dict:
    return {
        "StackId": "arn:aws:cloudformation:eu-west-1:111122223333:stack/fw/1",
        "StackName": "fw",
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        "StackStatus": status,
        **extra,
    }


@pytest.fixture
def cfn():
    client = boto3.client(
        "cloudformation",
        region_name="eu-west-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    with Stubber(client) as stub:
        client.stub = stub
        yield client


def test_outputs_and_parameters_of_a_usable_stack(cfn):
    cfn.stub.add_response(
        "describe_stacks",
        {
            "Stacks": [
                stack(
                    "UPDATE_ROLLBACK_COMPLETE",
                    Outputs=[{"OutputKey": "UploadBucketName", "OutputValue": "fw-up-1x2"}],
                    Parameters=[{"ParameterKey": "JobPrefix", "ParameterValue": "dfw"}],
                )
            ]
        },
        {"StackName": "fw"},
    )
    ref = describe_with(cfn, "fw", "region eu-west-1", "eu-west-1")
    assert ref.output("UploadBucketName") == "fw-up-1x2"
    assert ref.parameters == {"JobPrefix": "dfw"}
    with pytest.raises(MissingOutput, match="no output EndpointName: .*older template"):
        ref.output("EndpointName")


def test_a_missing_stack_names_where_it_looked(cfn):
    cfn.stub.add_client_error(
        "describe_stacks", "ValidationError", "Stack with id fw does not exist", 400
    )
    with pytest.raises(StackNotFound, match=r"no stack named fw \(region eu-west-1, profile p\)"):
        describe_with(cfn, "fw", "region eu-west-1, profile p", "eu-west-1")


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        ("CREATE_IN_PROGRESS", "still being created"),
        ("ROLLBACK_COMPLETE", "deploy it again"),
        ("DELETE_COMPLETE", "deploy it again"),
        ("REVIEW_IN_PROGRESS", "change set was never executed"),
    ],
)
def test_a_stack_that_is_not_usable_says_so(cfn, status, hint):
    cfn.stub.add_response(
        "describe_stacks", {"Stacks": [stack(status, StackStatusReason="because")]}
    )
    with pytest.raises(StackNotUsable, match=f"stack fw is {status} \\(because\\): .*{hint}"):
        describe_with(cfn, "fw", "region eu-west-1", "eu-west-1")


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidClientTokenId"])
def test_refused_credentials_are_a_credentials_error(cfn, code):
    cfn.stub.add_client_error("describe_stacks", code, "The security token is invalid", 403)
    with pytest.raises(NoCredentials, match="AWS refused the credentials"):
        describe_with(cfn, "fw", "region eu-west-1", "eu-west-1")


@pytest.fixture
def no_aws_config(monkeypatch, tmp_path):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def test_no_credentials_anywhere(no_aws_config):
    with pytest.raises(NoCredentials, match="no AWS credentials found"):
        aws_connection(region="eu-west-1")


def test_an_unknown_profile_and_a_missing_region(no_aws_config):
    with pytest.raises(NoCredentials, match="no AWS profile named 'nope'"):
        aws_connection(profile="nope", region="eu-west-1")
    with pytest.raises(Exception, match="no AWS region"):
        aws_connection()


def test_the_profile_of_the_credential_chain_is_used(no_aws_config):
    (no_aws_config / "config").write_text("[profile dev]\nregion = eu-central-1\n")
    (no_aws_config / "credentials").write_text(
        "[dev]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n"
    )
    conn = aws_connection(profile="dev")
    assert conn.region == "eu-central-1"
    assert conn.where == "region eu-central-1, profile dev"
    assert not conn.local and conn.endpoint_url("s3") is None
