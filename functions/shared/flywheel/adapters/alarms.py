"""CloudWatch alarm states (the rollout's bake reads the rollback alarms)."""

from __future__ import annotations

from flywheel.adapters.aws import client


def states(names: tuple[str, ...]) -> dict[str, str]:
    """{alarm name: StateValue} for the alarms that exist (a missing one is absent)."""
    if not names:
        return {}
    found = client("cloudwatch").describe_alarms(AlarmNames=list(names))
    return {a["AlarmName"]: a["StateValue"] for a in found.get("MetricAlarms", [])}
