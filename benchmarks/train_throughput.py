"""Training throughput of the real data pipeline next to a bare in-memory loop, and the serving
overhead of input_fn + output_fn over predict_fn.

    .venv/bin/python benchmarks/train_throughput.py        # small_cnn, 32x32 PNGs (~30 s, 2 cores)
    .venv/bin/python benchmarks/train_throughput.py --arch resnet18 --image-size 224 --images 512

Both loops run train.py's own train_one_epoch on the same model (AdamW, the same thread count,
bf16 autocast and channels_last on CUDA); the pipeline reads image files from disk, decodes them
with OpenCV and augments them in DataLoader workers, the bare loop reuses uint8 batches already
on the device. A ratio near 1 means the input pipeline keeps the model fed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training_jobs"))
import inference  # noqa: E402
import train  # noqa: E402
from classifier import data, models  # noqa: E402


def write_images(root: Path, n: int, size: int, classes: int, ext: str) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        label = str(i % classes)
        image = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (5, 5), 0)
        path = root / label / f"img{i:05d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cv2.imencode(ext, image)[1].tobytes())
        samples.append((str(path), label))
    return samples


def timed_epochs(model, loader, optimizer, args, device, epochs: int) -> float:
    """Images per second over `epochs` epochs, after one warm-up epoch."""
    amp, mean, std = device.type == "cuda", models.IMAGENET_MEAN, models.IMAGENET_STD
    total = (epochs + 1) * len(loader)
    train.train_one_epoch(model, loader, optimizer, 0, args, total, 1, device, amp, mean, std)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = 0
    for _ in range(epochs):
        train.train_one_epoch(model, loader, optimizer, 0, args, total, 1, device, amp, mean, std)
        images += (
            sum(len(labels) for _, labels in loader)
            if isinstance(loader, list)
            else len(loader) * args.batch_size
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--epochs", type=int, default=3)
    bench = p.parse_args()
    args = train.parse_args(
        [
            "--arch",
            bench.arch,
            "--batch-size",
            str(bench.batch_size),
            "--workers",
            str(bench.workers),
        ]
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # as train.py does on CUDA
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - bench.workers))  # as train.py does
    ext = ".png" if bench.image_size <= 64 else ".jpg"
    print(
        f"device={device} arch={bench.arch} image_size={bench.image_size} images={bench.images} "
        f"batch={bench.batch_size} workers={bench.workers} threads={torch.get_num_threads()} "
        f"files={ext}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        samples = write_images(Path(tmp), bench.images, bench.image_size, 10, ext)
        class_to_idx = {str(i): i for i in range(10)}

        def fresh_model():
            torch.manual_seed(0)
            model = models.build_model(bench.arch, 10).to(device, memory_format=torch.channels_last)
            return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

        # -- the real pipeline: files -> OpenCV decode + augment in workers -> DataLoader -> model
        dataset = data.ImageDataset(samples, class_to_idx, bench.image_size, augment=0.5)
        loader = train.make_loader(dataset, args, device, shuffle=True)
        model, optimizer = fresh_model()
        pipeline = timed_epochs(model, loader, optimizer, args, device, bench.epochs)

        # -- the bare loop: the same batches, decoded once, already on the device
        batches = [(images.to(device), labels.to(device)) for images, labels in loader]
        model, optimizer = fresh_model()
        bare = timed_epochs(model, batches, optimizer, args, device, bench.epochs)
        print(f"pipeline  (disk -> opencv -> DataLoader -> model): {pipeline:8.1f} images/s")
        print(f"in memory (uint8 tensors on the device -> model):  {bare:8.1f} images/s")
        print(f"ratio {pipeline / bare:.2f} (target >= 0.85)")

        # -- serving: one 224x224 JPEG through the handlers
        model_dir = Path(tmp) / "artifact"
        model_dir.mkdir()
        torch.save(model.state_dict(), model_dir / "model.pt")
        config = {
            "arch": bench.arch,
            "classes": list(class_to_idx),
            "image_size": bench.image_size,
            "mean": models.IMAGENET_MEAN,
            "std": models.IMAGENET_STD,
            "temperature": 1.0,
            "threshold": 0.9,
            "target_accuracy": 0.95,
            "model_version": "bench",
            "topk": 5,
        }
        (model_dir / "model_config.json").write_text(json.dumps(config))
        served = inference.model_fn(str(model_dir))
        jpeg = cv2.imencode(
            ".jpg", np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        )[1].tobytes()
        timings = {"input_fn": [], "predict_fn": [], "output_fn": []}
        for _ in range(50):
            t0 = time.perf_counter()
            decoded = inference.input_fn(jpeg, "image/jpeg")
            t1 = time.perf_counter()
            prediction = inference.predict_fn(decoded, served)
            t2 = time.perf_counter()
            inference.output_fn(prediction, "application/json")
            t3 = time.perf_counter()
            for name, seconds in zip(timings, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                timings[name].append(seconds * 1000)
        ms = {name: float(np.median(values[5:])) for name, values in timings.items()}
        overhead = ms["input_fn"] + ms["output_fn"]
        threads = torch.get_num_threads()
        print(
            f"serving one 224x224 JPEG (median ms, {served['device']}, {threads} thread): "
            f"input_fn {ms['input_fn']:.2f} + output_fn {ms['output_fn']:.2f} = {overhead:.2f} "
            f"over predict_fn {ms['predict_fn']:.2f} ({100 * overhead / ms['predict_fn']:.0f}%)"
        )


if __name__ == "__main__":
    main()
