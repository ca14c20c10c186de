"""Fixtures for the local runtime tests: a moto server and probe functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.local.functions import FunctionPool, FunctionSpec
from infra.local.moto_server import MotoServer, client
from infra.local.router import Router

PROBE_DIR = Path(__file__).parent / "fixtures" / "probe"


@pytest.fixture
def moto(tmp_path):
    server = MotoServer(tmp_path / "state", snapshot_every_s=0)
    server.start()
    yield server
    server.stop()


def probe_spec(logical_id: str, handler: str, out: Path, events=None, timeout_s=10.0) -> FunctionSpec:
    return FunctionSpec(logical_id=logical_id, name=f"test-{logical_id}", handler=handler,
                        code_dir=PROBE_DIR, environment={"PROBE_DIR": str(out)},
                        timeout_s=timeout_s, events=events or {})


def received(out: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{kind}-*.json"))]


@pytest.fixture
def make_router(moto, tmp_path):
    """Start a router over probe functions; stops everything at the end."""
    started = []

    def make(specs, **kwargs):
        env = {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        pool = FunctionPool(specs, env, tmp_path / "logs")
        router = Router(specs, pool, moto.url, stack_name="test", **kwargs)
        router.start()
        started.append((router, pool))
        return router

    yield make
    for router, pool in started:
        router.stop()
        pool.stop()


@pytest.fixture
def sqs(moto):
    return client("sqs", moto.url)
