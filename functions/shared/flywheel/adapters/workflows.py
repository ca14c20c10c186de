"""Step Functions: start the rollout of a model (once per execution name)."""

from __future__ import annotations

import json

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code


def start_once(state_machine_arn: str, name: str, payload: dict) -> tuple[str, bool]:
    """(execution ARN, started now?). A name already used (the same model's rollout, running
    or finished) starts nothing: a re-delivered event never rolls a model out twice."""
    sfn = client("stepfunctions")
    try:
        arn = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload, sort_keys=True)
        )["executionArn"]
        return arn, True
    except ClientError as exc:
        if error_code(exc) != "ExecutionAlreadyExists":
            raise
    prefix = state_machine_arn.replace(":stateMachine:", ":execution:", 1)
    return f"{prefix}:{name}", False
