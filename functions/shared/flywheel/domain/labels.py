"""Human labels: from upload keys (labeled/<class>/...) and from label files (CSV, manifests)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field

_ITEM_ID = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_KEY = re.compile(r"(?:^|/)images/([0-9a-f]{64})\.png$")
CSV_HEADER = ("image_id_or_key", "label")


def label_from_upload_key(key: str) -> str | None:
    """``labeled/<class>/anything`` -> ``<class>``; any other key is unlabeled."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "labeled" and parts[1].strip():
        return parts[1].strip()
    return None


def item_id_from_reference(ref: str) -> str | None:
    """An item id, ``images/<id>.png`` or ``s3://bucket/images/<id>.png`` -> the item id."""
    ref = ref.strip()
    if _ITEM_ID.match(ref):
        return ref
    match = _IMAGE_KEY.search(ref)
    return match.group(1) if match else None


@dataclass(frozen=True)
class LabelLine:
    line: int
    reference: str
    label: str


@dataclass
class ParsedLabels:
    lines: list[LabelLine] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0


def parse_csv(text: str) -> ParsedLabels:
    """``image_id_or_key,label[,...]``; a header row and extra columns (review export) are fine.

    Rows with an empty label are skipped (a review CSV not fully worked through).
    """
    out = ParsedLabels()
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if n == 1 and row[0].strip().lower() == CSV_HEADER[0]:
            continue
        if len(row) < 2:
            out.errors.append({"line": n, "error": "expected image_id_or_key,label"})
            continue
        if not row[1].strip():
            out.skipped += 1
            continue
        out.lines.append(LabelLine(n, row[0].strip(), row[1].strip()))
    return out


def _label_attribute(record: dict) -> str | None:
    for key, value in record.items():
        if (
            key.endswith("-metadata")
            and isinstance(value, dict)
            and key[: -len("-metadata")] in record
        ):
            return key[: -len("-metadata")]
    return None


def parse_manifest(text: str) -> ParsedLabels:
    """Ground Truth (augmented) manifest lines: ``source-ref`` + ``<attr>`` + ``<attr>-metadata``.

    The class comes from ``<attr>-metadata.class-name`` (else the attribute's value).
    Lines with ``"label": ""``-style empty answers are skipped.
    """
    out = ParsedLabels()
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            ref = record.get("source-ref") or record.get("item_id") or ""
            attr = _label_attribute(record)
            label = None
            if attr is not None:
                label = record[f"{attr}-metadata"].get("class-name", record[attr])
            elif "label" in record:
                label = record["label"]
        except (ValueError, AttributeError) as exc:
            out.errors.append({"line": n, "error": f"invalid JSON line: {exc}"})
            continue
        if not ref:
            out.errors.append({"line": n, "error": "no source-ref"})
        elif label is None or str(label).strip() == "":
            out.skipped += 1
        else:
            out.lines.append(LabelLine(n, str(ref), str(label).strip()))
    return out


def parse_label_file(key: str, text: str) -> ParsedLabels:
    return parse_csv(text) if key.endswith(".csv") else parse_manifest(text)


def result_key(label_file_key: str) -> str:
    return f"{label_file_key}.result.json"
