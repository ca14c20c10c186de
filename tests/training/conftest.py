"""Fixtures for the training tier: a digits ImageFolder and train.py run as SageMaker runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.datasets import load_digits

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "training_jobs" / "train.py"
HELD_OUT = 297  # the last digits never reach a training channel


def digit_png(image: np.ndarray) -> bytes:
    """An 8x8 digit (values 0..16) as a 32x32 grey PNG."""
    upscaled = cv2.resize(
        (image * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR
    )
    return cv2.imencode(".png", upscaled)[1].tobytes()


@pytest.fixture(scope="session")
def digits():
    d = load_digits()
    return d.images, d.target


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory, digits) -> Path:
    """ImageFolder `<class>/<image>.png` of all digits but the held-out ones."""
    root = tmp_path_factory.mktemp("digits") / "train"
    images, targets = digits
    for i in range(len(images) - HELD_OUT):
        (root / str(targets[i])).mkdir(parents=True, exist_ok=True)
        (root / str(targets[i]) / f"digit-{i:04d}.png").write_bytes(digit_png(images[i]))
    return root


@pytest.fixture(scope="session")
def held_out(digits) -> list[tuple[bytes, str]]:
    images, targets = digits
    return [
        (digit_png(images[i]), str(targets[i])) for i in range(len(images) - HELD_OUT, len(images))
    ]


def sagemaker_env(job_dir: Path, channels: dict[str, Path], job_name: str = "dfw-test") -> dict:
    """The environment the SageMaker training toolkit gives the entry point (CPU instance)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(
        SM_MODEL_DIR=str(job_dir / "model"),
        SM_OUTPUT_DATA_DIR=str(job_dir / "output" / "data"),
        SM_OUTPUT_DIR=str(job_dir / "output"),
        SM_NUM_GPUS="0",
        TRAINING_JOB_NAME=job_name,
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
    )
    return env


def hyperparameter_flags(hyperparameters: dict[str, str]) -> list[str]:
    return [item for key, value in hyperparameters.items() for item in (f"--{key}", str(value))]


def run_training(
    job_dir, channels, hyperparameters, launcher=(sys.executable,), timeout=300, **popen
):
    """train.py as a subprocess, hyperparameters as flags, paths from SM_* variables."""
    command = [*launcher, str(TRAIN_PY), *hyperparameter_flags(hyperparameters)]
    return subprocess.run(
        command,
        env=sagemaker_env(job_dir, channels),
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )
