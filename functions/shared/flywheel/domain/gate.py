"""Promotion gate: first model clears a floor; later ones beat the champion on the same test set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel.contracts import metrics as metrics_contract
from flywheel.contracts.metrics import ModelMetrics
from flywheel.domain.champion import Champion
from flywheel.errors import InvalidArtifact


def parse_metrics(doc: Any) -> ModelMetrics:
    """metrics.json (the file's bytes or its document) as the gate reads it
    (flywheel.contracts.metrics: the schema train.py validates against before writing);
    anything else is an InvalidArtifact saying where."""
    try:
        if isinstance(doc, bytes | str):
            doc = metrics_contract.loads(doc)
        return metrics_contract.read(doc)
    except metrics_contract.InvalidMetrics as exc:
        raise InvalidArtifact(exc.reason) from exc


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    challenger_accuracy: float
    champion_accuracy: float | None


def decide(
    metrics: ModelMetrics, champion: Champion | None, *, min_test_accuracy: float, margin: float
) -> GateDecision:
    acc = metrics.test_accuracy
    if metrics.test_n <= 0:
        return GateDecision(False, "empty test set", acc, None)
    if acc < min_test_accuracy:
        return GateDecision(
            False, f"test accuracy {acc:.4f} below the floor {min_test_accuracy:.4f}", acc, None
        )
    if champion is None:
        return GateDecision(True, "first model above the floor", acc, None)
    if champion.model_version == metrics.model_version:
        return GateDecision(False, "already the champion", acc, champion.test_accuracy)
    champ = metrics.champion_test_accuracy
    if champ is None or metrics.champion_test_set_id != metrics.test_set_id:
        return GateDecision(False, "no champion evaluation on the challenger's test set", acc, None)
    if metrics.champion_test_version not in (None, champion.model_version):
        # Trained while another model was champion: its comparison is against the wrong model.
        return GateDecision(
            False,
            f"compared with {metrics.champion_test_version}, not the champion "
            f"{champion.model_version}",
            acc,
            champ,
        )
    if acc - champ > margin:
        return GateDecision(
            True, f"beats the champion {acc:.4f} vs {champ:.4f} (margin {margin})", acc, champ
        )
    return GateDecision(
        False, f"does not beat the champion {acc:.4f} vs {champ:.4f} (margin {margin})", acc, champ
    )
