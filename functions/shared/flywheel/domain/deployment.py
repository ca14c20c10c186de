"""Endpoint config and update requests, and reading an endpoint's state after an update."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

VARIANT_NAME = "AllTraffic"
IN_PROGRESS = {"Creating", "Updating", "SystemUpdating", "RollingBack"}


@dataclass(frozen=True)
class EndpointSettings:
    """The production variant the stack's parameters ask for (no defaults: the template's)."""

    mode: str  # "serverless" | "instance"
    instance_type: str
    instance_count: int
    memory_mb: int
    max_concurrency: int


def variant_spec(s: EndpointSettings) -> dict:
    if s.mode == "serverless":
        return {
            "ServerlessConfig": {"MemorySizeInMB": s.memory_mb, "MaxConcurrency": s.max_concurrency}
        }
    return {"InstanceType": s.instance_type, "InitialInstanceCount": s.instance_count}


def endpoint_config_request(name: str, model_name: str, s: EndpointSettings, tags: list) -> dict:
    variant = {"VariantName": VARIANT_NAME, "ModelName": model_name, **variant_spec(s)}
    if s.mode == "instance":
        variant["InitialVariantWeight"] = 1.0
    return {"EndpointConfigName": name, "ProductionVariants": [variant], "Tags": tags}


def update_endpoint_request(
    endpoint: str, config: str, mode: str, rollback_alarms: tuple[str, ...]
) -> dict:
    request: dict = {"EndpointName": endpoint, "EndpointConfigName": config}
    if mode == "instance":
        # Canary: 25% of capacity first, baked for 5 minutes while the alarms watch.
        request["DeploymentConfig"] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                    "WaitIntervalInSeconds": 300,
                },
                "TerminationWaitInSeconds": 120,
                "MaximumExecutionTimeoutInSeconds": 3600,
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in rollback_alarms]},
        }
    return request


class Step(StrEnum):
    CREATE = "create"  # no endpoint yet
    UPDATE = "update"  # in service with another config
    WAIT = "wait"  # creating / updating
    LIVE = "live"  # in service with our config
    FAILED = "failed"  # endpoint failed


def next_step(endpoint: dict | None, target_config: str) -> Step:
    if endpoint is None:
        return Step.CREATE
    status = endpoint.get("EndpointStatus")
    if status in IN_PROGRESS:
        return Step.WAIT
    if status == "InService":
        return Step.LIVE if endpoint.get("EndpointConfigName") == target_config else Step.UPDATE
    return Step.FAILED
