"""Human labels: one answer (``apply_label``, the only write path) and labels files
(``apply_labels_file``, which writes ``<file>.result.json`` next to the file)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from flywheel.adapters import items, storage
from flywheel.domain.labels import check_rows, parse_label_file, result_key, validate_label
from flywheel.services import audit
from flywheel.settings import AuditAlarmSettings, HumanLabelsSettings


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


def apply_label(
    table: str,
    class_names: Iterable[str],
    item_id: str,
    label: str,
    by: items.Answerer | None = None,
    alarm: AuditAlarmSettings | None = None,
) -> items.Written:
    """One human answer, from any source (labels files, the review app, imports).

    The label must pass ``validate_label`` (grammar, ClassNames; raises ``InvalidLabel``);
    the item then becomes human_labeled with its provenance (``label_sampling``,
    ``label_origin``) from the state the person answered. 'unchanged' when it already had
    this human label, 'unknown' when there is no usable item. ``by`` is the review app's
    reviewer: their lease is checked and who, when and the model's suggestion recorded.

    An answer to a spot-check item adds one observation (correct or not) to its champion's
    tally in the same write, so it counts exactly once; with ``alarm`` (every caller in the
    stack passes its settings) the champion is then checked and suspended if its audited
    accuracy fell below its target (``services.audit``).
    """
    validate_label(label, tuple(class_names))
    written = items.apply_human_label(table, item_id, label, by)
    if alarm is not None and written.outcome == "applied":
        audit.after_answer(alarm, written.observation)
    return written


def apply_labels_file(s: HumanLabelsSettings, bucket: str, key: str) -> LabelsReport | None:
    """Good lines apply even when others fail; every failed line is reported with its reason.

    Reported per line (``errors``: line, code, error, reference when known): bytes that
    are not UTF-8, malformed rows and unbalanced quotes, references that are not item ids,
    invalid or unknown classes, conflicting rows for the same image (neither applied),
    unknown images; in a Label Studio export (``line`` = the task's position, ``task`` its
    id) also cancelled tasks, annotations with no or several classes, and annotators who
    disagree.

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
        outcome = apply_label(s.ITEMS_TABLE, s.CLASS_NAMES, row.item_id, row.label, alarm=s).outcome
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
