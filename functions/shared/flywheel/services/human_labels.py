"""Apply a human labels file; write ``<file>.result.json`` next to it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flywheel.adapters import items, storage
from flywheel.domain.labels import check_rows, parse_label_file, result_key
from flywheel.settings import HumanLabelsSettings


@dataclass
class LabelsReport:
    file: str
    applied: int = 0
    unchanged: int = 0
    skipped_empty: int = 0
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def summary(self) -> dict:
        return {
            "applied": self.applied,
            "unchanged": self.unchanged,
            "errors": len(self.errors),
            "skipped_empty": self.skipped_empty,
        }


def apply_labels_file(s: HumanLabelsSettings, bucket: str, key: str) -> LabelsReport | None:
    """Good lines apply even when others fail; every failed line is reported with its reason.

    Reported per line (``errors``: line, code, error, reference when known): bytes that
    are not UTF-8, malformed rows and unbalanced quotes, references that are not item ids,
    invalid or unknown classes, conflicting rows for the same image (neither applied),
    unknown images.

    Applying the same file twice changes nothing (same label -> 'unchanged').
    None when the file is gone.
    """
    got = storage.get_bytes(bucket, key)
    if got is None:
        return None
    parsed = parse_label_file(key, got[0])
    rows = check_rows(parsed, s.CLASS_NAMES)
    report = LabelsReport(file=key, skipped_empty=parsed.skipped, errors=parsed.errors)
    for row in rows:
        outcome = items.set_human_label(s.ITEMS_TABLE, row.item_id, row.label)
        if outcome == "unknown":
            report.errors.append(
                {
                    "line": row.line,
                    "code": "unknown_image",
                    "error": "unknown image",
                    "reference": row.reference,
                }
            )
        elif outcome == "applied":
            report.applied += 1
        else:
            report.unchanged += 1
    report.errors.sort(key=lambda e: e["line"])
    storage.put_json(s.DATA_BUCKET, result_key(key), report.as_dict())
    return report
