"""The dashboard's figures from the stack's records: the review app's ``GET /review/dashboard``
and ``flywheel status`` both call ``gather``.

Reads: one ``Select=COUNT`` query of the state index per state (no Scan), the champion
(SSM), the champion's spot-check tally, the rounds record and its tallies (one BatchGetItem),
the gate's last decision.
"""

from __future__ import annotations

from flywheel.adapters import items, ledger, parameters
from flywheel.domain import dashboard
from flywheel.domain.items import State


def gather(items_table: str, champion_parameter: str, confidence: float) -> dict:
    by_state = {state.value: items.count_state(items_table, state) for state in State}
    champion = parameters.get_champion(champion_parameter)
    rounds = ledger.rounds(items_table)
    versions = [str(r["model_version"]) for r in rounds]
    if champion is not None:
        versions.append(champion.model_version)
    tallies = ledger.tallies(items_table, versions) if versions else {}
    certificate = None
    if champion is not None:
        mine = [r for r in rounds if r.get("model_version") == champion.model_version]
        certificate = (mine[0].get("certificate") if mine else None) or None
    return dashboard.figures(
        items_by_state=by_state,
        champion=None if champion is None else champion.model_dump(),
        certificate=certificate,
        tally=None if champion is None else tallies.get(champion.model_version),
        rounds=rounds,
        tallies=tallies,
        last_gate=ledger.last_gate(items_table),
        confidence=confidence,
    )
