"""start_training: labeled items -> dataset snapshot in S3 -> SageMaker training / tuning job."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import start_training
from flywheel.adapters import items
from flywheel.domain.items import TRAINING_META_ID
from integration_kit import TRAINING_CODE, load_event


def seed_labeled(stack, count: int, start: int = 0, sampling: str = "random") -> list[str]:
    ids = []
    for n in range(start, start + count):
        item_id = f"{n:064x}"
        stack.s3.put_object(Bucket=stack.data_bucket, Key=f"images/{item_id}.png", Body=b"png")
        items.put_new(
            stack.table,
            {
                "item_id": item_id,
                "state": "human_labeled",
                "label": "cat" if n % 2 else "dog",
                "label_source": "human",
                "label_sampling": sampling,
                "label_origin": "seed" if sampling == "random" else "review",
                "source_key": f"labeled/x/{n}.jpg",
                "image_key": f"images/{item_id}.png",
            },
        )
        ids.append(item_id)
    return ids


@pytest.fixture
def env(stack):
    stack.use(
        "StartTrainingFunction", TRAINING_CODE_DIR=str(TRAINING_CODE), MIN_NEW_HUMAN_LABELS="10"
    )
    return stack


def test_manual_training_writes_the_snapshot_and_starts_one_job(env, context):
    # Given 40 human-labeled images of two classes
    ids = seed_labeled(env, 40)

    # When a person asks for a (non-tuning) training run
    result = start_training.handler(load_event("start_training_manual.json"), context)

    # Then the ImageFolder channels and the manifest exist for every image
    assert result["started"] and result["new_job"] and result["kind"] == "training"
    snapshot = result["snapshot_id"]
    channel_keys = env.keys(f"datasets/{snapshot}/")
    assert len([k for k in channel_keys if k.endswith(".png")]) == 40
    assert {k.split("/")[2] for k in channel_keys if k.endswith(".png")} == {"train", "test"}
    manifest = [
        json.loads(line) for line in env.read(f"datasets/{snapshot}/manifest.jsonl").splitlines()
    ]
    assert len(manifest) == 40 and manifest[0]["label-metadata"]["human-annotated"] == "yes"
    assert {m["source-ref"].rsplit("/", 1)[1][:-4] for m in manifest} == set(ids)
    # And the training code was published under its content hash, with the shared contracts
    (code_key,) = env.keys("code/")
    with tarfile.open(fileobj=io.BytesIO(env.read(code_key))) as tar:
        assert sorted(tar.getnames()) == [
            "flywheel/__init__.py",
            "flywheel/contracts/__init__.py",
            "flywheel/contracts/images.py",
            "flywheel/contracts/manifest.py",
            "flywheel/contracts/metrics.py",
            "flywheel/contracts/metrics_schema.json",
            "flywheel/contracts/model_config.py",
            "flywheel/contracts/model_config_schema.json",
            "flywheel/contracts/schema.py",
            "search_space.json",
            "train.py",
        ]

    # And SageMaker received the job the contract describes
    job = env.sm.describe_training_job(TrainingJobName=result["job_name"])
    assert result["job_name"] == f"dfw-{snapshot}"
    hps = job["HyperParameters"]
    assert hps["sagemaker_program"] == "train.py"
    assert hps["sagemaker_submit_directory"] == f"s3://{env.data_bucket}/{code_key}"
    assert hps["epochs"] == "40" and hps["target-accuracy"] == "0.95"  # TrainingEpochs
    assert hps["arch"] == "auto"  # TrainingArch
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.6-gpu-py312")
    assert job["EnableManagedSpotTraining"] is True
    assert (
        job["CheckpointConfig"]["S3Uri"]
        == f"s3://{env.data_bucket}/checkpoints/{result['job_name']}/"
    )
    assert {c["ChannelName"] for c in job["InputDataConfig"]} >= {"train"}


@pytest.mark.parametrize(
    ("overrides", "image"),
    [
        ({"TRAINING_INSTANCE_TYPE": "ml.m5.xlarge"}, "pytorch-training:2.6-cpu-py312"),
        ({"TRAINING_INSTANCE_TYPE": "ml.c5.2xlarge"}, "pytorch-training:2.6-cpu-py312"),
        ({"TRAINING_INSTANCE_TYPE": "ml.p3.2xlarge"}, "pytorch-training:2.6-gpu-py312"),
        (
            {"TRAINING_INSTANCE_TYPE": "ml.m5.xlarge", "TRAINING_IMAGE_URI": "my/image:1"},
            "my/image:1",
        ),
    ],
)
def test_the_training_image_follows_the_instance_type_and_the_override_wins(
    env, context, overrides, image
):
    # Given a CPU or GPU TrainingInstanceType (and maybe a TrainingImageUri override)
    seed_labeled(env, 30)
    env.use(
        "StartTrainingFunction",
        TRAINING_CODE_DIR=str(TRAINING_CODE),
        MIN_NEW_HUMAN_LABELS="10",
        **overrides,
    )

    # When training starts
    result = start_training.handler(load_event("start_training_manual.json"), context)

    # Then SageMaker received the image for that instance type
    job = env.sm.describe_training_job(TrainingJobName=result["job_name"])
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith(image)
    assert job["ResourceConfig"]["InstanceType"] == overrides["TRAINING_INSTANCE_TYPE"]


def test_repeated_trigger_for_the_same_snapshot_starts_nothing_new(env, context):
    seed_labeled(env, 30)
    first = start_training.handler(load_event("start_training_manual.json"), context)
    second = start_training.handler(load_event("start_training_manual.json"), context)
    assert second["job_name"] == first["job_name"]
    assert first["new_job"] and not second["new_job"]
    assert len(env.sm.list_training_jobs()["TrainingJobSummaries"]) == 1


def test_schedule_waits_for_enough_new_human_labels(env, context):
    # Given a previous training and only 5 labels since
    seed_labeled(env, 30)
    start_training.handler(load_event("start_training_manual.json"), context)
    seed_labeled(env, 5, start=100)

    # When the schedule fires
    result = start_training.handler(load_event("scheduled_check.json"), context)

    # Then nothing starts
    assert result["started"] is False and result["new_human_labels"] == 5
    assert len(env.sm.list_training_jobs()["TrainingJobSummaries"]) == 1

    # And with enough new labels it starts a new job on a new snapshot
    seed_labeled(env, 10, start=200)
    result = start_training.handler({"reason": "schedule", "tuning": False}, context)
    assert result["new_job"] and result["new_human_labels"] == 15


def test_tuning_job_uses_the_search_space_and_warm_starts_from_the_previous_one(env, context):
    seed_labeled(env, 30)
    first = start_training.handler({"reason": "manual", "tuning": True}, context)
    seed_labeled(env, 10, start=100)
    second = start_training.handler({"reason": "manual", "tuning": True}, context)

    assert len(first["job_name"]) <= 32 and first["kind"] == "tuning"
    job = env.sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=second["job_name"])
    config = job["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2}
    assert config["ParameterRanges"]["CategoricalParameterRanges"][0]["Name"] == "arch"
    assert "lr" not in job["TrainingJobDefinition"]["StaticHyperParameters"]
    assert job["WarmStartConfig"]["ParentHyperParameterTuningJobs"] == [
        {"HyperParameterTuningJobName": first["job_name"]}
    ]
    meta = env.item(TRAINING_META_ID)
    assert meta["tuning_job"] == second["job_name"]


def test_champion_model_becomes_the_champion_channel(env, context):
    env.ssm.put_parameter(
        Name="/dataflywheel/champion",
        Type="String",
        Value=json.dumps(
            {
                "model_version": "dfw-old",
                "training_job": "dfw-old",
                "model_name": "dfw-old",
                "endpoint_config": "dfw-old-abc",
                "threshold": 0.8,
                "target_accuracy": 0.95,
                "model_data": f"s3://{env.data_bucket}/models/dfw-old/output/model.tar.gz",
                "test_accuracy": 0.9,
                "classes": ["cat", "dog"],
                "test_set_id": "x",
                "promoted_at": "now",
            }
        ),
    )
    seed_labeled(env, 30)
    result = start_training.handler(load_event("start_training_manual.json"), context)
    job = env.sm.describe_training_job(TrainingJobName=result["job_name"])
    champion = [c for c in job["InputDataConfig"] if c["ChannelName"] == "champion"]
    assert champion[0]["DataSource"]["S3DataSource"]["S3Uri"].endswith(
        "dfw-old/output/model.tar.gz"
    )


def test_too_few_classes_is_reported_not_raised(env, context):
    for n in range(5):
        items.put_new(
            env.table,
            {
                "item_id": f"{n:064x}",
                "state": "human_labeled",
                "label": "cat",
                "image_key": f"images/{n:064x}.png",
            },
        )
    result = start_training.handler(load_event("start_training_manual.json"), context)
    assert result["started"] is False and "2 classes" in result["reason"]


def channel_manifest(stack, snapshot: str, split: str) -> list[dict]:
    body = stack.read(f"datasets/{snapshot}/{split}/manifest.jsonl")
    return [json.loads(line) for line in body.splitlines()]


def test_review_answers_never_enter_the_certification_set(env, context):
    # Given random seed labels and many more answers to items the model picked for review
    seeds = seed_labeled(env, 60, sampling="random")
    answers = seed_labeled(env, 200, start=1000, sampling="selected")

    # When training starts
    result = start_training.handler(load_event("start_training_manual.json"), context)
    snapshot = result["snapshot_id"]

    # Then every review answer is in train only, and test holds only random labels
    train, test = channel_manifest(env, snapshot, "train"), channel_manifest(env, snapshot, "test")
    test_ids = {m["source-ref"].rsplit("/", 1)[1][:-4] for m in test}
    train_ids = {m["source-ref"].rsplit("/", 1)[1][:-4] for m in train}
    assert test_ids and test_ids <= set(seeds) and not test_ids & set(answers)
    assert set(answers) <= train_ids
    assert {m["label-metadata"]["sampling"] for m in test} == {"random"}
    by_id = {m["source-ref"].rsplit("/", 1)[1][:-4]: m for m in train}
    assert {by_id[i]["label-metadata"]["sampling"] for i in answers} == {"selected"}
    assert len(train) + len(test) == 260
    # And each manifest's source-refs point at the copies inside its own channel prefix
    for split, lines in (("train", train), ("test", test)):
        for m in lines:
            key = m["source-ref"].split(f"s3://{env.data_bucket}/", 1)[1]
            assert key.startswith(f"datasets/{snapshot}/{split}/") and env.read(key) == b"png"
    # And there is no validation channel; the top-level marker manifest is still there
    job = env.sm.describe_training_job(TrainingJobName=result["job_name"])
    assert [c["ChannelName"] for c in job["InputDataConfig"]][:2] == ["train", "test"]
    assert "validation" not in {c["ChannelName"] for c in job["InputDataConfig"]}
    assert len(env.read(f"datasets/{snapshot}/manifest.jsonl").splitlines()) == 260
    hps = job["HyperParameters"]
    assert (hps["epochs"], hps["cross-fit-folds"], hps["confidence"]) == ("40", "5", "0.95")


def test_the_unlabeled_pool_is_a_manifest_file_channel(env, context):
    # Given labeled items and items without a human label in three states
    seed_labeled(env, 30)
    pool = []
    for n, state in enumerate(["unlabeled", "needs_review", "auto_labeled", "unlabeled"]):
        item_id = f"{5000 + n:064x}"
        items.put_new(
            env.table,
            {"item_id": item_id, "state": state, "image_key": f"images/{item_id}.png"},
        )
        pool.append(item_id)
    env.use(
        "StartTrainingFunction",
        TRAINING_CODE_DIR=str(TRAINING_CODE),
        MIN_NEW_HUMAN_LABELS="10",
        MAX_UNLABELED_POOL="3",
    )

    # When training starts
    result = start_training.handler(load_event("start_training_manual.json"), context)

    # Then SageMaker receives an `unlabeled` ManifestFile channel listing at most 3 images
    job = env.sm.describe_training_job(TrainingJobName=result["job_name"])
    (channel,) = [c for c in job["InputDataConfig"] if c["ChannelName"] == "unlabeled"]
    source = channel["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "ManifestFile"
    key = f"datasets/{result['snapshot_id']}/unlabeled.manifest"
    assert source["S3Uri"] == f"s3://{env.data_bucket}/{key}"
    manifest = json.loads(env.read(key))
    assert manifest[0] == {"prefix": f"s3://{env.data_bucket}/images/"}
    assert len(manifest) == 4 and {m[:-4] for m in manifest[1:]} < set(pool)


def test_an_empty_pool_means_no_unlabeled_channel(env, context):
    seed_labeled(env, 30)
    result = start_training.handler(load_event("start_training_manual.json"), context)
    job = env.sm.describe_training_job(TrainingJobName=result["job_name"])
    assert "unlabeled" not in {c["ChannelName"] for c in job["InputDataConfig"]}


def fail_job(name: str, status: str = "Failed") -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].training_jobs[
        name
    ].training_job_status = status


def test_a_completed_job_for_the_same_labels_is_reported_not_restarted(env, context):
    # Given a job for these labels that already ran (e.g. the gate rejected its model)
    seed_labeled(env, 30)
    first = start_training.handler(load_event("start_training_manual.json"), context)

    # When a person asks to train again without new labels
    again = start_training.handler(load_event("start_training_manual.json"), context)

    # Then nothing is said to start, and the answer says why
    assert first["started"] and first["new_job"]
    assert again["started"] is False and again["new_job"] is False
    assert again["reason"] == "a job for this snapshot already ran: Completed"
    assert again["job_name"] == first["job_name"]


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_failed_job_is_retried_for_the_same_labels(env, context, status):
    # Given a job that failed for infrastructure reasons
    seed_labeled(env, 30)
    first = start_training.handler(load_event("start_training_manual.json"), context)
    fail_job(first["job_name"], status)

    # When training is asked for again with the same labels
    retry = start_training.handler(load_event("start_training_manual.json"), context)

    # Then a second attempt starts on the same snapshot under a new, deterministic name
    assert retry["started"] and retry["new_job"]
    assert retry["snapshot_id"] == first["snapshot_id"]
    assert retry["job_name"] == f"{first['job_name']}-r2"
    job = env.sm.describe_training_job(TrainingJobName=retry["job_name"])
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].endswith(
        f"datasets/{first['snapshot_id']}/train/"
    )
    assert env.item(TRAINING_META_ID)["job_name"] == retry["job_name"]
    # And once that attempt completed, a further request starts nothing
    third = start_training.handler(load_event("start_training_manual.json"), context)
    assert third["started"] is False and third["job_name"] == retry["job_name"]


def _stub_quotas(monkeypatch, respond) -> None:
    """Service Quotas behind a Stubber (moto has no ListServiceQuotas)."""
    import boto3
    from botocore.stub import Stubber
    from flywheel.adapters import quotas

    client = boto3.client("service-quotas", region_name="us-east-1")
    stub = Stubber(client)
    respond(stub)
    stub.activate()
    monkeypatch.setattr(quotas, "aws_client", lambda *a, **k: client)


def _quota(name: str, value: float, code: str) -> dict:
    return {
        "ServiceCode": "sagemaker",
        "ServiceName": "Amazon SageMaker",
        "QuotaArn": f"arn:aws:servicequotas:us-east-1:123456789012:sagemaker/{code}",
        "QuotaCode": code,
        "QuotaName": name,
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }


def test_a_zero_spot_quota_is_explained_and_no_job_is_started(env, context, monkeypatch):
    # Given a new account: no ml.g5.xlarge training at all (the template's default type, spot)
    seed_labeled(env, 30)
    zero = [
        _quota("ml.g5.xlarge for spot training job usage", 0.0, "L-D8CEBF32"),
        _quota("ml.g5.xlarge for training job usage", 0.0, "L-1F5A5B0B"),
        _quota("ml.m5.xlarge for spot training job usage", 4.0, "L-2BE9CDD1"),
        _quota("ml.m5.xlarge for training job usage", 4.0, "L-B4E93E9A"),
    ]
    _stub_quotas(
        monkeypatch,
        lambda stub: stub.add_response(
            "list_service_quotas", {"Quotas": zero}, {"ServiceCode": "sagemaker", "MaxResults": 100}
        ),
    )

    # When training is asked for
    result = start_training.handler(load_event("start_training_manual.json"), context)

    # Then nothing is started, and the reason says what to do
    assert not result["started"] and not result["new_job"]
    assert result["reason"].startswith("your account's quota for ml.g5.xlarge spot training is 0")
    assert (
        "L-D8CEBF32" in result["reason"] and "TrainingInstanceType=ml.m5.xlarge" in result["reason"]
    )
    assert result["preflight"]["status"] == "insufficient"
    assert env.sm.list_training_jobs()["TrainingJobSummaries"] == []
    assert not env.keys("code/")


def test_a_preflight_that_cannot_run_does_not_stop_training(env, context, monkeypatch):
    # Given a role without servicequotas:ListServiceQuotas
    seed_labeled(env, 30)
    _stub_quotas(
        monkeypatch,
        lambda stub: stub.add_client_error(
            "list_service_quotas", "AccessDeniedException", "not authorized", 400
        ),
    )

    # When training is asked for
    result = start_training.handler(load_event("start_training_manual.json"), context)

    # Then the job starts and the result says the quota was not checked
    assert result["started"] and result["new_job"]
    assert result["preflight"]["status"] == "unknown"
    assert "AccessDenied" in result["preflight"]["message"]
    assert len(env.sm.list_training_jobs()["TrainingJobSummaries"]) == 1


def test_a_quota_refusal_from_sagemaker_is_reported_not_raised(env, context, monkeypatch):
    # Given SageMaker itself refuses the job (ResourceLimitExceeded), the preflight unsure
    from botocore.stub import Stubber
    from flywheel.adapters import aws

    seed_labeled(env, 30)
    sm = aws.client("sagemaker")
    real = sm.create_training_job
    stub = Stubber(sm)
    stub.add_client_error(
        "create_training_job",
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0 "
        "Instances, with current utilization of 0 Instances and a request delta of 1 Instances.",
        400,
    )
    monkeypatch.setattr(sm, "create_training_job", lambda **request: _stubbed(stub, real, request))

    # When training is asked for
    result = start_training.handler(load_event("start_training_manual.json"), context)

    # Then the result carries the refusal and the way out, not a stack trace
    assert not result["started"]
    assert result["reason"].startswith("SageMaker refused the job for a quota")
    assert "is 0 Instances" in result["reason"]


def _stubbed(stub, real, request):
    with stub:
        return real(**request)
