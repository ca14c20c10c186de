"""Cached boto3 client factory. Called inside functions only, never at import time,
so moto and ``AWS_ENDPOINT_URL_<SERVICE>`` work; ``reset()`` drops cached clients."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def client(service: str, max_attempts: int = 5) -> Any:
    # boto3 is imported on first use: importing a handler stays fast (cold-start test).
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=5,
        read_timeout=70,
    )
    return boto3.session.Session().client(service, config=config)


def region() -> str:
    return client("sts").meta.region_name


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def reset() -> None:
    client.cache_clear()


@cache
def idempotency_store(table_name: str) -> Any:
    """Powertools idempotency persistence on the stack's IdempotencyTable (built on first use)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client("dynamodb"))


def run_once(
    table_name: str,
    context: Any,
    key: dict,
    fn: Callable[[], dict],
    expires_after_seconds: int = 7 * 24 * 3600,
) -> dict:
    """Run ``fn`` once per ``key`` (Powertools idempotency); a repeat returns the stored result.

    A failed run leaves no record, so the retry runs again. Imported lazily: the
    idempotency utility pulls in boto3.
    """
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

    config = IdempotencyConfig(expires_after_seconds=expires_after_seconds)
    config.register_lambda_context(context)

    @idempotent_function(
        data_keyword_argument="key", config=config, persistence_store=idempotency_store(table_name)
    )
    def once(key: dict) -> dict:
        return fn()

    return once(key=key)


def reset_all() -> None:
    client.cache_clear()
    idempotency_store.cache_clear()
