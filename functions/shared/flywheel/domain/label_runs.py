"""Applying a labels file in chunks that survive the function's timeout (pure).

A labels file is parsed and checked whole (cheap and deterministic, so every invocation
parses it again and gets the same rows and the same per-line errors), then its rows are
applied a chunk at a time (``LABELS_CHUNK_ROWS``: the template sets 500). After each chunk a
checkpoint records the next row and one outcome character per row applied so far; an
invocation that is running out of time stops between chunks and hands the rest on, and
whoever resumes starts at the checkpoint's row.
The report is assembled from the parse errors and the outcome characters, so it is the
same however many invocations the file took.

A file is one *revision* of its key: the object's version id (versioned buckets), else its
ETag and Last-Modified (a second's resolution: identical bytes uploaded again within the
same second are the same revision). A new revision starts from row 1; a finished one is
never applied again, however often its messages are delivered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flywheel.domain.labels import LabelRow

# One character per applied-or-checked row in the checkpoint (a 20,000-row file is 20 kB).
APPLIED, UNCHANGED, UNKNOWN = "a", "u", "x"
OUTCOME_CODES = {"applied": APPLIED, "unchanged": UNCHANGED, "unknown": UNKNOWN}
# The checkpoint is one DynamoDB item (400 KB at most) holding a character per row: rows
# past this are reported, not applied (split such a file in several).
MAX_ROWS = 200_000
# Time an invocation keeps for the hand-off after its last chunk: the checkpoint, the
# progress object, the continuation message (a few calls, far less than this).
HANDOFF_RESERVE_S = 10.0
RUN_ID_PREFIX = "meta#labels#"
APPLYING_STATUS, DONE_STATUS = "applying", "done"


def run_id(bucket: str, key: str) -> str:
    """The checkpoint record of a labels file key (one per key; a new revision resets it)."""
    digest = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:40]
    return f"{RUN_ID_PREFIX}{digest}"


def revision(version_id: str | None, etag: str, last_modified: datetime | None) -> str:
    """Which bytes of a key are being applied, as GetObject tells them."""
    if version_id and version_id != "null":
        return f"v:{version_id}"
    when = last_modified.isoformat() if last_modified else "?"
    return f"e:{etag.strip(chr(34))}@{when}"


@dataclass(frozen=True)
class Tally:
    applied: int
    unchanged: int
    unknown: int


def tally(outcomes: str) -> Tally:
    return Tally(outcomes.count(APPLIED), outcomes.count(UNCHANGED), outcomes.count(UNKNOWN))


def outcome_errors(rows: Sequence[LabelRow], outcomes: str) -> list[dict]:
    """The per-row errors that applying found (no such item), and the rows over MAX_ROWS."""
    errors = [
        {
            "line": row.line,
            "code": "unknown_image",
            "error": "unknown image",
            "reference": row.reference,
        }
        for row, outcome in zip(rows, outcomes, strict=False)
        if outcome == UNKNOWN
    ]
    errors += [
        {
            "line": row.line,
            "code": "too_many_rows",
            "error": f"the file has more than {MAX_ROWS} rows to apply: upload the rest "
            "as another file",
            "reference": row.reference,
        }
        for row in rows[MAX_ROWS:]
    ]
    return errors


def next_chunk(rows: Sequence[LabelRow], start: int, size: int) -> Sequence[LabelRow]:
    return rows[start : min(start + size, len(rows), MAX_ROWS)]


def rows_to_apply(rows: Sequence[LabelRow]) -> int:
    return min(len(rows), MAX_ROWS)


def time_for_another_chunk(
    seconds_left: float | None, slowest_chunk_s: float, reserve_s: float = HANDOFF_RESERVE_S
) -> bool:
    """Start another chunk only if it fits twice over (a chunk of new labels is slower than
    one of unknown ids) and the hand-off still has its reserve. No deadline: always."""
    if seconds_left is None:
        return True
    return seconds_left - 2 * slowest_chunk_s >= reserve_s


def handoff_delay_s(lease_expires: float, now: float) -> int:
    """How long a message that found another invocation applying the file waits before it
    looks again: until that invocation's lease ends (its Lambda deadline), at most SQS's
    15 minutes."""
    return max(1, min(900, int(lease_expires - now) + 2))


def progress(
    rows_total: int, outcomes: str, status: str, invocations: int, started_at: str, now: str
) -> dict:
    """What ``<file>.progress.json`` and the result's ``progress`` say."""
    t = tally(outcomes)
    return {
        "status": status,  # APPLYING_STATUS until the last row is done, then DONE_STATUS
        "rows_done": len(outcomes),
        "rows_total": rows_total,
        "applied": t.applied,
        "unchanged": t.unchanged,
        "unknown": t.unknown,
        "invocations": invocations,
        "started_at": started_at,
        "updated_at": now,
    }


def progress_key(label_file_key: str) -> str:
    return f"{label_file_key}.progress.json"
