"""Service Quotas reads for the training preflight (``flywheel.domain.quotas`` decides).

ListServiceQuotas returns the applied values; a quota whose applied value is not
available is missing there, so names still missing are looked up among the defaults
(ListAWSDefaultServiceQuotas). Both stop paging once every wanted name is found.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.adapters.aws import client as aws_client
from flywheel.domain.quotas import SERVICE_CODE
from flywheel.errors import FlywheelError


class QuotaLookupFailed(FlywheelError):
    """Service Quotas could not be read (AccessDenied, throttling, no endpoint)."""


def _collect(sq: Any, operation: str, names: set[str], found: dict[str, dict]) -> None:
    pages = sq.get_paginator(operation).paginate(
        ServiceCode=SERVICE_CODE, PaginationConfig={"PageSize": 100}
    )
    for page in pages:
        for quota in page.get("Quotas", []):
            if quota.get("QuotaName") in names and quota.get("Value") is not None:
                found.setdefault(quota["QuotaName"], quota)
        if names <= found.keys():
            return


def sagemaker_quotas(names: Collection[str], sq: Any = None) -> list[dict]:
    """The ``ServiceQuota`` structures named ``names`` (applied value, else the default).

    ``sq``: a ``service-quotas`` client (the CLI passes one from the user's profile).
    """
    # Few retries: the check is advisory, and an endpoint without the API (a local
    # emulator) answers 500s that standard retries would wait on for seconds.
    sq = sq or aws_client("service-quotas", max_attempts=2)
    wanted = set(names)
    found: dict[str, dict] = {}
    try:
        _collect(sq, "list_service_quotas", wanted, found)
        if not wanted <= found.keys():
            _collect(sq, "list_aws_default_service_quotas", wanted - found.keys(), found)
    except (BotoCoreError, ClientError) as exc:
        raise QuotaLookupFailed(f"{type(exc).__name__}: {exc}") from exc
    return [found[n] for n in names if n in found]
