"""The real training_jobs/ package as a local SageMaker job, then served by an endpoint.

Tiny digits ImageFolder (sklearn's load_digits), one epoch on the CPU.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from flywheel.packaging import package_source_dir
from sm_support import BUCKET, ROLE, unique, wait_endpoint, wait_training

pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]
TRAINING_JOBS = REPO / "training_jobs"
METRICS = [
    {"Name": "train_loss", "Regex": "train_loss=([0-9.]+)"},
    {"Name": "val_loss", "Regex": "val_loss=([0-9.]+)"},
    {"Name": "val_accuracy", "Regex": "val_accuracy=([0-9.]+)"},
    {"Name": "test_accuracy", "Regex": "test_accuracy=([0-9.]+)"},
]


def png(pixels: np.ndarray) -> bytes:
    import cv2

    image = cv2.resize((pixels * 255 / 16).astype(np.uint8), (32, 32))
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def digits(s3: Any, bucket: str) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    d = load_digits()
    classes = [0, 1, 2]
    for cls in classes:
        for i, idx in enumerate(np.flatnonzero(d.target == cls)[:20]):
            s3.put_object(Bucket=BUCKET, Key=f"digits/train/{cls}/{i}.png", Body=png(d.images[idx]))
    # The same sourcedir.tar.gz start_training publishes.
    sourcedir, _digest = package_source_dir(TRAINING_JOBS)
    s3.put_object(Bucket=BUCKET, Key="code/training_jobs.tar.gz", Body=sourcedir)
    sample = d.images[np.flatnonzero(d.target == 1)[25]]
    return {"sample": png(sample)}


def test_real_training_job_and_endpoint(sm: Any, runtime: Any, digits: dict[str, Any]) -> None:
    # Given the real training code and a tiny ImageFolder
    job = unique("dfw-digits")
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={
            "TrainingImage": "pytorch-training:2.6.0-gpu-py312",
            "TrainingInputMode": "File",
            "MetricDefinitions": METRICS,
        },
        RoleArn=ROLE,
        HyperParameters={
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": f"s3://{BUCKET}/code/training_jobs.tar.gz",
            "epochs": "1",
            "cross-fit-folds": "2",
            "batch-size": "32",
            "workers": "0",
            "arch": "small_cnn",
            "pretrained": "false",
            "target-accuracy": "0.5",
        },
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{BUCKET}/digits/train/",
                    }
                },
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/models/"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        CheckpointConfig={"S3Uri": f"s3://{BUCKET}/checkpoints/{job}/"},
    )

    # When it trains for one epoch
    desc = wait_training(sm, job, timeout=240)

    # Then it completed with metrics and a servable artifact
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    final = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert {"val_accuracy", "test_accuracy"} <= set(final)

    model = unique("dfw-model")
    sm.create_model(
        ModelName=model,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "pytorch-inference:2.6.0-cpu-py312",
            "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"],
        },
    )
    cfg = unique("dfw-cfg")
    sm.create_endpoint_config(
        EndpointConfigName=cfg,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2},
            }
        ],
    )
    endpoint = unique("dfw-ep")
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=cfg)
    assert wait_endpoint(sm, endpoint, timeout=120)["EndpointStatus"] == "InService"

    resp = runtime.invoke_endpoint(
        EndpointName=endpoint,
        ContentType="image/png",
        Accept="application/json",
        Body=digits["sample"],
    )
    body = json.loads(resp["Body"].read())
    assert body["model_version"] == job
    assert len(body["predictions"]) == 1 and body["predictions"][0]["label"] in {"0", "1", "2"}
    batch = runtime.invoke_endpoint(
        EndpointName=endpoint,
        ContentType="application/json",
        Body=json.dumps({"images": [base64.b64encode(digits["sample"]).decode()] * 2}),
    )
    assert len(json.loads(batch["Body"].read())["predictions"]) == 2

    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png", Body=b"not a png")
    assert err.value.response["Error"]["Code"] == "ModelError"
    assert err.value.response["OriginalStatusCode"] == 400
    sm.delete_endpoint(EndpointName=endpoint)
