"""Model definitions: torchvision classifiers plus a small CNN for tiny inputs (8x8 to 32x32)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DEFAULT_IMAGE_SIZE = {"small_cnn": 32}  # every torchvision network: 224


def available_archs() -> list[str]:
    return ["small_cnn", *torchvision.models.list_models(module=torchvision.models)]


def default_image_size(arch: str) -> int:
    return DEFAULT_IMAGE_SIZE.get(arch, 224)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages and global pooling: ~0.3M parameters, >98% on 32x32 digits."""

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.2):
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(*conv(cin, cout), *conv(cout, cout))

        self.features = nn.Sequential(
            stage(3, width), nn.MaxPool2d(2),
            stage(width, 2 * width), nn.MaxPool2d(2),
            stage(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def head_name(model: nn.Module) -> str:
    """Name of the last Linear layer: the class-specific head."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


def build_model(arch: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    if arch == "small_cnn":
        if pretrained:
            raise ValueError("small_cnn has no pretrained weights: use pretrained=false")
        return SmallCNN(num_classes)
    if arch not in available_archs():
        raise ValueError(
            f"unknown arch {arch!r}: choose small_cnn or a torchvision model, e.g. resnet18"
        )
    if not pretrained:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT")
    except Exception as error:  # no weights for this network, or no network to download them
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot load pretrained weights for {arch}: {reason}") from None
    parent_name, _, attr = head_name(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model


def transfer_weights(
    model: nn.Module, classes: list[str], state: dict, old_classes: list[str]
) -> int:
    """Load `state` (a model trained on `old_classes`) into `model`, mapping head rows by class
    name; returns how many classes were carried over. Other tensors must match in shape."""
    head = head_name(model)
    own = model.state_dict()
    for key, value in state.items():
        if key.startswith(head + "."):
            continue
        if key not in own or own[key].shape != value.shape:
            raise ValueError(f"init-model does not fit this network at {key}")
        own[key] = value
    carried = 0
    for new_index, name in enumerate(classes):
        if name in old_classes:
            old_index = old_classes.index(name)
            own[f"{head}.weight"][new_index] = state[f"{head}.weight"][old_index]
            own[f"{head}.bias"][new_index] = state[f"{head}.bias"][old_index]
            carried += 1
    model.load_state_dict(own)
    return carried
