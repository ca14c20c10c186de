"""Apply a human labels file; write ``<file>.result.json`` next to it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flywheel.adapters import items, storage
from flywheel.domain.labels import item_id_from_reference, parse_label_file, result_key
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
    """Good lines apply even when others fail; unknown images / classes are reported.

    Applying the same file twice changes nothing (same label -> 'unchanged').
    None when the file is gone.
    """
    text = storage.get_text(bucket, key)
    if text is None:
        return None
    parsed = parse_label_file(key, text)
    report = LabelsReport(file=key, skipped_empty=parsed.skipped, errors=list(parsed.errors))
    for line in parsed.lines:
        item_id = item_id_from_reference(line.reference)
        if item_id is None:
            report.errors.append(
                {
                    "line": line.line,
                    "reference": line.reference,
                    "error": "not an item id or images/<item_id>.png key",
                }
            )
            continue
        if s.CLASS_NAMES and line.label not in s.CLASS_NAMES:
            report.errors.append(
                {
                    "line": line.line,
                    "reference": line.reference,
                    "error": f"unknown class {line.label!r}",
                }
            )
            continue
        outcome = items.set_human_label(s.ITEMS_TABLE, item_id, line.label)
        if outcome == "unknown":
            report.errors.append(
                {"line": line.line, "reference": line.reference, "error": "unknown image"}
            )
        elif outcome == "applied":
            report.applied += 1
        else:
            report.unchanged += 1
    storage.put_json(s.DATA_BUCKET, result_key(key), report.as_dict())
    return report
