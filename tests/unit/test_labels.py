"""Labels are data, never paths: the class-name grammar, labels-file rows, safe paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flywheel.domain.labels import (
    InvalidLabel,
    check_rows,
    parse_label_file,
    validate_label,
)
from flywheel.domain.paths import UnsafePath, safe_join
from flywheel.domain.splits import SnapshotError, build_snapshot

# Label values an attacker (or a careless script) could put in a key, a CSV or a manifest.
HOSTILE_LABELS = [
    "../x",
    "/abs",
    "a/../../b",
    "..",
    ".",
    "con\x00",
    "%2e%2e/x",
    "../../../../../outside/x",
    "a\\..\\..\\b",
    "C:\\x",
    "x" * 65,
    "x" * 10_000,
    " leading",
    "trailing.",
    "tab\there",
    "new\nline",
    "ünïcode",
    "",
    "CON",
    "nul.txt",
]
ID = "a" * 64
ID2 = "b" * 64


@pytest.mark.parametrize("label", ["cat", "Golden Retriever", "c++", "t-shirt_2", "v1.2", "7"])
def test_ordinary_class_names_are_valid(label):
    assert validate_label(label) == label


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_hostile_labels_are_refused_with_a_reason(label):
    with pytest.raises(InvalidLabel) as exc:
        validate_label(label)
    assert exc.value.code == "invalid_label" and "invalid class name" in exc.value.reason


def test_class_names_restrict_labels_but_never_relax_the_grammar():
    assert validate_label("dog", ("cat", "dog")) == "dog"
    with pytest.raises(InvalidLabel) as exc:
        validate_label("zebra", ("cat", "dog"))
    assert (exc.value.code, exc.value.reason) == ("unknown_class", "unknown class 'zebra'")
    with pytest.raises(InvalidLabel):
        validate_label("../x", ("../x",))


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_a_snapshot_refuses_a_label_that_would_become_a_path(label):
    with pytest.raises(SnapshotError, match=ID):
        build_snapshot([(ID, "cat", "random"), (ID2, "dog", "random"), (ID, label, "random")])


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_safe_join_never_leaves_the_root(tmp_path: Path, label: str):
    root = tmp_path / "export"
    try:
        target = safe_join(root, label, f"{ID}.png")
    except UnsafePath:
        return
    assert target.is_relative_to(root.resolve()) and target != root.resolve()


def test_safe_join_refuses_dot_dot_absolute_and_the_root_itself(tmp_path: Path):
    for parts in (("..", "x"), ("/etc", "passwd"), ("a/../../b",), (".",), ("a", "..")):
        with pytest.raises(UnsafePath):
            safe_join(tmp_path, *parts)
    assert safe_join(tmp_path, "cat", "x.png") == tmp_path.resolve() / "cat" / "x.png"


def errors_by_line(parsed) -> dict[int, str]:
    return {e["line"]: e["code"] for e in parsed.errors}


def test_csv_each_bad_row_is_reported_on_its_line_and_good_rows_survive():
    # Given a CSV with a bad byte, an unbalanced quote, a malformed row and good rows after
    body = (
        b"image_id_or_key,label\n"
        + f"{ID},cat\n".encode()
        + b"\xff\xfe"
        + f"{ID2},dog\n".encode()
        + f'"{ID2},dog\n'.encode()
        + f'{ID2},"d"og\n'.encode()
        + b"only-one-column\n"
        + f"images/{ID2}.png,dog\r\n".encode()
    )

    # When it is parsed
    parsed = parse_label_file("labels/x.csv", body)
    rows = check_rows(parsed)

    # Then every bad line is named, and the rows after the unbalanced quote still apply
    assert errors_by_line(parsed) == {3: "encoding", 4: "malformed", 5: "malformed", 6: "malformed"}
    assert "unbalanced quote" in parsed.errors[1]["error"]
    assert [(r.line, r.item_id, r.label) for r in rows] == [(2, ID, "cat"), (7, ID2, "dog")]


def test_conflicting_rows_for_one_image_are_both_reported_and_neither_applies():
    body = f"{ID},cat\n{ID2},dog\nimages/{ID}.png,dog\n{ID2},dog\n"
    parsed = parse_label_file("labels/x.csv", body.encode())
    rows = check_rows(parsed, ("cat", "dog"))
    assert errors_by_line(parsed) == {1: "conflict", 3: "conflict"}
    assert "'cat' vs 'dog'" in parsed.errors[0]["error"]
    assert [(r.line, r.label) for r in rows] == [(2, "dog"), (4, "dog")]  # repeats are harmless


def test_manifest_lines_with_hostile_or_unknown_classes_are_reported():
    def line(label: str, ref: str = f"s3://b/images/{ID}.png") -> str:
        meta = {"class-name": label}
        return json.dumps({"source-ref": ref, "animal": 0, "animal-metadata": meta})

    body = (
        "\n".join(
            [line("cat"), line("../../x", f"images/{ID2}.png"), line("zebra", ID2), "[1, 2]"]
        ).encode()
        + b"\n\xc3(\n"
    )
    parsed = parse_label_file("labels/x.manifest", body)
    rows = check_rows(parsed, ("cat", "dog"))
    assert errors_by_line(parsed) == {
        2: "invalid_label",
        3: "unknown_class",
        4: "malformed",
        5: "encoding",
    }
    assert [(r.item_id, r.label) for r in rows] == [(ID, "cat")]
