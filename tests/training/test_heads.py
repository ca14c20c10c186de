"""The frozen-backbone learner: FlexMatch's thresholds, FixMatch on features, the head folded into
the served network, and the choice between learners."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from classifier import heads, learners, models
from classifier.engine import Run
from conftest import run_training

CLASSES = [str(c) for c in range(10)]


def args(**kw) -> argparse.Namespace:
    defaults = dict(epochs=30, patience=0, batch_size=16, weight_decay=1e-4, pseudo_label=True,
                    pseudo_threshold=0.95, augment=0.5, workers=0, seed=0, pretrained=False,
                    arch="auto", freeze_backbone=True)  # fmt: skip
    return argparse.Namespace(**{**defaults, **kw})


def run_for(arch: str, size: int, **kw) -> Run:
    lines: list[str] = []
    run = Run(args(**kw), torch.device("cpu"), False, 0, False, CLASSES, arch, size, lines.append)
    run.lines = lines  # type: ignore[attr-defined]
    return run


class Bank:
    """A FeatureBank's interface over given features (no backbone): plain and strong views."""

    def __init__(self, plain: np.ndarray, strong: np.ndarray, paths: list[str]):
        self.row = {p: i for i, p in enumerate(paths)}
        self.plain, self.strong = plain.astype(np.float32), strong.astype(np.float32)
        self.mean, self.std = self.plain.mean(0), self.plain.std(0) + 1e-6

    def __call__(self, paths, view="plain"):
        table = self.plain if view == "plain" else self.strong
        return table[[self.row[p] for p in paths]]

    def labeled_views(self, paths):
        return self(paths)[None]


def test_flexmatch_lowers_the_threshold_of_a_class_the_head_rarely_claims():
    # Given 100 confident claims of class 0, 25 of class 1, none of class 2, 10 unsure images
    confidence = np.array([0.99] * 125 + [0.5] * 10)
    predicted = np.array([0] * 100 + [1] * 25 + [2] * 10)
    tau = heads.flexmatch_thresholds(confidence, predicted, 3, 0.95)
    # Then the best-learned class keeps the full threshold and the others get lower ones:
    # beta = (1, 0.25, 0) and M(beta) = beta / (2 - beta)
    np.testing.assert_allclose(tau, [0.95, 0.95 * 0.25 / 1.75, 0.0])


def test_flexmatch_warms_up_while_most_images_are_unclaimed():
    # Given a head that is confident on 20 images of 1,000 (the start of training)
    confidence = np.array([0.99] * 20 + [0.3] * 980)
    predicted = np.zeros(1000, int)
    tau = heads.flexmatch_thresholds(confidence, predicted, 2, 0.95)
    # Then the unused images dominate the normaliser: even class 0's threshold is low
    assert tau[0] == pytest.approx(0.95 * (20 / 980) / (2 - 20 / 980))
    assert tau[1] == 0.0


def clusters(rng, per_class: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(0, 1, (10, 32))
    y = np.repeat(np.arange(10), per_class)
    return centres[y] + rng.normal(0, spread, (len(y), 32)), y


def test_fixmatch_on_features_uses_the_unlabeled_pool():
    # Given 10 overlapping classes, 2 labels each, 60 validation labels and 1,500 unlabeled
    rng = np.random.default_rng(0)
    x, y = clusters(rng, 160, 1.6)
    paths = [f"img-{i}" for i in range(len(y))]
    order = rng.permutation(len(y))
    labeled = [int(i) for c in range(10) for i in order[y[order] == c][:2]]
    rest = [int(i) for i in order if i not in labeled]
    val, pool = rest[:60], rest[60:]
    bank = Bank(x, x + rng.normal(0, 0.5, x.shape), paths)  # strong view: a noisier copy
    samples = [(paths[i], CLASSES[y[i]]) for i in labeled]
    val_samples = [(paths[i], CLASSES[y[i]]) for i in val]
    truth = y[pool]

    def pool_accuracy(pseudo_label: bool) -> tuple[float, int]:
        run = run_for("small_cnn", 32, pseudo_label=pseudo_label, epochs=15)
        bank.backbone = models.build_model("small_cnn", 10)  # what network_state folds into
        result = heads.train_head(run, "final", bank, samples, val_samples,
                                  [paths[i] for i in pool], seed=0)  # fmt: skip
        logits = heads.head_logits(bank, result["best"], [paths[i] for i in pool])
        return float((logits.argmax(1) == truth).mean()), result["pseudo"]

    supervised, none = pool_accuracy(False)
    fixmatch, pseudo = pool_accuracy(True)
    # Then the pool's pseudo-labels train the head, and it labels the pool better for it
    assert none == 0 and pseudo > 500
    assert fixmatch > supervised + 0.05, (supervised, fixmatch)  # measured: 0.63 -> 0.75


def test_the_served_network_gives_the_heads_logits(tmp_path):
    # Given a feature bank of an EfficientNet-Lite0 (random weights: nothing to download) and a
    # head trained on it, with the bank's standardisation
    run = run_for(models.EFFICIENTNET_LITE0, 32)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    backbone = models.build_model(models.EFFICIENTNET_LITE0, 10)
    bank = heads.FeatureBank(run, backbone, paths[:4], paths, weak_views=1)
    head = {"weight": torch.randn(10, bank.plain.shape[1]), "bias": torch.randn(10)}
    state = heads.network_state(backbone, head, torch.from_numpy(bank.mean),
                                torch.from_numpy(bank.std))  # fmt: skip
    # When the folded state is loaded into the plain architecture and run on the images
    served = models.build_model(models.EFFICIENTNET_LITE0, 10)
    served.load_state_dict(state)
    logits, _ = run.logits(served.eval(), run.unlabeled(paths))
    # Then it computes what the head computed on standardised features
    expected = ((bank(paths) - bank.mean) / bank.std) @ head["weight"].numpy().T
    expected += head["bias"].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(heads.head_logits(bank, state, paths), expected, atol=1e-3)


def test_auto_chooses_the_more_accurate_learner_then_the_lower_loss():
    def result(accuracy, loss):
        return {"best_epoch": 2, "history": [
            {"epoch": 1, "val_accuracy": 0.1, "val_loss": 9.0},
            {"epoch": 2, "val_accuracy": accuracy, "val_loss": loss}]}  # fmt: skip

    chosen, scores = learners.choose({"small_cnn": result(0.8, 0.5),
                                      "efficientnet_lite0": result(0.9, 0.7)})  # fmt: skip
    assert chosen == "efficientnet_lite0"
    assert scores["small_cnn"] == {"val_accuracy": 0.8, "val_loss": 0.5}
    chosen, _ = learners.choose({"small_cnn": result(0.9, 0.5),
                                 "efficientnet_lite0": result(0.9, 0.7)})  # fmt: skip
    assert chosen == "small_cnn"


def test_which_learners_a_job_trains():
    assert learners.candidate_archs(args(arch="auto")) == ["small_cnn", "efficientnet_lite0"]
    assert learners.candidate_archs(args(arch="resnet18")) == ["resnet18"]
    # auto's pretrained candidate is a frozen head; a named arch is one only when asked for
    assert learners.is_head("efficientnet_lite0", args(arch="auto"))
    assert not learners.is_head("small_cnn", args(arch="auto"))
    assert not learners.is_head("resnet18", args(arch="resnet18"))
    assert learners.is_head("resnet18", args(arch="resnet18", pretrained=True))
    assert not learners.is_head("resnet18", args(arch="resnet18", pretrained=True,
                                                 freeze_backbone=False))  # fmt: skip


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory, digits_folder) -> Path:
    """40 digits of each class from the digits ImageFolder: a job of a minute."""
    root = tmp_path_factory.mktemp("few-digits")
    for folder in sorted(digits_folder.iterdir()):
        (root / folder.name).mkdir()
        for image in sorted(folder.iterdir())[:40]:
            (root / folder.name / image.name).write_bytes(image.read_bytes())
    return root


@pytest.fixture(scope="module")
def test_channel(tmp_path_factory, held_out) -> Path:
    """The held-out digits as a test channel (ImageFolder: random labels)."""
    root = tmp_path_factory.mktemp("test-channel")
    for i, (png, label) in enumerate(held_out):
        (root / label).mkdir(exist_ok=True)
        (root / label / f"held-{i:03d}.png").write_bytes(png)
    return root


def served_accuracy(model_dir: Path, held_out) -> float:
    import inference

    model = inference.model_fn(str(model_dir))
    batch = [inference.decode_image(png) for png, _ in held_out]
    predictions = inference.predict_fn(batch, model)["predictions"]
    return sum(
        p["label"] == label for p, (_, label) in zip(predictions, held_out, strict=True)
    ) / len(held_out)


def test_auto_trains_both_learners_and_says_which_one_serves(tmp_path, few_digits, test_channel):
    # Given digits and the default --arch auto (both learners at 32 px, to keep it short)
    flags = {"epochs": "3", "image-size": "32", "workers": "0", "cross-fit-folds": "2"}
    result = run_training(tmp_path, {"train": few_digits, "test": test_channel}, flags)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    config = json.loads((tmp_path / "model" / "model_config.json").read_text())
    # Then metrics.json names both candidates with their validation figures and the one chosen
    learner = metrics["learner"]
    assert set(learner["candidates"]) == {"small_cnn", "efficientnet_lite0"}
    best = max(
        learner["candidates"].items(), key=lambda kv: (kv[1]["val_accuracy"], -kv[1]["val_loss"])
    )
    assert learner["chosen"] == best[0] == metrics["arch"] == config["arch"]
    assert "highest validation accuracy" in learner["why"]
    assert f"learner chosen: {best[0]}" in result.stdout
    # and the certificate paid for the choice: two families share delta
    assert metrics["threshold"]["families"] == 2
    assert re.search(r"^fold 2/2: \d+ held-out random labels", result.stdout, re.M)


def test_a_frozen_backbone_head_serves_what_it_certified(
    tmp_path, few_digits, test_channel, held_out
):
    # Given a head on EfficientNet-Lite0's ImageNet features (the package's weights, offline)
    flags = {"arch": "efficientnet_lite0", "pretrained": "true", "image-size": "64", "epochs": "10",
             "workers": "0", "cross-fit-folds": "2"}  # fmt: skip
    result = run_training(tmp_path, {"train": few_digits, "test": test_channel}, flags)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert (
        metrics["learner"]["chosen"] == "efficientnet_lite0"
        and "frozen" in metrics["learner"]["description"]
    )
    assert metrics["threshold"]["families"] == 1
    # When inference.py serves the artifact on the test images
    accuracy = served_accuracy(tmp_path / "model", held_out)
    # Then it labels them as the job scored them from its features (the head folded into the
    # network is the same function), and far above chance
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1 / len(held_out))
    assert accuracy > 0.6  # chance is 0.1; 400 labels at 64 px
