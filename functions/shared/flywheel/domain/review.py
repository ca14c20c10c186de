"""Review batches: needs_review items, most uncertain first, as CSV + GT input manifest."""

from __future__ import annotations

import csv
import hashlib
import io
import json

REVIEW_CSV_HEADER = ["image_id_or_key", "label", "model_label", "confidence", "image_uri"]


def order_for_review(items: list[dict], limit: int) -> list[dict]:
    """Lowest confidence first; ties by item id so the order is stable."""
    ranked = sorted(items, key=lambda i: (float(i.get("confidence", 0.0)), i["item_id"]))
    return ranked[:limit]


def batch_id(items: list[dict]) -> str:
    """Same pending items -> same batch id, so a repeated export overwrites, not duplicates."""
    return hashlib.sha256("\n".join(i["item_id"] for i in items).encode()).hexdigest()[:16]


def render_csv(items: list[dict], bucket: str) -> str:
    """Fill the ``label`` column and upload under labels/ - it is a valid labels file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REVIEW_CSV_HEADER)
    for i in items:
        writer.writerow(
            [
                i["item_id"],
                "",
                i.get("label", ""),
                f"{float(i.get('confidence', 0.0)):.4f}",
                f"s3://{bucket}/{i['image_key']}",
            ]
        )
    return out.getvalue()


def render_manifest(items: list[dict], bucket: str) -> str:
    """Ground Truth labeling-job input manifest (one source-ref per line)."""
    lines = [
        json.dumps(
            {
                "source-ref": f"s3://{bucket}/{i['image_key']}",
                "item_id": i["item_id"],
                "model-label": i.get("label", ""),
                "model-confidence": float(i.get("confidence", 0.0)),
            }
        )
        for i in items
    ]
    return "\n".join(lines) + ("\n" if lines else "")
