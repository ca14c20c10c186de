"""SNS outcome notifications."""

from __future__ import annotations

import json

from flywheel.adapters.aws import client


def notify(topic_arn: str, subject: str, message: dict) -> None:
    client("sns").publish(
        TopicArn=topic_arn,
        Subject=subject[:100],
        Message=json.dumps(message, indent=1, default=str),
    )
