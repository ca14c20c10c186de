"""The model artifact (what model.tar.gz holds) and training checkpoints.

model.tar.gz: model.pt (state dict), model_config.json, ood.json (the out-of-distribution
detector, when the config has one under "ood": kept apart because it is large), metrics.json
and code/ (inference.py, classifier/, flywheel/contracts/, and for an arch that needs a
package the inference image lacks: requirements.txt and the wheels/ it installs from). The
shapes of model_config.json and metrics.json are flywheel.contracts' (model_config, metrics).
"""

from __future__ import annotations

import io
import json
import os
import re
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
# What the PyTorch inference container must install from code/requirements.txt: only what its
# image lacks. The pytorch-inference 2.6 images (CPU and GPU, deep-learning-containers
# pytorch/inference/docker/2.6) already have torch, torchvision, numpy, scipy and
# opencv-python (cv2), so no second OpenCV is installed over the image's. Every endpoint
# checks its model_config.json with flywheel.contracts, which needs fastjsonschema (pure
# Python); efficientnet_lite0 also needs its network code (which needs only torch). The
# EfficientNet weights package is training-only (the artifact has the weights).
SERVING_REQUIREMENTS = ("fastjsonschema>=2.19,<3",)
INFERENCE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "efficientnet_lite0": ("efficientnet-lite-pytorch==0.1.0",),  # the network code
}
# The training job's source dir (/opt/ml/code) carries wheels/ when sam built it
# (training_jobs/Makefile): the model's code/ takes the ones it needs, so the endpoint installs
# offline. pip reads a relative --find-links in a requirements file relative to that file's
# folder, and the inference toolkit runs `pip install -r /opt/ml/model/code/requirements.txt`.
WHEELS = "wheels"
WHEELS_DIR = CODE_DIR / WHEELS
OFFLINE_HEADER = f"--no-index\n--find-links {WHEELS}\n"
ONLINE_HEADER = (
    "# The training source dir had no wheels/ (a local run from training_jobs/): the inference\n"
    "# container installs these from PyPI when the endpoint starts, which needs internet.\n"
)
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
        config = json.loads(_member_bytes(tar, members[model_config.FILE]))
        detector = (
            json.loads(_member_bytes(tar, members[OOD_FILE])) if OOD_FILE in members else None
        )
        buffer = io.BytesIO(_member_bytes(tar, members["model.pt"]))
    config = model_config.validate(model_config.join(config, detector))
    return config, torch.load(buffer, map_location="cpu", weights_only=True)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A regular file's content (extractfile gives None only for links and directories)."""
    handle = tar.extractfile(member)
    if handle is None:
        raise ValueError(f"{member.name} in the model archive is not a regular file")
    return handle.read()


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
    # read it with the same modules); a broken build (wheels missing) fails here too.
    metrics_contract.validate(metrics)
    model_config.validate(config)
    vendored = inference_wheels(config["arch"])
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
    write_requirements(code, config["arch"], vendored)
    # Last: its presence means a complete artifact.
    write_json(model_dir / metrics_contract.FILE, metrics)


def distribution(name: str) -> str:
    """The project name of a wheel file or a requirement line, normalized (PEP 503):
    efficientnet_lite_pytorch-0.1.0-py3-none-any.whl and efficientnet-lite-pytorch==0.1.0
    both give efficientnet-lite-pytorch."""
    if name.endswith(".whl"):
        name = name.split("-", 1)[0]  # wheel names escape "-" in the project name as "_"
    name = re.split(r"[=<>!~;\[ ]", name, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_for(arch: str) -> tuple[str, ...]:
    """What ``arch``'s endpoint installs from code/requirements.txt."""
    return SERVING_REQUIREMENTS + INFERENCE_REQUIREMENTS.get(arch, ())


def inference_wheels(arch: str) -> list[Path] | None:
    """The wheels of the source dir's wheels/ that ``arch``'s endpoint installs; None when the
    source dir has no wheels/ (training_jobs/ run locally, not built by sam).

    A wheels/ without a wheel the arch needs is a broken build: an error (before the artifact
    is written), not an endpoint that fails to start.
    """
    wheels = WHEELS_DIR
    if not wheels.is_dir():
        return None
    needed = {distribution(r) for r in requirements_for(arch)}
    found = sorted(w for w in wheels.glob("*.whl") if distribution(w.name) in needed)
    missing = needed - {distribution(w.name) for w in found}
    if missing:
        raise ValueError(
            f"{wheels} has no wheel for {', '.join(sorted(missing))}, which the {arch} endpoint "
            "installs: add it to training_jobs/requirements.txt and run sam build again"
        )
    return found


def write_requirements(code: Path, arch: str, vendored: list[Path] | None) -> None:
    """code/requirements.txt for ``arch``, and code/wheels/ with ``vendored`` (inference_wheels).

    Nothing to install: no requirements.txt at all (the toolkit then runs no pip). Wheels: the
    file installs only from code/wheels/, the endpoint needs no internet. No wheels (a local
    run): the requirements install from PyPI, as the file itself says.
    """
    requirements = requirements_for(arch)
    target = code / "requirements.txt"
    shutil.rmtree(code / WHEELS, ignore_errors=True)
    target.unlink(missing_ok=True)
    if not requirements:
        return
    if vendored is None:
        print(
            f"no {WHEELS_DIR}: the endpoint will pip-install "
            f"{', '.join(requirements)} from PyPI (needs internet); a sam-built source dir "
            "vendors them",
            flush=True,
        )
        target.write_text(ONLINE_HEADER + "\n".join(requirements) + "\n")
        return
    (code / WHEELS).mkdir()
    for wheel in vendored:
        shutil.copy2(wheel, code / WHEELS / wheel.name)
    target.write_text(OFFLINE_HEADER + "\n".join(requirements) + "\n")


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
