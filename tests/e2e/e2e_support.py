"""End-to-end helpers: a real `flywheel up` process, driven only through AWS APIs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dataflywheel.stack_client import StackClient, wait_until
from dataflywheel.stack_ref import StackRefError
from samlocal.stack import StackError

REPO = Path(__file__).resolve().parents[2]

# Small and quick: no tuning, any test accuracy promotes the first model, and a
# threshold target that ~30 held-out images can certify. Ten epochs (each at least 512 images,
# then train.py's self-training epochs) take a few hundred digits past 95% validation accuracy,
# so the loop's and the gate's accuracy checks still hold for a real reason; a job's time is
# about proportional to this budget (patience rarely stops one early on a saturated validation).
E2E_PARAMETERS = {
    "EnableTuning": "false",
    "TrainingEpochs": "10",
    # One learner: the loop is the subject here, and auto's second learner (a 224 px feature
    # pass over every image, tests/training/test_heads.py) would double each job's time.
    "TrainingArch": "small_cnn",
    "CrossFitFolds": "2",  # cross-fitting runs, at half the default's models
    "MinTestAccuracy": "0.5",
    "TargetAutoLabelAccuracy": "0.8",
    "ClassNames": "0,1,2,3,4,5,6,7,8,9",
    "MinNewHumanLabels": "10",
    # The rollout state machine: read the endpoint every 2 s, watch the alarms 4 s.
    "RolloutPollSeconds": "2",
    "RolloutBakeSeconds": "4",
}


class RunningStack:
    """`flywheel up` in a child process; restartable on the same data directory."""

    def __init__(self, data_dir: Path, parameters: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.parameters = parameters
        self.proc: subprocess.Popen | None = None
        self.client: StackClient | None = None

    def start(self, timeout: float = 120) -> StackClient:
        args = [
            sys.executable,
            "-m",
            "dataflywheel.cli",
            "--data-dir",
            str(self.data_dir),
            "up",
            "--port-base",
            "0",
            "--no-schedules",
            "--status-every",
            "3600",
        ]
        for k, v in self.parameters.items():
            args += ["--parameter", f"{k}={v}"]
        log = open(self.data_dir.parent / f"{self.data_dir.name}-up.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"flywheel up exited with {self.proc.returncode}; see {log.name}"
                )
            try:
                self.client = StackClient(self.data_dir)
                if self.client.info["pid"] == self.proc.pid:
                    return self.client
            except (StackError, StackRefError):
                pass
            time.sleep(0.5)
        # A fixture that fails here never reaches its teardown: stop the stack now, or it would
        # keep its cores busy for the rest of the run.
        self.stop()
        raise RuntimeError("flywheel up did not come up in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def job_status(c, job: str, timeout: float = 600) -> str:
    """Wait for a training job to end; its final status."""
    sm = c.client("sagemaker")
    return wait_for(
        lambda: (s := sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"])
        in ("Completed", "Failed", "Stopped")
        and s,
        timeout,
        f"training job {job}",
        every=2,
    )


def wait_for(predicate, timeout: float, what: str, every: float = 1.0):
    try:
        return wait_until(predicate, timeout, what, every)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None
