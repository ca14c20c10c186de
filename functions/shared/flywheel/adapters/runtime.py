"""InvokeEndpoint with the JSON batch protocol."""

from __future__ import annotations

import base64
import json

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.errors import EndpointUnavailable


def invoke_batch(endpoint_name: str, images: list[bytes]) -> dict:
    """POST ``{"images": [base64...]}``; any endpoint error is retryable (never drop items)."""
    body = json.dumps({"images": [base64.b64encode(i).decode("ascii") for i in images]})
    try:
        response = client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="application/json",
            Accept="application/json",
            Body=body.encode(),
        )
    except ClientError as exc:
        raise EndpointUnavailable(f"InvokeEndpoint failed: {error_code(exc)}: {exc}") from exc
    return json.loads(response["Body"].read())
