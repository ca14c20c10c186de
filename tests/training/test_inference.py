"""inference.py: the request protocol, and a clear client error for every kind of bad input."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import struct
import tarfile
import zlib
from pathlib import Path

import cv2
import inference
import numpy as np
import pytest
import torch
from classifier import artifact, ood
from classifier.models import IMAGENET_MEAN, IMAGENET_STD, build_model
from flywheel.contracts import metrics as metrics_contract
from flywheel.contracts import model_config
from inference import InvalidInput


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained small_cnn artifact: enough to exercise the protocol."""
    model_dir = tmp_path_factory.mktemp("artifact")
    torch.manual_seed(0)
    torch.save(build_model("small_cnn", 3).state_dict(), model_dir / "model.pt")
    config = {
        "arch": "small_cnn",
        "classes": ["cat", "dog", "fox"],
        "image_size": 32,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "temperature": 1.5,
        "threshold": 0.4,
        "target_accuracy": 0.95,
        "model_version": "dfw-v1",
        "topk": 2,
    }
    (model_dir / "model_config.json").write_text(json.dumps(config))
    return inference.model_fn(str(model_dir))


def encode(ext: str, shape=(48, 64, 3)) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    return cv2.imencode(ext, image)[1].tobytes()


def serve(body, content_type, model, accept="application/json") -> dict:
    response, content = inference.output_fn(
        inference.predict_fn(inference.input_fn(body, content_type), model), accept
    )
    assert content == "application/json"
    return json.loads(response)


@pytest.mark.parametrize(
    ("ext", "content_type"),
    [(".jpg", "image/jpeg"), (".png", "image/png"), (".png", "application/x-image")],
)
def test_single_image_gets_one_prediction(model, ext, content_type):
    response = serve(encode(ext), content_type, model)
    assert response["model_version"] == "dfw-v1"
    [prediction] = response["predictions"]
    assert prediction["label"] in {"cat", "dog", "fox"}
    assert prediction["auto_label"] == (prediction["confidence"] >= 0.4)
    assert prediction["threshold"] == 0.4
    assert prediction["ood"] is False  # an artifact without a detector refuses nothing
    assert [t["label"] for t in prediction["top_k"]][0] == prediction["label"] and len(
        prediction["top_k"]
    ) == 2


def test_json_batch_keeps_the_order_of_the_images(model):
    images = [encode(".png", (32, 32, 3)), encode(".jpg", (200, 100, 3)), encode(".png", (8, 8, 1))]
    singles = [
        serve(image, "image/png" if i != 1 else "image/jpeg", model)["predictions"][0]
        for i, image in enumerate(images)
    ]
    body = json.dumps({"images": [base64.b64encode(image).decode() for image in images]})
    batch = serve(body, "application/json; charset=utf-8", model)["predictions"]
    assert [p["label"] for p in batch] == [p["label"] for p in singles]
    assert [p["confidence"] for p in batch] == pytest.approx(
        [p["confidence"] for p in singles], abs=1e-5
    )


def png_with_size(width: int, height: int) -> bytes:
    """A real PNG whose IHDR claims another size (the CRC is fixed so decoders believe it)."""
    blob = bytearray(encode(".png", (4, 4, 3)))
    blob[16:24] = struct.pack(">II", width, height)
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    return bytes(blob)


def jpeg_with_size(width: int, height: int) -> bytes:
    blob = bytearray(encode(".jpg", (16, 16, 3)))
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(blob)


def b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


BAD_INPUTS = {
    "empty body": (b"", "image/png", "empty request body"),
    "no body": (None, "image/jpeg", "empty request body"),
    "text content type": (b"hello", "text/plain", "unsupported content type"),
    "no content type": (encode(".png"), None, "unsupported content type"),
    "not an image": (b"hello, no image here", "application/x-image", "not an image"),
    "corrupt png": (encode(".png")[:40] + b"\x00" * 40, "image/png", "corrupt"),
    "truncated jpeg": (encode(".jpg")[:60], "image/jpeg", "corrupt JPEG"),
    "png bomb header": (png_with_size(30000, 30000), "image/png", "decompression bomb"),
    "jpeg bomb header": (jpeg_with_size(65000, 60000), "image/jpeg", "decompression bomb"),
    "zero-sized png": (png_with_size(0, 10), "image/png", "too small (0x10)"),
    "1x1 png": (encode(".png", (1, 1, 3)), "image/png", "too small (1x1)"),
    "invalid json": (b"{images: [", "application/json", "not valid JSON"),
    "json list": (json.dumps([b64(encode(".png"))]), "application/json", '{"images"'),
    "json no images": (json.dumps({"image": b64(encode(".png"))}), "application/json", '{"images"'),
    "json empty batch": (json.dumps({"images": []}), "application/json", "at least one image"),
    "json number": (
        json.dumps({"images": [b64(encode(".png")), 7]}),
        "application/json",
        "images[1] must be a base64 string",
    ),
    "json bad base64": (
        json.dumps({"images": ["not base64!"]}),
        "application/json",
        "images[0] is not valid base64",
    ),
    "json corrupt image": (
        json.dumps({"images": [b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)]}),
        "application/json",
        "images[0]",
    ),
    "json too many": (
        json.dumps({"images": [b64(encode(".png", (8, 8, 3)))] * 65}),
        "application/json",
        "at most 64",
    ),
    "oversized body": (
        b"\xff\xd8" + b"\x00" * (25 * 1024 * 1024),
        "image/jpeg",
        "more than 26214400",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_client_error_naming_the_problem(model, case):
    body, content_type, message = BAD_INPUTS[case]
    with pytest.raises(InvalidInput, match=re.escape(message)) as error:
        serve(body, content_type, model)
    assert error.value.status_code == 400 and isinstance(error.value, ValueError)


def test_real_decompression_bomb_is_refused_before_decoding():
    # ~80 KB that decodes to 81 Mpixel: over the limit ingest applies too (64 Mpixel)
    bomb = cv2.imencode(".png", np.zeros((9000, 9000), np.uint8))[1].tobytes()
    assert len(bomb) < 500_000
    with pytest.raises(InvalidInput, match="9000x9000"):
        inference.input_fn(bomb, "image/png")


def test_unsupported_accept_is_a_client_error(model):
    prediction = inference.predict_fn(inference.input_fn(encode(".png"), "image/png"), model)
    with pytest.raises(InvalidInput, match="Accept"):
        inference.output_fn(prediction, "text/csv")
    assert json.loads(inference.output_fn(prediction, "*/*")[0])["predictions"]


def test_a_detector_travels_in_ood_json_and_blank_images_are_never_auto_labelled(
    tmp_path, monkeypatch
):
    # Given an artifact saved with an out-of-distribution detector in its config
    monkeypatch.setattr(metrics_contract, "validate", lambda doc: None)  # not under test
    rng = np.random.default_rng(0)
    detector = ood.fit(
        rng.normal(size=(200, 64)), rng.integers(0, 3, 200), rng.normal(size=(50, 64))
    )
    config = {
        "arch": "small_cnn", "classes": ["cat", "dog", "fox"], "image_size": 32,
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "temperature": 1.0, "threshold": 0.0,
        "target_accuracy": 0.95, "model_version": "dfw-v2", "topk": 2, "ood": detector,
    }  # fmt: skip
    torch.manual_seed(0)
    artifact.save_artifact(tmp_path / "model", build_model("small_cnn", 3).state_dict(), config, {})
    # Then the detector sits in ood.json, and reading the artifact gives the config back whole
    assert "ood" not in json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert json.loads((tmp_path / "model" / "ood.json").read_text()) == detector
    assert artifact.read_artifact(tmp_path / "model")[0] == config
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for path in (tmp_path / "model").iterdir():
            tar.add(path, arcname=path.name)
    assert artifact.read_artifact(tmp_path / "model.tar.gz")[0]["ood"] == detector
    # When it serves a blank image (threshold 0: everything else would be auto-labelled)
    served = inference.model_fn(str(tmp_path / "model"))
    blank = cv2.imencode(".png", np.full((32, 32, 3), 255, np.uint8))[1].tobytes()
    [prediction] = serve(blank, "image/png", served)["predictions"]
    assert prediction["ood"] is True and prediction["auto_label"] is False


def test_an_artifact_whose_config_breaks_the_contract_fails_at_load_saying_why(model, tmp_path):
    # Given an artifact whose model_config.json lacks the calibration temperature
    torch.save(model["model"].state_dict(), tmp_path / "model.pt")
    config = {k: v for k, v in model["config"].items() if k != "temperature"}
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    # When the endpoint loads it, Then it refuses at once with the reason, not per request
    with pytest.raises(model_config.InvalidModelConfig, match=r"must contain \['temperature'\]"):
        inference.model_fn(str(tmp_path))


def test_the_serving_container_installs_the_network_code_the_arch_needs(tmp_path, monkeypatch):
    # (training_jobs/ as is: no wheels/, so from PyPI; test_artifact_requirements has wheels)
    monkeypatch.setattr(metrics_contract, "validate", lambda doc: None)
    config = {
        "classes": ["cat", "dog"], "image_size": 32, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "temperature": 1.0, "threshold": 0.5, "target_accuracy": 0.95, "model_version": "dfw-v3",
        "topk": 2,
    }  # fmt: skip
    for arch in ("small_cnn", "efficientnet_lite0"):
        artifact.save_artifact(tmp_path / arch, {}, {**config, "arch": arch}, {})
    # the image has all but the contracts' validator
    small = (tmp_path / "small_cnn" / "code" / "requirements.txt").read_text()
    assert small.splitlines()[-1] == "fastjsonschema>=2.19,<3"
    lite = (tmp_path / "efficientnet_lite0" / "code" / "requirements.txt").read_text()
    assert "efficientnet-lite-pytorch==0.1.0" in lite and "opencv" not in lite


def _ingest_codec():
    path = Path(__file__).resolve().parents[2] / "functions" / "ingest" / "image_codec.py"
    spec = importlib.util.spec_from_file_location("image_codec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ingest_and_the_endpoint_accept_and_refuse_the_same_images():
    from flywheel.contracts.images import InvalidImage, check_image

    codec = _ingest_codec()
    jpeg = encode(".jpg", (64, 64, 3))
    zeroed = bytearray(jpeg)
    zeroed[20:300] = bytes(280)
    corpus = {
        "8x8 png": encode(".png", (8, 8, 3)),
        "64x64 jpeg": jpeg,
        "bmp": encode(".bmp", (16, 16, 3)),
        "webp": encode(".webp", (16, 16, 3)),
        "tiff": encode(".tiff", (16, 16, 3)),
        "1x1 png": encode(".png", (1, 1, 3)),
        "7x100 png": encode(".png", (100, 7, 3)),
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "jpeg header zeroed": bytes(zeroed),
        "bomb": cv2.imencode(".png", np.zeros((9000, 9000), np.uint8))[1].tobytes(),
        "text": b"hello, no image here",
    }

    def ingest_accepts(blob: bytes) -> bool:
        try:
            check_image(blob, max_bytes=10_000_000)
            codec.normalise_png(blob, 512)
        except InvalidImage:
            return False
        return True

    def endpoint_accepts(blob: bytes) -> bool:
        try:
            inference.input_fn(blob, "application/x-image")
        except InvalidInput:
            return False
        return True

    verdicts = {name: (ingest_accepts(b), endpoint_accepts(b)) for name, b in corpus.items()}
    assert verdicts == {
        name: (expected, expected)
        for name, expected in {
            "8x8 png": True,
            "64x64 jpeg": True,
            "bmp": True,
            "webp": True,
            "tiff": True,
            "1x1 png": False,
            "7x100 png": False,
            "truncated jpeg": False,
            "jpeg header zeroed": False,
            "bomb": False,
            "text": False,
        }.items()
    }
