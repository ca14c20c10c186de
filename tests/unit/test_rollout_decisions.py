"""The rollout's decisions (flywheel.domain.rollout): pure, one endpoint or alarm read in."""

from __future__ import annotations

import pytest
from flywheel.domain.rollout import (
    Progress,
    Request,
    Timing,
    Verdict,
    Withdrawal,
    bake_verdict,
    deploy_request,
    execution_name,
    needs_bake,
    update_progress,
    withdrawal,
)

NEW, OLD = "dfw-new-abc123", "dfw-old-def456"
ALARMS = ("s-endpoint-5xx", "s-endpoint-latency")


def endpoint(status: str, config: str = OLD, pending: str | None = None, **extra) -> dict:
    out = {"EndpointStatus": status, "EndpointConfigName": config, **extra}
    if pending:
        out["PendingDeploymentSummary"] = {"EndpointConfigName": pending}
    return out


@pytest.mark.parametrize(
    ("described", "expected"),
    [
        (None, (Request.CREATE, None)),
        (endpoint("InService"), (Request.UPDATE, OLD)),
        (endpoint("InService", NEW), (Request.NONE, None)),  # a retry after it went live
        (endpoint("Updating", OLD, NEW), (Request.NONE, OLD)),  # a retry during our update
        (endpoint("Creating", NEW), (Request.NONE, None)),  # a retry during our create
        (endpoint("Updating", OLD, "dfw-other-000000"), (Request.BUSY, OLD)),
        (endpoint("RollingBack", OLD), (Request.BUSY, OLD)),
        (endpoint("Failed", OLD), (Request.FAILED, OLD)),
        (endpoint("Deleting", OLD), (Request.BUSY, None)),  # a withdrawn first model leaving
    ],
)
def test_deploy_request_asks_only_what_is_not_already_asked(described, expected):
    assert deploy_request(described, NEW) == expected


def test_update_progress_reads_a_rollback_from_the_active_config_not_the_status():
    rolled = endpoint("InService", OLD, FailureReason="Update rolled back: alarm X")
    status = update_progress(rolled, NEW, attempt=3, max_polls=10)
    assert status.progress == Progress.ROLLED_BACK and "alarm X" in status.reason
    assert update_progress(endpoint("InService", NEW), NEW, 1, 10).progress == Progress.LIVE


def test_update_progress_waits_then_gives_up_at_the_bound():
    assert update_progress(endpoint("Updating", OLD, NEW), NEW, 9, 10).progress == Progress.WAIT
    late = update_progress(endpoint("Updating", OLD, NEW), NEW, 10, 10)
    assert late.progress == Progress.TIMED_OUT and "10 reads" in late.reason


def test_update_progress_failed_or_missing_endpoint_fails():
    failed = update_progress(endpoint("Failed", NEW, FailureReason="image pull"), NEW, 1, 10)
    assert failed.progress == Progress.FAILED and failed.reason == "image pull"
    assert update_progress(None, NEW, 1, 10).progress == Progress.FAILED


def test_bake_continues_while_quiet_and_passes_after_enough_reads():
    quiet = {a: "OK" for a in ALARMS} | {"s-endpoint-latency": "INSUFFICIENT_DATA"}
    assert bake_verdict(quiet, ALARMS, checks=1, needed=3).verdict == Verdict.CONTINUE
    assert bake_verdict(quiet, ALARMS, checks=3, needed=3).verdict == Verdict.PASSED


def test_bake_rolls_back_on_any_alarm_in_alarm_or_missing():
    firing = bake_verdict({ALARMS[0]: "ALARM", ALARMS[1]: "OK"}, ALARMS, checks=1, needed=3)
    assert firing.verdict == Verdict.ROLLBACK and ALARMS[0] in firing.reason
    # an alarm nobody can read is no protection: roll back rather than promote blind
    missing = bake_verdict({ALARMS[0]: "OK"}, ALARMS, checks=3, needed=3)
    assert missing.verdict == Verdict.ROLLBACK and "not found" in missing.reason


def test_timing_bounds_the_wait_by_sagemakers_longest_update_and_rounds_the_bake_up():
    t = Timing(poll_s=30, bake_s=100, step_timeout_s=120)
    assert t.max_polls == 120  # 3600 s / 30 s
    assert t.bake_checks == 4  # ceil(100 / 30): never shorter than asked
    assert Timing(poll_s=30, bake_s=0, step_timeout_s=120).bake_checks == 1


def test_execution_name_is_one_per_model_version_and_valid_for_step_functions():
    name = execution_name("dfw-h0123456789abcde-003-1a2b3c4d")
    assert name == "rollout-dfw-h0123456789abcde-003-1a2b3c4d"
    assert len(execution_name("x" * 100)) == 80


@pytest.mark.parametrize(
    ("mode", "request_", "described", "baked"),
    [
        ("serverless", Request.UPDATE, endpoint("InService"), True),  # no alarm rollback
        ("serverless", Request.CREATE, None, True),
        ("instance", Request.UPDATE, endpoint("InService"), False),  # SageMaker's canary
        ("instance", Request.NONE, endpoint("Updating", OLD, NEW), False),
        ("instance", Request.CREATE, None, True),  # CreateEndpoint has no canary
        ("instance", Request.NONE, endpoint("Creating", NEW), True),  # a retried create
    ],
)
def test_the_state_machine_bakes_whatever_sagemaker_does_not_watch(
    mode, request_, described, baked
):
    assert needs_bake(mode, request_, described) is baked


@pytest.mark.parametrize(
    ("described", "attempt", "expected"),
    [
        (endpoint("InService", NEW), 1, Withdrawal.DELETE),
        (endpoint("Failed", NEW), 1, Withdrawal.DELETE),
        (endpoint("Deleting", NEW), 2, Withdrawal.DELETING),  # asked once: read again
        (endpoint("Updating", NEW, OLD), 1, Withdrawal.DELETING),  # cannot delete yet
        (None, 3, Withdrawal.DELETED),
        (endpoint("InService", OLD), 1, Withdrawal.KEPT),  # not ours any more
        (endpoint("Deleting", NEW), 10, Withdrawal.TIMED_OUT),
    ],
)
def test_withdrawal_deletes_only_an_endpoint_serving_the_failed_first_model(
    described, attempt, expected
):
    assert withdrawal(described, NEW, attempt, max_polls=10) == expected
