"""Quota preflight: the verdict (pure) and the Service Quotas reads (botocore Stubber)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from flywheel.adapters.quotas import QuotaLookupFailed, sagemaker_quotas
from flywheel.domain.quotas import (
    TrainingNeed,
    check_training_quota,
    training_quota_name,
    wanted_quota_names,
)

REGION = "us-east-1"
CODES = {
    "ml.g5.xlarge for training job usage": "L-1F5A5B0B",
    "ml.g5.xlarge for spot training job usage": "L-D8CEBF32",
    "ml.m5.xlarge for training job usage": "L-B4E93E9A",
    "ml.m5.xlarge for spot training job usage": "L-2BE9CDD1",
}


def quota(name: str, value: float) -> dict:
    """A ServiceQuota as ListServiceQuotas returns it (shape from the botocore model)."""
    code = CODES.get(name, "L-00000000")
    return {
        "ServiceCode": "sagemaker",
        "ServiceName": "Amazon SageMaker",
        "QuotaArn": f"arn:aws:servicequotas:{REGION}:111122223333:sagemaker/{code}",
        "QuotaCode": code,
        "QuotaName": name,
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
        "QuotaAppliedAtLevel": "ACCOUNT",
        "Description": f"The maximum number of {name.split(' for ')[0]} instances ...",
    }


NEW_ACCOUNT = [
    quota("ml.g5.xlarge for training job usage", 0.0),
    quota("ml.g5.xlarge for spot training job usage", 0.0),
    quota("ml.m5.xlarge for training job usage", 2.0),
    quota("ml.m5.xlarge for spot training job usage", 2.0),
]

# ---------------------------------------------------------------------------- verdict


def test_quota_names_are_the_ones_service_quotas_uses():
    assert training_quota_name("ml.g5.xlarge", False) == "ml.g5.xlarge for training job usage"
    assert training_quota_name("ml.g5.xlarge", True) == "ml.g5.xlarge for spot training job usage"
    assert set(wanted_quota_names(TrainingNeed("ml.g5.xlarge", spot=True))) == set(CODES)


def test_zero_spot_quota_says_what_to_request_and_what_to_set_instead():
    verdict = check_training_quota(NEW_ACCOUNT, TrainingNeed("ml.g5.xlarge", spot=True), REGION)
    assert verdict.blocks and verdict.status == "insufficient"
    assert verdict.value == 0 and verdict.needed == 1 and verdict.quota_code == "L-D8CEBF32"
    message = verdict.message
    assert message.startswith("your account's quota for ml.g5.xlarge spot training is 0")
    assert (
        "https://us-east-1.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/"
        "L-D8CEBF32" in message
    )
    assert "--quota-code L-D8CEBF32 --desired-value 1" in message
    # on-demand g5 is 0 too, so it is not suggested; the CPU type with spot is
    assert "UseSpotTraining=false (on-demand" not in message
    assert "TrainingInstanceType=ml.m5.xlarge (quota 2)" in message


def test_spot_shortfall_suggests_on_demand_when_that_quota_has_room():
    quotas = [
        quota("ml.g5.xlarge for spot training job usage", 0.0),
        quota("ml.g5.xlarge for training job usage", 4.0),
    ]
    verdict = check_training_quota(quotas, TrainingNeed("ml.g5.xlarge", spot=True), REGION)
    assert verdict.blocks and "UseSpotTraining=false (on-demand quota 4)" in verdict.message


def test_tuning_needs_count_times_parallel_trials():
    quotas = [quota("ml.g5.xlarge for training job usage", 1.0)]
    need = TrainingNeed("ml.g5.xlarge", instance_count=1, spot=False, parallel_jobs=2)
    verdict = check_training_quota(quotas, need, REGION)
    assert verdict.blocks and verdict.needed == 2
    assert "needs 2: 1 per job x 2 parallel tuning jobs" in verdict.message
    assert "MaxParallelTuningJobs=1" in verdict.message
    enough = check_training_quota([quota(need.quota_name, 2.0)], need, REGION)
    assert enough.status == "ok" and not enough.blocks


def test_enough_quota_passes_and_an_unlisted_type_is_unknown_not_blocking():
    ok = check_training_quota(NEW_ACCOUNT, TrainingNeed("ml.m5.xlarge", spot=True), REGION)
    assert ok.status == "ok" and ok.value == 2
    unknown = check_training_quota(NEW_ACCOUNT, TrainingNeed("ml.x9.huge"), REGION)
    assert unknown.status == "unknown" and not unknown.blocks
    assert "no quota named 'ml.x9.huge for training job usage'" in unknown.message


def test_the_applied_value_wins_over_the_default():
    applied, default = (
        quota("ml.g5.xlarge for training job usage", 8.0),
        quota("ml.g5.xlarge for training job usage", 0.0),
    )
    verdict = check_training_quota([applied, default], TrainingNeed("ml.g5.xlarge"), REGION)
    assert verdict.status == "ok" and verdict.value == 8


# ---------------------------------------------------------------------------- adapter


@pytest.fixture
def sq():
    client = boto3.client("service-quotas", region_name=REGION)
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def test_reads_applied_quotas_across_pages_and_stops_when_all_are_found(sq):
    client, stub = sq
    request = {"ServiceCode": "sagemaker", "MaxResults": 100}
    other = quota("ml.p3.2xlarge for training job usage", 0.0)
    stub.add_response(
        "list_service_quotas", {"Quotas": [other, *NEW_ACCOUNT[:2]], "NextToken": "t1"}, request
    )
    stub.add_response(
        "list_service_quotas",
        {"Quotas": NEW_ACCOUNT[2:], "NextToken": "t2"},
        {**request, "NextToken": "t1"},
    )
    # no third page and no default lookup: every wanted name was found
    found = sagemaker_quotas(list(CODES), client)
    assert [q["QuotaName"] for q in found] == list(CODES)
    assert [q["Value"] for q in found] == [0.0, 0.0, 2.0, 2.0]


def test_names_without_an_applied_value_come_from_the_defaults(sq):
    client, stub = sq
    request = {"ServiceCode": "sagemaker", "MaxResults": 100}
    stub.add_response("list_service_quotas", {"Quotas": NEW_ACCOUNT[:1]}, request)
    stub.add_response(
        "list_aws_default_service_quotas",
        {"Quotas": [quota("ml.g5.xlarge for spot training job usage", 0.0)]},
        request,
    )
    names = list(CODES)[:2]
    assert [q["QuotaName"] for q in sagemaker_quotas(names, client)] == names


def test_access_denied_is_a_lookup_failure_the_caller_can_ignore(sq):
    client, stub = sq
    stub.add_client_error(
        "list_service_quotas",
        service_error_code="AccessDeniedException",
        service_message="User is not authorized to perform: servicequotas:ListServiceQuotas",
        http_status_code=400,
    )
    with pytest.raises(QuotaLookupFailed, match="AccessDenied"):
        sagemaker_quotas(list(CODES), client)
