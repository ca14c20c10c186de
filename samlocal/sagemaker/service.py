"""The HTTP front: SageMaker's JSON 1.1 control plane and the runtime's REST
InvokeEndpoint on one WSGI app (werkzeug requests and responses, served with kept-alive
HTTP/1.1 connections), plus a few `/_local/` helpers."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from .aws import Aws, Events
from .hosting import Hosting
from .keepalive import KeepAliveServer
from .protocol import DEFAULT_ACCOUNT, AwsError, dumps
from .registry import Registry
from .store import Store
from .training import Training
from .tuning import Tuning

log = logging.getLogger("local_sagemaker")


WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"  # the inference toolkit's own variable
LOCAL_WORKERS_ENV = "FLYWHEEL_MODEL_SERVER_WORKERS"


def default_model_server_workers() -> int:
    """Model server processes per endpoint variant unless its model says otherwise:
    FLYWHEEL_MODEL_SERVER_WORKERS, else one per core up to 2 (each holds the model and one
    core: the local stack runs two autolabel sandboxes, and its other processes need CPU too).
    """
    raw = os.environ.get(LOCAL_WORKERS_ENV, "")
    if raw.strip():
        return _positive(raw, LOCAL_WORKERS_ENV)
    return max(1, min(2, os.cpu_count() or 1))


def _positive(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return value


class LocalSageMaker:
    """See the package docstring for the contract."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        s3_endpoint: str | None = None,
        events_endpoint: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        *,
        cloudwatch_endpoint: str | None = None,
        region: str | None = None,
        account: str = DEFAULT_ACCOUNT,
        stop_grace_seconds: float = 10.0,
        bake_seconds: float = 5.0,
        health_timeout_seconds: float = 300.0,
        invoke_timeout_seconds: float = 60.0,
        max_parallel_trials: int = 2,
        model_server_workers: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        self.account = account
        self.stop_grace_seconds = stop_grace_seconds
        self.bake_seconds = bake_seconds
        self.health_timeout_seconds = health_timeout_seconds
        self.invoke_timeout_seconds = invoke_timeout_seconds
        self.max_parallel_trials = max_parallel_trials
        self.model_server_workers = model_server_workers or default_model_server_workers()
        self.url = ""
        self.aws = Aws(self.region, s3_endpoint, events_endpoint, cloudwatch_endpoint)
        self.events = Events(self.aws, account, on_event)
        self.store = Store(self.data_dir)
        self.training = Training(self)
        self.tuning = Tuning(self)
        self.hosting = Hosting(self)
        self.registry = Registry(self)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.ops = self._operations()

    def workers_for(self, container_env: dict[str, str]) -> int:
        """A model's SAGEMAKER_MODEL_SERVER_WORKERS wins (as in the real container)."""
        raw = str(container_env.get(WORKERS_ENV, "")).strip()
        return _positive(raw, WORKERS_ENV) if raw else self.model_server_workers

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalSageMaker:
        self._server = KeepAliveServer((self.host, self.port), self._wsgi)
        self.port = self._server.port
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sm-http", daemon=True
        )
        self._thread.start()
        self.events.start()
        self.training.resume_all()
        self.tuning.resume_all()
        self.hosting.restore()
        log.info("local SageMaker listening on %s (data in %s)", self.url, self.data_dir)
        return self

    def stop(self) -> None:
        """Stop serving; running jobs are ended but stay InProgress, so the next
        start() on the same data_dir resumes them (from their checkpoints)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.tuning.shutdown()
        self.training.shutdown()
        self.hosting.shutdown()
        self.events.stop()

    def __enter__(self) -> LocalSageMaker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- dispatch -----------------------------------------------------------------------------

    def _operations(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        t, tu, h, r = self.training, self.tuning, self.hosting, self.registry
        return {
            "CreateTrainingJob": t.create,
            "DescribeTrainingJob": lambda b: t.describe(b["TrainingJobName"]),
            "ListTrainingJobs": t.list,
            "StopTrainingJob": lambda b: t.stop(b["TrainingJobName"]),
            "CreateHyperParameterTuningJob": tu.create,
            "DescribeHyperParameterTuningJob": lambda b: tu.describe(
                b["HyperParameterTuningJobName"]
            ),
            "ListHyperParameterTuningJobs": tu.list,
            "ListTrainingJobsForHyperParameterTuningJob": tu.list_children,
            "StopHyperParameterTuningJob": lambda b: tu.stop(b["HyperParameterTuningJobName"]),
            "CreateModel": h.create_model,
            "DescribeModel": lambda b: h.describe_model(b["ModelName"]),
            "DeleteModel": lambda b: h.delete_model(b["ModelName"]),
            "ListModels": h.list_models,
            "CreateEndpointConfig": h.create_endpoint_config,
            "DescribeEndpointConfig": lambda b: h.describe_endpoint_config(b["EndpointConfigName"]),
            "DeleteEndpointConfig": lambda b: h.delete_endpoint_config(b["EndpointConfigName"]),
            "ListEndpointConfigs": h.list_endpoint_configs,
            "CreateEndpoint": h.create_endpoint,
            "DescribeEndpoint": lambda b: h.describe_endpoint(b["EndpointName"]),
            "DeleteEndpoint": lambda b: h.delete_endpoint(b["EndpointName"]),
            "ListEndpoints": h.list_endpoints,
            "UpdateEndpoint": h.update_endpoint,
            "CreateModelPackageGroup": r.create_group,
            "DescribeModelPackageGroup": lambda b: r.describe_group(b["ModelPackageGroupName"]),
            "ListModelPackageGroups": r.list_groups,
            "DeleteModelPackageGroup": lambda b: r.delete_group(b["ModelPackageGroupName"]),
            "CreateModelPackage": r.create_package,
            "DescribeModelPackage": lambda b: r.describe_package(b["ModelPackageName"]),
            "ListModelPackages": r.list_packages,
            "UpdateModelPackage": r.update_package,
            "DeleteModelPackage": lambda b: r.delete_package(b["ModelPackageName"]),
            "AddTags": r.add_tags,
            "DeleteTags": r.delete_tags,
            "ListTags": r.list_tags,
        }

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        try:
            resp = self._route(req)
        except Exception:
            log.exception("unhandled error")
            resp = self._error(
                AwsError("InternalFailure", "internal error in the local SageMaker", 500)
            )
        return resp(environ, start_response)

    def _route(self, req: Request) -> Response:
        path = req.path
        if (
            req.method == "POST"
            and path.startswith("/endpoints/")
            and path.endswith("/invocations")
        ):
            return self._invoke(req, unquote(path[len("/endpoints/") : -len("/invocations")]))
        if req.method == "GET" and path.startswith("/_local/"):
            return self._local(path[len("/_local/") :])
        target = req.headers.get("X-Amz-Target", "")
        if req.method != "POST" or not target.startswith("SageMaker."):
            return self._error(
                AwsError("UnknownOperationException", f"no route for {req.method} {path}", 404)
            )
        op = target.split(".", 1)[1]
        handler = self.ops.get(op)
        if handler is None:
            return self._error(
                AwsError(
                    "UnknownOperationException", f"{op} is not implemented by the local SageMaker"
                )
            )
        try:
            body = json.loads(req.get_data() or b"{}")
            result = handler(body)
        except AwsError as e:
            return self._error(e)
        except (KeyError, TypeError, ValueError) as e:
            log.debug("bad request to %s", op, exc_info=True)
            return self._error(
                AwsError(
                    "ValidationException", f"1 validation error detected: {type(e).__name__}: {e}"
                )
            )
        return Response(
            dumps(result),
            200,
            content_type="application/x-amz-json-1.1",
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )

    def _error(self, e: AwsError, rest: bool = False) -> Response:
        body: dict[str, Any] = {"__type": e.code, "message": e.message}
        if rest:
            body = {"Message": e.message, **e.fields}
        return Response(
            dumps(body),
            e.status,
            content_type="application/json" if rest else "application/x-amz-json-1.1",
            headers={"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": e.code},
        )

    def _invoke(self, req: Request, name: str) -> Response:
        headers = {"Content-Type": req.headers.get("Content-Type") or "application/octet-stream"}
        for h in (
            "Accept",
            "X-Amzn-SageMaker-Custom-Attributes",
            "X-Amzn-SageMaker-Target-Variant",
        ):
            if req.headers.get(h):
                headers[h] = req.headers[h]
        try:
            body, ctype, variant, extra = self.hosting.invoke(name, req.get_data(), headers)
        except AwsError as e:
            return self._error(e, rest=True)
        return Response(
            body,
            200,
            content_type=ctype or "application/json",
            headers={
                "x-amzn-RequestId": str(uuid.uuid4()),
                "x-Amzn-Invoked-Production-Variant": variant,
                **extra,
            },
        )

    def _local(self, rest: str) -> Response:
        if rest == "health":
            return Response("ok", 200, content_type="text/plain")
        if rest.startswith("logs/"):
            path = self.training.log_path(unquote(rest[len("logs/") :]))
            if path.exists():
                return Response(path.read_bytes(), 200, content_type="text/plain; charset=utf-8")
            return Response("no log for this job", 404, content_type="text/plain")
        if rest.startswith("endpoint-logs/"):
            return Response(
                self.hosting.worker_logs(unquote(rest[len("endpoint-logs/") :])),
                200,
                content_type="text/plain; charset=utf-8",
            )
        return Response("not found", 404, content_type="text/plain")
