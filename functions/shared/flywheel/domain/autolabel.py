"""Auto-label decision: calibrated confidence vs the champion's threshold."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.domain.items import State
from flywheel.errors import InvalidArtifact


@dataclass(frozen=True)
class LabelDecision:
    state: State
    label: str
    confidence: float


def decide(label: str, confidence: float, threshold: float) -> LabelDecision:
    state = State.AUTO_LABELED if confidence >= threshold else State.NEEDS_REVIEW
    return LabelDecision(state, label, confidence)


def parse_predictions(body: dict, expected: int) -> list[tuple[str, float]]:
    """(label, confidence) per image, in request order (inference protocol)."""
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise InvalidArtifact(f"expected {expected} predictions, got {body!r:.200}")
    return [(str(p["label"]), float(p["confidence"])) for p in predictions]


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


# Serverless inference accepts 4 MB per request (real-time 6 MB); base64 adds a third.
MAX_REQUEST_BYTES = 4_000_000


def batches_by_size(
    sizes: list[int], max_count: int, max_bytes: int = MAX_REQUEST_BYTES
) -> list[list[int]]:
    """Indices grouped so each request stays under ``max_bytes`` of base64 and ``max_count``."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        encoded = (size + 2) // 3 * 4
        if current and (len(current) >= max_count or total + encoded > max_bytes):
            groups.append(current)
            current, total = [], 0
        current.append(index)
        total += encoded
    if current:
        groups.append(current)
    return groups
