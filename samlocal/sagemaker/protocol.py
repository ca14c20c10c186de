"""Wire format shared by the control plane and the runtime: errors, ARNs, clocks, paging.

Timestamps are stored and returned as epoch seconds (floats): botocore's JSON
parser turns numbers into datetimes, which is what the real service sends.
"""

from __future__ import annotations

import json
import time
from typing import Any

DEFAULT_ACCOUNT = "123456789012"  # moto's default account, so ARNs line up with it


class AwsError(Exception):
    """An error in the AWS shape; botocore raises it as ClientError with `code`."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def in_use(message: str) -> AwsError:
    return AwsError("ResourceInUse", message)


def now() -> float:
    return round(time.time(), 3)


def arn(region: str, account: str, kind: str, name: str) -> str:
    # SageMaker lower-cases the resource name inside ARNs.
    return f"arn:aws:sagemaker:{region}:{account}:{kind}/{name.lower()}"


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record without its private (underscore) keys."""
    return {k: v for k, v in record.items() if not k.startswith("_") and v is not None}


def page(items: list[dict[str, Any]], body: dict[str, Any], key: str) -> dict[str, Any]:
    """Offset-based NextToken paging, as opaque to the caller as the real one."""
    start = int(body.get("NextToken") or 0)
    size = int(body.get("MaxResults") or 100)
    chunk = items[start : start + size]
    out: dict[str, Any] = {key: chunk}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out


def sort_filter(
    items: list[dict[str, Any]],
    body: dict[str, Any],
    name_key: str,
    status_key: str | None = None,
    default_sort: str = "CreationTime",
    default_order: str = "Descending",
) -> list[dict[str, Any]]:
    """The common List* filters: NameContains, StatusEquals, time windows, SortBy/SortOrder."""
    out = items
    if body.get("NameContains"):
        needle = body["NameContains"].lower()
        out = [i for i in out if needle in i[name_key].lower()]
    if status_key and body.get("StatusEquals"):
        out = [i for i in out if i.get(status_key) == body["StatusEquals"]]
    for field, attr, after in (
        ("CreationTimeAfter", "CreationTime", True),
        ("CreationTimeBefore", "CreationTime", False),
        ("LastModifiedTimeAfter", "LastModifiedTime", True),
        ("LastModifiedTimeBefore", "LastModifiedTime", False),
    ):
        if body.get(field) is not None:
            bound = float(body[field])
            out = [i for i in out if ((i.get(attr) or 0) > bound) == after]
    sort_by = body.get("SortBy") or default_sort
    key = {"Name": name_key, "Status": status_key or name_key}.get(sort_by, sort_by)
    reverse = (body.get("SortOrder") or default_order) == "Descending"
    return sorted(out, key=lambda i: (i.get(key) is None, i.get(key) or 0), reverse=reverse)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def event_timestamps(obj: Any, key: str = "") -> Any:
    """Events carry timestamps as epoch milliseconds (what EventBridge shows for SageMaker)."""
    if isinstance(obj, dict):
        return {k: event_timestamps(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [event_timestamps(v, key) for v in obj]
    if isinstance(obj, float) and (key.endswith("Time") or key == "Timestamp"):
        return int(obj * 1000)
    return obj
