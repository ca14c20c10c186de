"""Human labels: from upload keys (labeled/<class>/...) and from labels files (CSV, Ground
Truth manifests, Label Studio JSON exports).

A label is data, never a path: every label that enters the system passes
``validate_label`` (the class-name grammar, and membership in ClassNames when the
stack sets it), because labels later become S3 key and directory components
(``datasets/<snap>/<split>/<label>/<id>.png``, ImageFolder exports).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from flywheel.contracts import manifest

_ITEM_ID = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_KEY = re.compile(r"(?:^|/)images/([0-9a-f]{64})\.png$")
CSV_HEADER = ("image_id_or_key", "label")
# A labels file is picked by its name's end (the template's S3 notification filters match).
# A Label Studio export is a plain ``.json`` file, but ``labels/*.json`` would also match the
# ``<file>.result.json`` reports written next to each file: hence the longer suffix.
LABEL_STUDIO_SUFFIX = ".label-studio.json"
LABEL_FILE_SUFFIXES = (".csv", ".manifest", ".jsonl", LABEL_STUDIO_SUFFIX)
# The labeling config's control and object names (domain/review.py writes it; an export of a
# project whose config has other names still works when it has one Choices control).
LABEL_STUDIO_CONTROL = "label"
LABEL_STUDIO_OBJECT = "image"

# The class-name grammar: ASCII letters and digits, then also space _ . + -; at most 64
# characters; first character a letter or digit (so never "." or ".." or a leading space);
# never ending in a space or a dot (Windows drops those, so "cat." would become "cat").
# No "/", "\", ":", "%", control or non-ASCII characters: it is safe as a path component
# and as an S3 key part everywhere, unencoded.
_CLASS_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 _.+-]{0,62}[A-Za-z0-9_+-])?$")
# Device names Windows refuses as file names (an ImageFolder export must work there too).
_RESERVED = re.compile(r"^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?$", re.IGNORECASE)
MAX_LABEL_LENGTH = 64


class InvalidLabel(ValueError):
    """A label that must not be stored: not a valid class name, or not one of ClassNames."""

    def __init__(self, reason: str, code: str = "invalid_label"):
        super().__init__(reason)
        self.reason = reason
        self.code = code  # "invalid_label" (grammar) or "unknown_class" (not in ClassNames)


def validate_label(label: str, class_names: Iterable[str] = ()) -> str:
    """The label itself when it may be stored; else raise ``InvalidLabel`` with the reason.

    The grammar always applies (ClassNames values are path components too); with
    ClassNames set the label must also be one of them.
    """
    if not isinstance(label, str):
        raise InvalidLabel(f"a class name must be text, got {type(label).__name__}")
    shown = label if len(label) <= 80 else label[:80] + "..."
    if not _CLASS_NAME.match(label) or _RESERVED.match(label):
        raise InvalidLabel(
            f"invalid class name {shown!r}: use 1 to {MAX_LABEL_LENGTH} ASCII letters, digits, "
            "spaces or _.+- starting with a letter or digit"
        )
    names = tuple(class_names)
    if names and label not in names:
        raise InvalidLabel(f"unknown class {label!r}", "unknown_class")
    return label


def label_from_upload_key(key: str) -> str | None:
    """``labeled/<class>/anything`` -> ``<class>``; any other key is unlabeled.

    The class is returned as found: callers pass it through ``validate_label``.
    """
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

    def reject(
        self, line: int, code: str, error: str, reference: str | None = None, **where: object
    ) -> None:
        entry: dict = {"line": line, "code": code, "error": error}
        if reference is not None:
            entry["reference"] = reference
        entry.update(where)  # e.g. a Label Studio task id
        self.errors.append(entry)


def decode_lines(data: bytes) -> tuple[list[str], set[int]]:
    """Split a file into physical lines and decode each as UTF-8 on its own.

    Returns the lines (line n is ``lines[n - 1]``) and the numbers of the lines that are
    not UTF-8: one bad byte costs its own line, never the file.
    """
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines, bad = [], set()
    for n, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", errors="replace"))
            bad.add(n)
    return lines, bad


def _lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]


def parse_csv(text: str, bad_lines: set[int] | frozenset[int] = frozenset()) -> ParsedLabels:
    """``image_id_or_key,label[,...]``; a header row and extra columns (review export) are fine.

    Rows with an empty label are skipped (a review CSV not fully worked through). Each
    physical line is one row, parsed on its own: an id and a label never hold a line
    break, so an unbalanced quote is reported on its line instead of silently swallowing
    every row after it (what a whole-file csv.reader does).
    """
    out = ParsedLabels()
    for n, raw in _readable_lines(text, bad_lines, out):
        try:
            (row,) = csv.reader([raw], strict=True)
        except csv.Error as exc:
            reason = (
                "unbalanced quote (a quoted field is not closed on its line)"
                if "unexpected end of data" in str(exc)
                else f"malformed CSV row: {exc}"
            )
            out.reject(n, "malformed", reason)
            continue
        if not any(cell.strip() for cell in row):
            continue
        if n == 1 and row[0].strip().lower() == CSV_HEADER[0]:
            continue
        if len(row) < 2:
            out.reject(n, "malformed", "expected image_id_or_key,label")
            continue
        if not row[1].strip():
            out.skipped += 1
            continue
        out.lines.append(LabelLine(n, row[0].strip(), row[1].strip()))
    return out


def _readable_lines(text: str, bad_lines: set[int] | frozenset[int], out: ParsedLabels):
    """(line number, line) of each non-blank line; lines that were not UTF-8 are reported."""
    for n, raw in enumerate(_lines(text), start=1):
        if not raw.strip():
            continue
        if n in bad_lines:
            out.reject(n, "encoding", "not valid UTF-8 text")
            continue
        yield n, raw


def parse_manifest(text: str, bad_lines: set[int] | frozenset[int] = frozenset()) -> ParsedLabels:
    """Ground Truth (augmented) manifest lines, read by flywheel.contracts.manifest.

    Our own review manifest's ``item_id`` stands in for a missing ``source-ref``. Lines
    without an answer (``"label": ""``, or no label at all) are skipped.
    """
    out = ParsedLabels()
    for n, raw in _readable_lines(text, bad_lines, out):
        try:
            record = json.loads(raw)
        except ValueError as exc:
            out.reject(n, "malformed", f"invalid JSON line: {exc}")
            continue
        if isinstance(record, dict) and not record.get(manifest.SOURCE_REF):
            record = {**record, manifest.SOURCE_REF: record.get("item_id")}
        try:
            line = manifest.parse_line(record)
        except manifest.InvalidManifestLine as exc:
            out.reject(n, "malformed", exc.reason)
            continue
        if line.label is None:
            out.skipped += 1
        else:
            out.lines.append(LabelLine(n, line.source_ref, line.label))
    return out


def _reference_from_data(data: dict) -> str | None:
    """The item a Label Studio task is about: ``data.item_id`` (our export writes it), else
    the image URL (presigned or ``s3://``) without its query string."""
    ref = data.get("item_id")
    if isinstance(ref, str) and ref.strip():
        return ref
    image = data.get(LABEL_STUDIO_OBJECT)
    if isinstance(image, str) and image.strip():
        return image.split("?", 1)[0]
    return None


def _choices_of(result: object) -> tuple[list[object] | None, str | None]:
    """An annotation's ``result`` -> (the chosen values, None) or (None, why not).

    The choices of the ``label`` control count; an export of a project whose labeling config
    names it otherwise is read when exactly one Choices control answered.
    """
    if not isinstance(result, list):
        return None, "annotation result is not a list"
    regions = [r for r in result if isinstance(r, dict) and r.get("type") == "choices"]
    ours = [r for r in regions if r.get("from_name") == LABEL_STUDIO_CONTROL]
    if not ours and len({r.get("from_name") for r in regions}) == 1:
        ours = regions
    elif not ours and regions:
        return None, "several Choices controls answered and none is named 'label'"
    chosen: list[object] = []
    for region in ours:
        value = region.get("value")
        if not isinstance(value, dict) or not isinstance(value.get("choices"), list):
            return None, "a choices result without value.choices"
        chosen.extend(value["choices"])
    return chosen, None


def _label_studio_task(n: int, task: dict, out: ParsedLabels) -> None:
    """One task of the JSON export: its annotations (cancelled ones aside) must agree."""
    data = task.get("data")
    ref = _reference_from_data(data) if isinstance(data, dict) else None
    where = {"task": task["id"]} if isinstance(task.get("id"), int) else {}
    if ref is None:
        out.reject(n, "malformed", "task has no data.item_id or data.image", **where)
        return
    annotations = task.get("annotations", task.get("completions"))  # completions: LS < 1.0
    if annotations is None or annotations == []:
        out.skipped += 1  # not labeled yet: like an empty label in the review CSV
        return
    if not isinstance(annotations, list):
        out.reject(n, "malformed", "annotations is not a list", ref, **where)
        return
    if not all(isinstance(a, dict) for a in annotations):
        out.reject(n, "malformed", "an annotation is not a JSON object", ref, **where)
        return
    live = [a for a in annotations if not (a.get("was_cancelled") or a.get("skipped"))]
    if not live:
        out.reject(
            n,
            "cancelled",
            f"every annotation of this task was cancelled (skipped) in Label Studio "
            f"({len(annotations)}): nothing applied",
            ref,
            **where,
        )
        return
    labels: dict[str, list[str]] = {}
    for annotation in live:
        chosen, why = _choices_of(annotation.get("result"))
        who = _annotator(annotation)
        if why is not None or chosen is None:
            out.reject(n, "malformed", f"annotation by {who}: {why}", ref, **where)
            return
        if len(chosen) != 1 or not isinstance(chosen[0], str):
            reason = "no class chosen" if not chosen else f"{len(chosen)} classes chosen"
            code = "no_choice" if not chosen else "several_choices"
            out.reject(n, code, f"annotation by {who}: {reason}, expected one", ref, **where)
            return
        labels.setdefault(chosen[0].strip(), []).append(who)
    if len(labels) > 1:
        said = "; ".join(f"{label!r} by {', '.join(who)}" for label, who in sorted(labels.items()))
        out.reject(n, "conflict", f"the annotations disagree ({said}): none applied", ref, **where)
        return
    out.lines.append(LabelLine(n, ref, next(iter(labels))))


def _annotator(annotation: dict) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # exports with annotator details
        who = who.get("email") or who.get("id")
    return f"user {who}" if who is not None else "an unknown user"


def _label_studio_min_record(n: int, record: dict, out: ParsedLabels) -> None:
    """One record of the JSON-MIN export: the task's data fields, then ``label`` (a string for
    one choice, ``{"choices": [...]}`` for several); cancelled annotations are left out by
    Label Studio, and each annotation of a task is its own record."""
    ref = _reference_from_data(record)
    where = {"task": record["id"]} if isinstance(record.get("id"), int) else {}
    if ref is None:
        out.reject(n, "malformed", "record has no item_id or image", **where)
        return
    value = record.get(LABEL_STUDIO_CONTROL)
    if value is None or value == "":
        out.skipped += 1
    elif isinstance(value, str):
        out.lines.append(LabelLine(n, ref, value.strip()))
    elif isinstance(value, dict) and isinstance(value.get("choices"), list):
        count = len(value["choices"])
        out.reject(n, "several_choices", f"{count} classes chosen, expected one", ref, **where)
    else:
        out.reject(n, "malformed", f"unexpected {LABEL_STUDIO_CONTROL!r} value", ref, **where)


def parse_label_studio(text: str) -> ParsedLabels:
    """A Label Studio export: "JSON" (tasks with ``annotations[].result[].value.choices``) or
    "JSON-MIN" (one flat record per annotation). ``line`` in an error is the task's position
    in the exported list (1-based); ``task`` its Label Studio id.

    A task whose annotations were all cancelled, choose no class or several, or disagree is
    reported and not applied; a task nobody annotated yet is counted as skipped.
    """
    out = ParsedLabels()
    try:
        doc = json.loads(text.removeprefix("\ufeff"))
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        out.reject(line, "malformed", f"not a Label Studio JSON export: {exc}")
        return out
    tasks = [doc] if isinstance(doc, dict) else doc
    if not isinstance(tasks, list):
        out.reject(1, "malformed", "a Label Studio export is a JSON list of tasks")
        return out
    for n, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            out.reject(n, "malformed", "a task is a JSON object")
        elif isinstance(task.get("data"), dict) or "annotations" in task or "completions" in task:
            _label_studio_task(n, task, out)
        else:
            _label_studio_min_record(n, task, out)
    return out


def parse_label_file(key: str, data: bytes | str) -> ParsedLabels:
    """A labels file's bytes (or text) -> rows and per-line errors, by its name's end."""
    if key.endswith(LABEL_STUDIO_SUFFIX):
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                out = ParsedLabels()
                out.reject(1, "encoding", f"not valid UTF-8 text (byte {exc.start})")
                return out
        return parse_label_studio(data)
    if isinstance(data, bytes):
        lines, bad = decode_lines(data)
        text = "\n".join(lines)
    else:
        text, bad = data, set()
    return parse_csv(text, bad) if key.endswith(".csv") else parse_manifest(text, bad)


@dataclass(frozen=True)
class LabelRow:
    """A labels file row that may be applied: a well-formed item id and a valid label."""

    line: int
    reference: str
    item_id: str
    label: str


def check_rows(parsed: ParsedLabels, class_names: Iterable[str] = ()) -> list[LabelRow]:
    """The rows to apply; every other row is added to ``parsed.errors`` with its reason.

    Two rows giving the same image different labels are both reported as conflicts and
    neither is applied (which one the person meant is not ours to guess); repeating the
    same label is harmless.
    """
    names = tuple(class_names)
    rows: list[LabelRow] = []
    for line in parsed.lines:
        item_id = item_id_from_reference(line.reference)
        if item_id is None:
            parsed.reject(
                line.line,
                "bad_reference",
                "not an item id or images/<item_id>.png key",
                line.reference,
            )
            continue
        try:
            validate_label(line.label, names)
        except InvalidLabel as exc:
            parsed.reject(line.line, exc.code, exc.reason, line.reference)
            continue
        rows.append(LabelRow(line.line, line.reference, item_id, line.label))
    labels: dict[str, set[str]] = {}
    for row in rows:
        labels.setdefault(row.item_id, set()).add(row.label)
    conflicting = {item_id for item_id, found in labels.items() if len(found) > 1}
    for row in rows:
        if row.item_id in conflicting:
            others = sorted(labels[row.item_id] - {row.label})
            parsed.reject(
                row.line,
                "conflict",
                f"conflicting labels for this image in the file ({row.label!r} vs "
                f"{', '.join(map(repr, others))}): none applied",
                row.reference,
            )
    return [row for row in rows if row.item_id not in conflicting]


def result_key(label_file_key: str) -> str:
    return f"{label_file_key}.result.json"
