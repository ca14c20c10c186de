"""Auto-label decision: calibrated confidence vs the champion's threshold."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.domain.items import State
from flywheel.domain.sampling import OUT_OF_DISTRIBUTION, SPOT_CHECK, SUSPENDED, UNCERTAIN
from flywheel.errors import InvalidArtifact

TOP_K_STORED = 5


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    ood: bool = False
    # (label, confidence) best first; at least the top-1 when the response has no top_k.
    top_k: tuple[tuple[str, float], ...] = ()

    @property
    def margin(self) -> float:
        """top-1 minus top-2 confidence (small = the model hesitates between two classes)."""
        second = self.top_k[1][1] if len(self.top_k) > 1 else 0.0
        return max(0.0, self.confidence - second)


@dataclass(frozen=True)
class LabelDecision:
    state: State
    label: str
    confidence: float
    review_reason: str | None = None


def decide(
    prediction: Prediction, threshold: float, *, spot_check: bool = False, suspended: bool = False
) -> LabelDecision:
    """Out-of-distribution inputs are never auto-labeled, whatever their confidence.

    Of what the champion would auto-label, a spot-check draw (``domain.audit``) goes to
    people blind instead, and nothing is auto-labeled while the champion is suspended.
    """
    if prediction.ood:
        return LabelDecision(
            State.NEEDS_REVIEW, prediction.label, prediction.confidence, OUT_OF_DISTRIBUTION
        )
    if prediction.confidence < threshold:
        return LabelDecision(State.NEEDS_REVIEW, prediction.label, prediction.confidence, UNCERTAIN)
    if suspended:
        return LabelDecision(State.NEEDS_REVIEW, prediction.label, prediction.confidence, SUSPENDED)
    if spot_check:
        return LabelDecision(
            State.NEEDS_REVIEW, prediction.label, prediction.confidence, SPOT_CHECK
        )
    return LabelDecision(State.AUTO_LABELED, prediction.label, prediction.confidence)


def _top_k(p: dict, label: str, confidence: float) -> tuple[tuple[str, float], ...]:
    raw = p.get("top_k") or []
    pairs = []
    for entry in raw:
        if isinstance(entry, dict) and "label" in entry and "confidence" in entry:
            pairs.append((str(entry["label"]), float(entry["confidence"])))
    pairs.sort(key=lambda lc: -lc[1])
    return tuple(pairs[:TOP_K_STORED]) or ((label, confidence),)


def parse_predictions(body: dict, expected: int) -> list[Prediction]:
    """One prediction per image, in request order (inference protocol); ``ood`` defaults False."""
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise InvalidArtifact(f"expected {expected} predictions, got {body!r:.200}")
    out = []
    for p in predictions:
        label, confidence = str(p["label"]), float(p["confidence"])
        out.append(
            Prediction(label, confidence, bool(p.get("ood", False)), _top_k(p, label, confidence))
        )
    return out


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
