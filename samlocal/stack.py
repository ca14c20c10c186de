"""The whole stack on 127.0.0.1: ``LocalStack(data_dir).start()``.

    moto server (S3, DynamoDB, SQS, SNS, EventBridge, SSM, CloudWatch, Step Functions)
      + the template's resources, created from its own properties; state machines run
      their definitions, their Lambda tasks go to the Lambda Invoke API below
    local SageMaker (training/tuning jobs as processes, endpoints over HTTP)
    the functions (one worker process each) + the event router
    a Lambda Invoke API (so ``boto3.client("lambda").invoke`` works)
    the template's HttpApi routes, behind their Cognito JWT authorizer (moto's
      cognito-idp issues the tokens); a local reviewer in ``<data_dir>/reviewer.json``

The stack is registered in moto's CloudFormation under its name, with the template's
Outputs resolved to the local names (``provision.register_stack``), so tools find its
resources through ``DescribeStacks`` as they do for a deployed stack. Where the local
endpoints listen goes to ``<data_dir>/endpoints.json`` (``endpoints(data_dir)``);
names and URLs of resources are never read from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from samlocal import provision as prov
from samlocal.functions import FunctionPool
from samlocal.http_api import HttpApiServer, routes_from_template
from samlocal.lambda_api import LambdaApi
from samlocal.moto_server import DEFAULT_SNAPSHOT_BYTES, REGION, MotoProcess, client
from samlocal.moto_stepfunctions import restart_executions, write_lambda_endpoint
from samlocal.router import Router

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
DEFAULT_DATA_DIR = Path(".flywheel")
DEFAULT_STACK = "flywheel"
ENDPOINTS_FILE = "endpoints.json"
ENDPOINTS_KEYS = (
    "pid",
    "stack_name",
    "region",
    "data_dir",
    "started_at",
    "endpoints",
    "environment",
    "moto_recovery",  # what moto's start replayed from its journal, and how long it took
)

# Services whose AWS_ENDPOINT_URL_<ID> points at moto (botocore service ids).
MOTO_SERVICE_IDS = (
    "S3",
    "DYNAMODB",
    "SQS",
    "SNS",
    "EVENTBRIDGE",
    "SSM",
    "CLOUDWATCH",
    "CLOUDWATCH_LOGS",
    "STS",
    "IAM",
    "CLOUDFORMATION",
    "COGNITO_IDENTITY_PROVIDER",
    "SFN",
)
REVIEWER_FILE = "reviewer.json"
REVIEWER = "reviewer"


class StackError(Exception):
    """The local stack could not start or is not running."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def endpoints(data_dir: Path | str = DEFAULT_DATA_DIR) -> dict[str, Any]:
    """Where the running local stack listens (``ENDPOINTS_KEYS``); StackError when none runs."""
    path = Path(data_dir) / ENDPOINTS_FILE
    if not path.exists():
        raise StackError(
            f"no local stack is running on {data_dir} (start one: flywheel up; "
            "or pass --stack NAME to reach a deployed stack)"
        )
    info = json.loads(path.read_text())
    if not _pid_alive(int(info.get("pid", 0))):
        raise StackError(
            f"the local stack on {data_dir} is not running (stale {path}; start one: flywheel up)"
        )
    return info


class LocalStack:
    def __init__(
        self,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        *,
        template: Path | str = DEFAULT_TEMPLATE,
        stack_name: str = DEFAULT_STACK,
        parameters: dict[str, str] | None = None,
        port_base: int = 0,
        sagemaker: bool = True,
        schedules: bool = True,
        retry_delay_s: int = 2,
        snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES,
        max_concurrency: int = 2,
        model_server_workers: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.template = Path(template)
        self.stack_name = stack_name
        self.parameters = dict(parameters or {})
        self.port_base = port_base
        self.with_sagemaker = sagemaker
        self.schedules = schedules
        self.retry_delay_s = retry_delay_s
        self.max_concurrency = max_concurrency
        self.model_server_workers = model_server_workers
        self.moto = MotoProcess(
            self.data_dir / "moto", port=port_base, snapshot_bytes=snapshot_bytes
        )
        self.sagemaker: Any = None
        self.pool: FunctionPool | None = None
        self.router: Router | None = None
        self.api: LambdaApi | None = None
        self.http_api: HttpApiServer | None = None
        self.physical: dict[str, str] = {}
        self.resolved: dict[str, Any] = {}
        self.sagemaker_events: list[dict[str, Any]] = []
        self._events_lock = threading.Lock()
        self.info: dict[str, Any] = {}
        self.stop_timings: dict[str, float] = {}  # seconds each part took to stop

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._claim_data_dir()
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _claim_data_dir(self) -> None:
        path = self.data_dir / ENDPOINTS_FILE
        if path.exists():
            pid = int(json.loads(path.read_text()).get("pid", 0))
            if pid != os.getpid() and _pid_alive(pid):
                raise StackError(f"a local stack (pid {pid}) already runs on {self.data_dir}")
            path.unlink()

    def _start(self) -> dict[str, Any]:
        moto_url = self.moto.start()
        self.resolved = prov.resolve(self.template, self.stack_name, self.parameters)
        self.physical = prov.provision(self.resolved, moto_url)

        sagemaker_url = self._start_sagemaker(moto_url)
        specs = prov.function_specs(self.resolved, self.physical)

        def port(k: int) -> int:
            return self.port_base + k if self.port_base else 0

        # The Lambda API must know its URL before the workers get their environment.
        self.pool = FunctionPool(
            specs,
            {},
            self.data_dir / "logs",
            concurrency={s.logical_id: self._concurrency(s) for s in specs},
        )
        self.router = Router(
            specs,
            self.pool,
            moto_url,
            stack_name=self.stack_name,
            schedules=self.schedules,
            retry_delay_s=self.retry_delay_s,
        )
        self.api = LambdaApi(self.router, port=port(2), status=self.router_status)
        # The state machines' Lambda tasks (run inside moto) call the functions through it.
        write_lambda_endpoint(self.moto.state_dir, self.api.url)
        env = self.client_environment(moto_url, sagemaker_url, self.api.url)
        for worker in self.pool.workers.values():
            worker.base_env = {**env, **self._function_runtime_env()}
        self.http_api = HttpApiServer(
            routes_from_template(self.resolved, specs, self.physical, moto_url),
            self.pool,
            port=port(3),
        )
        self.api.start()
        self.pool.start()
        self.router.start()
        self.http_api.start()
        reviewer = self._ensure_reviewer(moto_url)
        outputs = {
            k: self._physical_value(v)
            for k, v in prov.stack_outputs(self.resolved, self.physical).items()
        }
        outputs[prov.NOTIFICATIONS_TAP_OUTPUT] = self.physical["_NotificationsTap"]
        prov.register_stack(self.resolved, outputs, client("cloudformation", moto_url))
        # Executions a restart of moto cut short run again, now that their Lambda tasks
        # have somewhere to go (moto_stepfunctions.py: what an execution survives).
        self.moto.recovery["executions_restarted"] = restart_executions(
            self.moto.state_dir, client("stepfunctions", moto_url)
        )

        self.info = {
            "pid": os.getpid(),
            "stack_name": self.stack_name,
            "region": REGION,
            "data_dir": str(self.data_dir),
            "started_at": time.time(),
            "endpoints": {
                "moto": moto_url,
                "sagemaker": sagemaker_url,
                "lambda": self.api.url,
                "http_api": self.http_api.url,
            },
            "environment": env,
            "resources": self.physical,
            "outputs": outputs,
            "parameters": self.resolved.get("Parameters", {}),
            "functions": {s.logical_id: s.name for s in specs},
            "reviewer": reviewer,
            "moto_recovery": self.moto.recovery,  # what the start replayed, and how long
        }
        # Where the endpoints listen, and nothing else: names come from DescribeStacks.
        connection = {k: self.info[k] for k in ENDPOINTS_KEYS}
        tmp = self.data_dir / (ENDPOINTS_FILE + ".tmp")
        tmp.write_text(json.dumps(connection, indent=2, default=str))
        os.replace(tmp, self.data_dir / ENDPOINTS_FILE)
        return self.info

    def _concurrency(self, spec: Any) -> int:
        """Sandboxes per function: SQS-triggered ones scale out (capped by the event
        source's ScalingConfig.MaximumConcurrency and by this machine), so do HTTP APIs
        (one request per sandbox), others run one."""
        if any(e.get("Type") == "HttpApi" for e in spec.events.values()):
            return self.max_concurrency
        caps = [
            int(
                (e.get("Properties") or {}).get("ScalingConfig", {}).get("MaximumConcurrency", 1000)
            )
            for e in spec.events.values()
            if e.get("Type") == "SQS"
        ]
        return min([self.max_concurrency, *caps]) if caps else 1

    def _physical_value(self, value: Any) -> Any:
        if self.http_api is not None:  # an HttpApi's URL is the local server's
            for lid, res in self.resolved["Resources"].items():
                if res["Type"] == "AWS::Serverless::HttpApi":
                    ref = self.resolved["Refs"][lid]
                    url = f"https://{ref}.execute-api.{REGION}.amazonaws.com"
                    if str(value) == url:
                        return self.http_api.url
        return value

    def _ensure_reviewer(self, moto_url: str) -> dict[str, Any] | None:
        """A local reviewer in the stack's user pool; its password in reviewer.json (0600).

        Kept across restarts (the pool is restored; the password is set again).
        """
        pools = [
            lid
            for lid, r in self.resolved["Resources"].items()
            if r["Type"] == "AWS::Cognito::UserPool"
        ]
        clients = [
            lid
            for lid, r in self.resolved["Resources"].items()
            if r["Type"] == "AWS::Cognito::UserPoolClient"
        ]
        if not pools or not clients:
            return None
        path = self.data_dir / REVIEWER_FILE
        saved = json.loads(path.read_text()) if path.exists() else {}
        # Meets the template's password policy (upper, lower, digit, >= 12 characters).
        password = saved.get("password") or f"Rv{secrets.token_urlsafe(12)}7a"
        pool_id, client_id = self.physical[pools[0]], self.physical[clients[0]]
        idp = client("cognito-idp", moto_url)
        with contextlib.suppress(idp.exceptions.UsernameExistsException):
            idp.admin_create_user(
                UserPoolId=pool_id,
                Username=REVIEWER,
                TemporaryPassword=password,
                MessageAction="SUPPRESS",
            )
        idp.admin_set_user_password(
            UserPoolId=pool_id, Username=REVIEWER, Password=password, Permanent=True
        )
        doc = {
            "username": REVIEWER,
            "password": password,
            "user_pool_id": pool_id,
            "client_id": client_id,
            "api_url": self.http_api.url if self.http_api else None,
            "cognito_endpoint": moto_url,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, path)
        return {
            "username": REVIEWER,
            "file": str(path),
            "user_pool_id": pool_id,
            "client_id": client_id,
        }

    def _start_sagemaker(self, moto_url: str) -> str:
        if not self.with_sagemaker:
            return ""
        try:
            from samlocal.sagemaker import LocalSageMaker
        except ImportError as exc:
            log.warning("local SageMaker is not available (%s); jobs and endpoints are off", exc)
            return ""
        port = self.port_base + 1 if self.port_base else 0
        self.sagemaker = LocalSageMaker(
            self.data_dir / "sagemaker",
            "127.0.0.1",
            port,
            s3_endpoint=moto_url,
            events_endpoint=moto_url,
            on_event=self._on_sagemaker_event,
            cloudwatch_endpoint=moto_url,
            model_server_workers=self.model_server_workers,
        )
        self.sagemaker.start()
        return str(self.sagemaker.url)

    def _on_sagemaker_event(self, event: Any) -> None:
        # Delivery goes through EventBridge (PutEvents -> rule -> router); this is the log.
        with self._events_lock:
            self.sagemaker_events.append(event if isinstance(event, dict) else {"event": event})
            del self.sagemaker_events[:-200]

    @staticmethod
    def client_environment(moto_url: str, sagemaker_url: str, lambda_url: str) -> dict[str, str]:
        """AWS_ENDPOINT_URL_* for a boto3 process talking to this stack."""
        env = {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        env.update({f"AWS_ENDPOINT_URL_{s}": moto_url for s in MOTO_SERVICE_IDS})
        if sagemaker_url:
            env["AWS_ENDPOINT_URL_SAGEMAKER"] = sagemaker_url
            env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = sagemaker_url
        env["AWS_ENDPOINT_URL_LAMBDA"] = lambda_url
        return env

    def _function_runtime_env(self) -> dict[str, str]:
        return {
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "DataFlywheel",
            "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
            "AWS_XRAY_SDK_ENABLED": "false",
        }

    def stop(self) -> None:
        # Within seconds: the router stops taking work; the sandboxes are killed (what
        # they were doing stays on its queue and is redelivered at the next start) while
        # the servers stop, all at once; moto stops last, so the router's last calls
        # reach it. How long each part took goes to ``stop_timings`` (flywheel up prints
        # it; tests/local/test_local_faults.py holds Ctrl-C to a bound).
        self.stop_timings = {}
        if self.router is not None:
            self.router.stopping()
        began = time.monotonic()
        parts = {
            "functions": self.pool,
            "http_api": self.http_api,
            "router": self.router,
            "lambda_api": self.api,
            "sagemaker": self.sagemaker,
        }
        threads = [
            threading.Thread(target=self._stop_part, args=(name, part, began), daemon=True)
            for name, part in parts.items()
            if part is not None
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self._stop_part("moto", self.moto, time.monotonic())
        path = self.data_dir / ENDPOINTS_FILE
        if path.exists() and json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()

    def _stop_part(self, name: str, part: Any, began: float) -> None:
        try:
            part.stop()
        except Exception:
            log.exception("stopping %s failed", name)
        self.stop_timings[name] = round(time.monotonic() - began, 2)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- status -----------------------------------------------------------------

    def router_status(self) -> dict[str, Any]:
        router, pool = self.router, self.pool
        return {
            "sources": {k: vars(s) for k, s in (router.stats.items() if router else [])},
            "functions": {
                lid: {"invocations": w.invocations, "errors": w.errors}
                for lid, w in (pool.workers.items() if pool else [])
            },
            "schedules": {
                k: {
                    "expression": s["expression"],
                    "enabled": s["enabled"],
                    "next": s["next"].isoformat() if s["next"] else None,
                }
                for k, s in (router.schedules.items() if router else [])
            },
        }

    def clients(self) -> dict[str, Any]:
        return {s: client(s, self.moto.url) for s in ("s3", "dynamodb", "sqs", "ssm")}
