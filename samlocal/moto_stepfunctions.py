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
interpreter state, which is not journaled), so a restart of the moto process, clean or
``kill -9``, ends the executions in flight and their history. What is kept is the start:
an acknowledged ``StartExecution`` is written (fsync'ed) to ``<state>/executions/`` before
it is answered, and forgotten once the execution has ended (``ExecutionLog``). At the next
start the stack, once its Lambda Invoke API listens, starts every execution not known to
have ended again, with the same name and input (``restart_executions``): it runs from its
first state, so its steps must be safe to run twice (the rollout's are: deploy and record
run once per execution name, the others only read). The state machines themselves are
provisioned again from the template.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (function name or ARN, payload bytes) -> (status code, payload bytes, function error or None)
Invoker = Callable[[str, bytes], tuple[int, bytes, str | None]]

LAMBDA_ENDPOINT_FILE = "lambda-endpoint"  # in the moto state directory, written by the stack
EXECUTIONS_DIR = "executions"  # in the moto state directory: ExecutionLog
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


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
    path = Path(state_dir) / LAMBDA_ENDPOINT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(url)
    os.replace(tmp, path)


# -- executions across restarts ------------------------------------------------------


class ExecutionLog:
    """The executions started and not known to have ended: one JSON file each
    (``{"executionArn", "stateMachineArn", "name", "input"}``), written atomically and
    fsync'ed, so an acknowledged StartExecution survives ``kill -9`` of the moto process."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / EXECUTIONS_DIR

    def _path(self, execution_arn: str) -> Path:
        return self.dir / f"{hashlib.sha256(execution_arn.encode()).hexdigest()[:32]}.json"

    def started(self, execution_arn: str, state_machine_arn: str, input_: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        record = {
            "executionArn": execution_arn,
            "stateMachineArn": state_machine_arn,
            "name": execution_arn.rsplit(":", 1)[-1],
            "input": input_,
        }
        path = self._path(execution_arn)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def ended(self, execution_arn: str) -> None:
        self._path(execution_arn).unlink(missing_ok=True)

    def pending(self) -> list[dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # a torn temp file is never a .json: skip oddities
                log.warning("unreadable execution record %s", path)
        return out


def record_request(log_: ExecutionLog, action: str, request: bytes, response: bytes) -> None:
    """Note a successful StartExecution / StopExecution (called by the moto server before
    it answers the request)."""
    try:
        body, answer = json.loads(request or b"{}"), json.loads(response or b"{}")
    except ValueError:
        return
    if action == "StartExecution" and answer.get("executionArn"):
        log_.started(
            answer["executionArn"], body.get("stateMachineArn", ""), body.get("input", "{}")
        )
    elif action == "StopExecution" and body.get("executionArn"):
        log_.ended(body["executionArn"])


def forget_ended(log_: ExecutionLog, describe: Callable[[str], str | None]) -> int:
    """Drop the records of executions that have ended; ``describe(arn)`` is the status, or
    None when moto has no such execution (not restarted yet: kept). How many were dropped."""
    dropped = 0
    for record in log_.pending():
        if describe(record["executionArn"]) in TERMINAL:
            log_.ended(record["executionArn"])
            dropped += 1
    return dropped


def restart_executions(state_dir: Path, sfn: Any) -> list[str]:
    """Start again, with the same name and input, every execution that a restart of moto
    ended before it finished (the stack calls this once its Lambda Invoke API listens).
    The names restarted."""
    restarted = []
    for record in ExecutionLog(state_dir).pending():
        try:
            status = sfn.describe_execution(executionArn=record["executionArn"])["status"]
        except sfn.exceptions.ExecutionDoesNotExist:
            status = None
        if status is not None:
            continue  # running (or ended) in this moto: nothing was lost
        sfn.start_execution(
            stateMachineArn=record["stateMachineArn"], name=record["name"], input=record["input"]
        )
        log.warning("execution %s restarted from its first state", record["name"])
        restarted.append(record["name"])
    return restarted
