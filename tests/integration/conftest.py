"""Integration tier: fixtures (the helpers live in integration_kit.py, a unique module name)."""

from __future__ import annotations

import os

import pytest
from integration_kit import LambdaContext, Stack, aws
from moto import mock_aws


@pytest.fixture(autouse=True)
def _powertools_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "DataFlywheel")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "tests")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch):
    with mock_aws():
        aws.reset_all()
        yield Stack(monkeypatch)
        aws.reset_all()


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()
