"""One Lambda function's execution environment: a long-lived process.

Started by ``samlocal.functions.FunctionWorker`` with the function's
environment and ``sys.path`` (code dir + layers) already set, like a warm
Lambda sandbox. It imports the handler once (init phase), then serves
invocations over a ``multiprocessing.connection`` pipe, one at a time.
Handler output (Powertools' JSON logs, EMF metrics) goes to stdout/stderr,
which the parent sends to ``<data>/logs/<Function>.log``.

    python -m samlocal.worker   # only ever run by the local stack
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Client
from typing import Any


class LambdaContext:
    """The attributes and method of the Lambda context object that handlers use."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        region = os.environ.get("AWS_REGION", "us-east-1")
        account = os.environ.get("FLYWHEEL_ACCOUNT_ID", "123456789012")
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{name}")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


def die_with_parent(every_s: float = 0.5) -> None:
    """Exit when the stack process that started this sandbox is gone (even by kill -9).

    A busy handler never reads the pipe, so EOF alone would not end it: watch the
    parent pid (PR_SET_PDEATHSIG would fire when the parent *thread* that started us
    ends, and the stack starts sandboxes from short-lived threads).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def main() -> None:
    die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the stack ends its sandboxes
    # itself (an invocation cut short is redelivered), a handler must not see it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    address = os.environ["FLYWHEEL_WORKER_ADDRESS"]
    host, port = address.rsplit(":", 1)
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ["FLYWHEEL_WORKER_AUTHKEY"]))
    module_name, func_name = os.environ["_HANDLER"].rsplit(".", 1)
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        init_error = None
    except BaseException as exc:  # Lambda reports init errors on every invoke
        traceback.print_exc()
        handler, init_error = None, _error(exc)
    conn.send({"ready": True, "init_error": init_error})
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request.get("shutdown"):
            return
        if init_error:
            conn.send({"ok": False, "error": init_error})
            continue
        context = LambdaContext(request["request_id"], request["deadline_ms"])
        try:
            result = handler(json.loads(request["payload"]), context)
            payload = json.dumps(result) if result is not None else "null"
            conn.send({"ok": True, "payload": payload})
        except BaseException as exc:  # the function failed: report it like Lambda does
            traceback.print_exc()
            sys.stderr.flush()
            conn.send({"ok": False, "error": _error(exc)})
        sys.stdout.flush()


if __name__ == "__main__":
    main()
