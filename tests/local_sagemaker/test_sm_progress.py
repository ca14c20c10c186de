"""`flywheel train --wait`'s view of a job: trials and epochs from the AWS APIs only.

The local SageMaker writes each job's log to CloudWatch Logs where SageMaker does
(/aws/sagemaker/TrainingJobs, <job>/algo-1-<time>); dataflywheel.progress reads it back and
parses it with the job's MetricDefinitions.
"""

from __future__ import annotations

import re
import time
from typing import Any

from sm_support import client, training_request, unique
from test_sm_tuning import tuning_request

from dataflywheel.progress import LOG_GROUP, JobProgress


def follow(progress: JobProgress, timeout: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines += progress.poll()
        if progress.status in ("Completed", "Failed", "Stopped"):
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{progress.name} did not finish: {lines}")


def test_a_training_job_shows_each_epoch_once_then_its_final_metrics(
    sm: Any, bucket: str, moto_url: str
) -> None:
    # Given a job of three epochs
    name = unique("progress")
    sm.create_training_job(**training_request(name, epochs=3, quality=0.9, sleep=0.3))
    logs = client("logs", moto_url)

    # When it is followed to the end
    lines = follow(JobProgress(sm, logs, "training", name))

    # Then its start, each epoch (in order, once) and its end with the final metrics show
    assert lines[0] == f"training job {name} started"
    epochs = [line for line in lines if line.startswith(f"  {name}  ")]
    assert epochs == [
        f"  {name}  epoch   1  val_accuracy=0.3000",
        f"  {name}  epoch   2  val_accuracy=0.6000",
        f"  {name}  epoch   3  val_accuracy=0.9000",
        f"  {name}  metrics    test_accuracy=0.9000",
    ]
    assert lines[-1] == (
        f"training job {name} Completed  val_accuracy=0.9000  test_accuracy=0.9000"
    )
    # read from the log stream SageMaker would write
    streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/")
    assert [s["logStreamName"].startswith(f"{name}/algo-1-") for s in streams["logStreams"]] == [
        True
    ]


def test_a_tuning_job_shows_each_trial_with_its_epochs_and_objective(
    sm: Any, bucket: str, moto_url: str
) -> None:
    name = unique("tp")
    ranges = {"CategoricalParameterRanges": [{"Name": "quality", "Values": ["0.8", "0.4"]}]}
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(name, "Random", 2, ranges, {"epochs": "2"})
    )

    lines = follow(JobProgress(sm, client("logs", moto_url), "tuning", name))

    trials = sorted({m.group(1) for line in lines if (m := re.match(r"trial (\S+) started", line))})
    assert len(trials) == 2
    for trial in trials:
        steps = [line.split(f"  {trial}  ")[1][:9] for line in lines if f"  {trial}  " in line]
        assert steps == ["epoch   1", "epoch   2", "metrics  "]  # the last: test_accuracy
        (end,) = [line for line in lines if line.startswith(f"trial {trial} Completed")]
        assert re.fullmatch(rf"trial {trial} Completed  val_accuracy=0\.[48]000", end)
    best = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)[
        "BestTrainingJob"
    ]["TrainingJobName"]
    assert lines[-1] == f"tuning job {name} Completed  trials: Completed=2  best {best}"
