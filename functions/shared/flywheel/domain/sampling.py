"""How a human label was obtained: the random draws that may certify, and everything else.

Only labels drawn uniformly at random from the uploads (a seed declared random, the
audit stream) can certify an auto-label threshold or measure accuracy; labels given to
items the model picked (the review queue) train the model but are a biased sample.
Every human-labeled item records ``label_sampling`` (``random`` / ``selected``) and, for
people to read, ``label_origin`` (``seed``, ``upload``, ``audit``, ``review``, ``import``,
``spot_check``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

RANDOM = "random"
SELECTED = "selected"
SAMPLINGS = (RANDOM, SELECTED)
ORIGINS = ("seed", "upload", "audit", "review", "import", "spot_check")

# Review reasons (item attribute ``review_reason`` of needs_review items).
AUDIT = "audit"
OUT_OF_DISTRIBUTION = "out_of_distribution"
UNCERTAIN = "uncertain"
# A spot check of an auto-label: drawn at random among the items the champion would
# auto-label, answered blind; measures the champion (domain/audit.py), never certifies.
SPOT_CHECK = "spot_check"
# The champion's auto-labeling is suspended (its audited accuracy fell below the target).
SUSPENDED = "suspended"
# People answer these without seeing the model's label.
BLIND_REASONS = (AUDIT, SPOT_CHECK)

# S3 user metadata (``x-amz-meta-flywheel-sampling``) declaring a labeled upload random.
SAMPLING_METADATA_KEY = "flywheel-sampling"


def unit_hash(salt: str, item_id: str) -> float:
    """A number in [0, 1) fixed by the item id; the salt keeps draws independent."""
    return int(hashlib.sha256(f"{salt}:{item_id}".encode()).hexdigest()[:8], 16) / 2**32


def is_audit_draw(item_id: str, fraction: float) -> bool:
    """The audit stream: a uniform random share of unlabeled uploads goes to people blind.

    Keyed by the content hash, so a re-delivered or re-uploaded image draws the same way.
    """
    return unit_hash("audit", item_id) < fraction


def seed_provenance(metadata: Mapping[str, str] | None) -> tuple[str, str]:
    """(sampling, origin) of an upload under ``labeled/<class>/`` from its S3 user metadata."""
    declared = {k.lower(): str(v).strip().lower() for k, v in (metadata or {}).items()}
    if declared.get(SAMPLING_METADATA_KEY) == RANDOM:
        return RANDOM, "seed"
    return SELECTED, "upload"


def answer_provenance(current: Mapping[str, Any]) -> tuple[str, str]:
    """(sampling, origin) of a person's label for an item in its current state.

    A correction of a human label keeps how the item was drawn; an answer to an audit
    item is random; any other review answer, or a label for an item never in review,
    is selected (a person or the model chose it).
    """
    state = current.get("state")
    if state == "human_labeled":
        sampling = current.get("label_sampling")
        if sampling in SAMPLINGS:
            return str(sampling), str(current.get("label_origin") or "import")
        return SELECTED, "import"
    if state == "needs_review":
        if current.get("review_reason") == AUDIT:
            return RANDOM, "audit"
        if current.get("review_reason") == SPOT_CHECK:
            return SELECTED, "spot_check"
        return SELECTED, "review"
    return SELECTED, "import"
