"""Auto-label coverage and accuracy on digits with few human labels: train.py on N labelled
digits (32x32 PNG ImageFolder, as SageMaker runs it), then the served artifact labels the rest.

    .venv/bin/python benchmarks/digits_coverage.py --labels 360 --seed 0          # ~30 s, 2 cores
    .venv/bin/python benchmarks/digits_coverage.py --seed 1 -- --val-fraction 0.1 --test-fraction .1

Arguments after `--` go to train.py. Prints train.py's threshold line and, for the unlabelled
rest, the share auto-labelled (confidence >= threshold) and the accuracy of those labels.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

TRAINING_JOBS = Path(__file__).resolve().parents[1] / "training_jobs"


def png(image: np.ndarray) -> bytes:
    upscaled = cv2.resize(
        (image * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR
    )
    return cv2.imencode(".png", upscaled)[1].tobytes()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--labels", type=int, default=360)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("train_args", nargs="*")
    args = p.parse_args()
    digits = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(digits.images))
    labelled, rest = order[: args.labels], order[args.labels :]

    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp)
        for i in labelled:
            (job / "train" / str(digits.target[i])).mkdir(parents=True, exist_ok=True)
            (job / "train" / str(digits.target[i]) / f"d{i:04d}.png").write_bytes(
                png(digits.images[i])
            )
        env = {
            **os.environ,
            "SM_MODEL_DIR": str(job / "model"),
            "SM_CHANNEL_TRAIN": str(job / "train"),
            "SM_OUTPUT_DATA_DIR": str(job / "output" / "data"),
        }
        start = time.time()
        run = subprocess.run([sys.executable, str(TRAINING_JOBS / "train.py"), *args.train_args],
                             env=env, capture_output=True, text=True)  # fmt: skip
        if run.returncode:
            sys.exit(run.stderr[-3000:])
        print(
            *[line for line in run.stdout.splitlines() if line.startswith(("data", "threshold"))],
            sep="\n",
        )
        print(f"training took {time.time() - start:.0f} s")

        sys.path.insert(0, str(job / "model" / "code"))
        import inference

        model = inference.model_fn(str(job / "model"))
        predictions = []
        for s in range(0, len(rest), 64):
            body = json.dumps(
                {
                    "images": [
                        base64.b64encode(png(digits.images[i])).decode() for i in rest[s : s + 64]
                    ]
                }
            )
            response, _ = inference.output_fn(
                inference.predict_fn(inference.input_fn(body, "application/json"), model), None
            )
            predictions += json.loads(response)["predictions"]
    truth = digits.target[rest].astype(str)
    label = np.array([p["label"] for p in predictions])
    auto = np.array([p["auto_label"] for p in predictions])
    auto_accuracy = f"{np.mean(label[auto] == truth[auto]):.2%}" if auto.any() else "n/a"
    threshold = predictions[0]["threshold"]
    print(f"{len(rest)} unlabelled: accuracy {np.mean(label == truth):.2%}, "
          f"auto-labelled {auto.mean():.2%} at accuracy {auto_accuracy} "
          f"(threshold {threshold:.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
