"""Training jobs: the SageMaker training container contract, run as a local process.

One `JobRunner` thread per job: download channels and code, start the entry
point with `sys.executable`, stream its log (metrics, live listeners), sync
checkpoints, honour Stop and MaxRuntimeInSeconds, then upload the model and
record the outcome. The job directory mirrors /opt/ml:

    <data_dir>/jobs/<job>/{input/data/<channel>, input/config, code, model,
                            output/{data,failure}, checkpoints, train.log}
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .aws import LogStream
from .protocol import AwsError, arn, in_use, now, page, public, sort_filter, validation

if TYPE_CHECKING:
    from .service import LocalSageMaker

log = logging.getLogger("local_sagemaker")

KIND = "training-job"
TERMINAL = ("Completed", "Failed", "Stopped")
MetricListener = Callable[[str, float, int], None]  # (metric name, value, index in series)


# ---- the toolkit's hyperparameter handling ----------------------------------------------


def decode_hyperparameters(hps: dict[str, str]) -> dict[str, Any]:
    """JSON-decode each value where it parses, as sagemaker-training does; drop sagemaker_*."""
    out: dict[str, Any] = {}
    for k, v in hps.items():
        if k.startswith("sagemaker_"):
            continue
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def _arg_value(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def to_cmd_args(hps: dict[str, Any]) -> list[str]:
    """`--key value` pairs in sorted key order (single letters get one dash)."""
    args: list[str] = []
    for key in sorted(hps):
        args += [("--" if len(key) > 1 else "-") + key, _arg_value(hps[key])]
    return args


def parse_metrics(line: str, definitions: list[dict[str, str]]) -> list[tuple[str, float]]:
    found = []
    for d in definitions:
        try:
            m = re.search(d["Regex"], line)
        except re.error:
            continue
        if m:
            try:
                value = float(m.group(1) if m.groups() else m.group(0))
            except ValueError:
                continue
            if math.isfinite(value):
                found.append((d["Name"], value))
    return found


# ---- the API ------------------------------------------------------------------------------


class Training:
    def __init__(self, svc: LocalSageMaker) -> None:
        self.svc = svc
        self.store = svc.store
        self.runners: dict[str, JobRunner] = {}
        self._lock = threading.Lock()

    def arn(self, name: str) -> str:
        return arn(self.svc.region, self.svc.account, KIND, name)

    def get(self, name: str) -> dict[str, Any]:
        rec = self.store.get(KIND, name)
        if rec is None:
            raise AwsError("ValidationException", "Requested resource not found.")
        return rec

    # CreateTrainingJob (tuning children come through here too, with tuning_job_arn)
    def create(
        self,
        body: dict[str, Any],
        tuning_job_arn: str | None = None,
        listeners: list[MetricListener] | None = None,
    ) -> dict[str, Any]:
        name = body.get("TrainingJobName") or ""
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
            raise validation(f"Invalid TrainingJobName: {name!r}")
        hps = body.get("HyperParameters") or {}
        if not isinstance(hps, dict) or not all(isinstance(v, str) for v in hps.values()):
            raise validation("HyperParameters values must be strings")
        t = now()
        record = {k: v for k, v in body.items() if k not in ("Tags",)}
        record.update(
            TrainingJobArn=self.arn(name),
            TuningJobArn=tuning_job_arn,
            TrainingJobStatus="InProgress",
            SecondaryStatus="Starting",
            CreationTime=t,
            LastModifiedTime=t,
            SecondaryStatusTransitions=[
                {
                    "Status": "Starting",
                    "StartTime": t,
                    "StatusMessage": "Preparing the instances for training",
                }
            ],
            HyperParameters=hps,
            _tags=body.get("Tags") or [],
            _metric_series={},
            _elapsed=0.0,
        )
        record.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
        with self.store.lock:
            if self.store.get(KIND, name) is not None:
                raise in_use(
                    "Training job names must be unique within an AWS account and region, and a "
                    f"training job with this name already exists ({self.arn(name)})"
                )
            self.store.put(KIND, name, record)
        self.emit(name)
        self._launch(name, listeners)
        return {"TrainingJobArn": record["TrainingJobArn"]}

    def describe(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        out = public(rec)
        end = rec.get("TrainingEndTime") or now()
        if rec.get("TrainingStartTime"):
            out["TrainingTimeInSeconds"] = max(1, int(end - rec["TrainingStartTime"]))
            out["BillableTimeInSeconds"] = out["TrainingTimeInSeconds"]
        return out

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [
            public(
                {
                    k: r.get(k)
                    for k in (
                        "TrainingJobName",
                        "TrainingJobArn",
                        "CreationTime",
                        "TrainingEndTime",
                        "LastModifiedTime",
                        "TrainingJobStatus",
                        "SecondaryStatus",
                    )
                }
            )
            for r in self.store.all(KIND)
        ]
        items = sort_filter(
            items, body, "TrainingJobName", "TrainingJobStatus", default_order="Ascending"
        )
        return page(items, body, "TrainingJobSummaries")

    def stop(self, name: str) -> dict[str, Any]:
        with self.store.lock:
            rec = self.get(name)
            if rec["TrainingJobStatus"] != "InProgress":
                raise validation(
                    f"The request was rejected because the training job is in status "
                    f"{rec['TrainingJobStatus']}."
                )
            self.transition(name, "Stopping", "Stopping the training job", primary="Stopping")
        self.emit(name)
        runner = self.runners.get(name)
        if runner and runner.is_alive():
            runner.stop_requested.set()
        else:
            self.finish(name, "Stopped", "Stopped", "The training job was stopped")
        return {}

    # ---- lifecycle helpers used by the runner and the tuner ----

    def transition(
        self, name: str, status: str, message: str, primary: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        with self.store.lock:
            rec = self.get(name)
            t = now()
            trans = rec.get("SecondaryStatusTransitions") or []
            if trans and "EndTime" not in trans[-1]:
                trans[-1]["EndTime"] = t
            trans.append({"Status": status, "StartTime": t, "StatusMessage": message})
            return self.store.update(
                KIND,
                name,
                SecondaryStatus=status,
                SecondaryStatusTransitions=trans,
                TrainingJobStatus=primary or rec["TrainingJobStatus"],
                LastModifiedTime=t,
                **extra,
            )

    def finish(self, name: str, status: str, secondary: str, message: str, **extra: Any) -> None:
        rec = self.transition(
            name, secondary, message, primary=status, TrainingEndTime=now(), **extra
        )
        trans = rec["SecondaryStatusTransitions"]
        trans[-1]["EndTime"] = trans[-1]["StartTime"]
        series = rec.get("_metric_series") or {}
        final = [
            {"MetricName": m, "Value": values[-1], "Timestamp": rec["TrainingEndTime"]}
            for m, values in series.items()
            if values
        ]
        self.store.update(
            KIND, name, SecondaryStatusTransitions=trans, FinalMetricDataList=final or None
        )
        log.info("training job %s %s", name, status)
        self.emit(name)
        self.svc.tuning.on_training_finished(name)

    def emit(self, name: str) -> None:
        rec = self.get(name)
        detail = self.describe(name)
        detail["Tags"] = {t["Key"]: t["Value"] for t in rec.get("_tags", [])}
        self.svc.events.emit("SageMaker Training Job State Change", rec["TrainingJobArn"], detail)

    def add_listener(self, name: str, fn: MetricListener) -> None:
        runner = self.runners.get(name)
        if runner:
            runner.listeners.append(fn)

    def request_stop(self, name: str) -> None:
        """Stop a job if it is still running (tuning: pruned trials, stopped tuning jobs)."""
        with contextlib.suppress(AwsError):
            self.stop(name)

    def wait(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        runner = self.runners.get(name)
        if runner:
            runner.join(timeout)
        return self.get(name)

    def _launch(self, name: str, listeners: Sequence[MetricListener] | None = None) -> None:
        runner = JobRunner(self, name)
        runner.listeners.extend(listeners or [])
        with self._lock:
            self.runners[name] = runner
        runner.start()

    def resume_all(self) -> None:
        """After a restart: relaunch what was running (it resumes from its checkpoints)."""
        for rec in self.store.all(KIND):
            name = rec["TrainingJobName"]
            _kill_leftover(rec)
            if rec["TrainingJobStatus"] == "Stopping":
                self.finish(name, "Stopped", "Stopped", "The training job was stopped")
            elif rec["TrainingJobStatus"] == "InProgress":
                log.info("resuming training job %s", name)
                self.transition(
                    name, "Starting", "Restarting the training job after a service restart"
                )
                self._launch(name)

    def shutdown(self) -> None:
        """Service stop: end the processes but keep the jobs InProgress for resume_all."""
        for runner in list(self.runners.values()):
            runner.shutdown.set()
        for runner in list(self.runners.values()):
            runner.join(timeout=30)

    def log_path(self, name: str) -> Path:
        return self.svc.data_dir / "jobs" / name / "train.log"


def _kill_leftover(rec: dict[str, Any]) -> None:
    """A hard-killed service leaves its job process groups behind; end them before a resume."""
    pgid, marker = rec.get("_pgid"), rec.get("_job_dir")
    if not pgid or not marker:
        return
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().decode(errors="replace")
        cwd = os.readlink(f"/proc/{pgid}/cwd")
    except OSError:
        return  # gone (or not Linux)
    if marker in cmdline or marker in cwd:
        log.warning("killing leftover process group %s of %s", pgid, rec.get("TrainingJobName"))
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


# ---- one job ------------------------------------------------------------------------------


class JobFailure(Exception):
    pass


class JobRunner(threading.Thread):
    def __init__(self, training: Training, name: str) -> None:
        super().__init__(name=f"sm-train-{name}", daemon=True)
        self.t = training
        self.name_ = name
        self.stop_requested = threading.Event()
        self.shutdown = threading.Event()
        self.listeners: list[MetricListener] = []
        self.dir = training.svc.data_dir / "jobs" / name
        self.proc: subprocess.Popen[str] | None = None
        self._series_lock = threading.Lock()
        self._series: dict[str, list[float]] = {}

    def run(self) -> None:
        try:
            self._run()
        except JobFailure as e:
            self.t.finish(
                self.name_, "Failed", "Failed", "Training job failed", FailureReason=str(e)[:1024]
            )
        except Exception as e:  # our bug or S3 trouble: fail the job, keep the service up
            log.exception("training job %s crashed", self.name_)
            if not self.shutdown.is_set():
                self.t.finish(
                    self.name_,
                    "Failed",
                    "Failed",
                    "Training job failed",
                    FailureReason=f"InternalServerError: {type(e).__name__}: {e}"[:1024],
                )

    # -- phases

    def _run(self) -> None:
        rec = self.t.get(self.name_)
        self._series = {k: list(v) for k, v in (rec.get("_metric_series") or {}).items()}
        d = self.dir
        for sub in ("input", "code", "model", "output"):
            shutil.rmtree(d / sub, ignore_errors=True)
        for sub in ("input/data", "input/config", "code", "model", "output/data"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        aws = self.t.svc.aws

        self.t.transition(self.name_, "Downloading", "Downloading input data")
        channels: dict[str, str] = {}
        for ch in rec.get("InputDataConfig") or []:
            cname = ch["ChannelName"]
            dest = d / "input/data" / cname
            s3src = (ch.get("DataSource") or {}).get("S3DataSource")
            if not s3src:
                raise JobFailure(
                    f"ClientError: channel {cname}: only S3DataSource is supported locally"
                )
            kind = s3src.get("S3DataType", "S3Prefix")
            try:
                if kind == "S3Prefix":
                    n = aws.download_prefix(s3src["S3Uri"], dest)
                elif kind in ("ManifestFile", "AugmentedManifestFile"):
                    n = aws.download_manifest(
                        s3src["S3Uri"],
                        dest,
                        kind == "AugmentedManifestFile",
                        s3src.get("AttributeNames") or [],
                    )
                else:
                    raise JobFailure(f"ClientError: channel {cname}: unsupported S3DataType {kind}")
            except JobFailure:
                raise
            except Exception as e:
                raise JobFailure(
                    f"ClientError: Data download failed for channel {cname}: {e}"
                ) from e
            if n == 0:
                raise JobFailure(
                    f'ClientError: No S3 objects found under S3 URL "{s3src["S3Uri"]}" given in '
                    "input data source. Please ensure that the bucket exists in the selected "
                    f"region ({self.t.svc.region}), that objects exist under that S3 prefix, and "
                    "that the role has permission to read the objects."
                )
            channels[cname] = str(dest)

        hps = rec.get("HyperParameters") or {}
        program = _unquote(hps.get("sagemaker_program", ""))
        submit = _unquote(hps.get("sagemaker_submit_directory", ""))
        if not program:
            raise JobFailure("AlgorithmError: no sagemaker_program hyperparameter: nothing to run")
        code = d / "code"
        try:
            if submit.startswith("s3://"):
                aws.download_tar(submit, code)
            elif submit:
                src = Path(submit.removeprefix("file://"))
                if src.is_dir():
                    shutil.copytree(src, code, dirs_exist_ok=True)
                else:
                    with tarfile.open(src) as tar:
                        tar.extractall(code, filter="data")
        except Exception as e:
            raise JobFailure(
                f"ClientError: cannot fetch sagemaker_submit_directory {submit}: {e}"
            ) from e
        if not (code / program).exists() and not (code / program.replace(".", "/")).exists():
            raise JobFailure(
                "AlgorithmError: ExecuteUserScriptError: "
                f"entry point {program} not found in the source directory"
            )

        ckpt_uri = (rec.get("CheckpointConfig") or {}).get("S3Uri")
        ckpt_dir = d / "checkpoints"
        if ckpt_uri:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            ckpt_dir.mkdir(parents=True)
            aws.download_prefix(ckpt_uri, ckpt_dir)

        if self.stop_requested.is_set():
            self.t.finish(self.name_, "Stopped", "Stopped", "The training job was stopped")
            return
        if self.shutdown.is_set():
            return

        decoded = decode_hyperparameters(hps)
        args_hps = dict(decoded)
        if ckpt_uri:
            args_hps["checkpoint-dir"] = str(ckpt_dir)
        env = self._env(rec, decoded, channels, program)
        if program.endswith(".py"):
            cmd = [sys.executable, program, *to_cmd_args(args_hps)]
        else:
            cmd = [sys.executable, "-m", program, *to_cmd_args(args_hps)]

        extra: dict[str, Any] = {} if rec.get("TrainingStartTime") else {"TrainingStartTime": now()}
        self.t.transition(
            self.name_,
            "Training",
            "Training image download completed. Training in progress.",
            **extra,
        )
        outcome = self._train(cmd, env, code, ckpt_uri, ckpt_dir, rec)
        if outcome is None:  # service shutting down: leave the job InProgress
            return
        status, secondary, message = outcome
        with self._series_lock:
            self.t.store.update(KIND, self.name_, _metric_series=self._series)

        failure = None
        if status == "Failed":
            failure = self._failure_reason(cmd)
        model_files = any((d / "model").iterdir())
        artifacts = None
        if status == "Completed" or (status == "Stopped" and model_files):
            self.t.transition(self.name_, "Uploading", "Uploading generated training model")
            base = rec["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{self.name_}/output"
            _tar_dir(d / "model", d / "model.tar.gz")
            aws.upload_file(d / "model.tar.gz", f"{base}/model.tar.gz")
            artifacts = {"S3ModelArtifacts": f"{base}/model.tar.gz"}
            if any((d / "output/data").iterdir()):
                _tar_dir(d / "output/data", d / "output.tar.gz")
                aws.upload_file(d / "output.tar.gz", f"{base}/output.tar.gz")
        self.t.finish(
            self.name_, status, secondary, message, ModelArtifacts=artifacts, FailureReason=failure
        )

    def _env(
        self, rec: dict[str, Any], decoded: dict[str, Any], channels: dict[str, str], program: str
    ) -> dict[str, str]:
        d = self.dir
        resource = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
        input_cfg = {
            c["ChannelName"]: {k: v for k, v in c.items() if k != "ChannelName"}
            for c in rec.get("InputDataConfig") or []
        }
        (d / "input/config/hyperparameters.json").write_text(
            json.dumps(rec.get("HyperParameters") or {})
        )
        (d / "input/config/inputdataconfig.json").write_text(json.dumps(input_cfg))
        (d / "input/config/resourceconfig.json").write_text(json.dumps(resource))
        training_env = {
            "additional_framework_parameters": {},
            "channel_input_dirs": channels,
            "current_host": "algo-1",
            "hosts": ["algo-1"],
            "hyperparameters": decoded,
            "input_config_dir": str(d / "input/config"),
            "input_data_config": input_cfg,
            "input_dir": str(d / "input"),
            "job_name": self.name_,
            "log_level": 20,
            "model_dir": str(d / "model"),
            "module_dir": str(d / "code"),
            "module_name": program.removesuffix(".py"),
            "network_interface_name": "eth0",
            "num_cpus": os.cpu_count() or 1,
            "num_gpus": 0,
            "output_data_dir": str(d / "output/data"),
            "output_dir": str(d / "output"),
            "resource_config": resource,
            "user_entry_point": program,
        }
        env = dict(os.environ)
        env.update(rec.get("Environment") or {})
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join([str(d / "code"), env.get("PYTHONPATH", "")]).rstrip(
                    os.pathsep
                ),
                "TRAINING_JOB_NAME": self.name_,
                "TRAINING_JOB_ARN": rec["TrainingJobArn"],
                "SM_MODEL_DIR": str(d / "model"),
                "SM_OUTPUT_DATA_DIR": str(d / "output/data"),
                "SM_OUTPUT_DIR": str(d / "output"),
                "SM_INPUT_DIR": str(d / "input"),
                "SM_INPUT_CONFIG_DIR": str(d / "input/config"),
                "SM_NUM_GPUS": "0",
                "SM_NUM_CPUS": str(os.cpu_count() or 1),
                "SM_HOSTS": json.dumps(["algo-1"]),
                "SM_CURRENT_HOST": "algo-1",
                "SM_MODULE_DIR": str(d / "code"),
                "SM_USER_ENTRY_POINT": program,
                "SM_CHANNELS": json.dumps(sorted(channels)),
                "SM_HPS": json.dumps(decoded),
                "SM_TRAINING_ENV": json.dumps(training_env),
            }
        )
        for cname, path in channels.items():
            env[f"SM_CHANNEL_{cname.upper()}"] = path
        for k, v in decoded.items():
            env[f"SM_HP_{k.upper()}"] = v if isinstance(v, str) else json.dumps(v)
        return env

    def _train(
        self,
        cmd: list[str],
        env: dict[str, str],
        cwd: Path,
        ckpt_uri: str | None,
        ckpt_dir: Path,
        rec: dict[str, Any],
    ) -> tuple[str, str, str] | None:
        svc = self.t.svc
        max_runtime = float(
            (rec.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds") or 86400
        )
        elapsed_before = float(rec.get("_elapsed") or 0.0)
        with open(self.dir / "train.log", "a") as logf:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            logf.write(f"[local-sagemaker] {stamp} starting: {' '.join(cmd)}\n")
            logf.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
            self.t.store.update(KIND, self.name_, _pgid=self.proc.pid, _job_dir=str(self.dir))
            reader = threading.Thread(target=self._read, args=(self.proc, logf, rec), daemon=True)
            reader.start()
            started = time.monotonic()
            synced = _snapshot(ckpt_dir) if ckpt_uri else {}
            last_sync = started
            reason: str | None = None
            while self.proc.poll() is None:
                time.sleep(0.2)
                if self.shutdown.is_set():
                    self._terminate(grace=3)
                    reader.join(5)
                    self.t.store.update(
                        KIND, self.name_, _elapsed=elapsed_before + time.monotonic() - started
                    )
                    if ckpt_uri:
                        self._sync_checkpoints(ckpt_uri, ckpt_dir, synced)
                    return None
                if reason is None and self.stop_requested.is_set():
                    reason = "stopped"
                    self._terminate(grace=svc.stop_grace_seconds, wait=False)
                if reason is None and elapsed_before + time.monotonic() - started > max_runtime:
                    reason = "max_runtime"
                    self._terminate(grace=svc.stop_grace_seconds, wait=False)
                if ckpt_uri and time.monotonic() - last_sync > 1.0:
                    synced = self._sync_checkpoints(ckpt_uri, ckpt_dir, synced)
                    last_sync = time.monotonic()
                if self._kill_at and time.monotonic() > self._kill_at:
                    self._killpg(signal.SIGKILL)
            reader.join(10)
            rc = self.proc.returncode
            logf.write(f"[local-sagemaker] process exited with code {rc}\n")
        self.t.store.update(KIND, self.name_, _elapsed=elapsed_before + time.monotonic() - started)
        if ckpt_uri:
            self._sync_checkpoints(ckpt_uri, ckpt_dir, synced)
        self._exit_code = rc
        if reason == "stopped":
            return "Stopped", "Stopped", "The training job was stopped"
        if reason == "max_runtime":
            return (
                "Stopped",
                "MaxRuntimeExceeded",
                "Training job runtime exceeded MaxRuntimeInSeconds provided",
            )
        if rc == 0:
            return "Completed", "Completed", "Training job completed"
        return "Failed", "Failed", "Training job failed"

    _kill_at: float | None = None
    _exit_code: int | None = None

    def _killpg(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, sig)

    def _terminate(self, grace: float, wait: bool = True) -> None:
        """SIGTERM the job's process group, SIGKILL it after `grace` seconds."""
        self._killpg(signal.SIGTERM)
        self._kill_at = time.monotonic() + grace
        if wait and self.proc is not None:
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._killpg(signal.SIGKILL)
                self.proc.wait()

    def _read(self, proc: subprocess.Popen[str], logf: Any, rec: dict[str, Any]) -> None:
        definitions = (rec.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        assert proc.stdout is not None
        cloudwatch = LogStream(self.t.svc.aws, self.name_)
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            metrics = parse_metrics(line, definitions)
            cloudwatch.add(line, flush=bool(metrics))
            for metric, value in metrics:
                with self._series_lock:
                    series = self._series.setdefault(metric, [])
                    series.append(value)
                    index = len(series) - 1
                    snapshot = {k: list(v) for k, v in self._series.items()}
                self.t.store.update(KIND, self.name_, _metric_series=snapshot)
                for fn in list(self.listeners):
                    try:
                        fn(metric, value, index)
                    except Exception:
                        log.exception("metric listener failed")
        cloudwatch.flush()

    def _sync_checkpoints(
        self, uri: str, folder: Path, synced: dict[str, tuple[int, int]]
    ) -> dict[str, tuple[int, int]]:
        current = _snapshot(folder)
        base = uri.rstrip("/")
        for rel, sig in list(current.items()):
            if synced.get(rel) != sig:
                try:
                    self.t.svc.aws.upload_file(folder / rel, f"{base}/{rel}")
                except FileNotFoundError:
                    # Gone while we looked (a temp file, or os.replace in flight): keep what
                    # S3 already has, so it is not deleted below; the next pass uploads it.
                    if rel in synced:
                        current[rel] = synced[rel]
                    else:
                        del current[rel]
        for rel in set(synced) - set(current):
            self.t.svc.aws.delete_object(f"{base}/{rel}")
        return current

    def _failure_reason(self, cmd: list[str]) -> str:
        failure = self.dir / "output" / "failure"
        if failure.exists() and failure.read_text().strip():
            return "AlgorithmError: " + failure.read_text().strip()[:1000]
        tail = [
            line.rstrip()
            for line in (self.dir / "train.log").read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith("[local-sagemaker]")
        ][-5:]
        return (
            f"AlgorithmError: ExecuteUserScriptError:\nExitCode {self._exit_code}\n"
            f'ErrorMessage "{chr(10).join(tail)}"\nCommand "{" ".join(cmd[1:])}"'
        )[:1024]


def _unquote(value: str) -> str:
    """The SageMaker SDK JSON-encodes hyperparameters ('"train.py"'); boto3 users don't."""
    try:
        decoded = json.loads(value)
        return decoded if isinstance(decoded, str) else value
    except ValueError:
        return value


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    if folder.exists():
        for p in folder.rglob("*"):
            if p.is_file():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                out[str(p.relative_to(folder))] = (st.st_mtime_ns, st.st_size)
    return out


def _tar_dir(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=p.name)
