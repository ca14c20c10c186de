"""The slice of the Lambda API that a local stack serves, so clients use boto3.

- ``Invoke`` (``POST /2015-03-31/functions/<name>/invocations``) with
  ``RequestResponse``, ``Event`` and ``DryRun``; a function error comes back
  as in AWS: status 200, ``X-Amz-Function-Error: Unhandled``, the error JSON.
- ``ListFunctions`` (``GET /2015-03-31/functions/``).
- Local extras under ``/_flywheel/``: ``POST schedules/<function>[/<event>]``
  fires a schedule now; ``GET status`` returns the router's counters;
  ``POST faults`` (test hook, local only) makes the next ``times`` synchronous invokes of
  a function whose event has the keys of ``match`` answer ``delay_s`` late: the function
  runs, its answer arrives after the caller's timeout (how a Step Functions task times out
  while its Lambda keeps going), ``GET faults`` lists what is left.

``AWS_ENDPOINT_URL_LAMBDA`` (written by the stack to ``endpoints.json``)
points boto3's ``lambda`` client here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from samlocal.functions import InvocationError
from samlocal.router import ACCOUNT, Router

log = logging.getLogger(__name__)


@dataclass
class Fault:
    """Answer late: ``delay_s`` after the function returned, ``times`` times."""

    function: str  # logical id or physical name
    delay_s: float
    times: int = 1
    match: dict[str, Any] = field(default_factory=dict)  # top-level keys the event must have

    def applies(self, logical_id: str, name: str, event: Any) -> bool:
        return (
            self.times > 0
            and self.function in (logical_id, name)
            and isinstance(event, dict)
            and all(event.get(k) == v for k, v in self.match.items())
        )


class LambdaApi:
    def __init__(
        self, router: Router, host: str = "127.0.0.1", port: int = 0, status: Any = None
    ) -> None:
        self.router = router
        self.status = status  # callable -> dict, for GET /_flywheel/status
        self.faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug(format, *args)

            def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", "local")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, what: str) -> None:
                self._send(
                    404,
                    {"Type": "User", "message": f"Function not found: {what}"},
                    {"x-amzn-ErrorType": "ResourceNotFoundException"},
                )

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if path.rstrip("/") == "/2015-03-31/functions":
                    self._send(
                        200,
                        {
                            "Functions": [
                                api._config(w.spec) for w in api.router.pool.workers.values()
                            ]
                        },
                    )
                elif path == "/_flywheel/status":
                    self._send(200, api.status() if api.status else {})
                elif path == "/_flywheel/faults":
                    with api._faults_lock:
                        self._send(200, {"faults": [asdict(f) for f in api.faults]})
                else:
                    self._send(404, {"message": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                path = unquote(self.path.split("?")[0])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = path.strip("/").split("/")
                if (
                    len(parts) == 4
                    and parts[:2] == ["2015-03-31", "functions"]
                    and parts[3] == "invocations"
                ):
                    self._invoke(parts[2], body)
                elif parts == ["_flywheel", "faults"]:
                    try:
                        fault = Fault(**json.loads(body))
                    except (TypeError, ValueError) as exc:
                        self._send(400, {"message": f"not a fault: {exc}"})
                        return
                    with api._faults_lock:
                        api.faults.append(fault)
                    self._send(200, asdict(fault))
                elif parts[:2] == ["_flywheel", "schedules"] and len(parts) in (3, 4):
                    try:
                        result = api.router.fire(parts[2], parts[3] if len(parts) == 4 else None)
                        self._send(200, {"result": result})
                    except KeyError as exc:
                        self._send(404, {"message": str(exc)})
                    except InvocationError as exc:
                        self._send(200, exc.error, {"X-Amz-Function-Error": "Unhandled"})
                else:
                    self._send(404, {"message": "not found"})

            def _invoke(self, name: str, body: bytes) -> None:
                try:
                    worker = api.router.pool.get(name)
                except KeyError:
                    self._not_found(name)
                    return
                try:
                    event = json.loads(body or b"{}")
                except ValueError:
                    self._send(
                        400,
                        {"Type": "User", "message": "Could not parse request body into json"},
                        {"x-amzn-ErrorType": "InvalidRequestContentException"},
                    )
                    return
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                if kind == "DryRun":
                    self._send(204, b"")
                elif kind == "Event":
                    api.router.invoke_async(worker.spec.logical_id, event)
                    self._send(202, b"")
                else:
                    try:
                        result = worker.invoke(event)
                        api._late(worker.spec, event)
                        self._send(200, result, {"X-Amz-Executed-Version": "$LATEST"})
                    except InvocationError as exc:
                        self._send(
                            200,
                            exc.error,
                            {
                                "X-Amz-Function-Error": "Unhandled",
                                "X-Amz-Executed-Version": "$LATEST",
                            },
                        )

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def _late(self, spec: Any, event: Any) -> None:
        """Sleep when a fault says this answer comes late (after the function ran)."""
        with self._faults_lock:
            fault = next(
                (f for f in self.faults if f.applies(spec.logical_id, spec.name, event)), None
            )
            if fault is not None:
                fault.times -= 1
        if fault is not None:
            log.warning("fault: %s answers %.1f s late", spec.logical_id, fault.delay_s)
            time.sleep(fault.delay_s)

    @staticmethod
    def _config(spec: Any) -> dict[str, Any]:
        return {
            "FunctionName": spec.name,
            "FunctionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{spec.name}",
            "Runtime": "python3.11",
            "Handler": spec.handler,
            "Timeout": int(spec.timeout_s),
            "MemorySize": spec.memory_mb,
            "Environment": {"Variables": spec.environment},
        }

    def start(self) -> str:
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="lambda-api"
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
