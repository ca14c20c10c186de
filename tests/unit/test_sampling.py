"""How a human label was obtained: audit draws, declared random seeds, review answers."""

import hashlib

import pytest
from flywheel.domain.sampling import answer_provenance, is_audit_draw, seed_provenance


def ids(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_the_audit_draw_is_the_contract_hash_and_about_the_fraction():
    drawn = [i for i in ids(20_000) if is_audit_draw(i, 0.05)]
    assert 0.045 < len(drawn) / 20_000 < 0.055
    for i in ids(200):
        expected = int(hashlib.sha256(f"audit:{i}".encode()).hexdigest()[:8], 16) / 2**32 < 0.05
        assert is_audit_draw(i, 0.05) is expected
    assert not any(is_audit_draw(i, 0.0) for i in ids(500))
    assert all(is_audit_draw(i, 1.0) for i in ids(500))


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"flywheel-sampling": "random"}, ("random", "seed")),
        ({"Flywheel-Sampling": "Random"}, ("random", "seed")),
        ({"flywheel-sampling": "picked"}, ("selected", "upload")),
        ({}, ("selected", "upload")),
        (None, ("selected", "upload")),
    ],
)
def test_a_labeled_upload_is_random_only_when_declared(metadata, expected):
    assert seed_provenance(metadata) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ({"state": "needs_review", "review_reason": "audit"}, ("random", "audit")),
        ({"state": "needs_review", "review_reason": "uncertain"}, ("selected", "review")),
        ({"state": "needs_review", "review_reason": "out_of_distribution"}, ("selected", "review")),
        ({"state": "unlabeled"}, ("selected", "import")),
        ({"state": "auto_labeled"}, ("selected", "import")),
        (
            {"state": "human_labeled", "label_sampling": "random", "label_origin": "seed"},
            ("random", "seed"),
        ),
        ({"state": "human_labeled"}, ("selected", "import")),
    ],
)
def test_an_answer_records_how_the_item_was_drawn(current, expected):
    assert answer_provenance(current) == expected
