"""Chunked labels files: revisions, the report from outcome characters, the time rule."""

from __future__ import annotations

from datetime import UTC, datetime

from flywheel.domain import label_runs
from flywheel.domain.label_runs import (
    APPLIED,
    HANDOFF_RESERVE_S,
    MAX_ROWS,
    UNCHANGED,
    UNKNOWN,
    handoff_delay_s,
    next_chunk,
    outcome_errors,
    revision,
    run_id,
    tally,
    time_for_another_chunk,
)
from flywheel.domain.labels import LabelRow


def rows(n: int) -> list[LabelRow]:
    return [LabelRow(i + 2, f"ref{i}", f"{i:064x}", "cat") for i in range(n)]


def test_a_revision_is_the_version_id_else_the_etag_and_last_modified():
    when = datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC)
    assert revision("3sL4kqtJlcpXroDTDmJ", '"abc"', when) == "v:3sL4kqtJlcpXroDTDmJ"
    assert revision(None, '"abc"', when) == "e:abc@2026-11-30T12:00:01+00:00"
    assert revision("null", "abc", when) == revision(None, "abc", when)  # unversioned bucket
    assert revision(None, "abc", when) != revision(None, "abd", when)


def test_one_checkpoint_record_per_key_and_never_an_item_id():
    assert run_id("b", "labels/a.csv") == run_id("b", "labels/a.csv")
    assert run_id("b", "labels/a.csv") != run_id("b", "labels/b.csv")
    assert run_id("b", "labels/a.csv").startswith("meta#labels#")


def test_the_report_comes_from_the_outcome_characters_in_row_order():
    given = rows(4)
    outcomes = APPLIED + UNKNOWN + UNCHANGED + UNKNOWN
    assert tally(outcomes) == label_runs.Tally(applied=1, unchanged=1, unknown=2)
    assert [(e["line"], e["code"], e["reference"]) for e in outcome_errors(given, outcomes)] == [
        (3, "unknown_image", "ref1"),
        (5, "unknown_image", "ref3"),
    ]


def test_rows_past_the_checkpoint_limit_are_reported_not_applied():
    given = rows(MAX_ROWS + 2)
    assert len(next_chunk(given, MAX_ROWS - 1, 500)) == 1
    assert next_chunk(given, MAX_ROWS, 500) == []
    errors = outcome_errors(given, APPLIED * MAX_ROWS)
    assert [(e["line"], e["code"]) for e in errors] == [
        (MAX_ROWS + 2, "too_many_rows"),
        (MAX_ROWS + 3, "too_many_rows"),
    ]
    assert "another file" in errors[0]["error"]


def test_chunks_are_taken_in_order_and_the_last_may_be_short():
    given = rows(45)
    assert [r.line for r in next_chunk(given, 0, 20)] == list(range(2, 22))
    assert [r.line for r in next_chunk(given, 40, 20)] == list(range(42, 47))


def test_another_chunk_starts_only_if_it_fits_twice_over_and_leaves_the_reserve():
    assert time_for_another_chunk(None, 100.0)  # no deadline (a tool): always
    assert time_for_another_chunk(HANDOFF_RESERVE_S + 10.0, 5.0)
    assert not time_for_another_chunk(HANDOFF_RESERVE_S + 9.9, 5.0)
    assert not time_for_another_chunk(-1.0, 0.0)  # past the deadline


def test_a_waiting_message_comes_back_when_the_lease_ends_and_within_sqs_limits():
    assert handoff_delay_s(lease_expires=160.0, now=100.0) == 62
    assert handoff_delay_s(lease_expires=90.0, now=100.0) == 1
    assert handoff_delay_s(lease_expires=5000.0, now=100.0) == 900
