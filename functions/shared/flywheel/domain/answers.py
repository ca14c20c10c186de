"""Answers from the review app: what a request may say, leases, what a reviewer is shown.

Pure: the review API's service reads and writes through the adapters, and decides here.

- An item id is 64 lowercase hex characters (a content hash); every S3 key the API builds
  comes from ``images/<item_id>.png`` and nothing else, so no parameter can reach
  another key (path or key injection -> 400 before anything is read).
- A lease (``lease_owner`` + ``lease_expires``, epoch seconds) gives one reviewer an item
  for a while; the conditional write in the adapter makes sure two reviewers never hold
  the same item at the same time. An expired lease is free.
- Audit, spot-check and cold-start items are blind: no model suggestion is shown (it would
  anchor the answer, and audit and spot-check answers measure the model).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.domain.review import COLD_START, review_reason
from flywheel.domain.sampling import BLIND_REASONS
from flywheel.errors import BadRequest

ITEM_ID = re.compile(r"[0-9a-f]{64}")
LABEL, SKIP, REJECT = "label", "skip", "reject"
ACTIONS = (SKIP, REJECT)
REJECT_REASON = "rejected by reviewer"
MAX_COUNT = 50
# labels per minute is measured over the reviewer's answers of the last few minutes
RATE_WINDOW_SECONDS = 15 * 60


def parse_item_id(value: Any) -> str:
    if not isinstance(value, str) or not ITEM_ID.fullmatch(value):
        raise BadRequest("item_id must be 64 lowercase hex characters", "bad_item_id")
    return value


def parse_count(raw: str | None, default: int = 5) -> int:
    """``?count=N``: 1 to MAX_COUNT; anything else is a 400 (never coerced)."""
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= MAX_COUNT:
        raise BadRequest(f"count must be an integer from 1 to {MAX_COUNT}", "bad_count")
    return int(raw)


@dataclass(frozen=True)
class Answer:
    item_id: str
    action: str  # label | skip | reject
    label: str | None = None


def parse_answer(body: Any) -> Answer:
    """``{"item_id", "label"}`` or ``{"item_id", "action": "skip" | "reject"}``.

    The label's grammar and ClassNames membership are checked by the labels write path
    (``services.human_labels.apply_label``), the same check labels files get.
    """
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object", "bad_body")
    unknown = set(body) - {"item_id", "label", "action"}
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(map(str, unknown)))}", "bad_body")
    item_id = parse_item_id(body.get("item_id"))
    label, action = body.get("label"), body.get("action")
    if (label is None) == (action is None):
        raise BadRequest("give either a label or an action (skip, reject)", "bad_body")
    if action is not None:
        if action not in ACTIONS:
            raise BadRequest("action must be 'skip' or 'reject'", "bad_action")
        return Answer(item_id, str(action))
    if not isinstance(label, str):
        raise BadRequest("label must be a string", "invalid_label")
    return Answer(item_id, LABEL, label)


# -- leases ------------------------------------------------------------------------------


def lease_holder(item: Mapping[str, Any], now: float) -> str | None:
    """Who holds the item's lease now (None when nobody, or it expired)."""
    owner = item.get("lease_owner")
    if not owner or float(item.get("lease_expires") or 0) <= now:
        return None
    return str(owner)


def leased_by_other(item: Mapping[str, Any], reviewer: str, now: float) -> bool:
    holder = lease_holder(item, now)
    return holder is not None and holder != reviewer


# -- what a reviewer sees ------------------------------------------------------------------


def is_blind(item: Mapping[str, Any]) -> bool:
    return review_reason(dict(item)) in (*BLIND_REASONS, COLD_START)


def suggestion(item: Mapping[str, Any]) -> dict | None:
    """The model's answer as the app may show it: None for blind items or no model label."""
    if is_blind(item) or item.get("label_source") != "model" or not item.get("label"):
        return None
    top_k = [
        {"label": str(t["label"]), "confidence": float(t["confidence"])}
        for t in item.get("top_k") or []
        if isinstance(t, Mapping) and "label" in t
    ]
    if not top_k:
        top_k = [{"label": str(item["label"]), "confidence": float(item.get("confidence") or 0)}]
    return {
        "label": str(item["label"]),
        "confidence": float(item.get("confidence") or 0.0),
        "top_k": top_k,
        "model_version": item.get("model_version"),
    }


def recorded_suggestion(item: Mapping[str, Any]) -> dict | None:
    """What the model said about the item when it was answered (kept even when blind)."""
    if item.get("label_source") != "model" or not item.get("label"):
        return None
    return {
        "label": str(item["label"]),
        "confidence": float(item.get("confidence") or 0.0),
        "model_version": str(item.get("model_version") or ""),
    }


def view(item: Mapping[str, Any], image_url: str, lease_expires: float) -> dict:
    """One queue entry as the app receives it."""
    return {
        "item_id": item["item_id"],
        "image_url": image_url,
        "review_reason": review_reason(dict(item)),
        "blind": is_blind(item),
        "suggestion": suggestion(item),
        "lease_expires": int(lease_expires),
    }


def offered_classes(
    class_names: Iterable[str], champion_classes: Iterable[str] | None
) -> list[str]:
    """The classes the app shows as buttons: ClassNames when the stack fixes them, else the
    champion's (what the model can suggest), else none (the reviewer types a class name;
    the labels write path checks its grammar)."""
    return list(class_names) or list(champion_classes or [])


# -- undo ---------------------------------------------------------------------------------

LEASE_FIELDS = ("lease_owner", "lease_expires")


def restorable(previous: Mapping[str, Any]) -> dict:
    """The item as it was before an answer, minus any lease (undo grants a fresh one)."""
    return {k: v for k, v in previous.items() if k not in LEASE_FIELDS}


# -- progress -----------------------------------------------------------------------------


def labels_per_minute(answered_at: Iterable[float], now: float) -> float:
    """Answers per minute over the last RATE_WINDOW_SECONDS (from the first in the window)."""
    recent = sorted(t for t in answered_at if now - t <= RATE_WINDOW_SECONDS)
    if not recent:
        return 0.0
    minutes = max(now - recent[0], 60.0) / 60.0
    return round(len(recent) / minutes, 2)
