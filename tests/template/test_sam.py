"""aws-sam-cli checks (need .venv-sam; a missing venv fails with how to create it).

sam build runs the real builders without Docker (pip for the Lambda platform), so this
is also where the 250 MB unzipped limit and "the built function imports" are checked.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from flywheel.packaging import package_source_dir

from dataflywheel.sam_sizes import LIMIT_BYTES, sizes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.sam

HANDLERS = {
    "IngestFunction": "ingest",
    "AutoLabelFunction": "autolabel",
    "HumanLabelsFunction": "human_labels",
    "ReviewExportFunction": "review_export",
    "StartTrainingFunction": "start_training",
    "PromoteFunction": "promote",
    "RolloutFunction": "rollout",
    "TeardownFunction": "teardown",
}


def run(cmd: list, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_sam_validate_lint(sam_bin, sam_env):
    done = run([str(sam_bin), "validate", "--lint", "--region", "us-east-1"], sam_env)
    assert "is a valid SAM Template" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def built(sam_bin, sam_env, tmp_path_factory) -> Path:
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    run([str(sam_bin), "build", "--region", "us-east-1", "--build-dir", str(build_dir)], sam_env)
    return build_dir


def test_every_built_function_with_its_layers_is_under_250_mb(built):
    for function, parts in sizes(built).items():
        assert sum(parts.values()) < LIMIT_BYTES, (function, parts)


@pytest.mark.parametrize("logical_id", sorted(HANDLERS))
def test_built_function_imports_on_the_lambda_python(built, sam_env, logical_id):
    python = shutil.which("python3.12", path=sam_env["PATH"])
    if python is None or subprocess.run([python, "-c", ""]).returncode != 0:
        pytest.fail(
            "python3.12 (the functions' Lambda runtime) is needed on PATH to import the "
            "cp312 build; install it (e.g. pyenv install 3.12) and rerun"
        )
    module = HANDLERS[logical_id]
    code = f"import {module}; assert callable({module}.handler)"
    if module == "ingest":  # the platform wheels of opencv/numpy load and decode
        code += "; import image_codec, numpy, cv2"
        code += "; cv2.imencode('.png', numpy.zeros((8, 8, 3), 'uint8'))"
    env = {
        "PATH": sam_env["PATH"],
        "LAMBDA_TASK_ROOT": str(built / logical_id),
        "POWERTOOLS_TRACE_DISABLED": "1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": f"{built / logical_id}:{built / 'SharedLayer' / 'python'}",
    }
    run([python, "-c", code], env, timeout=120)


# What the pytorch-training 2.6 py312 image already has that requirements.txt relies on.
IMAGE_PROVIDES = {"torch": "2.6.0", "numpy": "1.26.4"}
CONTAINER_PLATFORM = [
    *("--platform", "manylinux2014_x86_64", "--implementation", "cp"),
    *("--python-version", "3.12", "--only-binary=:all:"),
]


def stand_in_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel that only declares ``name==version``: the image's installed copy."""
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        whl.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{dist}/RECORD", "")


def offline_install_report(source_dir: Path, work: Path) -> dict:
    """pip's resolution of the packaged requirements.txt as the container runs it, offline.

    The tarball start_training publishes is unpacked, then pip resolves its requirements.txt
    for the container's platform with no index (the file's own ``--no-index``, and the
    command's) and the image's torch/numpy as stand-ins: anything missing from wheels/ fails.
    """
    blob, _ = package_source_dir(source_dir)
    code, image = work / "code", work / "image"
    code.mkdir(), image.mkdir()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(code, filter="data")
    for name, version in IMAGE_PROVIDES.items():
        stand_in_wheel(image, name, version)
    report = work / "report.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"),
            *("--no-index", "--find-links", str(image), *CONTAINER_PLATFORM),
            *("--target", str(work / "site"), "--report", str(report), "--quiet"),
            *("-r", "requirements.txt"),
        ],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(report.read_text())


def test_the_packaged_training_code_installs_nothing_from_the_network(built, tmp_path):
    layer = built / "TrainingCodeLayer"
    report = offline_install_report(layer, tmp_path)
    sources = {
        i["metadata"]["name"].lower(): Path(i["download_info"]["url"].removeprefix("file://"))
        for i in report["install"]
    }
    image = {n for n, path in sources.items() if path.parent == tmp_path / "image"}
    assert image <= set(IMAGE_PROVIDES), image  # only what the image has comes from outside
    assert {"opencv-python-headless", "efficientnet-lite-pytorch"} <= set(sources)
    assert all(
        p.parent == tmp_path / "code" / "wheels" for n, p in sources.items() if n not in image
    )
    assert (layer / "requirements.txt").read_text().startswith("--no-index\n--find-links wheels\n")


def test_the_model_s_code_installs_offline_from_the_packaged_wheels(built, tmp_path, monkeypatch):
    """code/ of an efficientnet_lite0 model trained from the packaged source dir (its
    /opt/ml/code/wheels is the layer's), installed as the inference toolkit does:
    ``pip install -r /opt/ml/model/code/requirements.txt`` from elsewhere, torch the image's."""
    from classifier import artifact

    monkeypatch.setattr(artifact, "WHEELS_DIR", built / "TrainingCodeLayer" / "wheels")
    code, image = tmp_path / "model" / "code", tmp_path / "image"
    code.mkdir(parents=True), image.mkdir()
    artifact.write_requirements(
        code, "efficientnet_lite0", artifact.inference_wheels("efficientnet_lite0")
    )
    for name, version in IMAGE_PROVIDES.items():
        stand_in_wheel(image, name, version)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-r", str(code / "requirements.txt")),
            *("--dry-run", "--ignore-installed", "--find-links", str(image)),
            *(*CONTAINER_PLATFORM, "--target", str(tmp_path / "site"), "--report", str(report)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Looking in indexes" not in done.stdout  # the file's own --no-index
    sources = {
        i["metadata"]["name"].lower(): Path(
            i["download_info"]["url"].removeprefix("file://")
        ).parent
        for i in json.loads(report.read_text())["install"]
    }
    assert sources == {
        "efficientnet-lite-pytorch": code / "wheels",
        "fastjsonschema": code / "wheels",
        "torch": image,
    }
