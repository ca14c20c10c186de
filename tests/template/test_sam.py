"""aws-sam-cli checks (need .venv-sam; a missing venv fails with how to create it).

sam build runs the real builders without Docker (pip for the Lambda platform), so this
is also where the 250 MB unzipped limit and "the built function imports" are checked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infra.sam_sizes import LIMIT_BYTES, sizes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.sam

HANDLERS = {
    "IngestFunction": "ingest",
    "AutoLabelFunction": "autolabel",
    "HumanLabelsFunction": "human_labels",
    "ReviewExportFunction": "review_export",
    "StartTrainingFunction": "start_training",
    "PromoteFunction": "promote",
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
