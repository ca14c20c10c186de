"""The model artifact (what model.tar.gz holds) and training checkpoints.

model.tar.gz: model.pt (state dict), model_config.json, ood.json (the out-of-distribution
detector, when the config has one under "ood": kept apart because it is large), metrics.json
and code/ (inference.py, classifier/, flywheel/contracts/, requirements.txt). The shapes of
model_config.json and metrics.json are flywheel.contracts' (model_config, metrics).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import flywheel
import flywheel.contracts
import torch
from flywheel.contracts import metrics as metrics_contract
from flywheel.contracts import model_config

from classifier.models import build_model

CODE_DIR = Path(__file__).resolve().parent.parent  # training_jobs/: inference.py and classifier/
# What the PyTorch inference container installs from code/requirements.txt (torch, numpy and
# scipy come with the image; OpenCV 4.11 accepts NumPy 1.x and 2.x, 4.12 requires 2.x).
INFERENCE_REQUIREMENTS = "opencv-python-headless>=4.8,<4.12\n"
ARCH_REQUIREMENTS = {"efficientnet_lite0": "efficientnet-lite-pytorch==0.1.0\n"}  # network code
OOD_FILE = model_config.OOD_FILE


# ----------------------------------------------------------------------------- reading


def find_artifact(path: str | Path) -> Path:
    """A model.tar.gz, a directory holding one, or an extracted artifact directory."""
    path = Path(path)
    if path.is_dir() and not (path / model_config.FILE).is_file():
        tarballs = sorted(path.glob("*.tar.gz"))
        if len(tarballs) != 1:
            raise ValueError(f"{path} holds neither {model_config.FILE} nor exactly one *.tar.gz")
        path = tarballs[0]
    if not path.exists():
        raise ValueError(f"model artifact {path} does not exist")
    return path


def read_artifact(path: str | Path) -> tuple[dict, dict]:
    """(model_config, state_dict) of an artifact, without extracting the tarball; the config
    is whole (ood.json under "ood") and valid (flywheel.contracts.model_config)."""
    path = find_artifact(path)
    if path.is_dir():
        config = json.loads((path / model_config.FILE).read_text())
        ood_path = path / OOD_FILE
        detector = json.loads(ood_path.read_text()) if ood_path.is_file() else None
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        return model_config.validate(model_config.join(config, detector)), state
    with tarfile.open(path, "r:*") as tar:
        members = {
            Path(m.name).as_posix().removeprefix("./"): m for m in tar.getmembers() if m.isfile()
        }
        if model_config.FILE not in members or "model.pt" not in members:
            raise ValueError(f"{path} lacks {model_config.FILE} or model.pt")
        config = json.load(tar.extractfile(members[model_config.FILE]))
        detector = json.load(tar.extractfile(members[OOD_FILE])) if OOD_FILE in members else None
        buffer = io.BytesIO(tar.extractfile(members["model.pt"]).read())
    config = model_config.validate(model_config.join(config, detector))
    return config, torch.load(buffer, map_location="cpu", weights_only=True)


def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, dict]:
    config, state = read_artifact(path)
    model = build_model(config["arch"], len(config["classes"]))
    model.load_state_dict(state)
    model.to(device, memory_format=torch.channels_last).eval()
    return model, config


# ----------------------------------------------------------------------------- writing


def write_json(path: Path, data: dict, indent: int | None = 2) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent) + "\n")
    os.replace(tmp, path)


def save_artifact(model_dir: str | Path, state: dict, config: dict, metrics: dict) -> None:
    """model.pt, model_config.json, ood.json (config["ood"], if any), metrics.json and code/ in
    `model_dir` (SageMaker tars it). read_artifact gives the config back whole."""
    # Before writing anything: a bad artifact must never reach the gate or the endpoint (they
    # read it with the same modules).
    metrics_contract.validate(metrics)
    model_config.validate(config)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, model_dir / "model.pt")
    served, detector = model_config.split(config)
    write_json(model_dir / model_config.FILE, served)
    if detector:
        write_json(model_dir / OOD_FILE, detector, indent=None)
    else:
        (model_dir / OOD_FILE).unlink(missing_ok=True)
    code = model_dir / "code"
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(
        CODE_DIR / "classifier", code / "classifier", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(CODE_DIR / "inference.py", code / "inference.py")
    copy_contracts(code)
    (code / "requirements.txt").write_text(
        INFERENCE_REQUIREMENTS + ARCH_REQUIREMENTS.get(config["arch"], "")
    )
    # Last: its presence means a complete artifact.
    write_json(model_dir / metrics_contract.FILE, metrics)


def copy_contracts(code: Path) -> None:
    """code/flywheel/contracts/: the definitions inference.py shares with the functions.

    Copied from where this process imports them: the training sourcedir (which
    ``flywheel.packaging.package_source_dir`` gives them) or, locally, functions/shared.
    """
    target = code / "flywheel"
    shutil.copytree(
        Path(flywheel.contracts.__file__).parent,
        target / "contracts",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy2(Path(flywheel.__file__), target / "__init__.py")


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str | Path, checkpoint: dict) -> None:
    """Temp file then os.replace: an interruption leaves the previous checkpoint intact."""
    path = Path(directory) / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"checkpoint.pt.tmp{os.getpid()}")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def load_checkpoint(directory: str | Path | None) -> dict | None:
    path = Path(directory) / "checkpoint.pt" if directory else None
    if path is None or not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
