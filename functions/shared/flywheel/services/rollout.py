"""The rollout state machine's Lambda steps: each short, each safe to run twice.

``statemachines/rollout.asl.json`` calls ``RolloutFunction`` with ``{"action", "execution",
"state"}``; ``state`` is the execution's state (``rollout`` is the input PromoteFunction built,
the other keys are earlier steps' results). The actions:

- ``deploy``: CreateEndpoint or UpdateEndpoint (blue/green with the rollback alarms for
  instance endpoints) to the new config; an endpoint already on, or updating to, it is
  asked nothing (the handler also runs it once per execution);
- ``check`` / ``check_rollback``: one DescribeEndpoint, read as live / rolled back / failed /
  still updating (``update_progress``);
- ``bake``: one read of the rollback alarms (serverless endpoints and endpoints this rollout
  created: SageMaker has no alarm rollback for them, so the state machine watches);
- ``rollback``: UpdateEndpoint back to the config the champion was served from (a plain
  update: the alarms that would roll a canary back are the ones firing);
- ``withdraw``: a first model that failed its bake has nothing to go back to: DeleteEndpoint
  while the endpoint serves it, then read until it is gone (no champion, nothing served);
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
from flywheel.domain.names import client_token
from flywheel.domain.rollout import (
    Outcome,
    Request,
    Withdrawal,
    bake_verdict,
    deploy_request,
    needs_bake,
    update_progress,
    withdrawal,
)
from flywheel.domain.sampling import AUDIT
from flywheel.errors import EndpointNotReady, InvalidArtifact
from flywheel.settings import RolloutSettings

ACTIONS = ("deploy", "check", "bake", "rollback", "check_rollback", "withdraw", "record")


def _tags(s: RolloutSettings) -> list[dict]:
    return [{"Key": "flywheel:stack", "Value": s.STACK_NAME}]


def _request(s: RolloutSettings, config: str) -> dict:
    return update_endpoint_request(s.ENDPOINT_NAME, config, s.ENDPOINT_MODE, s.ROLLBACK_ALARMS)


def _put(s: RolloutSettings, config: str, what: str) -> dict:
    """Ask SageMaker to serve ``config`` unless it already does or is getting there."""
    api = sagemaker.endpoints()
    endpoint = api.describe(s.ENDPOINT_NAME)
    request, previous = deploy_request(endpoint, config)
    if request == Request.CREATE:
        api.create(s.ENDPOINT_NAME, config, _tags(s))
    elif request == Request.UPDATE and what == "rollback":
        # Plain: a canary watching the alarms that fired would roll the rollback back.
        api.update({"EndpointName": s.ENDPOINT_NAME, "EndpointConfigName": config})
    elif request == Request.UPDATE:
        api.update(_request(s, config))
    elif request == Request.BUSY:  # the state machine retries this error with backoff
        raise EndpointNotReady(f"{s.ENDPOINT_NAME} is busy with another update ({what})")
    return {
        "requested": str(request),
        "replaced": previous,
        "bake": needs_bake(s.ENDPOINT_MODE, request, endpoint),
    }


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
    out = _put(s, previous, "rollback")
    out.pop("bake")
    return {"status": "requested", **out}


def withdraw(s: RolloutSettings, state: dict) -> dict:
    """Take a first model that failed its bake off the endpoint: delete the endpoint while it
    serves that model (its config and model stay, for a look at what went wrong)."""
    target = state["rollout"]["endpoint_config"]
    attempt = int((state.get("withdraw") or {}).get("attempt", 0)) + 1
    api = sagemaker.endpoints()
    endpoint = api.describe(s.ENDPOINT_NAME)
    step = withdrawal(endpoint, target, attempt, int(state["rollout"]["timing"]["max_polls"]))
    if step == Withdrawal.DELETE:
        api.delete(s.ENDPOINT_NAME)
        step = Withdrawal.DELETING
    return {"status": str(step), "attempt": attempt, "endpoint": s.ENDPOINT_NAME}


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
    gone = (state.get("withdraw") or {}).get("status")
    if gone:  # a first model whose bake failed: say what the bake saw, and where it went
        bake = (state.get("bake") or {}).get("reason", "")
        where = {
            "deleted": f"endpoint {_withdrawn_endpoint(state)} deleted, nothing serves it",
            "kept": f"endpoint {_withdrawn_endpoint(state)} already serves another config",
        }.get(gone, f"endpoint {_withdrawn_endpoint(state)} not deleted ({gone})")
        return f"{bake}; no previous model to roll back to: {where}"
    for key, field in (("rollback", "status"), ("bake", "reason"), ("check", "reason")):
        found = (state.get(key) or {}).get(field)
        if found and found != "requested":
            reason = str(found)
            if key == "rollback":  # nothing to go back to: say what the bake saw too
                reason = f"{(state.get('bake') or {}).get('reason', '')}; {reason}"
            return reason
    return "deployment did not complete"


def _withdrawn_endpoint(state: dict) -> str:
    return str((state.get("withdraw") or {}).get("endpoint", "the endpoint"))


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
    # One package per model and outcome, even if this step runs again (its first run was
    # cut short by a restart, so the once-per-execution record holds no result).
    package["ClientToken"] = client_token("rollout-record", version, str(outcome))
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
        if outcome == Outcome.ROLLED_BACK and not state.get("withdraw"):
            reason = f"{reason}; endpoint kept its previous config"
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
