"""The rollout state machine, run: statemachines/rollout.asl.json under moto's ASL interpreter.

promote starts the execution as in AWS; moto runs the definition (Wait, Choice, Retry,
Catch, TimeoutSecondsPath); each Lambda task runs RolloutFunction's real handler in this
process (``samlocal.moto_stepfunctions.install``, the hook the local stack uses with its
Lambda API). moto has no UpdateEndpoint, so the endpoint is ``FakeEndpoints``: an update
takes one DescribeEndpoint to finish, and with ``blue_green_rolls_back`` an update carrying
SageMaker's AutoRollbackConfiguration ends InService on the old config, as a canary whose
alarms fired does.
"""

from __future__ import annotations

import pytest
from flywheel.adapters import items
from flywheel.domain.rollout import execution_name
from flywheel.services.promote import promote_job
from flywheel.settings import PromoteSettings
from integration_kit import STACK, metrics_doc, outcomes
from rollout_kit import (
    CHAMPION,
    CHAMPION_CONFIG,
    ENDPOINT,
    JOB,
    STEP_TIMEOUT_S,
    TIMING,
    fake_endpoints,
    finished_job,
    history,
    packages,
    promote_and_wait,
    rollouts,
    set_champion,
)
from test_dashboard import dashboard


@pytest.fixture
def endpoints(monkeypatch):
    return fake_endpoints(monkeypatch)


@pytest.fixture
def env(stack):
    with rollouts(stack):
        yield stack


def test_serverless_first_model_is_deployed_baked_and_becomes_champion(env, endpoints, context):
    # Given a finished job, no champion, and an item waiting for a model
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    items.put_new(env.table, {"item_id": "0" * 64, "state": "unlabeled", "image_key": "k"})

    # When promote starts the rollout and it runs
    done = promote_and_wait(env, context)

    # Then the endpoint was created with the new config, baked (alarms read while quiet)...
    assert done["status"] == "SUCCEEDED", done
    (config,) = endpoints.creates
    assert endpoints.updates == []
    assert endpoints.state[ENDPOINT]["EndpointConfigName"] == config
    assert env.fn.actions().count("bake") == 2  # bake_s 2 / poll_s 1
    # ...and only then recorded: champion, Approved package, relabel sweep, one notification
    champion = env.champion()
    assert champion["model_version"] == JOB and champion["endpoint_config"] == config
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Approved"
    assert [m["item_id"] for m in env.drain("LabelQueue")] == ["0" * 64]
    (note,) = outcomes(env)
    assert note["outcome"] == "promoted" and note["model_version"] == JOB


def test_serverless_alarm_during_the_bake_rolls_back_once_even_if_the_record_is_retried(
    env, endpoints, context
):
    # Given a champion served from its config, and a better challenger whose serving trips
    # the 5XX alarm as soon as it takes traffic
    set_champion(env)
    endpoints.serving(CHAMPION_CONFIG)
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))
    alarm = f"{STACK}-endpoint-5xx"

    def trip(config: str) -> None:
        if config != CHAMPION_CONFIG:
            env.cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5XX")

    endpoints.on_switch = trip
    # and the record step's first answer arrives after the task's timeout
    env.fn.late["record"] = STEP_TIMEOUT_S + 2

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then the state machine rolled the endpoint back to the champion's config: one update
    # to the new config, one back, never the new one again
    assert done["status"] == "FAILED" and done["error"] == "RolledBack", done
    assert [u["EndpointConfigName"] for u in endpoints.updates][1:] == [CHAMPION_CONFIG]
    assert len(endpoints.updates) == 2
    assert "DeploymentConfig" not in endpoints.updates[0]  # serverless: no blue/green
    assert endpoints.state[ENDPOINT]["EndpointConfigName"] == CHAMPION_CONFIG
    # the record step ran twice (timed out, retried) and recorded once
    assert env.fn.actions().count("record") == 2
    assert any(e["type"] == "LambdaFunctionTimedOut" for e in history(env, done["executionArn"]))
    (note,) = outcomes(env)
    assert note["outcome"] == "rolled_back" and alarm in note["reason"]
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert env.champion()["model_version"] == CHAMPION
    assert env.drain("LabelQueue") == []


def test_instance_canary_rolled_back_by_sagemaker_is_recorded_not_resent(env, endpoints, context):
    # Given an instance endpoint serving the champion, whose canary's alarms will fire
    env.use("PromoteFunction", ENDPOINT_MODE="instance", **TIMING)
    env.use("RolloutFunction", ENDPOINT_MODE="instance")
    set_champion(env)
    endpoints.serving(CHAMPION_CONFIG)
    endpoints.blue_green_rolls_back = True
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then the one blue/green request carried the rollback alarms; SageMaker rolled back, and
    # the state machine recorded it without asking for the update again
    assert done["status"] == "FAILED" and done["error"] == "RolledBack", done
    (update,) = endpoints.updates
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": f"{STACK}-endpoint-5xx"},
        {"AlarmName": f"{STACK}-endpoint-latency"},
    ]
    assert "bake" not in env.fn.actions()  # SageMaker's canary is the bake
    (note,) = outcomes(env)
    assert note["outcome"] == "rolled_back" and "Update rolled back" in note["reason"]
    assert env.champion()["model_version"] == CHAMPION


def test_instance_deploy_step_answering_late_is_retried_and_asks_sagemaker_once(
    env, endpoints, context
):
    # Given an instance endpoint serving the champion, and a deploy step whose first answer
    # arrives after the task's timeout (the update was requested all the same)
    env.use("PromoteFunction", ENDPOINT_MODE="instance", **TIMING)
    env.use("RolloutFunction", ENDPOINT_MODE="instance")
    set_champion(env)
    endpoints.serving(CHAMPION_CONFIG)
    finished_job(env, JOB, metrics_doc(JOB, 0.97, champion_accuracy=0.90))
    env.fn.late["deploy"] = STEP_TIMEOUT_S + 2

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then Step Functions timed the step out and retried it; the retry asked nothing again
    assert done["status"] == "SUCCEEDED", done
    events = history(env, done["executionArn"])
    assert "LambdaFunctionTimedOut" in [e["type"] for e in events]
    assert env.fn.actions()[:2] == ["deploy", "deploy"]
    (update,) = endpoints.updates
    assert env.champion()["endpoint_config"] == update["EndpointConfigName"]
    assert [n["outcome"] for n in outcomes(env)] == ["promoted"]


def test_an_endpoint_that_fails_is_recorded_failed_and_no_champion(env, endpoints, context):
    # Given a first model whose endpoint will fail to come up
    endpoints.creation_fails = True
    finished_job(env, JOB, metrics_doc(JOB, 0.93))

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then it ends DeploymentFailed, the failure recorded once with SageMaker's reason
    assert done["status"] == "FAILED" and done["error"] == "DeploymentFailed", done
    (note,) = outcomes(env)
    assert note["outcome"] == "failed" and "did not pass /ping" in note["reason"]
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert env.champion() is None
    assert "bake" not in env.fn.actions()


@pytest.mark.parametrize("mode", ["serverless", "instance"])
def test_a_first_model_whose_alarms_fire_is_withdrawn_and_leaves_no_champion(
    env, endpoints, context, mode
):
    # Given no champion and no endpoint yet, an item waiting for a model, and a first model
    # whose serving trips the 5XX alarm as soon as the endpoint is up
    env.use("PromoteFunction", ENDPOINT_MODE=mode, **TIMING)
    env.use("RolloutFunction", ENDPOINT_MODE=mode)
    items.put_new(env.table, {"item_id": "0" * 64, "state": "unlabeled", "image_key": "k"})
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    alarm = f"{STACK}-endpoint-5xx"
    endpoints.on_switch = lambda config: env.cw.set_alarm_state(
        AlarmName=alarm, StateValue="ALARM", StateReason="5XX"
    )
    # and the withdraw step's first answer arrives after the task's timeout
    env.fn.late["withdraw"] = STEP_TIMEOUT_S + 2

    # When the rollout runs
    done = promote_and_wait(env, context)

    # Then the state machine baked the new endpoint (instance too: CreateEndpoint has no
    # canary), found nothing to roll back to, and deleted the endpoint: once, though the
    # withdraw step ran again after its timeout
    assert done["status"] == "FAILED" and done["error"] == "RolledBack", done
    (config,) = endpoints.creates
    assert endpoints.updates == []
    assert "bake" in env.fn.actions() and "rollback" in env.fn.actions()
    assert env.fn.actions().count("withdraw") >= 3  # timed out, retried, read until gone
    assert endpoints.deletes == [ENDPOINT]
    assert ENDPOINT not in endpoints.state  # nothing serves the bad model
    # recorded once as rolled back, with why and where the model went
    (note,) = outcomes(env)
    assert note["outcome"] == "rolled_back" and alarm in note["reason"]
    assert f"no previous model to roll back to: endpoint {ENDPOINT} deleted" in note["reason"]
    (package,) = packages(env)
    assert package["ModelApprovalStatus"] == "Rejected"
    # no champion: nothing is auto-labeled, no relabel sweep, and status says why
    assert env.champion() is None
    assert env.drain("LabelQueue") == []
    body = dashboard(env, context)
    assert body["champion"] is None and body["auto_labeling"]["active"] is False
    why = body["auto_labeling"]["why_not"]
    assert why.startswith(f"no champion yet: the last candidate {JOB} was rolled_back")
    assert alarm in why and "deleted" in why


def test_an_instance_endpoint_created_for_the_first_model_is_baked(env, endpoints, context):
    # Given instance mode, no champion and no endpoint yet
    env.use("PromoteFunction", ENDPOINT_MODE="instance", **TIMING)
    env.use("RolloutFunction", ENDPOINT_MODE="instance")
    finished_job(env, JOB, metrics_doc(JOB, 0.93))

    # When the rollout runs with quiet alarms
    done = promote_and_wait(env, context)

    # Then the state machine watched the alarms for the whole bake before the champion
    assert done["status"] == "SUCCEEDED", done
    assert env.fn.actions().count("bake") == 2  # bake_s 2 / poll_s 1
    assert env.champion()["endpoint_config"] == endpoints.creates[0]
    assert endpoints.deletes == []


def test_a_finished_rollout_is_not_started_again(env, endpoints, context):
    # Given a model whose rollout ran to its end
    finished_job(env, JOB, metrics_doc(JOB, 0.93))
    done = promote_and_wait(env, context)
    assert done["status"] == "SUCCEEDED"
    outcomes(env)

    # When its job's event is handled again (after the idempotency record expired)
    again = promote_job(PromoteSettings.from_env(), "training", JOB)

    # Then nothing starts: the champion is this model
    assert again.outcome == "already_champion"
    executions = env.sfn.list_executions(stateMachineArn=env.physical["RolloutStateMachine"])
    assert [e["name"] for e in executions["executions"]] == [execution_name(JOB)]
    assert outcomes(env) == []
