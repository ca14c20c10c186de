"""Tuning jobs through boto3: optuna-driven trials as child training jobs, Hyperband pruning."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
from sm_support import METRICS, training_request, unique, wait_for


def tuning_request(
    name: str,
    strategy: str,
    max_jobs: int,
    ranges: dict[str, Any],
    static: dict[str, str],
    **config: Any,
) -> dict[str, Any]:
    base = training_request("unused")
    definition = {
        "StaticHyperParameters": {**base["HyperParameters"], **static},
        "AlgorithmSpecification": {
            "TrainingImage": base["AlgorithmSpecification"]["TrainingImage"],
            "TrainingInputMode": "File",
            "MetricDefinitions": METRICS,
        },
        "RoleArn": base["RoleArn"],
        "InputDataConfig": base["InputDataConfig"],
        "OutputDataConfig": base["OutputDataConfig"],
        "ResourceConfig": base["ResourceConfig"],
        "StoppingCondition": base["StoppingCondition"],
    }
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "val_accuracy"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": ranges,
            "RandomSeed": 7,
            **config,
        },
        "TrainingJobDefinition": definition,
    }


def wait_tuning(sm: Any, name: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(
        lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name),
        lambda d: d["HyperParameterTuningJobStatus"] in ("Completed", "Failed", "Stopped"),
        timeout,
        interval=0.5,
    )


def test_bayesian_tuning_runs_trials_and_picks_the_best(sm: Any, bucket: str) -> None:
    # Given a tuning job over a continuous (log) range and a categorical one
    name = unique("hpo")
    ranges = {
        "ContinuousParameterRanges": [
            {
                "Name": "quality",
                "MinValue": "0.05",
                "MaxValue": "0.95",
                "ScalingType": "Logarithmic",
            }
        ],
        "CategoricalParameterRanges": [{"Name": "flag", "Values": ["a", "b"]}],
    }
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(name, "Bayesian", 3, ranges, {"epochs": "2"})
    )

    # When it finishes
    desc = wait_tuning(sm, name)

    # Then its three children ran with static + tuned hyperparameters, named like SageMaker's
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    children = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name
    )["TrainingJobSummaries"]
    assert len(children) == 3
    for child in children:
        assert re.fullmatch(rf"{name}-00[1-3]-[0-9a-f]{{8}}", child["TrainingJobName"])
        assert child["TrainingJobStatus"] == "Completed"
        job = sm.describe_training_job(TrainingJobName=child["TrainingJobName"])
        assert job["TuningJobArn"] == desc["HyperParameterTuningJobArn"]
        assert job["HyperParameters"]["epochs"] == "2"
        assert job["HyperParameters"]["quality"] == child["TunedHyperParameters"]["quality"]
        assert 0.05 <= float(child["TunedHyperParameters"]["quality"]) <= 0.95
        final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
        assert (
            child["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == final["val_accuracy"]
        )
    # the best job is the one with the highest objective
    best = max(children, key=lambda c: c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert desc["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]
    assert desc["TrainingJobStatusCounters"]["Completed"] == 3
    assert desc["ObjectiveStatusCounters"]["Succeeded"] == 3
    by_metric = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, SortBy="FinalObjectiveMetricValue", SortOrder="Descending"
    )
    assert by_metric["TrainingJobSummaries"][0]["TrainingJobName"] == best["TrainingJobName"]
    assert name in [
        j["HyperParameterTuningJobName"]
        for j in sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
    ]


def test_hyperband_prunes_poor_trials(sm: Any, bucket: str, service: Any) -> None:
    name = unique("hb")
    ranges = {"CategoricalParameterRanges": [{"Name": "quality", "Values": ["0.9", "0.2", "0.1"]}]}
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(
            name,
            "Hyperband",
            5,
            ranges,
            {"epochs": "6", "sleep": "0.2"},
            # one Hyperband bracket (MaxResource / MinResource < 3): every trial competes at epoch 1
            StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 2}},
        )
    )
    desc = wait_tuning(sm, name, timeout=120)
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    children = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name
    )["TrainingJobSummaries"]
    pruned = [c for c in children if c["TrainingJobStatus"] == "Stopped"]
    assert pruned, [(c["TunedHyperParameters"], c["TrainingJobStatus"]) for c in children]
    # a pruned trial's process was stopped before its last epoch
    log = (
        urllib.request.urlopen(f"{service.url}/_local/logs/{pruned[0]['TrainingJobName']}")
        .read()
        .decode()
    )
    assert "epoch=1 " in log and "epoch=6 " not in log
    assert desc["BestTrainingJob"]["TunedHyperParameters"]["quality"] == "0.9"
    assert desc["TrainingJobStatusCounters"]["Stopped"] == len(pruned)


def test_grid_rejects_continuous_ranges(sm: Any) -> None:
    from botocore.exceptions import ClientError

    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "lr", "MinValue": "0.1", "MaxValue": "1", "ScalingType": "Linear"}
        ]
    }
    with pytest.raises(ClientError) as err:
        sm.create_hyper_parameter_tuning_job(
            **tuning_request(unique("grid"), "Grid", 2, ranges, {})
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_tuning_events_and_restart_resume(tmp_path: Any, moto_url: str, bucket: str) -> None:
    from sm_support import EventLog, client, start_service

    # Given a tuning job whose first trial is running when the service stops
    events = EventLog()
    first = start_service(tmp_path, moto_url, events)
    sm = client("sagemaker", first.url)
    name = unique("hpo-rs")
    ranges = {"IntegerParameterRanges": [{"Name": "epochs", "MinValue": "3", "MaxValue": "4"}]}
    static = {"sleep": "0.3", "quality": "0.6"}
    request = tuning_request(name, "Random", 2, ranges, static)
    request["TrainingJobDefinition"]["CheckpointConfig"] = {
        "S3Uri": f"s3://{bucket}/checkpoints/{name}"
    }
    sm.create_hyper_parameter_tuning_job(**request)
    wait_for(
        lambda: sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name
        )["TrainingJobSummaries"],
        lambda jobs: len(jobs) == 1 and jobs[0]["TrainingJobStatus"] == "InProgress",
    )
    first.stop()

    # When it starts again on the same data directory
    second = start_service(tmp_path, moto_url, events)
    try:
        sm = client("sagemaker", second.url)
        desc = wait_tuning(sm, name)
    finally:
        second.stop()

    # Then the tuning job finished its two trials, the first one resumed
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    assert desc["TrainingJobStatusCounters"]["Completed"] == 2
    assert desc["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"][
        "Value"
    ] == pytest.approx(0.6)
    # and the events said so: children carry the tuning job's ARN, the last event has the best job
    tuning_events = events.of("SageMaker HyperParameter Tuning Job State Change")
    assert [e["detail"]["HyperParameterTuningJobStatus"] for e in tuning_events] == [
        "InProgress",
        "Completed",
    ]
    assert (
        tuning_events[-1]["detail"]["BestTrainingJob"]["TrainingJobName"]
        == desc["BestTrainingJob"]["TrainingJobName"]
    )
    children = [
        e["detail"]
        for e in events.of("SageMaker Training Job State Change")
        if e["detail"]["TrainingJobStatus"] == "Completed"
    ]
    assert len(children) == 2 and all(
        c["TuningJobArn"] == desc["HyperParameterTuningJobArn"] for c in children
    )


def test_warm_start_from_a_parent_tuning_job(sm: Any, bucket: str) -> None:
    ranges = {"CategoricalParameterRanges": [{"Name": "quality", "Values": ["0.3", "0.7"]}]}
    parent = unique("hpo-parent")
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(parent, "Random", 1, ranges, {"epochs": "1"})
    )
    assert wait_tuning(sm, parent)["HyperParameterTuningJobStatus"] == "Completed"

    child = unique("hpo-child")
    request = tuning_request(child, "Bayesian", 1, ranges, {"epochs": "1"})
    request["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": parent}],
        "WarmStartType": "TransferLearning",
    }
    sm.create_hyper_parameter_tuning_job(**request)
    desc = wait_tuning(sm, child)
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    assert (
        desc["WarmStartConfig"]["ParentHyperParameterTuningJobs"][0]["HyperParameterTuningJobName"]
        == parent
    )
    # the parent's trial seeds the study but is not one of this job's children
    children = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=child
    )
    assert [c["TrainingJobName"][: len(child)] for c in children["TrainingJobSummaries"]] == [child]


def test_stop_tuning_job_stops_its_running_trials(sm: Any, bucket: str) -> None:
    name = unique("hpo-stop")
    ranges = {"IntegerParameterRanges": [{"Name": "epochs", "MinValue": "50", "MaxValue": "60"}]}
    sm.create_hyper_parameter_tuning_job(
        **tuning_request(name, "Random", 4, ranges, {"sleep": "0.3"})
    )
    wait_for(
        lambda: sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name
        )["TrainingJobSummaries"],
        lambda jobs: any(j["TrainingJobStatus"] == "InProgress" for j in jobs),
    )
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    desc = wait_tuning(sm, name, timeout=30)
    assert desc["HyperParameterTuningJobStatus"] == "Stopped"
    children = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name
    )
    assert {c["TrainingJobStatus"] for c in children["TrainingJobSummaries"]} == {"Stopped"}
    assert "HyperParameterTuningEndTime" in desc
