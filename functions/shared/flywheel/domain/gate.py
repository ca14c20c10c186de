"""Promotion gate: first model clears a floor; later ones beat the champion on the same test set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flywheel.domain.champion import Champion
from flywheel.errors import InvalidArtifact


@dataclass(frozen=True)
class ModelMetrics:
    model_version: str
    classes: list[str]
    test_accuracy: float
    test_n: int
    test_set_id: str
    champion_test_accuracy: float | None
    champion_test_set_id: str | None
    champion_test_version: str | None
    threshold: float
    target_accuracy: float
    raw: dict


def parse_metrics(doc: dict[str, Any]) -> ModelMetrics:
    try:
        champion_test = doc.get("champion_test") or None
        return ModelMetrics(
            model_version=str(doc["model_version"]),
            classes=[str(c) for c in doc["classes"]],
            test_accuracy=float(doc["test"]["accuracy"]),
            test_n=int(doc["test"]["n"]),
            test_set_id=str(doc["test_set_id"]),
            champion_test_accuracy=(
                float(champion_test["accuracy"]) if champion_test is not None else None
            ),
            champion_test_set_id=(
                champion_test.get("test_set_id", doc["test_set_id"]) if champion_test else None
            ),
            champion_test_version=(champion_test or {}).get("model_version"),
            threshold=float(doc["threshold"]["threshold"]),
            target_accuracy=float(doc["threshold"]["target_accuracy"]),
            raw=doc,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArtifact(f"metrics.json does not follow the contract: {exc!r}") from exc


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
