"""Human labels: one answer (``apply_label``, the only write path) and labels files
(``apply_labels_file``: in resumable chunks, ``<file>.progress.json`` as it goes and
``<file>.result.json`` next to the file when done)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

from flywheel.adapters import items, ledger, queues, storage
from flywheel.domain import label_runs
from flywheel.domain.items import now_iso
from flywheel.domain.labels import (
    LabelRow,
    ParsedLabels,
    check_rows,
    parse_label_file,
    result_key,
    validate_label,
)
from flywheel.services import audit
from flywheel.settings import AuditAlarmSettings, HumanLabelsSettings


@dataclass
class LabelsReport:
    file: str
    applied: int = 0
    unchanged: int = 0
    skipped_empty: int = 0
    errors: list[dict] = field(default_factory=list)
    progress: dict = field(default_factory=dict)  # label_runs.progress: rows, invocations

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
    known: Mapping[str, dict] | None = None,
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
    accuracy fell below its target (``services.audit``). ``known``: the items as a batch
    read found them (``items.get_many``), which spares the first GetItem.
    """
    validate_label(label, tuple(class_names))
    written = items.apply_human_label(table, item_id, label, by, known)
    if alarm is not None and written.outcome == "applied":
        audit.after_answer(alarm, written.observation)
    return written


@dataclass(frozen=True)
class LabelsFile:
    """A labels file to apply: named by its S3 event, or by a message that resumes it
    (``revision`` set: that revision only; ``start``: it may begin a new revision)."""

    bucket: str
    key: str
    revision: str | None = None
    start: bool = True

    @classmethod
    def from_message(cls, body: dict) -> LabelsFile:
        return cls(body["bucket"], body["key"], body.get("revision"), bool(body.get("start")))

    def message(self, revision: str) -> dict:
        """The body of the message that hands this file on (``handler`` reads it back)."""
        return {
            "labels_file": {
                "bucket": self.bucket,
                "key": self.key,
                "revision": revision,
                "start": self.start,
            }
        }


@dataclass
class LabelsRun:
    """What one invocation did with a labels file.

    ``status``: ``done`` (this call finished it: ``report`` is the result file),
    ``handed_on`` (time ran short: the rest continues from the checkpoint in a new
    message), ``already_done`` (that revision was finished before: nothing changed),
    ``waiting`` (another invocation is applying it: this message looks again later),
    ``taken_over`` (this invocation outlived its lease and another one went on),
    ``superseded`` (the key holds newer bytes now; their own event applies them) or
    ``gone`` (the object was deleted).
    """

    status: str
    key: str
    report: LabelsReport | None = None
    progress: dict | None = None
    applied_now: int = 0


def apply_labels_file(
    s: HumanLabelsSettings,
    f: LabelsFile,
    deadline: float | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> LabelsRun:
    """Apply a labels file in chunks from its checkpoint; good lines apply even when others
    fail, and every failed line is reported with its reason.

    Reported per line (``errors``: line, code, error, reference when known): bytes that
    are not UTF-8, malformed rows and unbalanced quotes, references that are not item ids,
    invalid or unknown classes, conflicting rows for the same image (neither applied),
    unknown images; in a Label Studio export (``line`` = the task's position, ``task`` its
    id) also cancelled tasks, annotations with no or several classes, and annotators who
    disagree.

    ``deadline`` (epoch seconds; the handler's Lambda deadline): chunks stop in time to
    save the checkpoint and send the continuation message; ``on_progress`` is called after
    each chunk with the figures written to ``<file>.progress.json``. The result file
    ``<file>.result.json`` is written once, when the last row is done; a redelivered
    message of a finished revision changes nothing.
    """
    got = storage.get_stored(f.bucket, f.key)
    if got is None:
        return LabelsRun("gone", f.key)
    current = label_runs.revision(got.version_id, got.etag, got.last_modified)
    if f.revision is not None and f.revision != current:
        return LabelsRun("superseded", f.key)
    parsed = parse_label_file(f.key, got.body)
    rows = check_rows(parsed, s.CLASS_NAMES)
    total = label_runs.rows_to_apply(rows)
    record_id = label_runs.run_id(f.bucket, f.key)
    owner = uuid.uuid4().hex
    now = time.time()
    # The lease ends when this invocation would be killed; without a deadline (tools,
    # tests), when SQS's longest delay would have brought a waiting message back.
    lease_expires = deadline if deadline is not None else now + 900
    claim = ledger.claim_labels_run(
        s.ITEMS_TABLE, record_id, f.key, current, owner, lease_expires, now, f.start
    )
    if claim.kind == "done":
        return LabelsRun("already_done", f.key)
    if claim.kind == "superseded":
        return LabelsRun("superseded", f.key)
    if claim.kind == "busy":
        delay = label_runs.handoff_delay_s(claim.lease_expires, now)
        queues.send_later(s.LABELS_FILE_QUEUE_URL, f.message(current), delay)
        return LabelsRun("waiting", f.key)
    assert claim.checkpoint is not None
    try:
        return _apply_from_checkpoint(
            s, f, current, rows, total, parsed, claim.checkpoint, owner, deadline, on_progress
        )
    except BaseException:
        # Let the redelivered message (or a waiting one) resume at once, not at the lease's end.
        with contextlib.suppress(Exception):
            ledger.end_labels_lease(s.ITEMS_TABLE, record_id, owner, done=False)
        raise


def _apply_from_checkpoint(
    s: HumanLabelsSettings,
    f: LabelsFile,
    revision: str,
    rows: list[LabelRow],
    total: int,
    parsed: ParsedLabels,
    checkpoint: ledger.LabelsCheckpoint,
    owner: str,
    deadline: float | None,
    on_progress: Callable[[dict], None] | None,
) -> LabelsRun:
    record_id = label_runs.run_id(f.bucket, f.key)
    outcomes, slowest, applied_now, chunks = checkpoint.outcomes, 0.0, 0, 0

    def figures(status: str) -> dict:
        return label_runs.progress(
            total, outcomes, status, checkpoint.invocations, checkpoint.started_at, now_iso()
        )

    while len(outcomes) < total:
        left = None if deadline is None else deadline - time.time()
        if chunks and not label_runs.time_for_another_chunk(left, slowest):
            break
        began, start = time.monotonic(), len(outcomes)
        chunk = label_runs.next_chunk(rows, start, s.LABELS_CHUNK_ROWS)
        known = items.get_many(s.ITEMS_TABLE, [row.item_id for row in chunk])
        for row in chunk:
            written = apply_label(
                s.ITEMS_TABLE, s.CLASS_NAMES, row.item_id, row.label, alarm=s, known=known
            )
            outcomes += label_runs.OUTCOME_CODES[written.outcome]
            applied_now += written.outcome == "applied"
        if not ledger.save_labels_chunk(s.ITEMS_TABLE, record_id, revision, owner, start, outcomes):
            # Another invocation took the file over (this one outlived its lease): it goes on.
            return LabelsRun("taken_over", f.key, applied_now=applied_now)
        chunks += 1
        slowest = max(slowest, time.monotonic() - began)
        now_figures = figures(label_runs.APPLYING_STATUS)
        storage.put_json(s.DATA_BUCKET, label_runs.progress_key(f.key), now_figures)
        if on_progress is not None:
            on_progress(now_figures)

    if len(outcomes) < total:
        # Give the lease up first: the continuation must find the file free.
        ledger.end_labels_lease(s.ITEMS_TABLE, record_id, owner, done=False)
        queues.send_later(s.LABELS_FILE_QUEUE_URL, replace(f, start=False).message(revision))
        handed = figures(label_runs.APPLYING_STATUS)
        return LabelsRun("handed_on", f.key, progress=handed, applied_now=applied_now)

    t = label_runs.tally(outcomes)
    report = LabelsReport(
        file=f.key,
        applied=t.applied,
        unchanged=t.unchanged,
        skipped_empty=parsed.skipped,
        errors=sorted(
            parsed.errors + label_runs.outcome_errors(rows, outcomes), key=lambda e: e["line"]
        ),
        progress=figures(label_runs.DONE_STATUS),
    )
    # The result file first: a crash before the checkpoint says done only writes it again.
    storage.put_json(s.DATA_BUCKET, result_key(f.key), report.as_dict())
    storage.put_json(s.DATA_BUCKET, label_runs.progress_key(f.key), report.progress)
    ledger.end_labels_lease(s.ITEMS_TABLE, record_id, owner, done=True)
    return LabelsRun("done", f.key, report, report.progress, applied_now)
