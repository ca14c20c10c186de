"""SQS sends, batched (SendMessageBatch takes at most 10 entries per call)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.errors import RetryableError

MAX_BATCH_ENTRIES = 10  # an SQS limit
RESEND_ATTEMPTS = 3  # entries SQS failed on its side (SenderFault false) are sent again


def send_batch(queue_url: str, entries: Sequence[tuple[Hashable, dict]]) -> dict[Hashable, str]:
    """Send ``(tag, body)`` entries as JSON in SendMessageBatch calls of 10.

    Returns ``{tag: reason}`` for the entries SQS did not take: a per-entry failure (entries
    failed on SQS's side are sent again first), or every entry of a call that failed as a
    whole after the client's retries. The others are sent; the caller retries only the
    failed ones (SQS redelivers their source messages), so sends stay at-least-once.
    """
    sqs, failed = client("sqs"), {}
    for start in range(0, len(entries), MAX_BATCH_ENTRIES):
        chunk = list(entries[start : start + MAX_BATCH_ENTRIES])
        todo = {str(n): (tag, body) for n, (tag, body) in enumerate(chunk)}
        for attempt in range(RESEND_ATTEMPTS):
            try:
                response = sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": entry_id, "MessageBody": json.dumps(body)}
                        for entry_id, (_, body) in todo.items()
                    ],
                )
            except ClientError as exc:
                failed.update(
                    {tag: f"SendMessageBatch failed: {error_code(exc)}" for tag, _ in todo.values()}
                )
                break
            retry = {}
            for f in response.get("Failed") or []:
                tag_body = todo[f["Id"]]
                reason = f"{f.get('Code')}: {f.get('Message', '')}".strip()
                if f.get("SenderFault") or attempt == RESEND_ATTEMPTS - 1:
                    failed[tag_body[0]] = reason
                else:
                    retry[f["Id"]] = tag_body
            if not retry:
                break
            todo = retry
    return failed


def send_json(queue_url: str, bodies: list[dict]) -> int:
    """Send every body or raise RetryableError (the caller's whole unit of work is retried)."""
    failed = send_batch(queue_url, list(enumerate(bodies)))
    if failed:
        raise RetryableError(
            f"SQS refused {len(failed)} of {len(bodies)} messages: {sorted(set(failed.values()))}"
        )
    return len(bodies)


def send_later(queue_url: str, body: dict, delay_s: int = 0) -> None:
    """One message, visible after ``delay_s`` seconds (SQS allows up to 900)."""
    client("sqs").send_message(
        QueueUrl=queue_url, MessageBody=json.dumps(body), DelaySeconds=max(0, min(900, delay_s))
    )
