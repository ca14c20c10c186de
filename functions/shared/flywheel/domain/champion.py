"""The champion record stored (as JSON) in the SSM parameter ``/<stack>/champion``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Champion(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_version: str
    training_job: str
    model_name: str
    endpoint_config: str
    model_data: str
    threshold: float
    target_accuracy: float
    test_accuracy: float
    classes: list[str]
    test_set_id: str
    promoted_at: str
