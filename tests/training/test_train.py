"""train.py as SageMaker runs it: artifacts, metric lines, resume, torchrun, failures, accuracy."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import REPO, TRAIN_PY, hyperparameter_flags, run_training, sagemaker_env

SEARCH_SPACE = json.loads((REPO / "training_jobs" / "search_space.json").read_text())
FAST = {
    "arch": "small_cnn",  # one learner: these tests check the job's mechanics (auto: test_heads)
    "epochs": "3",  # two epochs land anywhere between 50% and 80% on held-out digits
    "batch-size": "64",
    "warmup-epochs": "0.2",
    "workers": "1",
    "pretrained": "False",
    "cross-fit-folds": "2",  # the cross-fitting path, at a third of the default cost
}


@pytest.fixture(scope="module")
def smoke_job(tmp_path_factory, digits_folder):
    """Three epochs on one train channel (validation and test split off it)."""
    job = tmp_path_factory.mktemp("smoke")
    result = run_training(job, {"train": digits_folder}, FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return job, result.stdout


def test_two_epoch_run_writes_a_servable_artifact(smoke_job):
    job, _ = smoke_job
    model = job / "model"
    assert {"model.pt", "model_config.json", "metrics.json"} <= {p.name for p in model.iterdir()}
    assert (model / "code" / "inference.py").is_file()
    assert (model / "code" / "classifier" / "models.py").is_file()
    # small_cnn: the inference image has everything inference.py imports but the contracts'
    # validator (training_jobs/ run as is has no wheels/: from PyPI, as the file says)
    requirements = (model / "code" / "requirements.txt").read_text().splitlines()
    assert requirements[-1] == "fastjsonschema>=2.19,<3" and "opencv" not in str(requirements)
    config = json.loads((model / "model_config.json").read_text())
    assert config["classes"] == [str(d) for d in range(10)]
    assert config["image_size"] == 32 and config["model_version"] == "dfw-test"
    assert set(config) >= {
        "arch",
        "mean",
        "std",
        "temperature",
        "threshold",
        "target_accuracy",
        "topk",
    }
    metrics = json.loads((model / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["test"]["n"] > 200 and re.fullmatch("[0-9a-f]{64}", metrics["test_set_id"])
    assert metrics["champion_test"] is None
    assert metrics["threshold"]["threshold"] == config["threshold"]
    assert json.loads((job / "output" / "data" / "metrics.json").read_text()) == metrics
    assert not (job / "output" / "failure").exists()


def test_the_metrics_json_train_py_writes_is_what_the_gate_reads(smoke_job):
    # Given the metrics.json of a real run, read as promote reads it (flywheel.contracts)
    from flywheel.domain.gate import parse_metrics
    from flywheel.errors import InvalidArtifact

    job, _ = smoke_job
    written = (job / "model" / "metrics.json").read_bytes()
    read = parse_metrics(written)
    assert read.model_version == "dfw-test" and read.test_n > 200
    assert read.threshold == json.loads(written)["threshold"]["threshold"]
    # When a field the gate needs is broken, Then the gate refuses the artifact saying where
    broken = json.loads(written)
    broken["test"]["accuracy"] = "high"
    with pytest.raises(InvalidArtifact, match="test.accuracy: must be number"):
        parse_metrics(broken)


def test_the_model_code_serves_with_nothing_but_itself(smoke_job):
    # Given the artifact's code/ and a Python that sees neither functions/ nor training_jobs/
    model = smoke_job[0] / "model"
    probe = (
        "import sys; sys.path.insert(0, 'code'); import inference; "
        "from flywheel.contracts import metrics, model_config; "
        "served = inference.model_fn('.'); "
        "print(model_config.__file__, metrics.__file__, served['config']['model_version'])"
    )
    # When the inference container's entry point loads the model
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], cwd=model, capture_output=True, text=True, timeout=120
    )
    # Then the contracts it validates with are the copies in code/flywheel/contracts
    assert done.returncode == 0, done.stderr[-2000:]
    config_module, metrics_module, version = done.stdout.split()
    contracts = model / "code" / "flywheel" / "contracts"
    assert Path(config_module).parent.resolve() == contracts.resolve()
    assert Path(metrics_module).parent.resolve() == contracts.resolve() and version == "dfw-test"
    assert (contracts / "model_config_schema.json").is_file()


def test_metric_regexes_parse_every_epoch_line(smoke_job):
    _, stdout = smoke_job
    lines = stdout.splitlines()
    found = {
        d["Name"]: [float(m.group(1)) for line in lines if (m := re.search(d["Regex"], line))]
        for d in SEARCH_SPACE["metric_definitions"]
    }
    assert len(found["val_accuracy"]) == len(found["train_loss"]) == len(found["val_loss"]) == 3
    assert len(found["test_accuracy"]) == 1 and 0 <= found["test_accuracy"][0] <= 1
    assert re.search(
        r"^epoch=3 train_loss=\d\.\d{4} val_loss=\d\.\d{4} val_accuracy=\d\.\d{4}$", stdout, re.M
    )
    assert SEARCH_SPACE["objective"]["MetricName"] in found


def test_search_space_names_are_train_py_flags_in_sagemaker_shape():
    help_text = subprocess.run(
        [sys.executable, str(TRAIN_PY), "--help"], capture_output=True, text=True
    ).stdout
    ranges = SEARCH_SPACE["parameter_ranges"]
    assert set(ranges) == {
        "ContinuousParameterRanges",
        "IntegerParameterRanges",
        "CategoricalParameterRanges",
    }
    names = [r["Name"] for group in ranges.values() for r in group] + list(
        SEARCH_SPACE["static_hyperparameters"]
    )
    for name in names:
        assert f"--{name}" in help_text
    for r in ranges["ContinuousParameterRanges"] + ranges["IntegerParameterRanges"]:
        assert isinstance(r["MinValue"], str) and float(r["MinValue"]) < float(r["MaxValue"])
    assert all(isinstance(v, str) for v in SEARCH_SPACE["static_hyperparameters"].values())


def test_served_artifact_labels_held_out_digits(smoke_job, held_out):
    # Given the tarball SageMaker would upload, extracted where the inference container puts it
    job, _ = smoke_job
    with tarfile.open(job / "model.tar.gz", "w:gz") as tar:
        for path in (job / "model").iterdir():
            tar.add(path, arcname=path.name)
    served = job / "served"
    with tarfile.open(job / "model.tar.gz") as tar:
        tar.extractall(served, filter="data")
    sys.path.insert(0, str(served / "code"))
    try:
        import inference

        model = inference.model_fn(str(served))
        # When held-out digits are sent as one JSON batch and as single PNGs
        body = json.dumps({"images": [base64.b64encode(png).decode() for png, _ in held_out[:64]]})
        batch, content_type = inference.output_fn(
            inference.predict_fn(inference.input_fn(body, "application/json"), model),
            "application/json",
        )
        singles = [
            json.loads(
                inference.output_fn(
                    inference.predict_fn(inference.input_fn(png, "image/png"), model), None
                )[0]
            )
            for png, _ in held_out[64:]
        ]
    finally:
        sys.path.remove(str(served / "code"))
    # Then every prediction has the protocol's fields and most labels are right
    response = json.loads(batch)
    assert content_type == "application/json" and response["model_version"] == "dfw-test"
    predictions = response["predictions"] + [s["predictions"][0] for s in singles]
    assert len(predictions) == len(held_out)
    first = predictions[0]
    assert set(first) == {"label", "confidence", "auto_label", "threshold", "ood", "top_k"}
    assert first["top_k"][0]["label"] == first["label"] and len(first["top_k"]) == 5
    accuracy = sum(
        p["label"] == label for p, (_, label) in zip(predictions, held_out, strict=True)
    ) / len(held_out)
    assert accuracy > 0.6  # chance is 0.1; three epochs


def test_bad_hyperparameter_writes_the_failure_file(tmp_path, digits_folder):
    result = run_training(tmp_path, {"train": digits_folder}, {"epochs": "two"})
    assert result.returncode != 0
    failure = (tmp_path / "output" / "failure").read_text()
    assert "bad hyperparameter" in failure and "--epochs" in failure and "two" in failure
    assert not (tmp_path / "model" / "metrics.json").exists()


def test_empty_train_channel_fails_with_a_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_training(tmp_path, {"train": tmp_path / "empty"}, FAST)
    assert result.returncode != 0
    assert "no training images" in (tmp_path / "output" / "failure").read_text()


def write_manifest(
    root: Path, source: Path, label_attribute: str, sampling=None, every: int = 1
) -> None:
    """A Ground Truth augmented manifest over copies of the images (every `every`-th of each
    class), keys like S3 would have; `sampling(name)` gives each label's
    `label-metadata.sampling` when set."""
    lines = []
    for class_dir in sorted(source.iterdir()):
        for image in sorted(class_dir.iterdir())[::every]:
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "images" / image.name).write_bytes(image.read_bytes())
            metadata = {
                "class-name": class_dir.name,
                "confidence": 1.0,
                "human-annotated": "yes",
                "job-name": "labeling-job/digits",
                "creation-date": "2026-01-01T00:00:00",
            }
            if sampling:
                metadata["sampling"] = sampling(image.name)
            lines.append(
                json.dumps(
                    {
                        "source-ref": f"s3://bucket/datasets/snap/images/{image.name}",
                        label_attribute: int(class_dir.name),
                        f"{label_attribute}-metadata": metadata,
                    }
                )
            )
    (root / "dataset.manifest").write_text("\n".join(lines) + "\n")


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, digits_folder):
    # Given a Ground Truth manifest channel (half the digits: this is about resuming, not
    # accuracy) and a run killed once its first checkpoint exists
    channel = tmp_path / "manifest"
    write_manifest(channel, digits_folder, "digit-label", every=2)
    hyperparameters = {
        **FAST,
        "epochs": "3",
        "label-attribute": "digit-label",
        "checkpoint-dir": str(tmp_path / "checkpoints"),
    }
    command = [sys.executable, str(TRAIN_PY), *hyperparameter_flags(hyperparameters)]
    env = sagemaker_env(tmp_path, {"train": channel})
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.time() + 240
    while not (tmp_path / "checkpoints" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    first.kill()
    first.wait()
    assert not (tmp_path / "model" / "metrics.json").exists()
    # When it starts again
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    # Then it continues after the saved epoch and ends with all three
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout
    assert not re.search(r"^epoch=1 ", second.stdout, re.M)
    assert re.search(r"^epoch=3 ", second.stdout, re.M)
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]


def test_review_answers_train_but_never_test_or_certify(tmp_path, digits_folder):
    # Given a manifest where about 40% of the labels are review answers (picked by the model)
    from classifier.data import split_fraction, split_samples, test_set_id

    def sampling(name: str) -> str:
        return "selected" if split_fraction(f"review:{name}") < 0.4 else "random"

    channel = tmp_path / "manifest"
    write_manifest(channel, digits_folder, "label", sampling)
    random_labels = [
        (str(p), p.parent.name)
        for p in sorted(digits_folder.rglob("*.png"))
        if sampling(p.name) == "random"
    ]
    # When train.py runs with cross-fitting (one epoch: this is about which labels go where)
    result = run_training(tmp_path, {"train": channel}, {**FAST, "epochs": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    # Then the test split is drawn from the random labels only, and every random label (the
    # test split and each fold) certifies, no review answer
    expected_test = split_samples(random_labels, 0, 0.2)[2]
    assert metrics["test_set_id"] == test_set_id(expected_test)
    assert metrics["test"]["n"] == len(expected_test)
    assert metrics["threshold"]["n"] == metrics["data"]["random"] == len(random_labels)
    assert metrics["threshold"]["data"] == "cross-fit 2 folds + test"
    assert 500 < len(random_labels) < 1200  # both kinds really were there


@pytest.mark.training
def test_torchrun_two_processes_on_cpu(tmp_path, digits_folder, smoke_job):
    # Given validation and test channels of their own, and the smoke run's model as champion
    from classifier.data import load_channel, split_samples

    channels = {
        "train": tmp_path / "train",
        "validation": tmp_path / "val",
        "test": tmp_path / "test",
    }
    for split, samples in zip(
        channels.values(), split_samples(load_channel(digits_folder, ""), 0.2, 0.2), strict=True
    ):
        for path, label in samples:
            (split / label).mkdir(parents=True, exist_ok=True)
            (split / label / Path(path).name).write_bytes(Path(path).read_bytes())
    champion = smoke_job[0] / "model"
    # When two gloo processes train
    result = run_training(
        tmp_path,
        {**channels, "champion": champion},
        {**FAST, "epochs": "6"},
        launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"),
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Then one process printed the metric lines and one artifact holds both evaluations
    assert len(re.findall(r"^epoch=6 ", result.stdout, re.M)) == 1
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["champion_test"]["n"] == metrics["test"]["n"]
    assert metrics["champion_test"]["model_version"] == "dfw-test"
    assert list((tmp_path / "model").glob("*.tmp*")) == []


@pytest.mark.training
def test_small_cnn_reaches_97_percent_on_digits(tmp_path, digits_folder):
    result = run_training(
        tmp_path,
        {"train": digits_folder},
        {"arch": "small_cnn", "epochs": "15", "workers": "2", "cross-fit-folds": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.97, metrics["test"]["accuracy"]
    assert metrics["threshold"]["reached"] and metrics["threshold"]["coverage"] >= 0.85
    assert metrics["calibration"]["ece_after"] <= metrics["calibration"]["ece_before"] + 0.01


def test_fine_tune_from_the_champion_tarball(tmp_path, digits_folder, smoke_job):
    # Given the smoke run's model as model.tar.gz in the champion channel
    smoke_model = smoke_job[0] / "model"
    (tmp_path / "champion").mkdir()
    with tarfile.open(tmp_path / "champion" / "model.tar.gz", "w:gz") as tar:
        for path in smoke_model.iterdir():
            tar.add(path, arcname=path.name)
    # When a one-epoch job starts from it
    channels = {"train": digits_folder, "champion": tmp_path / "champion"}
    result = run_training(tmp_path, channels, {**FAST, "epochs": "1", "init-model": "champion"})
    # Then it starts where the champion was and evaluates it on the same test images
    assert result.returncode == 0, result.stderr[-3000:]
    assert "10/10 classes carried" in result.stdout
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    smoke = json.loads((smoke_model / "metrics.json").read_text())
    assert metrics["epochs"][0]["val_accuracy"] > smoke["epochs"][0]["val_accuracy"]
    assert metrics["champion_test"]["model_version"] == "dfw-test"
    assert metrics["champion_test"]["n"] == metrics["test"]["n"] == smoke["test"]["n"]
    assert metrics["test_set_id"] == smoke["test_set_id"]
    # and the tuning regex reads the challenger's test accuracy, not the champion's
    [regex] = [
        d["Regex"] for d in SEARCH_SPACE["metric_definitions"] if d["Name"] == "test_accuracy"
    ]
    assert "champion_test_accuracy=" in result.stdout
    matches = [
        float(m.group(1)) for line in result.stdout.splitlines() if (m := re.search(regex, line))
    ]
    assert matches == [round(metrics["test"]["accuracy"], 4)]
