"""The rollout's decisions: what the deploy step asks for, where an update stands, what a bake says.

The rollout state machine (``statemachines/rollout.asl.json``) calls one short Lambda step
per decision; each step reads the endpoint (or the alarms) and asks these functions what
it means. Nothing here waits: the waits are the state machine's Wait states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from flywheel.domain.deployment import IN_PROGRESS

# SageMaker's own cap on a blue/green update (MaximumExecutionTimeoutInSeconds) bounds the wait.
MAX_UPDATE_SECONDS = 3600
ALARM = "ALARM"
MISSING = "MISSING"
DELETING = "Deleting"


@dataclass(frozen=True)
class Timing:
    """How the state machine paces one rollout (part of the execution input)."""

    poll_s: int  # between two DescribeEndpoint reads, and between two alarm reads of a bake
    bake_s: int  # how long the alarms watch a serverless endpoint before it is confirmed
    step_timeout_s: int  # a Lambda step that has not answered by then is retried

    @property
    def max_polls(self) -> int:
        return max(1, math.ceil(MAX_UPDATE_SECONDS / max(1, self.poll_s)))

    @property
    def bake_checks(self) -> int:
        return max(1, math.ceil(self.bake_s / max(1, self.poll_s)))

    def as_input(self) -> dict[str, int]:
        return {
            "poll_s": self.poll_s,
            "bake_s": self.bake_s,
            "step_timeout_s": self.step_timeout_s,
            "max_polls": self.max_polls,
            "bake_checks": self.bake_checks,
        }


class Request(StrEnum):
    CREATE = "create"  # no endpoint yet: CreateEndpoint
    UPDATE = "update"  # in service with another config: UpdateEndpoint
    NONE = "none"  # already on (or updating to) the target: ask nothing again
    BUSY = "busy"  # another update is in flight: retry the step later
    FAILED = "failed"  # the endpoint is Failed: nothing can be updated


def deploy_request(endpoint: dict | None, target: str) -> tuple[Request, str | None]:
    """What to ask SageMaker for to put ``target`` on the endpoint, and the config it replaces."""
    if endpoint is None:
        return Request.CREATE, None
    current = endpoint.get("EndpointConfigName")
    status = endpoint.get("EndpointStatus")
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    if status == DELETING:  # a withdrawn first model going away: create once it is gone
        return Request.BUSY, None
    if status in IN_PROGRESS:
        if pending == target or (status == "Creating" and current == target):
            return Request.NONE, current if current != target else None
        return Request.BUSY, current
    if status == "InService":
        if current == target:
            return Request.NONE, None
        return Request.UPDATE, current
    return Request.FAILED, current


def needs_bake(mode: str, request: Request, endpoint: dict | None) -> bool:
    """Whether the state machine must watch the alarms after the switch (``endpoint`` as the
    deploy step found it). SageMaker's blue/green canary with alarm rollback only exists for
    an UpdateEndpoint of an instance endpoint: serverless endpoints, and any endpoint this
    rollout creates (the first model, or an endpoint deleted since), get the bake here."""
    if mode != "instance" or request == Request.CREATE:
        return True
    # A retried deploy finds the endpoint it created still Creating (asked nothing again).
    return request == Request.NONE and (endpoint or {}).get("EndpointStatus") == "Creating"


class Progress(StrEnum):
    WAIT = "wait"  # creating / updating: poll again
    LIVE = "live"  # in service with the target config
    ROLLED_BACK = "rolled_back"  # in service with another config after we asked for ours
    FAILED = "failed"  # the endpoint failed, or is gone
    TIMED_OUT = "timed_out"  # still updating after the longest update SageMaker allows


@dataclass(frozen=True)
class Status:
    progress: Progress
    reason: str
    attempt: int

    def as_output(self) -> dict:
        return {"status": str(self.progress), "reason": self.reason, "attempt": self.attempt}


def update_progress(endpoint: dict | None, target: str, attempt: int, max_polls: int) -> Status:
    """Where an update to ``target`` stands on its ``attempt``-th read (1-based).

    A rolled-back update still says InService: only the active config tells (DESIGN.md).
    """
    if endpoint is None:
        return Status(Progress.FAILED, "the endpoint does not exist", attempt)
    status = endpoint.get("EndpointStatus")
    reason = str(endpoint.get("FailureReason") or "")
    if status in IN_PROGRESS:
        if attempt >= max_polls:
            return Status(Progress.TIMED_OUT, f"still {status} after {attempt} reads", attempt)
        return Status(Progress.WAIT, str(status), attempt)
    if status == "InService":
        if endpoint.get("EndpointConfigName") == target:
            return Status(Progress.LIVE, "", attempt)
        return Status(
            Progress.ROLLED_BACK,
            reason or f"in service with {endpoint.get('EndpointConfigName')}, not {target}",
            attempt,
        )
    return Status(Progress.FAILED, reason or f"endpoint {status}", attempt)


class Verdict(StrEnum):
    CONTINUE = "continue"  # alarms quiet, bake not over
    PASSED = "passed"  # alarms quiet for the whole bake
    ROLLBACK = "rollback"  # an alarm fired (or cannot be read): roll back


@dataclass(frozen=True)
class Bake:
    verdict: Verdict
    reason: str
    checks: int

    def as_output(self) -> dict:
        return {"verdict": str(self.verdict), "reason": self.reason, "checks": self.checks}


def bake_verdict(
    states: dict[str, str], expected: tuple[str, ...], checks: int, needed: int
) -> Bake:
    """One read of the rollback alarms during a bake (``checks`` reads so far, this one included).

    An expected alarm that does not exist counts as firing: a bake nobody watches is no bake.
    """
    firing = sorted(a for a in expected if states.get(a, MISSING) == ALARM)
    missing = sorted(a for a in expected if a not in states)
    if firing or missing:
        parts = []
        if firing:
            parts.append(f"alarm(s) in ALARM: {', '.join(firing)}")
        if missing:
            parts.append(f"alarm(s) not found: {', '.join(missing)}")
        return Bake(Verdict.ROLLBACK, "; ".join(parts), checks)
    if checks >= needed:
        return Bake(Verdict.PASSED, f"alarms quiet for {checks} reads", checks)
    return Bake(Verdict.CONTINUE, "", checks)


class Withdrawal(StrEnum):
    """A model that failed its bake with no previous model to go back to: take it off the air."""

    DELETE = "delete"  # the endpoint serves it: DeleteEndpoint
    DELETING = "deleting"  # on its way out: read again
    DELETED = "deleted"  # no endpoint: nothing serves the model
    KEPT = "kept"  # the endpoint serves another config now: not ours to delete
    TIMED_OUT = "timed_out"  # still there after the longest wait


def withdrawal(endpoint: dict | None, target: str, attempt: int, max_polls: int) -> Withdrawal:
    """What to do about the endpoint of a first model whose bake failed (``attempt``-th read).

    Only an endpoint on ``target`` is deleted: one that another rollout moved on is left be.
    """
    if endpoint is None:
        return Withdrawal.DELETED
    status = endpoint.get("EndpointStatus")
    if endpoint.get("EndpointConfigName") != target:
        return Withdrawal.KEPT
    if attempt >= max_polls:
        return Withdrawal.TIMED_OUT
    if status == DELETING or status in IN_PROGRESS:
        return Withdrawal.DELETING  # Updating/Creating cannot be deleted yet: read again
    return Withdrawal.DELETE


class Outcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


def execution_name(model_version: str) -> str:
    """One rollout per model version: a re-delivered job event cannot start a second one.

    Step Functions names: 1-80 characters of letters, digits, '-' and '_'.
    """
    return f"rollout-{model_version}"[:80]
