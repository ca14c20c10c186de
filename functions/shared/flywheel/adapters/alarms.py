"""CloudWatch alarms: the auto-label accuracy alarm (a metric the template's alarm watches,
and the state set at once: CloudWatch would take a period to evaluate the metric, and moto
never evaluates alarms, so locally the state is the observable part), and the states the
rollout's bake reads."""

from __future__ import annotations

import json

from flywheel.adapters.aws import client

NAMESPACE = "DataFlywheel"
METRIC = "AutoLabelSuspended"


def _put(stack_name: str, value: float) -> None:
    client("cloudwatch").put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": METRIC,
                "Dimensions": [{"Name": "Stack", "Value": stack_name}],
                "Value": value,
                "Unit": "Count",
            }
        ],
    )


def raise_alarm(alarm_name: str, stack_name: str, reason: str, data: dict) -> None:
    """Idempotent: in AWS an alarm already in ALARM invokes no action again."""
    _put(stack_name, 1.0)
    client("cloudwatch").set_alarm_state(
        AlarmName=alarm_name,
        StateValue="ALARM",
        StateReason=reason[:1023],
        StateReasonData=json.dumps(data, default=str)[:4000],
    )


def clear_alarm(alarm_name: str, stack_name: str, reason: str) -> None:
    _put(stack_name, 0.0)
    client("cloudwatch").set_alarm_state(
        AlarmName=alarm_name, StateValue="OK", StateReason=reason[:1023]
    )


def states(names: tuple[str, ...]) -> dict[str, str]:
    """{alarm name: StateValue} for the alarms that exist (a missing one is absent)."""
    if not names:
        return {}
    found = client("cloudwatch").describe_alarms(AlarmNames=list(names))
    return {a["AlarmName"]: a["StateValue"] for a in found.get("MetricAlarms", [])}
