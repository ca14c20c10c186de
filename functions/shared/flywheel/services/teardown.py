"""Delete what the pipeline created outside CloudFormation: endpoint, configs, models, champion."""

from __future__ import annotations

from flywheel.adapters import parameters, sagemaker
from flywheel.settings import TeardownSettings


def teardown(s: TeardownSettings) -> dict:
    deleted: dict[str, list[str]] = {"endpoint": [], "endpoint_config": [], "model": []}
    if sagemaker.delete("endpoint", s.ENDPOINT_NAME):
        deleted["endpoint"].append(s.ENDPOINT_NAME)
    models, configs = sagemaker.owned_models_and_configs(s.JOB_PREFIX, s.STACK_NAME)
    for name in configs:
        if sagemaker.delete("endpoint_config", name):
            deleted["endpoint_config"].append(name)
    for name in models:
        if sagemaker.delete("model", name):
            deleted["model"].append(name)
    parameters.delete_champion(s.CHAMPION_PARAMETER)
    return deleted
