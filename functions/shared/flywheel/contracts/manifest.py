"""Ground Truth augmented manifests: one JSON line per image, built and read here only.

A labeled line is SageMaker Ground Truth's image-classification output::

    {"source-ref": "s3://bucket/key.png", "label": 3,
     "label-metadata": {"class-name": "cat", "confidence": 1.0, "human-annotated": "yes",
                        "job-name": "labeling-job/x", "creation-date": "2026-11-30T12:00:00",
                        "type": "groundtruth/image-classification", "sampling": "random"}}

``label`` is the label attribute (any name: a labeling job's, or ``--label-attribute``), its
value the class index; ``<attribute>-metadata.class-name`` is the class. ``sampling`` is
ours: how the label was drawn (``random`` labels may certify a threshold, ``selected`` ones
only train; docs/certification.md). Writers: the dataset snapshot (flywheel.domain.splits),
the review batch's labeling-job input (flywheel.domain.review) and ``flywheel export``;
readers: labels files (flywheel.domain.labels) and train.py's channels (classifier.data).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SOURCE_REF = "source-ref"
DEFAULT_ATTRIBUTE = "label"
TYPE = "groundtruth/image-classification"
SAMPLINGS = ("random", "selected")
SUFFIXES = (".manifest", ".jsonl")  # a channel's manifest file


class InvalidManifestLine(ValueError):
    """A line that is not an augmented manifest line; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def metadata_key(attribute: str) -> str:
    return f"{attribute}-metadata"


def input_line(source_ref: str, fields: Mapping[str, Any] | None = None) -> dict:
    """A labeling job's input line: the image, and whatever else the people should see."""
    return {SOURCE_REF: source_ref, **(fields or {})}


def labeled_line(
    source_ref: str,
    class_name: str,
    class_index: int,
    *,
    human: bool,
    job_name: str,
    creation_date: str,
    confidence: float = 1.0,
    sampling: str | None = None,
    attribute: str = DEFAULT_ATTRIBUTE,
    fields: Mapping[str, Any] | None = None,
) -> dict:
    """A labeled line (Ground Truth's output shape); ``fields`` go next to ``source-ref``."""
    if sampling is not None and sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, not {sampling!r}")
    metadata = {
        "class-name": class_name,
        "confidence": float(confidence),
        "human-annotated": "yes" if human else "no",
        "job-name": job_name,
        "creation-date": creation_date,
        "type": TYPE,
    }
    if sampling is not None:
        metadata["sampling"] = sampling
    return {
        **input_line(source_ref, fields),
        attribute: class_index,
        metadata_key(attribute): metadata,
    }


def dumps(lines: list[dict]) -> str:
    """JSON lines, one per manifest line, newline-terminated."""
    return "".join(json.dumps(line) + "\n" for line in lines)


@dataclass(frozen=True)
class ManifestLabel:
    source_ref: str
    label: str | None  # None: the line carries no answer (unlabeled, or an empty answer)
    attribute: str
    sampling: str | None  # "random" | "selected"; None when the line does not say


def label_attribute(record: Mapping[str, Any]) -> str | None:
    """The attribute that has an ``<attribute>-metadata`` object next to it, if any."""
    for key, value in record.items():
        name = key.removesuffix("-metadata")
        if name != key and isinstance(value, dict) and name in record:
            return name
    return None


def parse_line(
    line: str | bytes | Mapping[str, Any], attribute: str | None = None
) -> ManifestLabel:
    """One manifest line (its text, or the decoded object); InvalidManifestLine says why not.

    ``attribute`` defaults to the one with a ``-metadata`` object, else ``label``. The class
    is ``<attribute>-metadata.class-name``, else the attribute's value when it is a string
    (a bare index names no class).
    """
    if isinstance(line, str | bytes):
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidManifestLine(f"invalid JSON line: {exc}") from None
    else:
        record = line
    if not isinstance(record, Mapping):
        raise InvalidManifestLine("a manifest line must be a JSON object")
    ref = record.get(SOURCE_REF)
    if not isinstance(ref, str) or not ref:
        raise InvalidManifestLine(f"no {SOURCE_REF}")
    attribute = attribute or label_attribute(record) or DEFAULT_ATTRIBUTE
    metadata = record.get(metadata_key(attribute))
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise InvalidManifestLine(f"{metadata_key(attribute)} must be a JSON object")
    label = metadata.get("class-name")
    value = record.get(attribute)
    if label is None and isinstance(value, str):
        label = value
    elif label is None and value is not None:
        raise InvalidManifestLine(
            f"{attribute} is {value!r:.40} and {metadata_key(attribute)} has no class-name"
        )
    if label is not None and not isinstance(label, str):
        raise InvalidManifestLine(f"class-name must be a string, not {label!r:.40}")
    sampling = metadata.get("sampling")
    return ManifestLabel(
        source_ref=ref,
        label=(label.strip() or None) if label is not None else None,
        attribute=attribute,
        sampling=sampling if sampling in SAMPLINGS else None,
    )
