"""Which PyTorch container image an instance type runs (pure).

The template's PyTorchImages mapping carries a CPU and a GPU image per region for training
and for inference; the function picks one from the instance type, as the SageMaker SDK's
``image_uris.retrieve`` does: ``ml.p*`` and ``ml.g*`` are GPU families, everything else
(``ml.m*``, ``ml.c*``, ``ml.r*``, ``ml.t*``) is CPU. Trainium and Inferentia (``ml.trn*``,
``ml.inf*``) need AWS Neuron images, which have no PyTorch 2.6 py312 build: those need an
explicit image. A non-empty override (the TrainingImageUri / InferenceImageUri parameters)
always wins.
"""

from __future__ import annotations

import re
from typing import Literal

from flywheel.errors import ConfigurationError

Processor = Literal["cpu", "gpu", "neuron"]

_FAMILY = re.compile(r"^ml\.([a-z]+)\d")
GPU_FAMILY_PREFIXES = ("p", "g")
NEURON_FAMILY_PREFIXES = ("trn", "inf")


def processor(instance_type: str) -> Processor:
    """``ml.g5.xlarge`` -> gpu, ``ml.m5.xlarge`` -> cpu, ``ml.trn1.2xlarge`` -> neuron."""
    match = _FAMILY.match(instance_type.strip().lower())
    if not match:
        raise ConfigurationError(f"not a SageMaker instance type: {instance_type!r}")
    family = match.group(1)
    if family.startswith(NEURON_FAMILY_PREFIXES):
        return "neuron"
    return "gpu" if family.startswith(GPU_FAMILY_PREFIXES) else "cpu"


def container_image(
    instance_type: str | None, cpu_image: str, gpu_image: str, override: str = ""
) -> str:
    """The image to run on ``instance_type`` (None: serverless inference, which is CPU)."""
    if override.strip():
        return override.strip()
    kind = processor(instance_type) if instance_type else "cpu"
    if kind == "neuron":
        raise ConfigurationError(
            f"{instance_type} needs an AWS Neuron image, and there is no PyTorch 2.6 py312 "
            "Neuron image: set TrainingImageUri / InferenceImageUri, or pick an ml.g*/ml.p* "
            "(GPU) or ml.m*/ml.c* (CPU) instance type"
        )
    image = gpu_image if kind == "gpu" else cpu_image
    if not image:
        raise ConfigurationError(
            f"no {kind.upper()} PyTorch image for this region in the template's PyTorchImages "
            "mapping: set TrainingImageUri / InferenceImageUri"
        )
    return image
