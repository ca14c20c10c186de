"""Label queued items with the champion endpoint (batched), or leave them for review."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from flywheel.adapters import items, ledger, parameters, runtime, storage
from flywheel.domain.audit import is_spot_check_draw
from flywheel.domain.autolabel import batches_by_size, decide, parse_predictions
from flywheel.domain.items import State
from flywheel.domain.labels import validate_label
from flywheel.domain.sampling import AUDIT, SPOT_CHECK, SUSPENDED
from flywheel.errors import FlywheelError
from flywheel.settings import AutoLabelSettings

RELABELABLE = {State.UNLABELED, State.NEEDS_REVIEW, State.AUTO_LABELED}


@dataclass
class BatchResult:
    """Per message id: None = done (or nothing to do), an exception = retry this message."""

    errors: dict[str, Exception] = field(default_factory=dict)
    labeled: int = 0
    needs_review: int = 0
    spot_checks: int = 0  # of needs_review: drawn to check the champion's auto-labels
    withheld: int = 0  # of needs_review: the champion would auto-label them, but is suspended
    skipped: int = 0
    champion: str | None = None
    suspended: bool = False

    @property
    def summary(self) -> dict:
        return {
            "champion": self.champion,
            "auto_labeled": self.labeled,
            "needs_review": self.needs_review,
            "spot_checks": self.spot_checks,
            "withheld": self.withheld,
            "suspended": self.suspended,
            "skipped": self.skipped,
            "failed": len(self.errors),
            "errors": sorted({type(e).__name__ for e in self.errors.values()}),
        }


def _fetch(
    s: AutoLabelSettings, messages: list[tuple[str, str]], version: str, result: BatchResult
) -> list[tuple[str, str, bytes]]:
    """(message id, item id, image) of the messages to label: the items in one BatchGetItem,
    their images read in parallel; a message that cannot be read gets its own error."""
    bodies: dict[str, dict] = {}
    for message_id, raw in messages:
        try:
            body = json.loads(raw)
            if not isinstance(body.get("item_id"), str) or not body["item_id"]:
                # one malformed key would fail the whole BatchGetItem call
                raise FlywheelError(f"label message without an item id: {raw[:200]!r}")
            bodies[message_id] = {"item_id": body["item_id"], "image_key": body.get("image_key")}
        except Exception as exc:  # noqa: BLE001 - one bad message must not fail the others
            result.errors[message_id] = exc
    try:
        found = items.get_many(s.ITEMS_TABLE, [b["item_id"] for b in bodies.values()])
    except Exception as exc:  # noqa: BLE001 - throttled: retry all of them
        result.errors.update(dict.fromkeys(bodies, exc))
        return []
    wanted: dict[str, tuple[str, str]] = {}
    for message_id, body in bodies.items():
        item = found.get(body["item_id"])
        if (
            item is None
            or item.get("state") not in RELABELABLE
            or item.get("review_reason") == AUDIT  # the audit stream stays blind
            or (item.get("model_version") == version)
        ):
            result.skipped += 1
            continue
        wanted[message_id] = (body["item_id"], body["image_key"] or item["image_key"])
    images = storage.get_many(s.DATA_BUCKET, [key for _, key in wanted.values()])
    todo = []
    for message_id, (item_id, key) in wanted.items():
        image = images[key]
        if isinstance(image, Exception):
            result.errors[message_id] = image
        elif image is None:
            result.errors[message_id] = FlywheelError(f"image of item {item_id} is missing")
        else:
            todo.append((message_id, item_id, image))
    return todo


def label_messages(s: AutoLabelSettings, messages: list[tuple[str, str]]) -> BatchResult:
    """``messages`` are (message id, body) with LabelQueue bodies ``{item_id, image_key}``."""
    result = BatchResult()
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    if champion is None:
        # No model yet: consume the messages, leave the items unlabeled (promote re-sweeps).
        result.skipped = len(messages)
        return result
    result.champion = champion.model_version
    # Suspended when its audited accuracy fell below the target (services.audit); a new
    # champion has a new model_version, hence no suspension record.
    result.suspended = bool(
        (ledger.tally(s.ITEMS_TABLE, champion.model_version) or {}).get("suspended_at")
    )
    todo = _fetch(s, messages, champion.model_version, result)
    for group in batches_by_size([len(t[2]) for t in todo], s.INFERENCE_BATCH_SIZE):
        chunk = [todo[i] for i in group]
        try:
            response = runtime.invoke_batch(s.ENDPOINT_NAME, [t[2] for t in chunk])
            predictions = parse_predictions(response, len(chunk))
        except Exception as exc:  # noqa: BLE001 - throttling/endpoint errors: retry these messages
            result.errors.update({t[0]: exc for t in chunk})
            continue
        for (message_id, item_id, _), prediction in zip(chunk, predictions, strict=True):
            try:
                # A model's class names become labels and later paths: same grammar as people's.
                validate_label(prediction.label)
                decision = decide(
                    prediction,
                    champion.threshold,
                    spot_check=is_spot_check_draw(
                        item_id, champion.model_version, s.AUTO_LABEL_AUDIT_FRACTION
                    ),
                    suspended=result.suspended,
                )
                written = items.set_model_label(
                    s.ITEMS_TABLE,
                    item_id,
                    decision.state,
                    prediction.label,
                    prediction.confidence,
                    champion.model_version,
                    review_reason=decision.review_reason,
                    margin=prediction.margin,
                    top_k=prediction.top_k,
                    ood=prediction.ood,
                )
            except Exception as exc:  # noqa: BLE001
                result.errors[message_id] = exc
                continue
            if not written:
                result.skipped += 1  # a person labeled it meanwhile: never overwrite
            elif decision.state == State.AUTO_LABELED:
                result.labeled += 1
            else:
                result.needs_review += 1
                result.spot_checks += decision.review_reason == SPOT_CHECK
                result.withheld += decision.review_reason == SUSPENDED
    if result.labeled or result.needs_review:
        ledger.count_decisions(
            s.ITEMS_TABLE,
            champion.model_version,
            result.labeled + result.needs_review,
            result.labeled,
        )
    return result
