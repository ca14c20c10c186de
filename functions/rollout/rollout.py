"""One step of the rollout state machine: deploy, check, bake, roll back, withdraw or record."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from flywheel.adapters.aws import run_once
from flywheel.domain.rollout import Outcome
from flywheel.errors import ConfigurationError
from flywheel.services import rollout
from flywheel.settings import RolloutSettings

logger, tracer, metrics = Logger(), Tracer(patch_modules=["botocore"]), Metrics()
METRIC = {
    "promoted": "ModelsPromoted",
    "rolled_back": "DeploymentsRolledBack",
    "failed": "DeploymentsFailed",
}


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict, context: LambdaContext) -> dict:
    settings = RolloutSettings.from_env()
    action, execution, state = event.get("action"), event.get("execution"), event.get("state")
    if action not in rollout.ACTIONS or not execution or not isinstance(state, dict):
        raise ConfigurationError(f"not a rollout step: action={action!r} execution={execution!r}")
    if action == "deploy":
        # Once per execution: a retried deploy (the first answer timed out) asks nothing again.
        result = run_once(
            settings.IDEMPOTENCY_TABLE,
            context,
            {"execution": execution, "action": action},
            lambda: rollout.deploy(settings, state),
        )
    elif action == "record":
        try:
            outcome = Outcome(str(event.get("outcome")))
        except ValueError as exc:  # a state machine definition that lost the outcome
            raise ConfigurationError(f"record needs an outcome ({', '.join(Outcome)})") from exc
        recorded: list[bool] = []

        def record() -> dict:
            recorded.append(True)
            return rollout.record(settings, state, outcome)

        # Once per execution: a retried record neither re-registers nor re-notifies.
        result = run_once(
            settings.IDEMPOTENCY_TABLE, context, {"execution": execution, "action": action}, record
        )
        if recorded:  # counted once too (a retry gets the stored result)
            metrics.add_metric(name=METRIC[str(outcome)], unit=MetricUnit.Count, value=1)
    elif action == "check":
        result = rollout.check(settings, state)
    elif action == "check_rollback":
        result = rollout.check(settings, state, key="check_rollback")
    elif action == "bake":
        result = rollout.bake(settings, state)
    elif action == "withdraw":
        result = rollout.withdraw(settings, state)
    else:
        result = rollout.rollback(settings, state)
    logger.info("rollout step", extra={"action": action, "execution": execution, **result})
    return result
