"""Datasets: ImageFolder trees and Ground Truth augmented manifests, decoded with OpenCV.

A channel directory is either `<class>/<image>` or holds one `*.manifest` / `*.jsonl`
augmented manifest (JSON lines with `source-ref`, a label attribute and its
`<attribute>-metadata.class-name`: flywheel.contracts.manifest) next to the images it
references.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from flywheel.contracts import manifest
from torch.utils.data import Dataset

cv2.setNumThreads(1)  # OpenCV's own pool would fight torch's threads for the same cores
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = manifest.SUFFIXES

Sample = tuple[str, str]  # (image path, class name)


# ----------------------------------------------------------------------------- reading channels


def find_manifest(root: Path) -> Path | None:
    manifests = sorted(
        p for p in root.iterdir() if p.is_file() and p.name.endswith(MANIFEST_SUFFIXES)
    )
    if len(manifests) > 1:
        raise ValueError(f"channel {root} holds {len(manifests)} manifests, expected one")
    return manifests[0] if manifests else None


def scan_image_folder(root: Path) -> list[Sample]:
    samples = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(class_dir.rglob("*")):
            if image.is_file() and image.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((str(image), class_dir.name))
    return samples


def resolve_source_ref(source_ref: str, root: Path) -> Path | None:
    """Map `s3://bucket/a/b/c.png` (or a path relative to the channel) to a file inside it.

    SageMaker copies the objects under the channel's S3 prefix, so the longest suffix of the
    key that exists below `root` is the file; the basename is the last resort. A source-ref
    is data: `..`, absolute paths or symlinks never reach a file outside `root`.
    """
    base = root.resolve()

    def inside(candidate: Path) -> bool:
        # Its own check: training_jobs/ runs alone in the container (no flywheel.safe_join).
        return candidate.resolve().is_relative_to(base) and candidate.is_file()

    if "\x00" in source_ref:
        return None
    if not source_ref.startswith("s3://") and inside(root / source_ref):
        return root / source_ref
    parts = [p for p in source_ref.removeprefix("s3://").split("/") if p][1:] or [source_ref]
    for i in range(len(parts)):
        candidate = root.joinpath(*parts[i:])
        if inside(candidate):
            return candidate
    return None


def read_manifest(
    manifest_path: Path, root: Path, label_attribute: str, sampling: dict[str, str] | None = None
) -> list[Sample]:
    """Samples of a manifest (lines read by flywheel.contracts.manifest); `sampling` (when
    given) receives path -> `label-metadata.sampling` ("random": drawn at random from the
    uploads, may certify; "selected": picked by the model)."""
    samples, missing = [], []
    for line_no, text in enumerate(manifest_path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = manifest.parse_line(text, label_attribute)
        except manifest.InvalidManifestLine as exc:
            raise ValueError(f"{manifest_path.name} line {line_no}: {exc.reason}") from None
        if line.label is None:
            raise ValueError(
                f"{manifest_path.name} line {line_no}: needs "
                f"'{manifest.metadata_key(label_attribute)}.class-name' (set --label-attribute)"
            )
        path = resolve_source_ref(line.source_ref, root)
        if path is None:
            missing.append(line.source_ref)
        else:
            samples.append((str(path), line.label))
            if sampling is not None and line.sampling is not None:
                sampling[str(path)] = line.sampling
    if missing:
        raise ValueError(
            f"{manifest_path.name}: {len(missing)} source-ref not found in {root}, "
            f"e.g. {missing[0]}"
        )
    return samples


def load_channel(
    root: str | Path | None, label_attribute: str, sampling: dict[str, str] | None = None
) -> list[Sample]:
    """All (path, class) samples of a channel; [] when the channel is absent. `sampling` receives
    how each manifest label was obtained (an ImageFolder says nothing: the caller's default)."""
    if not root or not Path(root).is_dir():
        return []
    root = Path(root)
    found = find_manifest(root)
    if found:
        return read_manifest(found, root, label_attribute, sampling)
    return scan_image_folder(root)


def load_unlabeled(root: str | Path | None) -> list[str]:
    """Every image below an unlabeled channel (a ManifestFile channel keeps the keys' folders)."""
    if not root or not Path(root).is_dir():
        return []
    images = (p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(str(p) for p in images if p.is_file())


def split_fraction(path: str) -> float:
    """A stable number in [0, 1) from the file name: the same image stays in the same split as
    the dataset grows round after round (no leakage from train into a later test split)."""
    digest = hashlib.sha256(Path(path).name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fold_of(path: str, folds: int) -> int:
    """Cross-fitting fold of an image, stable by file name and independent of its split."""
    digest = hashlib.sha256(f"fold:{Path(path).name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def split_samples(
    samples: list[Sample], val_fraction: float, test_fraction: float
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    for sample in samples:
        u = split_fraction(sample[0])
        (test if u < test_fraction else val if u < test_fraction + val_fraction else train).append(
            sample
        )
    return train, val, test


def test_set_id(samples: list[Sample]) -> str:
    """sha256 over the sorted test image file names (one per line)."""
    names = sorted(Path(path).name for path, _ in samples)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def native_size(samples: list[Sample], limit: int = 32) -> int:
    """Median longest side of a few images (used to avoid upsampling 8x8 digits to 224)."""
    sides = []
    for path, _ in samples[:limit]:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is not None:
            sides.append(max(image.shape[:2]))
    return int(np.median(sides)) if sides else 224


def auto_image_size(arch_default: int, samples: list[Sample]) -> int:
    return min(arch_default, max(32, math.ceil(native_size(samples) / 32) * 32))


# ----------------------------------------------------------------------------- decoding, transforms


def decode_rgb(data: bytes | np.ndarray) -> np.ndarray | None:
    buffer = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray) else data
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interpolation = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """HWC uint8 RGB -> CHW uint8 tensor of size x size (normalisation happens on the device)."""
    return torch.from_numpy(np.ascontiguousarray(resize(image, size).transpose(2, 0, 1)))


def random_affine(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation, scale, shift and brightness/contrast jitter scaled by `strength` in [0, 1].
    No flips: they change the label of digits and text."""
    h, w = image.shape[:2]
    angle = rng.uniform(-15, 15) * strength
    scale = 1 + rng.uniform(-0.15, 0.15) * strength
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.1, 0.1, size=2) * strength * np.array([w, h])
    image = cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT101)
    contrast = 1 + rng.uniform(-0.2, 0.2) * strength
    brightness = rng.uniform(-20, 20) * strength
    return cv2.convertScaleAbs(image, alpha=contrast, beta=brightness)


def strong_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """FixMatch's strong view (RandAugment + Cutout in spirit): the full-strength affine jitter,
    then one of blur, noise, equalisation or posterisation, then a square cut out (a quarter to
    half of the side). No flips, as in random_affine."""
    image = random_affine(image, 1.0, rng)
    op = rng.integers(4)
    if op == 0:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.5, 1.5))
    elif op == 1:
        noise = rng.normal(0, 12, image.shape)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    elif op == 2:
        image = cv2.merge([cv2.equalizeHist(c) for c in cv2.split(image)])
    else:
        image = image & np.uint8(256 - 2 ** int(rng.integers(2, 5)))  # keep 4 to 6 bits
    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 0.5))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    image = image.copy()
    image[y : y + side, x : x + side] = 127
    return image


def normalize(batch: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 NCHW on any device -> float NCHW, in the layout the model runs in."""
    mean_t = torch.tensor(mean, device=batch.device).view(1, -1, 1, 1) * 255
    std_t = torch.tensor(std, device=batch.device).view(1, -1, 1, 1) * 255
    return ((batch.float() - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


class ImageDataset(Dataset):
    """(uint8 CHW tensor, class index) from files on disk."""

    def __init__(
        self,
        samples: list[Sample],
        class_to_idx: dict[str, int],
        size: int,
        augment: float = 0.0,
        strong: bool = False,
    ):
        self.samples, self.class_to_idx, self.size = samples, class_to_idx, size
        self.augment, self.strong = augment, strong  # strong: strong_augment, not `augment`
        self.rng = np.random.default_rng()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = decode_rgb(np.fromfile(path, np.uint8))
        if image is None:
            raise ValueError(f"cannot decode image {path}")
        if self.strong:
            image = strong_augment(resize(image, self.size), self.rng)
        elif self.augment > 0:
            image = random_affine(resize(image, self.size), self.augment, self.rng)
        return to_tensor(image, self.size), self.class_to_idx[label]


def worker_init(worker_id: int) -> None:
    # One thread per worker: the workers and the training process share few cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)
