"""Fixtures for the local runtime tests: a moto server and probe functions."""

from __future__ import annotations

import pytest

from samlocal.functions import FunctionPool
from samlocal.moto_server import MotoServer, client
from samlocal.router import Router


@pytest.fixture
def moto(tmp_path):
    server = MotoServer(tmp_path / "state")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_router(moto, tmp_path):
    """Start a router over probe functions; stops everything at the end."""
    started = []

    def make(specs, **kwargs):
        env = {
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
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
