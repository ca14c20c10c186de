"""Lambda functions as long-lived worker processes (one per function).

Each worker is a warm Lambda sandbox: the function's own environment, its code
directory and layers on ``sys.path``, reserved concurrency 1 (invocations of
one function are serialised), the template's ``Timeout`` enforced by killing
the sandbox (the next invoke starts a fresh one: a cold start).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any, cast

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FunctionSpec:
    """What the template says about one function, resolved to local values."""

    logical_id: str
    name: str  # physical name
    handler: str  # "module.func"
    code_dir: Path
    layer_paths: list[Path] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 3.0
    memory_mb: int = 128
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # SAM Events, resolved
    # EventInvokeConfig: attempts of an asynchronous invocation, and where it goes after.
    async_max_attempts: int = 3
    on_failure: str | None = None  # an SQS queue ARN (DestinationConfig.OnFailure)


class InvocationError(Exception):
    """The function raised, timed out, or its sandbox died."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('errorType')}: {error.get('errorMessage')}")
        self.error = error


class FunctionWorker:
    def __init__(self, spec: FunctionSpec, base_env: dict[str, str], log_dir: Path) -> None:
        self.spec = spec
        self.base_env = base_env
        self.log_path = Path(log_dir) / f"{spec.logical_id}.log"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Any = None
        self.invocations = 0
        self.errors = 0
        self._stopping = False

    # -- sandbox lifecycle ---------------------------------------------------

    def _environment(self, address: str, authkey: str) -> dict[str, str]:
        spec = self.spec
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
        env.update(self.base_env)
        env.update(spec.environment)
        paths = [str(spec.code_dir), *(str(p) for p in spec.layer_paths), str(REPO_ROOT)]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(paths),
                "PYTHONUNBUFFERED": "1",
                "_HANDLER": spec.handler,
                "LAMBDA_TASK_ROOT": str(spec.code_dir),
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(spec.timeout_s)),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{spec.logical_id}",
                "FLYWHEEL_WORKER_ADDRESS": address,
                "FLYWHEEL_WORKER_AUTHKEY": authkey,
            }
        )
        return env

    def start(self) -> None:
        if not self.spec.code_dir.is_dir():
            raise InvocationError(
                {
                    "errorType": "Runtime.InvalidEntrypoint",
                    "errorMessage": f"CodeUri {self.spec.code_dir} does not exist",
                }
            )
        authkey = secrets.token_hex(16)
        listener = Listener(("127.0.0.1", 0), authkey=bytes.fromhex(authkey))
        # An AF_INET listener's address is (host, port); the type also allows a socket path.
        host, port = cast(tuple[str, int], listener.address)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "samlocal.worker"],
            env=self._environment(f"{host}:{port}", authkey),
            cwd=str(self.spec.code_dir),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        logf.close()
        # accept() blocks; a dead child must not hang us, so watch it from a thread.
        result: dict[str, Any] = {}

        def accept() -> None:
            try:
                result["conn"] = listener.accept()
            except Exception as exc:  # listener closed because the child died
                result["error"] = exc

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        deadline = time.monotonic() + 120
        while t.is_alive() and time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            t.join(0.1)
        listener.close()
        if "conn" not in result:
            self._kill()
            raise InvocationError(
                {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"sandbox failed to start, see {self.log_path}",
                }
            )
        self._conn = result["conn"]
        hello = self._conn.recv()
        if hello.get("init_error"):
            log.warning(
                "function %s init error: %s",
                self.spec.logical_id,
                hello["init_error"]["errorMessage"],
            )

    def _kill(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """End the sandbox now. An invocation in progress is not waited for: its process
        is killed and the invocation fails, so its event is redelivered (SQS) or retried
        at the next start; a stopping stack never waits out a function's timeout."""
        self._stopping = True
        if self._lock.acquire(blocking=False):  # idle: a clean shutdown
            try:
                if self._conn is not None:
                    try:
                        self._conn.send({"shutdown": True})
                        self._proc.wait(timeout=0.5)  # type: ignore[union-attr]
                    except Exception:
                        pass
                self._kill()
            finally:
                self._lock.release()
            return
        proc = self._proc  # busy: kill it; the invoking thread sees EOF and cleans up
        if proc is not None and proc.poll() is None:
            proc.kill()

    # -- invocation ----------------------------------------------------------

    def invoke(self, event: Any, timeout_s: float | None = None) -> Any:
        """Run the handler on ``event``; return its JSON result or raise InvocationError."""
        payload = json.dumps(event)
        timeout_s = timeout_s or self.spec.timeout_s
        with self._lock:
            if self._stopping:
                raise InvocationError(
                    {"errorType": "Runtime.Stopping", "errorMessage": "the local stack is stopping"}
                )
            self.invocations += 1
            if self._conn is None or self._proc is None or self._proc.poll() is not None:
                self._kill()
                self.start()
            request_id = str(uuid.uuid4())
            deadline_ms = int((time.time() + timeout_s) * 1000)
            try:
                self._conn.send(
                    {"payload": payload, "request_id": request_id, "deadline_ms": deadline_ms}
                )
                if not self._conn.poll(timeout_s):
                    self._kill()
                    self.errors += 1
                    raise InvocationError(
                        {
                            "errorType": "Sandbox.Timedout",
                            "errorMessage": f"Task timed out after {timeout_s:.2f} seconds",
                        }
                    )
                response = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._kill()
                self.errors += 1
                raise InvocationError(
                    {"errorType": "Runtime.ExitError", "errorMessage": f"sandbox exited: {exc!r}"}
                ) from exc
        if not response["ok"]:
            self.errors += 1
            raise InvocationError(response["error"])
        return json.loads(response["payload"])


class Function:
    """One function's sandboxes: up to ``concurrency`` workers, started on demand.

    Like Lambda scaling out under an SQS event source: each concurrent
    invocation gets a sandbox of its own; a sandbox serves one at a time.
    """

    def __init__(
        self, spec: FunctionSpec, base_env: dict[str, str], log_dir: Path, concurrency: int = 1
    ) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self.base_env = base_env
        self.concurrency = max(1, concurrency)
        self.workers: list[FunctionWorker] = []
        self._idle: queue.Queue[FunctionWorker] = queue.Queue()
        self._lock = threading.Lock()
        self.stopping = False

    @property
    def invocations(self) -> int:
        return sum(w.invocations for w in self.workers)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.workers)

    def _new_worker(self) -> FunctionWorker:
        worker = FunctionWorker(self.spec, self.base_env, self.log_dir)
        self.workers.append(worker)
        return worker

    def start(self) -> None:
        """Start the first sandbox (a warm start for the first event)."""
        worker = FunctionWorker(self.spec, self.base_env, self.log_dir)
        with worker._lock:
            worker.start()  # raises InvocationError: then the first invoke retries
        with self._lock:
            self.workers.append(worker)
        self._idle.put(worker)

    def invoke(self, event: Any, timeout_s: float | None = None) -> Any:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = len(self.workers) < self.concurrency and not self.stopping
                worker = self._new_worker() if grow else None  # type: ignore[assignment]
            while worker is None:
                try:
                    worker = self._idle.get(timeout=1)
                except queue.Empty:
                    if self.stopping:
                        raise InvocationError(
                            {
                                "errorType": "Runtime.Stopping",
                                "errorMessage": "the local stack is stopping",
                            }
                        ) from None
        try:
            return worker.invoke(event, timeout_s)
        finally:
            self._idle.put(worker)

    def stop(self) -> None:
        self.stopping = True
        for w in list(self.workers):
            w.stop()


class FunctionPool:
    """All the stack's functions by logical id and by physical name."""

    def __init__(
        self,
        specs: list[FunctionSpec],
        base_env: dict[str, str],
        log_dir: Path,
        concurrency: dict[str, int] | None = None,
    ) -> None:
        concurrency = concurrency or {}
        self.workers = {
            s.logical_id: Function(s, base_env, log_dir, concurrency.get(s.logical_id, 1))
            for s in specs
        }
        self._by_name = {s.name: s.logical_id for s in specs}

    def get(self, name_or_id: str) -> Function:
        # Accept a logical id, a physical name, or a function ARN (as Lambda's Invoke does).
        key = name_or_id.rsplit(":function:", 1)[-1].split(":")[0]
        logical = key if key in self.workers else self._by_name.get(key)
        if logical is None:
            raise KeyError(name_or_id)
        return self.workers[logical]

    def start(self) -> None:
        # Cold starts in parallel: importing opencv/powertools takes seconds each.
        threads = [
            threading.Thread(target=self._start_one, args=(f,), daemon=True)
            for f in self.workers.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @staticmethod
    def _start_one(function: Function) -> None:
        try:
            function.start()
        except InvocationError as exc:
            log.warning("function %s did not start: %s", function.spec.logical_id, exc)

    def stop(self) -> None:
        """Kill every sandbox at once (in parallel: an idle one gets 0.5 s to exit cleanly)."""
        for f in self.workers.values():
            f.stopping = True
        threads = [threading.Thread(target=f.stop, daemon=True) for f in self.workers.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
