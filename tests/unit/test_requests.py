"""CreateTrainingJob / CreateHyperParameterTuningJob / endpoint request building."""

from dataclasses import replace

import pytest
from flywheel.domain.deployment import Step, next_step, update_endpoint_request
from flywheel.domain.splits import build_snapshot
from flywheel.domain.training import JobSettings, training_job_request, tuning_job_request
from flywheel.errors import ConfigurationError
from flywheel.services.start_training import job_settings
from template_settings import template_settings

SPACE = {
    "objective": {"Type": "Maximize", "MetricName": "val_accuracy"},
    "metric_definitions": [{"Name": "val_accuracy", "Regex": "val_accuracy=([0-9.]+)"}],
    "static_hyperparameters": {"epochs": "12"},
    "parameter_ranges": {
        "ContinuousParameterRanges": [
            {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
        ],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [{"Name": "arch", "Values": ["small_cnn", "resnet18"]}],
    },
}
SNAP = build_snapshot(
    [(f"{i:064x}", "ab"[i % 2], "random" if i % 3 else "selected") for i in range(40)]
)


def settings(**kw) -> JobSettings:
    """The template's default stack, as start_training would build it (``kw`` replaces)."""
    stack = job_settings(template_settings("StartTrainingFunction"), "eu-west-1")
    return replace(stack, **kw)


def test_training_request_follows_the_container_contract():
    # Given the template's default stack and a search space whose static epochs differ
    s = settings()
    assert SPACE["static_hyperparameters"]["epochs"] != str(s.epochs)
    r = training_job_request(s, "dfw-x", SNAP, SPACE, "s3://data/code/sd.tar.gz", "s3://m.tar.gz")
    hp = r["HyperParameters"]
    assert (
        hp["sagemaker_program"] == "train.py"
        and hp["sagemaker_submit_directory"] == "s3://data/code/sd.tar.gz"
    )
    assert hp["model-version"] == "dfw-x"
    # The stack's values win over the search space's static ones
    assert hp["epochs"] == str(s.epochs) and hp["cross-fit-folds"] == str(s.cross_fit_folds)
    assert hp["confidence"] == str(s.confidence)
    assert hp["arch"] == s.arch == "auto"  # TrainingArch's default: train.py chooses the learner
    assert hp["target-accuracy"] == str(s.target_accuracy)
    assert all(isinstance(v, str) for v in hp.values())
    assert s.use_spot  # the template's default: spot, so a wait limit twice the runtime
    assert r["StoppingCondition"] == {
        "MaxRuntimeInSeconds": s.max_runtime_seconds,
        "MaxWaitTimeInSeconds": 2 * s.max_runtime_seconds,
    }
    assert r["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert [c["ChannelName"] for c in r["InputDataConfig"]] == ["train", "test", "champion"]
    assert r["OutputDataConfig"] == {"S3OutputPath": f"s3://{s.bucket}/models/"}


def test_no_spot_means_no_max_wait():
    r = training_job_request(settings(use_spot=False), "dfw-x", SNAP, SPACE, "s3://c", None)
    assert (
        "MaxWaitTimeInSeconds" not in r["StoppingCondition"] and not r["EnableManagedSpotTraining"]
    )
    assert "champion" not in [c["ChannelName"] for c in r["InputDataConfig"]]


def test_tuning_request_keeps_tuned_parameters_out_of_static_ones_and_warm_starts():
    r = tuning_job_request(settings(), "dfw-hx", SNAP, SPACE, "s3://c", None, "dfw-hprev")
    static = r["TrainingJobDefinition"]["StaticHyperParameters"]
    assert "lr" not in static and "arch" not in static and "model-version" not in static
    assert r["WarmStartConfig"]["ParentHyperParameterTuningJobs"] == [
        {"HyperParameterTuningJobName": "dfw-hprev"}
    ]


def test_hyperband_has_its_own_early_stopping_and_no_warm_start():
    r = tuning_job_request(
        settings(strategy="Hyperband", epochs=12), "dfw-hx", SNAP, SPACE, "s3://c", None, "p"
    )
    config = r["HyperParameterTuningJobConfig"]
    assert config["StrategyConfig"]["HyperbandStrategyConfig"] == {
        "MinResource": 1,
        "MaxResource": 12,
    }
    assert config["TrainingJobEarlyStoppingType"] == "Off" and "WarmStartConfig" not in r


def test_the_unlabeled_pool_is_a_manifest_file_channel_when_there_is_one():
    uri = "s3://data/datasets/snap/unlabeled.manifest"
    r = training_job_request(settings(), "dfw-x", SNAP, SPACE, "s3://c", None, uri)
    (channel,) = [c for c in r["InputDataConfig"] if c["ChannelName"] == "unlabeled"]
    assert channel["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == uri
    t = tuning_job_request(settings(), "dfw-hx", SNAP, SPACE, "s3://c", None, None, uri)
    assert "unlabeled" in [c["ChannelName"] for c in t["TrainingJobDefinition"]["InputDataConfig"]]
    # no validation channel any more: train.py carves its own folds
    assert "validation" not in [c["ChannelName"] for c in r["InputDataConfig"]]


def test_only_selected_labels_means_no_test_channel():
    snap = build_snapshot([(f"{i:064x}", "ab"[i % 2], "selected") for i in range(20)])
    r = training_job_request(settings(), "dfw-x", snap, SPACE, "s3://c", None)
    assert [c["ChannelName"] for c in r["InputDataConfig"]] == ["train"]


def test_grid_needs_categorical_ranges():
    with pytest.raises(ConfigurationError):
        tuning_job_request(settings(strategy="Grid"), "dfw-hx", SNAP, SPACE, "s3://c", None, None)


def test_instance_update_is_a_canary_with_rollback_alarms_and_serverless_is_plain():
    r = update_endpoint_request("ep", "cfg", "instance", ("a5xx", "lat"))
    assert r["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": "a5xx"},
        {"AlarmName": "lat"},
    ]
    assert "DeploymentConfig" not in update_endpoint_request("ep", "cfg", "serverless", ())


def test_reading_the_endpoint_back():
    assert next_step(None, "new") == Step.CREATE
    assert (
        next_step({"EndpointStatus": "Updating", "EndpointConfigName": "old"}, "new") == Step.WAIT
    )
    assert (
        next_step({"EndpointStatus": "InService", "EndpointConfigName": "old"}, "new")
        == Step.UPDATE
    )
    assert (
        next_step({"EndpointStatus": "InService", "EndpointConfigName": "new"}, "new") == Step.LIVE
    )
