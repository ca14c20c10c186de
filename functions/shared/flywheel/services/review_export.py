"""Export a review batch (audit, out-of-distribution, then uncertain and diverse) under review/.

Without a champion nothing gets a model label, so the batch also offers unlabeled items
in random order: people can label and the loop does not stall before its first model.

One batch, four files (the same items, the same image links):
    review/<batch>.csv                  fill the label column, upload under labels/
    review/<batch>.manifest             a Ground Truth labeling-job input manifest
    review/<batch>.label-studio.json    Label Studio tasks with the model's pre-annotations
    review/<batch>.label-studio.xml     the Label Studio labeling config for those tasks
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from flywheel.adapters import items, parameters, storage
from flywheel.domain.answers import ITEM_ID, parse_item_id
from flywheel.domain.items import State, image_key
from flywheel.domain.review import (
    ImageLink,
    batch_id,
    label_studio_config,
    label_studio_tasks,
    order_for_review,
    render_csv,
    render_manifest,
    review_reason,
)
from flywheel.settings import ReviewExportSettings

ImageUrls = Literal["presigned", "s3"]


def _with_item_ids(rows: Iterable[dict]) -> list[dict]:
    """Rows with a content-hash id (a row written by hand could name any key: never exported)."""
    return [i for i in rows if ITEM_ID.fullmatch(str(i.get("item_id")))]


def image_links(
    s: ReviewExportSettings, chosen: list[dict], mode: ImageUrls, now: datetime | None = None
) -> dict[str, ImageLink]:
    """A presigned GET per item (expiry stated), or ``s3://`` URIs for a Label Studio S3
    storage connection to resolve. The key comes from the validated item id only."""
    links = {}
    expires = (now or datetime.now(UTC)) + timedelta(seconds=s.IMAGE_URL_SECONDS)
    for item in chosen:
        key = image_key(parse_item_id(item["item_id"]))
        if mode == "s3":
            links[item["item_id"]] = ImageLink(f"s3://{s.DATA_BUCKET}/{key}")
        else:
            url = storage.presigned_get(s.DATA_BUCKET, key, s.IMAGE_URL_SECONDS)
            links[item["item_id"]] = ImageLink(url, expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return links


def _classes(s: ReviewExportSettings, chosen: list[dict], champion_classes: list[str]) -> set[str]:
    """The choices Label Studio offers: ClassNames when the stack sets them (no other label is
    accepted), else the champion's classes, the batch's model labels and the human labels."""
    if s.CLASS_NAMES:
        return set(s.CLASS_NAMES)
    found = set(champion_classes)
    for item in chosen:
        found |= {str(t["label"]) for t in item.get("top_k") or [] if t.get("label")}
        if item.get("label"):
            found.add(str(item["label"]))
    found |= {
        str(i["label"])
        for i in items.query_state(s.ITEMS_TABLE, State.HUMAN_LABELED)
        if i.get("label")
    }
    return found


def export_review_batch(
    s: ReviewExportSettings, limit: int | None = None, image_urls: ImageUrls = "presigned"
) -> dict:
    pending = _with_item_ids(items.query_state(s.ITEMS_TABLE, State.NEEDS_REVIEW))
    cold_start = []
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    if champion is None:
        cold_start = _with_item_ids(items.query_state(s.ITEMS_TABLE, State.UNLABELED))
    chosen = order_for_review(pending, limit or s.REVIEW_BATCH_SIZE, cold_start)
    if not chosen:
        return {"batch_id": None, "items": 0, "pending": 0}
    batch = batch_id(chosen)
    links = image_links(s, chosen, image_urls)
    keys = {
        "csv": f"review/{batch}.csv",
        "manifest": f"review/{batch}.manifest",
        "label_studio_tasks": f"review/{batch}.label-studio.json",
        "label_studio_config": f"review/{batch}.label-studio.xml",
    }
    model_version = champion.model_version if champion else None
    bodies = {
        "csv": (render_csv(chosen, s.DATA_BUCKET, links).encode(), "text/csv"),
        "manifest": (
            render_manifest(chosen, s.DATA_BUCKET).encode(),
            "application/jsonlines",
        ),
        "label_studio_tasks": (
            json.dumps(label_studio_tasks(chosen, links, model_version), indent=1).encode(),
            "application/json",
        ),
        "label_studio_config": (
            label_studio_config(_classes(s, chosen, champion.classes if champion else [])).encode(),
            "application/xml",
        ),
    }
    for name, (body, content_type) in bodies.items():
        storage.put_bytes(s.DATA_BUCKET, keys[name], body, content_type)
    result = {
        "batch_id": batch,
        "items": len(chosen),
        "pending": len(pending) + len(cold_start),
        "reasons": dict(Counter(review_reason(i) for i in chosen)),
        "image_urls": image_urls,
        **{name: f"s3://{s.DATA_BUCKET}/{key}" for name, key in keys.items()},
    }
    if image_urls == "presigned":
        result["image_urls_expire"] = next(iter(links.values())).expires
    return result
