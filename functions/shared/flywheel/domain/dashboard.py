"""The dashboard's figures, from what the stack recorded: one dict for the review app's
``GET /review/dashboard`` and for ``flywheel status`` (``figures``), and its text (``lines``).

Inputs are plain records: item counts by state, the champion record, the champion's
certificate (the ``threshold`` block of its metrics.json, kept by promote in its round),
its spot-check tally, the rounds promote recorded, and the gate's last decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flywheel.domain.audit import measurement
from flywheel.domain.certification import curve, explain

STATES = ("unlabeled", "auto_labeled", "needs_review", "human_labeled", "rejected")


def _champion(champion: Mapping[str, Any] | None) -> dict | None:
    if champion is None:
        return None
    return {
        "model_version": champion["model_version"],
        "threshold": float(champion["threshold"]),
        "target_accuracy": float(champion["target_accuracy"]),
        "test_accuracy": float(champion["test_accuracy"]),
        "promoted_at": champion.get("promoted_at"),
    }


def _audit(
    champion: Mapping[str, Any] | None, tally: Mapping[str, Any] | None, confidence: float
) -> dict | None:
    if champion is None:
        return None
    m = measurement(
        {"model_version": champion["model_version"], **(tally or {})},
        float(champion["target_accuracy"]),
        confidence,
    )
    low, high = m.interval
    return {
        "model_version": champion["model_version"],
        "answered": m.answered,
        "correct": m.correct,
        "accuracy": None if m.accuracy is None else round(m.accuracy, 4),
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
        "confidence": confidence,
        "target": m.target,
        "suspended": bool((tally or {}).get("suspended_at")),
        "suspended_at": (tally or {}).get("suspended_at"),
    }


def why_not(
    champion: Mapping[str, Any] | None,
    certificate: Mapping[str, Any] | None,
    audit: Mapping[str, Any] | None,
    last_gate: Mapping[str, Any] | None,
) -> str | None:
    """Why nothing is auto-labeled now, in words; None when the champion auto-labels."""
    if champion is None:
        if last_gate and last_gate.get("decision") != "promoted":
            return (
                f"no champion yet: the last candidate {last_gate.get('candidate')} was "
                f"{last_gate.get('decision')} ({last_gate.get('reason')})"
            )
        return "no champion yet"
    if audit and audit["suspended"]:
        # today's figures (the record keeps those of the moment it was suspended)
        low, high = audit["ci_low"], audit["ci_high"]
        return (
            f"suspended: audited accuracy {audit['accuracy'] or 0.0:.2f} "
            f"({audit['confidence']:.0%} CI {low:.2f}-{high:.2f}, "
            f"{audit['correct']}/{audit['answered']}) below {audit['target']:.2f}"
        )
    if float(champion["threshold"]) <= 1.0:
        return None
    if certificate and certificate.get("target_accuracy") is not None:
        return explain(dict(certificate)).removeprefix("auto-labels nothing: ")
    return (
        f"the champion's threshold {float(champion['threshold']):.3f} is above every "
        "confidence: its certificate certified nothing"
    )


def _round(r: Mapping[str, Any], tallies: Mapping[str, Mapping[str, Any]]) -> dict:
    tally = tallies.get(str(r["model_version"])) or {}
    answered = int(tally.get("answered") or 0)
    decided = int(tally.get("decided") or 0)
    return {
        "model_version": r["model_version"],
        "trained_at": r.get("trained_at"),
        "human_labels": r.get("human_labels"),
        # what it really auto-labeled of what it labeled (None before its first label)
        "coverage": (round(int(tally.get("auto_labeled") or 0) / decided, 4) if decided else None),
        "labeled": decided,
        # what its certificate said it would auto-label (share of random labels above it)
        "certified_coverage": r.get("coverage"),
        "audited_accuracy": (
            round(int(tally.get("correct") or 0) / answered, 4) if answered else None
        ),
        "audited_answers": answered,
        "promoted_at": r.get("promoted_at"),
        "test_accuracy": r.get("test_accuracy"),
    }


def _gate(last_gate: Mapping[str, Any] | None) -> dict | None:
    if not last_gate:
        return None
    keys = (
        "candidate",
        "champion",
        "candidate_score",
        "champion_score",
        "test_set_size",
        "decision",
        "reason",
        "test_set_id",
        "decided_at",
    )
    return {k: last_gate.get(k) for k in keys}


def figures(
    *,
    items_by_state: Mapping[str, int],
    champion: Mapping[str, Any] | None,
    certificate: Mapping[str, Any] | None,
    tally: Mapping[str, Any] | None,
    rounds: Sequence[Mapping[str, Any]],
    tallies: Mapping[str, Mapping[str, Any]],
    last_gate: Mapping[str, Any] | None,
    confidence: float,
) -> dict:
    """The dashboard dict (keys fixed: the review app renders them)."""
    audit = _audit(champion, tally, confidence)
    reason = why_not(champion, certificate, audit, last_gate)
    return {
        "items_by_state": {s: int(items_by_state.get(s, 0)) for s in STATES},
        "champion": _champion(champion),
        "auto_labeling": {"active": reason is None, "why_not": reason},
        "audit": audit,
        "rounds": [
            _round(r, tallies)
            for r in sorted(rounds, key=lambda r: str(r.get("promoted_at") or ""))
        ],
        "last_gate": _gate(last_gate),
        # the champion's coverage-accuracy curve on its random labels, with what each step needs
        "certificate_curve": curve(dict(certificate)) if certificate else None,
    }


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"


def lines(d: Mapping[str, Any]) -> list[str]:
    """The dashboard as ``flywheel status`` prints it."""
    out = ["items      " + "  ".join(f"{k}={v}" for k, v in d["items_by_state"].items())]
    champ = d["champion"]
    if champ:
        out.append(
            f"champion   {champ['model_version']}  test_accuracy={champ['test_accuracy']:.4f}"
            f"  threshold={champ['threshold']:.3f}  target={champ['target_accuracy']:.2f}"
            f"  promoted {champ.get('promoted_at') or '?'}"
        )
    else:
        out.append("champion   none yet")
    auto = d["auto_labeling"]
    out.append("autolabel  " + ("active" if auto["active"] else f"off: {auto['why_not']}"))
    audit = d["audit"]
    if audit:
        measured = (
            f"{audit['accuracy']:.3f} ({audit['correct']}/{audit['answered']}, "
            f"{audit['confidence']:.0%} CI {audit['ci_low']:.3f}-{audit['ci_high']:.3f})"
            if audit["answered"]
            else "no spot checks answered yet"
        )
        out.append(
            f"audit      {measured}  target {audit['target']:.2f}"
            + ("  SUSPENDED" if audit["suspended"] else "")
        )
    gate = d["last_gate"]
    if gate:
        champion_score = gate.get("champion_score")
        out.append(
            f"last gate  {gate['decision']}: {gate['candidate']} "
            f"{float(gate['candidate_score']):.4f}"
            + (
                f" vs {gate['champion']} {float(champion_score):.4f}"
                if champion_score is not None
                else ""
            )
            + f" on {gate.get('test_set_size')} test labels ({gate.get('reason')})"
        )
    for r in d["rounds"]:
        out.append(
            f"round      {r['model_version']}  trained {r.get('trained_at') or '?'}"
            f"  human_labels={r.get('human_labels')}  coverage={_pct(r.get('coverage'))}"
            f" (certified {_pct(r.get('certified_coverage'))})"
            f"  audited={_pct(r.get('audited_accuracy'))}"
        )
    return out
