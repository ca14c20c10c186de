"""Models, endpoint configs and endpoints, served by one worker process per variant.

An endpoint's traffic goes to its active `Deployment` (one `ModelServer` per
production variant). UpdateEndpoint is blue/green: the new deployment starts
and must pass /ping, traffic swaps to it under a lock (no request is refused),
an optional bake watches the rollback alarms, then EndpointConfigName changes
and the old deployment retires once its in-flight requests finish. A failed
health check or an alarm during the bake rolls back: the endpoint stays
InService on the old config with a FailureReason, as on AWS.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .protocol import AwsError, arn, now, page, public, sort_filter, validation

if TYPE_CHECKING:
    from .service import LocalSageMaker

log = logging.getLogger("local_sagemaker")
WORKER = Path(__file__).with_name("worker.py")
ROLLBACK_HOOK = "LOCAL_SAGEMAKER_ROLLBACK"  # container env: pretend a rollback alarm fired


class DeployError(Exception):
    pass


def _connection_dropped(e: OSError) -> bool:
    """A kept-alive connection the worker had already closed (safe to send again)."""
    return isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))


class WorkerProcess:
    """One model server process (one TorchServe worker: one request at a time), reached over
    kept-alive HTTP/1.1 connections (a new TCP connection per request cost ~1 ms and a port
    in TIME_WAIT each)."""

    def __init__(self, log_path: Path, timeout: float) -> None:
        self.log_path = log_path
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.pid_file: Path | None = None
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def spawn(self, argv: list[str], env: dict[str, str], run_dir: Path) -> Path:
        port_file = run_dir / f"{self.log_path.stem}.port"
        port_file.unlink(missing_ok=True)
        self.close_connections()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [*argv, "--port-file", str(port_file)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        # so a restart after a hard kill can end the workers this process left behind
        self.pid_file = run_dir / f"{self.log_path.stem}.pid"
        self.pid_file.write_text(str(self.proc.pid))
        return port_file

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        for _ in range(2):
            try:
                conn, reused = self._idle.get_nowait(), True
            except queue.Empty:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                reused = False
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as e:
                conn.close()
                if reused and _connection_dropped(e):
                    continue  # the worker closed it while idle: once more on a new connection
                raise
            if resp.will_close:
                conn.close()
            else:
                self._idle.put(conn)
            return resp.status, data, resp.getheader("Content-Type") or ""
        raise ConnectionResetError("model server closed the connection")

    def close_connections(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self.close_connections()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except OSError:
                pass


class ModelServer:
    """One model's code served like one container: ``workers`` model server processes (the
    toolkit's SAGEMAKER_MODEL_SERVER_WORKERS), each request to an idle one."""

    def __init__(
        self, hosting: Hosting, model: dict[str, Any], endpoint: str, variant: str, timeout: float
    ) -> None:
        self.h = hosting
        self.model = model
        self.endpoint = endpoint
        self.variant = variant
        self.timeout = timeout
        self.retired = False
        self._revive_lock = threading.Lock()
        self.log_path = (
            hosting.root / "logs" / f"{endpoint}-{variant}-{int(time.time() * 1000)}.log"
        )
        self.workers: list[WorkerProcess] = []
        self._free: queue.Queue[WorkerProcess] = queue.Queue()
        self._argv: list[str] = []
        self._env: dict[str, str] = {}

    def _container(self) -> dict[str, Any]:
        return self.model.get("PrimaryContainer") or (self.model.get("Containers") or [{}])[0]

    def start(self) -> None:
        container = self._container()
        env_cfg = dict(container.get("Environment") or {})
        model_dir, code_dir, program = self.h.prepare_model(self.model["ModelName"], container)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(env_cfg)
        env.update(
            {"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_PROGRAM": program, "PYTHONUNBUFFERED": "1"}
        )
        self._env = env
        self._argv = [
            sys.executable,
            str(WORKER),
            "--model-dir",
            str(model_dir),
            "--code-dir",
            str(code_dir),
            "--program",
            program,
        ]
        count = self.h.svc.workers_for(env_cfg)
        self.workers = [
            WorkerProcess(
                self.log_path.with_name(f"{self.log_path.stem}-w{n}.log"),
                self.h.svc.invoke_timeout_seconds,
            )
            for n in range(count)
        ]
        try:
            # All spawned first: their model_fn calls load side by side.
            ports = [(w, w.spawn(self._argv, env, self._run_dir())) for w in self.workers]
            for worker, port_file in ports:
                self._wait_healthy(worker, port_file)
        except DeployError:
            self.stop()
            raise
        for worker in self.workers:
            self._free.put(worker)

    def _run_dir(self) -> Path:
        run_dir = self.h.root / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    def _wait_healthy(self, worker: WorkerProcess, port_file: Path) -> None:
        assert worker.proc is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                raise DeployError(
                    f"The primary container for production variant {self.variant} did not pass "
                    "the ping health check. Please check CloudWatch logs for this endpoint. "
                    f"(local log: {worker.log_path}: {self.log_tail(worker)})"
                )
            if port_file.exists():
                worker.port = int(port_file.read_text())
                status, _, _ = worker.request("GET", "/ping", b"", {})
                if status == 200:
                    return
            time.sleep(0.1)
        raise DeployError(
            f"The primary container for production variant {self.variant} did not pass "
            f"the ping health check within {self.timeout:.0f}s."
        )

    @staticmethod
    def log_tail(worker: WorkerProcess, lines: int = 6) -> str:
        try:
            text = worker.log_path.read_text(errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def log_paths(self) -> list[Path]:
        return [w.log_path for w in self.workers]

    def invoke(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """On an idle worker (waits for one: each serves one request at a time)."""
        try:
            worker = self._free.get(timeout=self.h.svc.invoke_timeout_seconds)
        except queue.Empty:
            raise TimeoutError("no model server worker became free in time") from None
        try:
            try:
                return worker.request("POST", "/invocations", body, headers)
            except OSError:
                if not worker.alive() and self.revive(worker):
                    return worker.request("POST", "/invocations", body, headers)
                raise
        finally:
            self._free.put(worker)

    def alive(self) -> bool:
        return bool(self.workers) and all(w.alive() for w in self.workers)

    def revive(self, worker: WorkerProcess) -> bool:
        """Restart a worker that died (as SageMaker replaces an unhealthy instance)."""
        with self._revive_lock:
            if worker.alive():
                return True
            if self.retired:
                return False
            log.warning("model server for %s/%s died; restarting it", self.endpoint, self.variant)
            try:
                self._wait_healthy(worker, worker.spawn(self._argv, self._env, self._run_dir()))
            except DeployError as e:
                worker.stop()
                log.warning("restart failed: %s", e)
                return False
            return True

    def stop(self) -> None:
        self.retired = True
        for worker in self.workers:
            worker.stop()


class Deployment:
    """The servers behind one endpoint config; counts in-flight requests for draining."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.servers: dict[str, tuple[float, ModelServer]] = {}
        self.inflight = 0
        self.cond = threading.Condition()
        self.serverless = False

    def start(self, hosting: Hosting, endpoint: str) -> None:
        try:
            for v in self.config["ProductionVariants"]:
                model = hosting.svc.store.get("model", v["ModelName"])
                if model is None:
                    raise DeployError(
                        f'Could not find model "{hosting.arn("model", v["ModelName"])}".'
                    )
                timeout = float(
                    v.get("ContainerStartupHealthCheckTimeoutInSeconds")
                    or hosting.svc.health_timeout_seconds
                )
                server = ModelServer(hosting, model, endpoint, v["VariantName"], timeout)
                self.servers[v["VariantName"]] = (float(v.get("InitialVariantWeight", 1.0)), server)
                server.start()
        except Exception:
            self.stop()
            raise

    def pick(self, target: str | None) -> tuple[str, ModelServer]:
        if target:
            if target not in self.servers:
                raise AwsError("ValidationError", f"Variant {target} not found for this endpoint.")
            return target, self.servers[target][1]
        names = list(self.servers)
        weights = [max(self.servers[n][0], 0.0) for n in names]
        name = random.choices(names, weights=weights)[0] if sum(weights) > 0 else names[0]
        return name, self.servers[name][1]

    def acquire(self) -> None:
        with self.cond:
            self.inflight += 1

    def release(self) -> None:
        with self.cond:
            self.inflight -= 1
            self.cond.notify_all()

    def retire(self, timeout: float = 60.0) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.inflight == 0, timeout)
        self.stop()

    def stop(self) -> None:
        for _, server in self.servers.values():
            server.stop()


class Hosting:
    def __init__(self, svc: LocalSageMaker) -> None:
        self.svc = svc
        self.store = svc.store
        self.root = svc.data_dir / "hosting"
        self.active: dict[str, Deployment] = {}
        self.ready: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self._prepare_lock = threading.Lock()

    def arn(self, kind: str, name: str) -> str:
        return arn(self.svc.region, self.svc.account, kind, name)

    # ---- models -------------------------------------------------------------------------

    def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["ModelName"]
        if not body.get("PrimaryContainer") and not body.get("Containers"):
            raise validation("Either PrimaryContainer or Containers must be specified.")
        with self.store.lock:
            if self.store.get("model", name):
                raise validation(
                    f'Cannot create already existing model "{self.arn("model", name)}".'
                )
            rec = {k: v for k, v in body.items() if k != "Tags"}
            rec.update(
                ModelArn=self.arn("model", name), CreationTime=now(), _tags=body.get("Tags") or []
            )
            self.store.put("model", name, rec)
        return {"ModelArn": rec["ModelArn"]}

    def describe_model(self, name: str) -> dict[str, Any]:
        rec = self.store.get("model", name)
        if rec is None:
            raise validation(f'Could not find model "{self.arn("model", name)}".')
        return public(rec)

    def delete_model(self, name: str) -> dict[str, Any]:
        self.describe_model(name)
        self.store.delete("model", name)
        return {}

    def list_models(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                "ModelName": r["ModelName"],
                "ModelArn": r["ModelArn"],
                "CreationTime": r["CreationTime"],
            }
            for r in self.store.all("model")
        ]
        return page(sort_filter(items, body, "ModelName"), body, "Models")

    def prepare_model(self, model_name: str, container: dict[str, Any]) -> tuple[Path, Path, str]:
        """Fetch and unpack a model artifact (once per model): (model dir, code dir, program)."""
        env = container.get("Environment") or {}
        source = (
            container.get("ModelDataUrl")
            or ((container.get("ModelDataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
            or ""
        )
        submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
        program = env.get("SAGEMAKER_PROGRAM") or "inference.py"
        key = hashlib.sha256(json.dumps([model_name, source, submit]).encode()).hexdigest()[:16]
        base = self.root / "models" / f"{model_name}-{key}"
        model_dir, code_override = base / "model", base / "code"
        with self._prepare_lock:
            if not (base / ".ready").exists():
                shutil.rmtree(base, ignore_errors=True)
                model_dir.mkdir(parents=True)
                try:
                    if source.endswith(".tar.gz"):
                        self.svc.aws.download_tar(source, model_dir)
                    elif source:
                        self.svc.aws.download_prefix(source, model_dir)
                    if submit.startswith("s3://"):
                        self.svc.aws.download_tar(submit, code_override)
                except Exception as e:
                    raise DeployError(
                        f"Failed to download model data from {source or submit}: {e}"
                    ) from e
                (base / ".ready").write_text(source)
        code_dir = code_override if code_override.exists() else model_dir / "code"
        return model_dir, code_dir, program

    # ---- endpoint configs ----------------------------------------------------------------

    def create_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointConfigName"]
        for v in body["ProductionVariants"]:
            if not v.get("ModelName") or self.store.get("model", v["ModelName"]) is None:
                raise validation(
                    f'Could not find model "{self.arn("model", v.get("ModelName", ""))}".'
                )
        with self.store.lock:
            if self.store.get("endpoint-config", name):
                config_arn = self.arn("endpoint-config", name)
                raise validation(
                    f'Cannot create already existing endpoint configuration "{config_arn}".'
                )
            rec = {k: v for k, v in body.items() if k != "Tags"}
            rec.update(
                EndpointConfigArn=self.arn("endpoint-config", name),
                CreationTime=now(),
                _tags=body.get("Tags") or [],
            )
            self.store.put("endpoint-config", name, rec)
        return {"EndpointConfigArn": rec["EndpointConfigArn"]}

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        rec = self.store.get("endpoint-config", name)
        if rec is None:
            raise validation(
                f'Could not find endpoint configuration "{self.arn("endpoint-config", name)}".'
            )
        return public(rec)

    def delete_endpoint_config(self, name: str) -> dict[str, Any]:
        self.describe_endpoint_config(name)
        self.store.delete("endpoint-config", name)
        return {}

    def list_endpoint_configs(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                "EndpointConfigName": r["EndpointConfigName"],
                "EndpointConfigArn": r["EndpointConfigArn"],
                "CreationTime": r["CreationTime"],
            }
            for r in self.store.all("endpoint-config")
        ]
        return page(sort_filter(items, body, "EndpointConfigName"), body, "EndpointConfigs")

    # ---- endpoints -----------------------------------------------------------------------

    def _variants_summary(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        t = now()
        out = []
        for v in config["ProductionVariants"]:
            model = self.store.get("model", v["ModelName"]) or {}
            container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
            image = container.get("Image", "local")
            s = {
                "VariantName": v["VariantName"],
                "DeployedImages": [
                    {"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": t}
                ],
                "CurrentWeight": float(v.get("InitialVariantWeight", 1.0)),
                "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)),
            }
            if v.get("ServerlessConfig"):
                s["CurrentServerlessConfig"] = v["ServerlessConfig"]
                s["DesiredServerlessConfig"] = v["ServerlessConfig"]
            else:
                s["CurrentInstanceCount"] = int(v.get("InitialInstanceCount", 1))
                s["DesiredInstanceCount"] = int(v.get("InitialInstanceCount", 1))
            out.append(s)
        return out

    def _endpoint(self, name: str) -> dict[str, Any]:
        rec = self.store.get("endpoint", name)
        if rec is None:
            raise validation(f'Could not find endpoint "{self.arn("endpoint", name)}".')
        return rec

    def _config(self, name: str) -> dict[str, Any]:
        rec = self.store.get("endpoint-config", name)
        if rec is None:
            raise validation(
                f'Could not find endpoint configuration "{self.arn("endpoint-config", name)}".'
            )
        return rec

    def _set_status(self, name: str, status: str, **changes: Any) -> None:
        with self.store.lock:
            if self.store.get("endpoint", name) is None:
                return
            self.store.update(
                "endpoint", name, EndpointStatus=status, LastModifiedTime=now(), **changes
            )
        self.emit(name)

    def emit(self, name: str) -> None:
        rec = self.store.get("endpoint", name)
        if rec is None:
            return
        detail = {
            k: rec.get(k)
            for k in (
                "EndpointName",
                "EndpointArn",
                "EndpointConfigName",
                "ProductionVariants",
                "EndpointStatus",
                "FailureReason",
                "CreationTime",
                "LastModifiedTime",
            )
        }
        detail = public(detail)
        detail["Tags"] = {t["Key"]: t["Value"] for t in rec.get("_tags", [])}
        self.svc.events.emit("SageMaker Endpoint State Change", rec["EndpointArn"], detail)

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        config = self._config(body["EndpointConfigName"])
        with self.store.lock:
            if self.store.get("endpoint", name):
                raise validation(
                    f'Cannot create already existing endpoint "{self.arn("endpoint", name)}".'
                )
            t = now()
            rec = {
                "EndpointName": name,
                "EndpointArn": self.arn("endpoint", name),
                "EndpointConfigName": config["EndpointConfigName"],
                "EndpointStatus": "Creating",
                "CreationTime": t,
                "LastModifiedTime": t,
                "_tags": body.get("Tags") or [],
            }
            if body.get("DeploymentConfig"):
                rec["_deployment_config"] = body["DeploymentConfig"]
            self.store.put("endpoint", name, rec)
            self.ready[name] = threading.Event()
        self.emit(name)
        threading.Thread(
            target=self._create, args=(name, config), name=f"sm-ep-{name}", daemon=True
        ).start()
        return {"EndpointArn": rec["EndpointArn"]}

    def _create(self, name: str, config: dict[str, Any]) -> None:
        dep = Deployment(config)
        try:
            dep.start(self, name)
        except Exception as e:
            log.warning("endpoint %s failed: %s", name, e)
            self._set_status(name, "Failed", FailureReason=str(e)[:1024])
            return
        with self.lock:
            if self.store.get("endpoint", name) is None:  # deleted meanwhile
                dep.stop()
                return
            self.active[name] = dep
        self._set_status(
            name, "InService", ProductionVariants=self._variants_summary(config), FailureReason=None
        )
        self.ready.setdefault(name, threading.Event()).set()

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        rec = self._endpoint(name)
        out = public(rec)
        if rec.get("_last_deployment_config"):
            out["LastDeploymentConfig"] = rec["_last_deployment_config"]
        return out

    def list_endpoints(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                k: r[k]
                for k in (
                    "EndpointName",
                    "EndpointArn",
                    "CreationTime",
                    "LastModifiedTime",
                    "EndpointStatus",
                )
            }
            for r in self.store.all("endpoint")
        ]
        return page(sort_filter(items, body, "EndpointName", "EndpointStatus"), body, "Endpoints")

    def delete_endpoint(self, name: str) -> dict[str, Any]:
        self._endpoint(name)
        self._set_status(name, "Deleting")
        with self.lock:
            dep = self.active.pop(name, None)
            self.store.delete("endpoint", name)
            self.ready.pop(name, None)
        if dep:
            threading.Thread(target=dep.retire, args=(10.0,), daemon=True).start()
        return {}

    def update_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        with self.store.lock:
            rec = self._endpoint(name)
            config = self._config(body["EndpointConfigName"])
            if rec["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".')
            deploy_cfg = body.get("DeploymentConfig")
            if deploy_cfg is None and body.get("RetainDeploymentConfig"):
                deploy_cfg = rec.get("_deployment_config")
            self.store.update(
                "endpoint",
                name,
                EndpointStatus="Updating",
                LastModifiedTime=now(),
                FailureReason=None,
                _deployment_config=deploy_cfg,
                PendingDeploymentSummary={
                    "EndpointConfigName": config["EndpointConfigName"],
                    "ProductionVariants": [
                        {
                            "VariantName": v["VariantName"],
                            "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)),
                        }
                        for v in config["ProductionVariants"]
                    ],
                    "StartTime": now(),
                },
            )
        self.emit(name)
        threading.Thread(
            target=self._update, args=(name, config, deploy_cfg), name=f"sm-ep-{name}", daemon=True
        ).start()
        return {"EndpointArn": rec["EndpointArn"]}

    def _update(self, name: str, config: dict[str, Any], deploy_cfg: dict[str, Any] | None) -> None:
        new = Deployment(config)
        try:
            new.start(self, name)
        except Exception as e:
            log.warning("endpoint %s update failed, rolling back: %s", name, e)
            self._set_status(
                name,
                "InService",
                PendingDeploymentSummary=None,
                FailureReason=f"Update failed and was rolled back: {e}"[:1024],
            )
            return
        with self.lock:
            old = self.active.get(name)
            self.active[name] = new  # the swap: new requests go to the new servers from here on
        alarm = self._bake(config, deploy_cfg)
        if alarm:
            with self.lock:
                if old is not None:
                    self.active[name] = old
            threading.Thread(target=new.retire, daemon=True).start()
            log.warning("endpoint %s update rolled back: %s", name, alarm)
            self._set_status(
                name,
                "InService",
                PendingDeploymentSummary=None,
                FailureReason=f"Update rolled back: {alarm}",
                _last_deployment_config=deploy_cfg,
            )
            return
        if old is not None:
            threading.Thread(target=old.retire, daemon=True).start()
        self._set_status(
            name,
            "InService",
            EndpointConfigName=config["EndpointConfigName"],
            ProductionVariants=self._variants_summary(config),
            PendingDeploymentSummary=None,
            _last_deployment_config=deploy_cfg,
        )

    def _bake(self, config: dict[str, Any], deploy_cfg: dict[str, Any] | None) -> str | None:
        """Watch the auto-rollback alarms while the new fleet takes traffic.
        Returns why to roll back, or None."""
        hook = any(
            str(
                ((self.store.get("model", v["ModelName"]) or {}).get("PrimaryContainer") or {})
                .get("Environment", {})
                .get(ROLLBACK_HOOK, "")
            ).lower()
            in ("1", "true", "yes")
            for v in config["ProductionVariants"]
        )
        alarms = [
            a["AlarmName"]
            for a in ((deploy_cfg or {}).get("AutoRollbackConfiguration") or {}).get("Alarms", [])
        ]
        if not deploy_cfg and not hook:
            return None
        routing = ((deploy_cfg or {}).get("BlueGreenUpdatePolicy") or {}).get(
            "TrafficRoutingConfiguration"
        ) or {}
        wait = float(routing.get("WaitIntervalInSeconds") or 0)
        wait = min(wait, self.svc.bake_seconds) if wait else min(1.0, self.svc.bake_seconds)
        deadline = time.monotonic() + wait
        while True:
            if hook:
                return f"alarm simulated by the {ROLLBACK_HOOK} container environment variable"
            try:
                firing = self.svc.aws.alarms_in_alarm(alarms)
            except Exception as e:
                log.warning("cannot read rollback alarms: %s", e)
                firing = []
            if firing:
                return f"CloudWatch alarm(s) in ALARM state: {', '.join(firing)}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    # ---- runtime -------------------------------------------------------------------------

    def invoke(
        self, name: str, body: bytes, headers: dict[str, str]
    ) -> tuple[bytes, str, str, dict[str, str]]:
        rec = self.store.get("endpoint", name)
        if rec is None or rec["EndpointStatus"] not in ("InService", "Updating", "SystemUpdating"):
            raise AwsError(
                "ValidationError", f"Endpoint {name} of account {self.svc.account} not found."
            )
        ready = self.ready.get(name)
        if ready is not None:
            ready.wait(self.svc.health_timeout_seconds)
        with self.lock:
            dep = self.active.get(name)
            if dep is None:
                raise AwsError(
                    "ValidationError", f"Endpoint {name} of account {self.svc.account} not found."
                )
            dep.acquire()
        try:
            variant, server = dep.pick(headers.pop("X-Amzn-SageMaker-Target-Variant", None))
            try:
                status, out, ctype = server.invoke(body, headers)
            except OSError as e:
                status, out, ctype = 500, f"model server unavailable: {e}".encode(), "text/plain"
        finally:
            dep.release()
        if status != 200:
            text = out.decode(errors="replace")
            kind = "client" if status < 500 else "server"
            raise AwsError(
                "ModelError",
                f'Received {kind} error ({status}) from primary with message "{text}". See '
                f"https://{self.svc.region}.console.aws.amazon.com/cloudwatch/home"
                f"?region={self.svc.region}"
                f"#logEventViewer:group=/aws/sagemaker/Endpoints/{name} "
                f"in account {self.svc.account} for more information.",
                status=424,
                OriginalStatusCode=status,
                OriginalMessage=text,
                LogStreamArn=f"arn:aws:logs:{self.svc.region}:{self.svc.account}:log-group:/aws/sagemaker/Endpoints/{name}",
            )
        return out, ctype, variant, {}

    # ---- restart ---------------------------------------------------------------------------

    def restore(self) -> None:
        """After a restart: bring back what was serving; finish what was half done."""
        for pid_file in (self.root / "run").glob("*.pid"):
            _kill_leftover_worker(pid_file)
        for rec in self.store.all("endpoint"):
            name = rec["EndpointName"]
            status = rec["EndpointStatus"]
            if status == "Deleting":
                self.store.delete("endpoint", name)
                continue
            if status == "Failed":
                continue
            config = self.store.get("endpoint-config", rec["EndpointConfigName"])
            if config is None:
                self._set_status(name, "Failed", FailureReason="endpoint configuration was deleted")
                continue
            self.ready[name] = threading.Event()
            if status == "Creating":
                threading.Thread(target=self._create, args=(name, config), daemon=True).start()
            else:
                pending = (rec.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
                if status == "Updating":  # the update was cut short: come back on the old config
                    self.store.update(
                        "endpoint",
                        name,
                        EndpointStatus="InService",
                        PendingDeploymentSummary=None,
                        FailureReason=f"Update to {pending} was interrupted by a service restart",
                    )
                threading.Thread(target=self._restore_one, args=(name, config), daemon=True).start()

    def _restore_one(self, name: str, config: dict[str, Any]) -> None:
        dep = Deployment(config)
        try:
            dep.start(self, name)
        except Exception as e:
            self._set_status(name, "Failed", FailureReason=str(e)[:1024])
            self.ready[name].set()
            return
        with self.lock:
            self.active[name] = dep
        self.ready[name].set()

    def shutdown(self) -> None:
        with self.lock:
            deps = list(self.active.values())
            self.active.clear()
        for dep in deps:
            dep.stop()

    def worker_logs(self, name: str) -> str:
        dep = self.active.get(name)
        if not dep:
            return ""
        return "".join(
            path.read_text(errors="replace")
            for _, s in dep.servers.values()
            for path in s.log_paths
            if path.exists()
        )


def _kill_leftover_worker(pid_file: Path) -> None:
    """End a model server left running by a service that was killed hard."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        cmdline, pid = "", 0
    if pid and str(WORKER) in cmdline and str(pid_file.parent.parent) in cmdline:
        log.warning("killing leftover model server %s", pid)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
