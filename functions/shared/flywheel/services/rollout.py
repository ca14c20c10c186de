"""The rollout state machine's Lambda steps: each short, each safe to run twice.

``statemachines/rollout.asl.json`` calls ``RolloutFunction`` with ``{"action", "execution",
"state"}``; ``state`` is the execution's state (``rollout`` is the input PromoteFunction built,
the other keys are earlier steps' results). The actions:

- ``deploy``: CreateEndpoint or UpdateEndpoint (blue/green with the rollback alarms for
  instance endpoints) to the new config; an endpoint already on, or updating to, it is
  asked nothing (the handler also runs it once per execution);
- ``check`` / ``check_rollback``: one DescribeEndpoint, read as live / rolled back / failed /
  still updating (``update_progress``);
- ``bake``: one read of the rollback alarms (serverless endpoints: SageMaker has no
  alarm rollback for them, so the state machine watches);
- ``rollback``: UpdateEndpoint back to the config the champion was served from;
- ``record``: the outcome, once per execution (the handler runs it under the idempotency
  table): model package, the gate's final decision (``meta#gate``), and if promoted the
  champion parameter, the round (``meta#rounds``), the end of a predecessor's auto-label
  accuracy alarm and the relabel sweep; one notification.
"""

from __future__ import annotations

from typing import Any

from flywheel.adapters import alarms, items, ledger, notifications, parameters, queues, sagemaker
from flywheel.domain.champion import Champion
from flywheel.domain.deployment import update_endpoint_request
from flywheel.domain.items import State, image_key, now_iso
from flywheel.domain.rollout import (
    Outcome,
    Request,
    bake_verdict,
    deploy_request,
    update_progress,
)
from flywheel.domain.sampling import AUDIT
from flywheel.errors import EndpointNotReady, InvalidArtifact
from flywheel.settings import RolloutSettings

ACTIONS = ("deploy", "check", "bake", "rollback", "check_rollback", "record")


def _tags(s: RolloutSettings) -> list[dict]:
    return [{"Key": "flywheel:stack", "Value": s.STACK_NAME}]


def _request(s: RolloutSettings, config: str) -> dict:
    return update_endpoint_request(s.ENDPOINT_NAME, config, s.ENDPOINT_MODE, s.ROLLBACK_ALARMS)


def _put(s: RolloutSettings, config: str, what: str) -> dict:
    """Ask SageMaker to serve ``config`` unless it already does or is getting there."""
    api = sagemaker.endpoints()
    request, previous = deploy_request(api.describe(s.ENDPOINT_NAME), config)
    if request == Request.CREATE:
        api.create(s.ENDPOINT_NAME, config, _tags(s))
    elif request == Request.UPDATE:
        api.update(_request(s, config))
    elif request == Request.BUSY:  # the state machine retries this error with backoff
        raise EndpointNotReady(f"{s.ENDPOINT_NAME} is busy with another update ({what})")
    return {"requested": str(request), "replaced": previous}


def deploy(s: RolloutSettings, state: dict) -> dict:
    rollout = state["rollout"]
    out = _put(s, rollout["endpoint_config"], "deploy")
    # What a rollback goes back to: the config this update replaced, else the champion's.
    out["previous_config"] = out.pop("replaced") or rollout.get("previous_config")
    return out


def check(s: RolloutSettings, state: dict, key: str = "check") -> dict:
    target = (
        state["rollout"]["endpoint_config"]
        if key == "check"
        else state["deploy"]["previous_config"]
    )
    attempt = int((state.get(key) or {}).get("attempt", 0)) + 1
    endpoint = sagemaker.endpoints().describe(s.ENDPOINT_NAME)
    status = update_progress(
        endpoint, target, attempt, int(state["rollout"]["timing"]["max_polls"])
    )
    return status.as_output()


def bake(s: RolloutSettings, state: dict) -> dict:
    checks = int((state.get("bake") or {}).get("checks", 0)) + 1
    needed = int(state["rollout"]["timing"]["bake_checks"])
    return bake_verdict(
        alarms.states(s.ROLLBACK_ALARMS), s.ROLLBACK_ALARMS, checks, needed
    ).as_output()


def rollback(s: RolloutSettings, state: dict) -> dict:
    previous = (state.get("deploy") or {}).get("previous_config")
    if not previous:
        return {"status": "nothing_to_roll_back_to"}
    return {"status": "requested", **_put(s, previous, "rollback")}


def relabel_sweep(table: str, queue_url: str) -> int:
    bodies = [
        {"item_id": i["item_id"], "image_key": i.get("image_key") or image_key(i["item_id"])}
        for state in (State.UNLABELED, State.NEEDS_REVIEW)
        for i in items.query_state(table, state)
        if i.get("review_reason") != AUDIT  # audit items wait for people, blind
    ]
    return queues.send_json(queue_url, bodies)


def _why(state: dict, outcome: Outcome) -> str:
    """The reason an outcome is recorded, from the step that decided it."""
    if outcome == Outcome.PROMOTED:
        return str(state["rollout"].get("reason", ""))
    error = state.get("error") or {}
    if error:
        return f"{error.get('Error', 'error')}: {str(error.get('Cause', ''))[:500]}"
    for key, field in (("rollback", "status"), ("bake", "reason"), ("check", "reason")):
        found = (state.get(key) or {}).get(field)
        if found and found != "requested":
            reason = str(found)
            if key == "rollback":  # nothing to go back to: say what the bake saw too
                reason = f"{(state.get('bake') or {}).get('reason', '')}; {reason}"
            return reason
    return "deployment did not complete"


def record(s: RolloutSettings, state: dict, outcome: Outcome) -> dict:
    """Register the model with the outcome, make it champion if promoted, announce it once."""
    rollout = state["rollout"]
    version, job = rollout["model_version"], rollout["job_name"]
    reason = _why(state, outcome)
    approved = outcome == Outcome.PROMOTED
    package = dict(rollout["package"])
    package["ModelApprovalStatus"] = "Approved" if approved else "Rejected"
    package["CustomerMetadataProperties"] = {
        **package.get("CustomerMetadataProperties", {}),
        "decision": package["ModelApprovalStatus"],
        "reason": reason[:256],
    }
    sagemaker.register_model_package(package)
    swept = 0
    if approved:
        try:
            champion = Champion(**rollout["champion"], promoted_at=now_iso())
        except (TypeError, ValueError) as exc:
            raise InvalidArtifact(f"rollout input has no valid champion record: {exc}") from exc
        # Only now, with the active config confirmed (and baked), is it the champion.
        parameters.put_champion(s.CHAMPION_PARAMETER, champion)
        if rollout.get("round"):
            ledger.put_round(
                s.ITEMS_TABLE, {**rollout["round"], "promoted_at": champion.promoted_at}
            )
        # A new model_version has no spot checks and no suspension: the alarm a suspended
        # predecessor raised is over.
        alarms.clear_alarm(s.THRESHOLD_ALARM_NAME, s.STACK_NAME, f"new champion {version}")
        swept = relabel_sweep(s.ITEMS_TABLE, s.LABEL_QUEUE_URL)
        subject = f"Model promoted: {version}"
    else:
        subject = f"Deployment {outcome}: {version}"
        reason = (
            f"{reason}; endpoint kept its previous config" if outcome == "rolled_back" else reason
        )
    message: dict[str, Any] = {
        "outcome": str(outcome),
        "job": job,
        "model_version": version,
        "reason": reason,
        "relabel_messages": swept,
    }
    if rollout.get("gate"):
        decided = {**rollout["gate"], "decision": str(outcome), "reason": reason}
        ledger.put_gate(s.ITEMS_TABLE, {**decided, "decided_at": now_iso()})
    notifications.notify(s.TOPIC_ARN, subject, message)
    return message
