"""Model registry, tags, and state that survives a restart of the service."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sm_support import (
    BUCKET,
    client,
    start_service,
    training_request,
    unique,
    wait_endpoint,
    wait_for,
    wait_training,
)
from test_sm_hosting import deploy_model, endpoint_config, invoke


def test_model_registry_versions_and_approval(sm: Any) -> None:
    group = unique("classifier")
    sm.create_model_package_group(
        ModelPackageGroupName=group, ModelPackageGroupDescription="dfw models"
    )
    arns = [
        sm.create_model_package(
            ModelPackageGroupName=group,
            InferenceSpecification={
                "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m{i}.tar.gz"}],
                "SupportedContentTypes": ["image/png"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            CustomerMetadataProperties={"test_accuracy": str(0.9 + i / 100)},
        )["ModelPackageArn"]
        for i in range(2)
    ]
    assert arns[1].endswith(f"model-package/{group.lower()}/2")
    pkg = sm.describe_model_package(ModelPackageName=arns[0])
    assert (pkg["ModelPackageVersion"], pkg["ModelApprovalStatus"]) == (1, "PendingManualApproval")

    sm.update_model_package(
        ModelPackageArn=arns[1],
        ModelApprovalStatus="Approved",
        ApprovalDescription="beats the champion",
    )
    approved = sm.list_model_packages(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
    )
    assert [p["ModelPackageArn"] for p in approved["ModelPackageSummaryList"]] == [arns[1]]
    assert len(sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]) == 2
    assert (
        sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupStatus"]
        == "Completed"
    )


def test_a_package_created_again_with_its_client_token_is_the_same_package(sm: Any) -> None:
    group = unique("classifier")
    sm.create_model_package_group(ModelPackageGroupName=group)
    request = {
        "ModelPackageGroupName": group,
        "InferenceSpecification": {
            "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m.tar.gz"}],
            "SupportedContentTypes": ["image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelApprovalStatus": "Approved",
    }
    # Given a package registered with a ClientToken, then the same call again (a retry)
    first = sm.create_model_package(**request, ClientToken="t" * 32)["ModelPackageArn"]
    again = sm.create_model_package(**request, ClientToken="t" * 32)["ModelPackageArn"]
    other = sm.create_model_package(**request, ClientToken="u" * 32)["ModelPackageArn"]
    # Then the retry is the same package; another token is a new version
    assert again == first
    assert other != first
    listed = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert len(listed) == 2


def test_tags_on_resources(sm: Any, s3: Any, bucket: str) -> None:
    model = deploy_model(sm, s3, "v1")
    arn = sm.describe_model(ModelName=model)["ModelArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "flywheel:stack", "Value": "dfw"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "flywheel:stack", "Value": "dfw"}]
    with pytest.raises(ClientError):
        sm.list_tags(ResourceArn=arn + "-missing")


def test_restart_keeps_state_resumes_jobs_and_endpoints(
    tmp_path: Any, moto_url: str, s3: Any, bucket: str
) -> None:
    # Given a service with an endpoint in service and a checkpointing job mid-run
    first = start_service(tmp_path, moto_url)
    sm = client("sagemaker", first.url)
    endpoint = unique("ep-restart")
    sm.create_endpoint(
        EndpointName=endpoint, EndpointConfigName=endpoint_config(sm, deploy_model(sm, s3, "v1"))
    )
    wait_endpoint(sm, endpoint)
    job = unique("train-restart")
    # 12 epochs of 0.5 s: the stop below must come before the end even on a loaded host
    sm.create_training_job(
        **training_request(job, checkpoint=True, epochs=12, sleep=0.5, quality=0.8)
    )
    wait_for(
        lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=f"checkpoints/{job}/").get("KeyCount", 0),
        bool,
        timeout=30,
    )

    # When the service stops mid-run and starts again on the same data directory
    first.stop()
    second = start_service(tmp_path, moto_url)
    try:
        sm = client("sagemaker", second.url)
        runtime = client("sagemaker-runtime", second.url)

        # Then the job resumes from its checkpoint and completes
        assert sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "InProgress"
        desc = wait_training(sm, job, timeout=60)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        log = urllib.request.urlopen(f"{second.url}/_local/logs/{job}").read().decode()
        assert "resuming from epoch" in log and log.count("epoch=12 ") == 1
        assert {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}[
            "val_accuracy"
        ] == pytest.approx(0.8)
        # and the endpoint serves again, with its state intact
        assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
        assert invoke(runtime, endpoint)["version"] == "v1"
        assert endpoint in [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    finally:
        second.stop()
