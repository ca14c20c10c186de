"""Out-of-distribution refusal: the detector on synthetic features where the truth is known, and
a small_cnn trained on digits that refuses noise and blank images when served."""

from __future__ import annotations

import json

import cv2
import inference
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from classifier import artifact, data, models, ood
from conftest import digit_png

# ----------------------------------------------------------------------------- synthetic features


def gaussian_classes(rng, n, d=32, classes=5, spread=4.0, seed=7):
    """n features of `classes` Gaussians sharing one correlated covariance (fixed by `seed`)."""
    shape = np.random.default_rng(seed)
    means = shape.normal(0, spread, (classes, d))
    mixing = shape.normal(0, 1, (d, d)) / np.sqrt(d)
    labels = rng.integers(0, classes, n)
    return means[labels] + rng.normal(size=(n, d)) @ mixing.T, labels


@pytest.mark.parametrize("max_components", [128, 8])  # exact, and low rank + isotropic rest
def test_heldout_in_distribution_refusal_is_one_minus_quantile(max_components):
    # Given a detector fitted on 2,000 training and 1,000 held-out in-distribution features
    rng = np.random.default_rng(0)
    train, labels = gaussian_classes(rng, 2000)
    heldout, _ = gaussian_classes(rng, 1000)
    detector = ood.fit(train, labels, heldout, quantile=0.99, max_components=max_components)
    # When 20,000 new in-distribution features are scored
    fresh, _ = gaussian_classes(rng, 20_000)
    refused = ood.is_outlier(detector, fresh).mean()
    # Then about 1% are refused: the threshold's own spread from 1,000 held-out scores is
    # sd = sqrt(0.01 * 0.99 / 1000) ~ 0.3%, plus 0.07% of binomial noise on 20,000
    assert 0.002 <= refused <= 0.022, refused


def test_far_away_clusters_are_refused_and_nearby_shifts_mostly_not():
    rng = np.random.default_rng(1)
    train, labels = gaussian_classes(rng, 1500)
    heldout, _ = gaussian_classes(rng, 500)
    detector = ood.fit(train, labels, heldout)
    far, _ = gaussian_classes(rng, 1000, seed=99)  # other means, other covariance
    assert ood.is_outlier(detector, far).mean() > 0.99
    assert ood.is_outlier(detector, np.zeros((3, 32)) + 50).all()


def test_fit_is_deterministic_and_survives_json():
    rng = np.random.default_rng(2)
    train, labels = gaussian_classes(rng, 400, d=64)
    heldout, _ = gaussian_classes(rng, 200, d=64)
    first = ood.fit(train, labels, heldout, max_components=16)
    second = json.loads(json.dumps(ood.fit(train, labels, heldout, max_components=16)))
    assert first == second
    probe, _ = gaussian_classes(rng, 50, d=64)
    np.testing.assert_allclose(ood.score(first, probe), ood.score(second, probe))
    assert len(second["components"]) == 16 and second["n_heldout"] == 200


def test_more_dimensions_than_images_stay_well_conditioned():
    # Given 60 images of 256-d features: the sample covariance alone is singular
    rng = np.random.default_rng(3)
    train, labels = gaussian_classes(rng, 60, d=256, classes=3)
    heldout, _ = gaussian_classes(rng, 100, d=256, classes=3)
    detector = ood.fit(train, labels, heldout)
    assert 0 < detector["shrinkage"] <= 1
    assert np.isfinite(ood.score(detector, heldout)).all()
    far, _ = gaussian_classes(rng, 100, d=256, classes=3, seed=8)
    assert ood.is_outlier(detector, far).mean() > 0.9


def test_small_heldout_sets_use_the_largest_score_and_bad_input_is_an_error():
    assert ood.heldout_threshold(np.array([3.0, 1.0, 2.0]), 0.99) == 3.0
    assert ood.heldout_threshold(np.arange(1000.0), 0.99) == 990.0  # ceil(1001 * 0.99) = 991st
    with pytest.raises(ValueError, match="quantile"):
        ood.fit(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), quantile=1.0)
    with pytest.raises(ValueError, match="held-out"):
        ood.fit(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 3)))


def test_blank_images_are_outliers_whatever_their_size_or_layout():
    rng = np.random.default_rng(4)
    images = [
        np.zeros((32, 32, 3), np.uint8),
        np.full((3, 224, 224), 255, np.uint8),
        np.full((8, 8, 1), 128, np.uint8) + rng.integers(0, 2, (8, 8, 1), dtype=np.uint8),
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        cv2.imdecode(np.frombuffer(digit_png(np.eye(8) * 16), np.uint8), cv2.IMREAD_COLOR),
    ]
    assert ood.is_blank(images).tolist() == [True, True, True, False, False]


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def served_digits_model(tmp_path_factory, digits):
    """small_cnn trained in-process on 32x32 digits (3 epochs), its detector fitted on train and
    validation features, saved as an artifact and loaded by inference.model_fn."""
    images, targets = digits
    decoded = [data.decode_rgb(digit_png(image)) for image in images[:1500]]
    batch = torch.stack([data.to_tensor(image, 32) for image in decoded])
    labels = torch.as_tensor(targets[:1500])
    train, val = slice(0, 1200), slice(1200, 1500)
    mean, std = models.normalization("small_cnn")
    inputs = data.normalize(batch, mean, std)
    torch.manual_seed(0)
    model = models.build_model("small_cnn", 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy shared host, spinning OpenMP threads cost 10x and more
    try:
        for _ in range(3):
            for order in torch.randperm(1200).split(32):
                loss = F.cross_entropy(model(inputs[train][order]), labels[train][order])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        train_logits, train_features = models.embed(model, inputs[train])
        _, val_features = models.embed(model, inputs[val])
    assert (train_logits.argmax(1) == labels[train]).float().mean() > 0.9
    detector = ood.fit(train_features.numpy(), labels[train].numpy(), val_features.numpy())
    config = {
        "arch": "small_cnn", "classes": [str(c) for c in range(10)], "image_size": 32,
        "mean": mean, "std": std, "temperature": 1.0, "threshold": 0.5,
        "target_accuracy": 0.95, "model_version": "dfw-ood", "topk": 3, "ood": detector,
    }  # fmt: skip
    model_dir = tmp_path_factory.mktemp("ood-artifact")
    torch.save(model.state_dict(), model_dir / "model.pt")
    artifact.write_json(model_dir / "model_config.json", config)
    return inference.model_fn(str(model_dir))


def predict(model, images: list[np.ndarray]) -> list[dict]:
    return inference.predict_fn(images, model)["predictions"]


def test_noise_and_constant_images_are_refused_and_never_auto_labelled(served_digits_model):
    rng = np.random.default_rng(5)
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(20)]
    gaussian = [
        np.clip(rng.normal(128, 60, (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(20)
    ]
    constant = [np.full((32, 32, 3), v, np.uint8) for v in (0, 128, 255)]
    predictions = predict(served_digits_model, noise + gaussian + constant)
    assert all(p["ood"] for p in predictions)
    assert not any(p["auto_label"] for p in predictions)


def test_unseen_digits_are_mostly_accepted(served_digits_model, digits):
    images, targets = digits
    held_out = [data.decode_rgb(digit_png(image)) for image in images[1500:1700]]
    predictions = predict(served_digits_model, held_out)
    refused = np.mean([p["ood"] for p in predictions])
    assert refused <= 0.06, refused  # ~1% expected; 300 validation images set the threshold
    accepted = [p for p in predictions if not p["ood"]]
    assert all(p["auto_label"] == (p["confidence"] >= 0.5) for p in accepted)
