"""After a spot-check answer: is the champion's audited accuracy below its target? Then
stop auto-labeling with it (once), raise the threshold alarm and say so.

The order makes each step safe to repeat: the alarm first (setting an alarm already in
ALARM again invokes no action), then the conditional write that suspends the champion
(only one caller wins it), then the outcome notification (by the winner only). A failure
before the suspension leaves nothing half done: the next spot-check answer checks again.
"""

from __future__ import annotations

from flywheel.adapters import alarms, ledger, notifications, parameters
from flywheel.domain.audit import Measurement, Observation, measurement
from flywheel.settings import AuditAlarmSettings


def figures(m: Measurement) -> dict:
    low, high = m.interval
    return {
        "model_version": m.model_version,
        "answered": m.answered,
        "correct": m.correct,
        "accuracy": None if m.accuracy is None else round(m.accuracy, 4),
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
        "confidence": m.confidence,
        "target": m.target,
    }


def check(s: AuditAlarmSettings, model_version: str) -> str:
    """'suspended' (this call made the transition), 'already' suspended, 'ok', or 'retired'
    (not the champion any more: its auto-labels are being redone by the new one)."""
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    if champion is None or champion.model_version != model_version:
        return "retired"
    tally = ledger.tally(s.ITEMS_TABLE, model_version) or {}
    if tally.get("suspended_at"):
        return "already"
    m = measurement(
        {**tally, "model_version": model_version},
        champion.target_accuracy,
        s.CERTIFICATION_CONFIDENCE,
    )
    if not m.below_target:
        return "ok"
    reason = f"{model_version}: {m.describe()}"
    data = figures(m)
    alarms.raise_alarm(s.THRESHOLD_ALARM_NAME, s.STACK_NAME, reason, data)
    if not ledger.suspend(s.ITEMS_TABLE, model_version, m.describe(), data):
        return "already"
    notifications.notify(
        s.TOPIC_ARN,
        f"Auto-labeling suspended: {model_version}",
        {"outcome": "suspended", "model_version": model_version, "reason": reason, **data},
    )
    return "suspended"


def after_answer(s: AuditAlarmSettings, seen: Observation | None) -> str | None:
    """Check the champion a spot-check answer measured (None when the answer was none)."""
    if seen is None:
        return None
    return check(s, seen.model_version)
