"""Review batches: what people should label next, as CSV + GT input manifest.

Order (active learning that spends labels well):
1. ``audit`` items: the random audit stream certifies the threshold, so every one must be
   answered, and blind (no model label or confidence shown, which would anchor people);
   then ``spot_check`` items (random draws among what the champion would auto-label, which
   measure it), blind too, in random order.
2. ``out_of_distribution`` items: the model refused them; people say what they are.
3. ``uncertain`` items, most informative first by margin (top-1 minus top-2 confidence,
   smallest first), diversified by round-robin over the predicted classes: each round
   takes the next-smallest-margin item of every class, so a batch does not spend all its
   labels on one confusing class pair when several classes need help. Cheap, needs no
   embeddings, and works from what autolabel stores (label, margin); k-center greedy
   over the stored top-k vectors was the alternative, but the top-k of different items
   name different classes and a 5-number vector is a poor geometry for diversity.
   ``suspended`` items (what a suspended champion would have auto-labeled) come after
   them, in the same order.
4. Without a champion nothing is uncertain yet: unlabeled items in random order (by id
   hash) so people can label and the first model can be trained.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flywheel.contracts import manifest
from flywheel.domain.labels import LABEL_STUDIO_CONTROL, LABEL_STUDIO_OBJECT
from flywheel.domain.sampling import (
    AUDIT,
    BLIND_REASONS,
    OUT_OF_DISTRIBUTION,
    SPOT_CHECK,
    SUSPENDED,
    unit_hash,
)

REVIEW_CSV_HEADER = [
    "image_id_or_key",
    "label",
    "model_label",
    "confidence",
    "image_uri",
    "review_reason",
    "image_url",
    "image_url_expires",
    "upload_keys",
]
COLD_START = "cold_start"


@dataclass(frozen=True)
class ImageLink:
    """Where a person (or Label Studio) opens an item's image: a presigned GET and when it
    stops working, or an ``s3://`` URI (no expiry) that a storage connection resolves."""

    url: str
    expires: str = ""  # ISO 8601 UTC; "" for s3:// URIs


def review_reason(item: dict) -> str:
    if item.get("review_reason") in (AUDIT, SPOT_CHECK, SUSPENDED):
        return str(item["review_reason"])
    if item.get("review_reason") == OUT_OF_DISTRIBUTION or item.get("ood") is True:
        return OUT_OF_DISTRIBUTION
    if item.get("state") == "unlabeled":
        return COLD_START
    return "uncertain"


def margin(item: dict) -> float:
    """Top-1 minus top-2 confidence; the confidence when no margin was stored (older items)."""
    value = item.get("margin", item.get("confidence", 0.0))
    return float(value if value is not None else 0.0)


def _random_order(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda i: (unit_hash("review", i["item_id"]), i["item_id"]))


def round_robin_by_class(items: list[dict]) -> list[dict]:
    """Smallest margin first within each predicted class; classes take turns."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in sorted(items, key=lambda i: (margin(i), i["item_id"])):
        groups[str(item.get("label", ""))].append(item)
    out: list[dict] = []
    depth = 0
    while len(out) < len(items):
        layer = [g[depth] for g in groups.values() if depth < len(g)]
        out.extend(sorted(layer, key=lambda i: (margin(i), i["item_id"])))
        depth += 1
    return out


def order_for_review(
    items: list[dict], limit: int, cold_start: list[dict] | tuple[dict, ...] = ()
) -> list[dict]:
    """``items`` are needs_review items; ``cold_start`` unlabeled ones (only without a champion)."""
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_reason[review_reason(item)].append(item)
    ranked = (
        _random_order(by_reason[AUDIT])
        + _random_order(by_reason[SPOT_CHECK])
        + sorted(by_reason[OUT_OF_DISTRIBUTION], key=lambda i: (margin(i), i["item_id"]))
        + round_robin_by_class(by_reason["uncertain"])
        + round_robin_by_class(by_reason[SUSPENDED])
        + _random_order(by_reason[COLD_START] + list(cold_start))
    )
    return ranked[: max(0, limit)]


def batch_id(items: list[dict]) -> str:
    """Same pending items -> same batch id, so a repeated export overwrites, not duplicates."""
    return hashlib.sha256("\n".join(i["item_id"] for i in items).encode()).hexdigest()[:16]


def _blind(item: dict) -> bool:
    return review_reason(item) in (*BLIND_REASONS, COLD_START)


def upload_keys(item: dict) -> list[str]:
    """Every upload key that brought these bytes (``source_keys``; older items: ``source_key``)."""
    keys = item.get("source_keys") or ([item["source_key"]] if item.get("source_key") else [])
    return sorted(str(k) for k in keys)


def render_csv(items: list[dict], bucket: str, links: Mapping[str, ImageLink] | None = None) -> str:
    """Fill the ``label`` column and upload under labels/ - it is a valid labels file (the
    import reads the first two columns and ignores the rest).

    Audit items are blind: no model label or confidence to anchor the answer. ``image_url``
    is what a person opens (a presigned GET until ``image_url_expires``); ``upload_keys`` the
    upload-bucket keys the image came from, as a JSON list: a key may hold any character,
    and a cell starting with ``[`` is never run as a spreadsheet formula.
    """
    links = links or {}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REVIEW_CSV_HEADER)
    for i in items:
        blind = _blind(i)
        link = links.get(i["item_id"])
        writer.writerow(
            [
                i["item_id"],
                "",
                "" if blind else i.get("label", ""),
                "" if blind or i.get("confidence") is None else f"{float(i['confidence']):.4f}",
                f"s3://{bucket}/{i['image_key']}",
                review_reason(i),
                link.url if link else "",
                link.expires if link else "",
                json.dumps(upload_keys(i)),
            ]
        )
    return out.getvalue()


def render_manifest(items: list[dict], bucket: str) -> str:
    """Ground Truth labeling-job input manifest (one source-ref per line)."""
    lines = []
    for i in items:
        fields: dict[str, object] = {"item_id": i["item_id"], "review-reason": review_reason(i)}
        if not _blind(i):
            fields["model-label"] = i.get("label", "")
            fields["model-confidence"] = float(i.get("confidence", 0.0) or 0.0)
        lines.append(manifest.input_line(f"s3://{bucket}/{i['image_key']}", fields))
    return manifest.dumps(lines)


def label_studio_tasks(
    items: list[dict], links: Mapping[str, ImageLink], model_version: str | None = None
) -> list[dict]:
    """Label Studio tasks (the JSON list its import takes), most informative first.

    ``data.image`` is what Label Studio loads (``$image`` in the labeling config);
    ``data.item_id`` is how ``review import`` finds the item again. The model's label is a
    pre-annotation (``predictions``, score = its calibrated confidence, so Label Studio can
    sort by it); audit, spot-check and cold-start items are blind and get none.
    """
    tasks = []
    for i in items:
        link = links[i["item_id"]]
        data: dict = {
            LABEL_STUDIO_OBJECT: link.url,
            "item_id": i["item_id"],
            "review_reason": review_reason(i),
            "upload_keys": upload_keys(i),
        }
        if link.expires:
            data["image_url_expires"] = link.expires
        task: dict = {"data": data}
        label = i.get("label")
        if not _blind(i) and label:
            prediction: dict = {
                "model_version": str(i.get("model_version") or model_version or "unknown"),
                "result": [
                    {
                        "from_name": LABEL_STUDIO_CONTROL,
                        "to_name": LABEL_STUDIO_OBJECT,
                        "type": "choices",
                        "value": {"choices": [str(label)]},
                    }
                ],
            }
            if i.get("confidence") is not None:
                prediction["score"] = round(float(i["confidence"]), 6)
            task["predictions"] = [prediction]
        tasks.append(task)
    return tasks


def label_studio_config(classes: Iterable[str]) -> str:
    """The labeling config to paste into the Label Studio project (Settings > Labeling
    Interface > Code): one image, one required single choice per task."""
    names = sorted(set(classes))
    choices = "\n".join(f'    <Choice value="{html.escape(c, quote=True)}"/>' for c in names) or (
        "    <!-- no class is known yet: set the stack's ClassNames, or add one"
        ' <Choice value="..."/> per class -->'
    )
    return (
        "<View>\n"
        f'  <Image name="{LABEL_STUDIO_OBJECT}" value="${LABEL_STUDIO_OBJECT}"/>\n'
        f'  <Choices name="{LABEL_STUDIO_CONTROL}" toName="{LABEL_STUDIO_OBJECT}" '
        'choice="single" showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )
