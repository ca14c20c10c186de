"""What ``flywheel train --wait`` and ``flywheel wait`` print while the stack works.

Everything comes from the AWS APIs a deployed stack has, and the local runtime serves
the same ones:

- job and trial status: ``DescribeTrainingJob`` / ``DescribeHyperParameterTuningJob`` /
  ``ListTrainingJobsForHyperParameterTuningJob``;
- per-epoch metrics and the job's stages (which learner, which cross-fitting fold): the
  job's log in CloudWatch Logs (``/aws/sagemaker/TrainingJobs``,
  streams ``<job>/algo-<n>-<time>``), parsed with the job's own ``MetricDefinitions``,
  which is how SageMaker itself extracts them (its CloudWatch metrics are per minute,
  too coarse for epochs of a few seconds);
- the promotion decision: the model registry entry promote files for every judged
  model (``StackClient.decision``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
EPOCH_RE = re.compile(r"\bepoch[= ](\d+)")
# train.py's lines that say which model of the job is training (no metrics on them): the
# learners tried and the one chosen, the feature pass, each cross-fitting fold's epochs and end
STAGE_RE = re.compile(r"(learner |features: |fold \d+/\d+[: ])")


def parse_metrics(line: str, definitions: list[dict[str, str]]) -> list[tuple[str, float]]:
    """SageMaker's rule: each definition's regex, its first group as a float."""
    found = []
    for d in definitions:
        try:
            m = re.search(d["Regex"], line)
        except re.error:
            continue
        if not m:
            continue
        try:
            value = float(m.group(1) if m.groups() else m.group(0))
        except ValueError:
            continue
        if math.isfinite(value):
            found.append((d["Name"], value))
    return found


class EpochLog:
    """The metric lines of one training job's log, each returned once."""

    def __init__(self, logs: Any, job: str, definitions: list[dict[str, str]]) -> None:
        self.logs, self.job, self.definitions = logs, job, definitions
        self.tokens: dict[str, str | None] = {}

    def new_lines(self) -> list[str]:
        try:
            streams = self.logs.describe_log_streams(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job}/"
            )["logStreams"]
        except ClientError:  # no log group yet: nothing logged yet
            return []
        out = []
        for stream in sorted(s["logStreamName"] for s in streams):
            for message in self._read(stream):
                metrics = parse_metrics(message, self.definitions)
                if not metrics:
                    if STAGE_RE.match(message):
                        out.append(f"  {self.job}  {message.strip()}")
                    continue
                m = EPOCH_RE.search(message)
                step = f"epoch {m.group(1):>3}" if m else "metrics  "  # e.g. the final test
                values = "  ".join(f"{k}={v:.4f}" for k, v in metrics)
                out.append(f"  {self.job}  {step}  {values}")
        return out

    def _read(self, stream: str) -> list[str]:
        messages = []
        while True:
            kwargs: dict[str, Any] = {"startFromHead": True}
            if self.tokens.get(stream):
                kwargs["nextToken"] = self.tokens[stream]
            page = self.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, **kwargs)
            messages += [e["message"] for e in page.get("events", [])]
            token = page.get("nextForwardToken")
            if not page.get("events") or token == self.tokens.get(stream):
                self.tokens[stream] = token
                return messages
            self.tokens[stream] = token


class JobProgress:
    """Lines to print while a training or tuning job runs: trial status changes, epochs."""

    def __init__(self, sm: Any, logs: Any, kind: str, name: str) -> None:
        self.sm, self.logs, self.kind, self.name = sm, logs, kind, name
        self.statuses: dict[str, str] = {}
        self.epoch_logs: dict[str, EpochLog] = {}
        self.status = ""

    def poll(self) -> list[str]:
        """New lines since the last poll; ``self.status`` is the job's status after it."""
        lines: list[str] = []
        if self.kind == "tuning":
            tuning = self.sm.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=self.name
            )
            trials = self.sm.list_training_jobs_for_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=self.name, SortBy="CreationTime", SortOrder="Ascending"
            )["TrainingJobSummaries"]
            for trial in trials:
                lines += self._job(trial["TrainingJobName"], trial)
            status = tuning["HyperParameterTuningJobStatus"]
            if status in TERMINAL and status != self.status:
                best = (tuning.get("BestTrainingJob") or {}).get("TrainingJobName")
                counters = tuning.get("TrainingJobStatusCounters") or {}
                counts = "  ".join(f"{k}={v}" for k, v in counters.items() if v)
                lines.append(
                    f"tuning job {self.name} {status}  trials: {counts or 'none'}"
                    + (f"  best {best}" if best else "")
                )
        else:
            job = self.sm.describe_training_job(TrainingJobName=self.name)
            lines += self._job(self.name, job)
            status = job["TrainingJobStatus"]
        self.status = status
        return lines

    def _job(self, name: str, summary: dict[str, Any]) -> list[str]:
        lines = []
        status = summary["TrainingJobStatus"]
        if name not in self.epoch_logs:
            job = self.sm.describe_training_job(TrainingJobName=name)
            definitions = (job.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
            self.epoch_logs[name] = EpochLog(self.logs, name, definitions)
        if self.statuses.get(name) is None:
            lines.append(f"{self._label(name)} {name} started")
        lines += self.epoch_logs[name].new_lines()
        if status != self.statuses.get(name) and status in TERMINAL:
            lines += self.epoch_logs[name].new_lines()  # the last lines may land with the end
            lines.append(f"{self._label(name)} {name} {status}{self._ending(name, summary)}")
        self.statuses[name] = status
        return lines

    def _label(self, name: str) -> str:
        return "trial" if name != self.name else "training job"

    def _ending(self, name: str, summary: dict[str, Any]) -> str:
        objective = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
        if objective:
            return f"  {objective['MetricName']}={objective['Value']:.4f}"
        if summary.get("FailureReason"):
            return f"  ({summary['FailureReason'][:200]})"
        job = self.sm.describe_training_job(TrainingJobName=name)
        final = job.get("FinalMetricDataList") or []
        if final:
            return "  " + "  ".join(f"{m['MetricName']}={m['Value']:.4f}" for m in final)
        if job.get("FailureReason"):
            return f"  ({job['FailureReason'][:200]})"
        return ""


def follow(
    poll: Callable[[], tuple[list[str], bool]],
    emit: Callable[[str], None],
    timeout: float,
    what: str,
    every: float = 2.0,
) -> None:
    """Call ``poll`` until it says done, emitting its lines; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        lines, done = poll()
        for line in lines:
            emit(line)
        if done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
