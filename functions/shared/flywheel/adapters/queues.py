"""SQS sends."""

from __future__ import annotations

import json

from flywheel.adapters.aws import client
from flywheel.errors import RetryableError


def send_json(queue_url: str, bodies: list[dict]) -> int:
    sqs = client("sqs")
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": json.dumps(b)} for n, b in enumerate(chunk)],
        )
        if response.get("Failed"):
            raise RetryableError(f"SQS refused {len(response['Failed'])} messages")
    return len(bodies)
