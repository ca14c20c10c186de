"""Serving handlers for the AWS PyTorch inference container (and the local SageMaker endpoint).

The container loads `code/inference.py` from model.tar.gz and calls, per request,
    model_fn(model_dir) once, then input_fn(body, content_type) -> predict_fn(data, model)
    -> output_fn(prediction, accept)

Requests: one image (image/jpeg, image/png, image/gif, image/bmp, image/webp, image/tiff,
application/x-image) or a JSON batch
{"images": ["<base64>", ...]}. Response: {"model_version", "predictions": [{"label",
"confidence", "auto_label", "threshold", "ood", "top_k": [{"label", "confidence"}]}]}.
"ood" is true when the image is unlike the training data (its features are farther from every
class than the model's held-out images allow, or it is blank): such an image is never
auto-labelled, whatever its confidence; it goes to review. Models without an out-of-distribution
detector (older artifacts) answer "ood": false.
Images pass the checks ingest applies (flywheel.contracts.images: real type, header size,
at least 8x8, at most 64 M pixels, not truncated) before OpenCV decodes them.
Bad input raises InvalidInput (HTTP 400 in the container, a 4xx ModelError locally).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # code/classifier/ next to this file
from flywheel.contracts import images as image_contract  # noqa: E402  (code/flywheel/contracts)

# OpenCV's own pixel guard, for formats whose header the contract does not parse (TIFF);
# set before classifier.data imports cv2.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(image_contract.MAX_PIXELS))
from classifier import artifact, calibration, data, models, ood  # noqa: E402

try:  # the inference toolkit turns these into an HTTP status instead of a 500
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:
    _ToolkitError = Exception

# What ingest accepts (flywheel.contracts.images sniffs the real type from the bytes).
IMAGE_TYPES = {
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/bmp",
    "image/webp",
    "image/tiff",
    "application/x-image",
}
JSON_TYPE = "application/json"
MAX_REQUEST_BYTES = 25 * 1024 * 1024  # SageMaker's real-time payload limit
MAX_BATCH = image_contract.MAX_BATCH


class InvalidInput(ValueError, _ToolkitError):
    """The request is wrong (client error, HTTP 400); the message says what to fix."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.status_code, self.message, self.phrase = 400, message, message


# ----------------------------------------------------------------------------- image checks


def decode_image(blob: bytes, name: str = "image") -> np.ndarray:
    """The checks ingest applies (flywheel.contracts.images), then OpenCV's decode."""
    try:
        image_contract.check_image(blob, max_bytes=MAX_REQUEST_BYTES)
    except image_contract.InvalidImage as exc:
        raise InvalidInput(f"{name}: {exc.reason}") from None
    image = data.decode_rgb(blob)
    if image is None:
        raise InvalidInput(f"{name} is corrupt: cannot decode it")
    return image


# ----------------------------------------------------------------------------- handlers


def model_fn(model_dir: str) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        # The server runs one worker per vCPU: more intra-op threads only contend (50x slower
        # for one small image on a busy 2-core host).
        torch.set_num_threads(1)
    model, config = artifact.load_model(model_dir, device)
    return {"model": model, "config": config, "device": device}


def input_fn(request_body: bytes | str, request_content_type: str | None) -> list[np.ndarray]:
    """Decoded RGB images (HWC uint8) of the request."""
    content_type = (request_content_type or "").split(";")[0].strip().lower()
    body = request_body.encode() if isinstance(request_body, str) else bytes(request_body or b"")
    if not body:
        raise InvalidInput("empty request body")
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidInput(f"request body is {len(body)} bytes: more than {MAX_REQUEST_BYTES}")
    if content_type in IMAGE_TYPES:
        return [decode_image(body)]
    if content_type != JSON_TYPE:
        raise InvalidInput(
            f"unsupported content type {request_content_type!r}: "
            f"use {', '.join(sorted(IMAGE_TYPES))} or {JSON_TYPE}"
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("request body is not valid JSON") from None
    images = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(images, list) or not images:
        raise InvalidInput(
            'JSON body must be {"images": ["<base64>", ...]} with at least one image'
        )
    if len(images) > MAX_BATCH:
        raise InvalidInput(f"{len(images)} images in one request: at most {MAX_BATCH}")
    decoded = []
    for i, item in enumerate(images):
        if not isinstance(item, str):
            raise InvalidInput(f"images[{i}] must be a base64 string, not {type(item).__name__}")
        try:
            blob = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"images[{i}] is not valid base64") from None
        decoded.append(decode_image(blob, f"images[{i}]"))
    return decoded


@torch.no_grad()
def predict_fn(input_data: list[np.ndarray], model: dict) -> dict:
    config, device = model["config"], model["device"]
    tensors = [data.to_tensor(image, config["image_size"]) for image in input_data]
    batch = torch.stack(tensors).to(device)
    detector = config.get("ood")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        inputs = data.normalize(batch, config["mean"], config["std"])
        if detector:  # logits and features of the same forward pass
            logits, features = models.embed(model["model"], inputs)
        else:
            logits = model["model"](inputs)
    probs = calibration.softmax(logits.float().cpu().numpy(), config["temperature"])
    if detector:
        outlier = ood.is_outlier(detector, features.cpu().numpy()) | ood.is_blank(
            [t.numpy() for t in tensors]
        )
    else:
        outlier = np.zeros(len(probs), bool)
    classes, threshold, k = config["classes"], config["threshold"], config["topk"]
    predictions = []
    for row, refused in zip(probs, outlier, strict=True):
        top = np.argsort(-row)[:k]
        confidence = float(row[top[0]])
        predictions.append(
            {
                "label": classes[top[0]],
                "confidence": confidence,
                "auto_label": bool(confidence >= threshold and not refused),
                "threshold": threshold,
                "ood": bool(refused),
                "top_k": [{"label": classes[i], "confidence": float(row[i])} for i in top],
            }
        )
    return {"model_version": config["model_version"], "predictions": predictions}


def output_fn(prediction: dict, accept: str | None) -> tuple[str, str]:
    """(body, content type): the toolkit sends the body with that Content-Type."""
    accept = (accept or JSON_TYPE).split(";")[0].strip().lower()
    if accept not in (JSON_TYPE, "*/*"):
        raise InvalidInput(f"unsupported Accept {accept!r}: responses are {JSON_TYPE}")
    return json.dumps(prediction), JSON_TYPE
