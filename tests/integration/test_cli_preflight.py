"""flywheel preflight: the stack's training settings against the account's quotas (Stubber)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from dataflywheel import cli

LIST = {"ServiceCode": "sagemaker", "MaxResults": 100}


def quota(name: str, value: float, code: str) -> dict:
    return {
        "ServiceCode": "sagemaker",
        "ServiceName": "Amazon SageMaker",
        "QuotaArn": f"arn:aws:servicequotas:eu-west-1:111122223333:sagemaker/{code}",
        "QuotaCode": code,
        "QuotaName": name,
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }


class StubbedSession:
    """What cmd_preflight uses of a boto3 Session, with stubbed clients."""

    region_name = "eu-west-1"

    def __init__(self) -> None:
        self.clients = {
            s: boto3.client(s, region_name=self.region_name)
            for s in ("service-quotas", "cloudformation")
        }
        self.stubs = {s: Stubber(c) for s, c in self.clients.items()}

    def client(self, service: str) -> Any:
        self.stubs[service].activate()
        return self.clients[service]


@pytest.fixture
def session(monkeypatch):
    s = StubbedSession()
    monkeypatch.setattr(cli, "_aws_session", lambda args: s)
    return s


def test_a_zero_gpu_spot_quota_fails_with_the_way_out(session, capsys):
    # Given a new account: no g5 training, some m5
    quotas = [
        quota("ml.g5.xlarge for spot training job usage", 0.0, "L-D8CEBF32"),
        quota("ml.g5.xlarge for training job usage", 0.0, "L-1F5A5B0B"),
        quota("ml.m5.xlarge for spot training job usage", 4.0, "L-2BE9CDD1"),
        quota("ml.m5.xlarge for training job usage", 4.0, "L-B4E93E9A"),
    ]
    session.stubs["service-quotas"].add_response("list_service_quotas", {"Quotas": quotas}, LIST)

    # When preflight checks the template's defaults (ml.g5.xlarge, spot, tuning x2)
    code = cli.main(["preflight"])

    # Then it exits 1 and says what to request or set
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "training image  763104351884.dkr.ecr.eu-west-1.amazonaws.com/"
        "pytorch-training:2.6-gpu-py312" in out
    )
    assert "your account's quota for ml.g5.xlarge spot training is 0 (this job needs 2" in out
    assert "TrainingInstanceType=ml.m5.xlarge (quota 4)" in out


def test_a_deployed_stacks_parameters_are_checked(session, capsys):
    # Given a deployed stack on CPU instances without spot
    session.stubs["cloudformation"].add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "flywheel",
                    "CreationTime": "2025-01-01T00:00:00Z",
                    "StackStatus": "CREATE_COMPLETE",
                    "Parameters": [
                        {"ParameterKey": "TrainingInstanceType", "ParameterValue": "ml.m5.xlarge"},
                        {"ParameterKey": "UseSpotTraining", "ParameterValue": "false"},
                        {"ParameterKey": "EnableTuning", "ParameterValue": "false"},
                    ],
                }
            ]
        },
        {"StackName": "flywheel"},
    )
    session.stubs["service-quotas"].add_response(
        "list_service_quotas",
        {"Quotas": [quota("ml.m5.xlarge for training job usage", 4.0, "L-B4E93E9A")]},
        LIST,
    )

    # When preflight checks it
    code = cli.main(["preflight", "--stack", "flywheel"])

    # Then the CPU image and an ok verdict are printed
    out = capsys.readouterr().out
    assert code == 0
    assert "pytorch-training:2.6-cpu-py312" in out
    assert "quota           ok: your account's quota for ml.m5.xlarge training is 4" in out


def test_a_check_that_cannot_run_exits_2(session, capsys):
    session.stubs["service-quotas"].add_client_error(
        "list_service_quotas", "AccessDeniedException", "not authorized", 400
    )
    assert cli.main(["preflight", "--parameter", "EnableTuning=false"]) == 2
    out = capsys.readouterr().out
    assert "not checked: AccessDeniedException" in out and "servicequotas:ListServiceQuotas" in out
