"""Step Functions executions across a kill -9 of the moto process: an acknowledged
StartExecution is kept, and the next start runs it again (same name, same input) from its
first state; an execution that had ended is forgotten and not run again."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from samlocal.moto_server import MotoProcess, client
from samlocal.moto_stepfunctions import (
    ExecutionLog,
    restart_executions,
    write_lambda_endpoint,
)

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:probe"
DEFINITION = {
    "StartAt": "First",
    "States": {
        "First": {
            "Type": "Task",
            "Resource": FUNCTION,
            "Parameters": {"step": "first", "name.$": "$$.Execution.Name", "hold.$": "$.hold"},
            "ResultPath": "$.first",
            "Next": "Second",
        },
        "Second": {
            "Type": "Task",
            "Resource": FUNCTION,
            "Parameters": {"step": "second", "name.$": "$$.Execution.Name", "hold.$": "$.hold"},
            "ResultPath": "$.second",
            "End": True,
        },
    },
}


class Probe:
    """A Lambda Invoke API whose function records its calls; ``second`` steps of a held
    execution wait until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.release = threading.Event()
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                probe.calls.append(event)
                if event["step"] == "second" and event["hold"]:
                    probe.release.wait(60)
                body = json.dumps({"ok": event["step"]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def steps(self, name: str) -> list[str]:
        return [c["step"] for c in self.calls if c["name"] == name]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def probe():
    p = Probe()
    yield p
    p.release.set()
    p.server.shutdown()


def machine(sfn) -> str:
    return sfn.create_state_machine(
        name="fault",
        definition=json.dumps(DEFINITION),
        roleArn="arn:aws:iam::123456789012:role/fault",
    )["stateMachineArn"]


def test_kill_9_mid_execution_then_the_restart_runs_it_again_from_the_start(tmp_path, probe):
    moto = MotoProcess(tmp_path)
    sfn = client("stepfunctions", moto.start())
    write_lambda_endpoint(tmp_path, probe.url)
    try:
        arn = machine(sfn)
        # Given an execution that ended, and one held in its second step
        done = sfn.start_execution(stateMachineArn=arn, name="done", input='{"hold": false}')
        wait_for(
            lambda: sfn.describe_execution(executionArn=done["executionArn"])["status"]
            == "SUCCEEDED",
            30,
            "the first execution",
        )
        wait_for(lambda: len(ExecutionLog(tmp_path).pending()) == 0, 10, "done to be forgotten")
        sfn.start_execution(stateMachineArn=arn, name="held", input='{"hold": true}')
        wait_for(lambda: probe.steps("held") == ["first", "second"], 30, "the second step")

        # When moto is killed -9 there, and started again on the same state directory
        os.kill(moto._proc.pid, signal.SIGKILL)
        moto._proc.wait()
        moto._proc = None
        probe.release.set()
        sfn = client("stepfunctions", moto.start())
        arn = machine(sfn)  # the stack provisions its state machines again at each start
        restarted = restart_executions(tmp_path, sfn)

        # Then the held one runs again from its first state, with its name and input ...
        assert restarted == ["held"]
        execution_arn = arn.replace(":stateMachine:", ":execution:") + ":held"
        out = wait_for(
            lambda: (d := sfn.describe_execution(executionArn=execution_arn))["status"] != "RUNNING"
            and d,
            30,
            "the restarted execution",
        )
        assert out["status"] == "SUCCEEDED", out
        assert json.loads(out["output"])["second"] == {"ok": "second"}
        assert probe.steps("held") == ["first", "second", "first", "second"]
        # ... the one that had ended is not run again, and once it ends nothing is pending
        assert probe.steps("done") == ["first", "second"]
        wait_for(lambda: len(ExecutionLog(tmp_path).pending()) == 0, 10, "held to be forgotten")
        assert restart_executions(tmp_path, sfn) == []
    finally:
        moto.stop()
