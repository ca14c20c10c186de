"""SageMaker control plane calls.

Endpoint calls sit behind ``Endpoints`` (``endpoints()`` returns one) because moto 5.2.1
has no UpdateEndpoint; tests swap in a typed fake that also simulates a rollback.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.errors import QuotaExceeded


def _already_exists(exc: ClientError) -> bool:
    code, message = error_code(exc), str(exc).lower()
    return code in ("ResourceInUse", "ResourceInUseException") or (
        code == "ValidationException"
        and ("already exist" in message or "must be unique" in message)
    )


def _create(operation: str, request: dict) -> bool:
    """True when created, False when a resource of that name already exists (idempotent)."""
    try:
        getattr(client("sagemaker"), operation)(**request)
    except ClientError as exc:
        if _already_exists(exc):
            return False
        if error_code(exc) == "ResourceLimitExceeded":
            raise QuotaExceeded(str(exc)) from exc
        raise
    return True


def _exists(describe: str, **kwargs: str) -> bool:
    try:
        getattr(client("sagemaker"), describe)(**kwargs)
    except ClientError as exc:
        if error_code(exc) in ("ValidationException", "ResourceNotFound"):
            return False
        raise
    return True


def create_training_job(request: dict) -> bool:
    """False when a job of that name exists (a repeated trigger for the same snapshot)."""
    if _exists("describe_training_job", TrainingJobName=request["TrainingJobName"]):
        return False
    return _create("create_training_job", request)


def create_tuning_job(request: dict) -> bool:
    name = request["HyperParameterTuningJobName"]
    if _exists("describe_hyper_parameter_tuning_job", HyperParameterTuningJobName=name):
        return False
    return _create("create_hyper_parameter_tuning_job", request)


def training_job_status(name: str) -> str | None:
    """The job's TrainingJobStatus, or None when no job of that name exists."""
    try:
        return client("sagemaker").describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
    except ClientError as exc:
        if error_code(exc) in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def tuning_job_status(name: str) -> str | None:
    try:
        return client("sagemaker").describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name
        )["HyperParameterTuningJobStatus"]
    except ClientError as exc:
        if error_code(exc) in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def describe_training_job(name: str) -> dict:
    return client("sagemaker").describe_training_job(TrainingJobName=name)


def describe_tuning_job(name: str) -> dict:
    return client("sagemaker").describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)


def create_model(request: dict) -> bool:
    return _create("create_model", request)


def create_endpoint_config(request: dict) -> bool:
    return _create("create_endpoint_config", request)


def ensure_model_package_group(name: str, description: str) -> None:
    _create(
        "create_model_package_group",
        {
            "ModelPackageGroupName": name,
            "ModelPackageGroupDescription": description,
        },
    )


def register_model_package(request: dict) -> str:
    return client("sagemaker").create_model_package(**request)["ModelPackageArn"]


def set_model_package_status(arn: str, status: str, description: str) -> None:
    client("sagemaker").update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=description[:1000]
    )


class Endpoints:
    """Describe / create / update / delete one endpoint."""

    def describe(self, name: str) -> dict | None:
        try:
            return client("sagemaker").describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if error_code(exc) == "ValidationException" and "could not find" in str(exc).lower():
                return None
            raise

    def create(self, name: str, config: str, tags: list[dict]) -> None:
        try:
            client("sagemaker").create_endpoint(
                EndpointName=name, EndpointConfigName=config, Tags=tags
            )
        except ClientError as exc:
            if not _already_exists(exc):
                raise

    def update(self, request: dict) -> None:
        client("sagemaker").update_endpoint(**request)

    def delete(self, name: str) -> bool:
        """DeleteEndpoint (its configs and models stay); False if it was already gone."""
        return delete("endpoint", name)


def endpoints() -> Endpoints:
    return Endpoints()


# ------------------------------------------------------------------ teardown helpers


def _paginate(operation: str, key: str, **kwargs: Any) -> list[dict]:
    paginator = client("sagemaker").get_paginator(operation)
    return [item for page in paginator.paginate(**kwargs) for item in page.get(key, [])]


def _tags(arn: str) -> dict[str, str]:
    try:
        tags = client("sagemaker").list_tags(ResourceArn=arn).get("Tags", [])
    except ClientError:
        return {}
    return {t["Key"]: t["Value"] for t in tags}


def owned_models_and_configs(prefix: str, stack_name: str) -> tuple[list[str], list[str]]:
    """Models / endpoint configs named ``<prefix>-...`` and tagged ``flywheel:stack=<stack>``."""
    models = [
        m["ModelName"]
        for m in _paginate("list_models", "Models", NameContains=prefix)
        if m["ModelName"].startswith(f"{prefix}-")
        and _tags(m["ModelArn"]).get("flywheel:stack") == stack_name
    ]
    configs = [
        c["EndpointConfigName"]
        for c in _paginate("list_endpoint_configs", "EndpointConfigs", NameContains=prefix)
        if c["EndpointConfigName"].startswith(f"{prefix}-")
        and _tags(c["EndpointConfigArn"]).get("flywheel:stack") == stack_name
    ]
    return models, configs


def delete(kind: str, name: str) -> bool:
    operation, param = {
        "endpoint": ("delete_endpoint", "EndpointName"),
        "endpoint_config": ("delete_endpoint_config", "EndpointConfigName"),
        "model": ("delete_model", "ModelName"),
    }[kind]
    try:
        getattr(client("sagemaker"), operation)(**{param: name})
    except ClientError as exc:
        if error_code(exc) == "ValidationException" and "could not find" in str(exc).lower():
            return False
        raise
    return True
