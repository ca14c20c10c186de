"""Step Functions executions in moto, their Lambda tasks run by the local function runner.

moto 5.2 ships an Amazon States Language interpreter (``moto.stepfunctions.parser``),
switched on by its config ``stepfunctions.execute_state_machine``: ``StartExecution`` then
runs the definition (Task, Choice, Wait, Retry, Catch, timeouts) in a thread of the moto
process. Its Lambda tasks (``arn:aws:states:::lambda:invoke`` and bare function ARNs) call
``lambda:Invoke`` through ``boto_client_for``, which points at moto's own port, where moto's
Lambda would need Docker. ``install(invoker)`` swaps that client for one whose ``invoke``
goes to ``invoker``: the local stack passes the Lambda Invoke API of its function runner
(``samlocal/lambda_api.py``), tests may pass an in-process one.

What an execution survives: executions run in moto's memory (their threads hold the
interpreter state), so a restart of the moto process ends the executions in flight and
their history; the state machines themselves are provisioned again from the template.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (function name or ARN, payload bytes) -> (status code, payload bytes, function error or None)
Invoker = Callable[[str, bytes], tuple[int, bytes, str | None]]

LAMBDA_ENDPOINT_FILE = "lambda-endpoint"  # in the moto state directory, written by the stack


class _LambdaClient:
    """The one call the interpreter makes on its Lambda client."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker

    def invoke(self, **params: Any) -> dict[str, Any]:
        payload = params.get("Payload") or b"{}"
        if isinstance(payload, str):
            payload = payload.encode()
        status, body, function_error = self._invoker(params["FunctionName"], payload)
        response: dict[str, Any] = {
            "StatusCode": status,
            "Payload": io.BytesIO(body),
            "ExecutedVersion": "$LATEST",
        }
        if function_error:
            response["FunctionError"] = function_error
        return response


def http_invoker(endpoint_of: Callable[[], str]) -> Invoker:
    """Invoke through a Lambda Invoke API whose URL ``endpoint_of()`` returns (read per call:
    the function runner starts after moto)."""

    def invoke(function: str, payload: bytes) -> tuple[int, bytes, str | None]:
        import boto3
        from botocore.config import Config

        lam = boto3.client(
            "lambda",
            endpoint_url=endpoint_of(),
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            # One attempt: retrying is the state machine's Retry, as in AWS.
            config=Config(retries={"total_max_attempts": 1}, read_timeout=900),
        )
        out = lam.invoke(FunctionName=function, Payload=payload)
        return out["StatusCode"], out["Payload"].read(), out.get("FunctionError")

    return invoke


def endpoint_file_reader(state_dir: Path) -> Callable[[], str]:
    path = Path(state_dir) / LAMBDA_ENDPOINT_FILE

    def read() -> str:
        if not path.exists():
            raise RuntimeError(f"no Lambda endpoint for Step Functions tasks yet ({path})")
        return path.read_text().strip()

    return read


def install(invoker: Invoker) -> Callable[[], None]:
    """Run state machines on StartExecution; their Lambda tasks call ``invoker``.

    Returns what undoes it (tests; the server process keeps it for its lifetime).
    """
    from moto.core.config import default_user_config
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    sfn_config = default_user_config.setdefault("stepfunctions", {})
    was_executing = sfn_config.get("execute_state_machine", False)
    sfn_config["execute_state_machine"] = True
    original = lambda_eval_utils.boto_client_for

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        if service == "lambda":
            return _LambdaClient(invoker)
        return original(region=region, service=service, state_credentials=state_credentials)

    lambda_eval_utils.boto_client_for = boto_client_for  # type: ignore[assignment]

    def uninstall() -> None:
        lambda_eval_utils.boto_client_for = original  # type: ignore[assignment]
        sfn_config["execute_state_machine"] = was_executing

    return uninstall


def install_for_server(state_dir: Path) -> None:
    """The moto server process's hook: Lambda tasks go to the stack's Lambda Invoke API."""
    install(http_invoker(endpoint_file_reader(state_dir)))


def write_lambda_endpoint(state_dir: Path, url: str) -> None:
    """Called by the stack once its Lambda Invoke API listens."""
    import os

    path = Path(state_dir) / LAMBDA_ENDPOINT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(url)
    os.replace(tmp, path)
