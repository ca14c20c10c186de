"""The learners a job can train, behind one interface, and the default choice between them.

- `ImageLearner`: a network trained end to end on the images (engine.fit): small_cnn by
  default, or any torchvision arch.
- `HeadLearner`: a pretrained backbone, frozen, and a linear head trained with FixMatch on its
  features (classifier/heads.py): EfficientNet-Lite0's ImageNet weights by default.

`--arch auto` (the default) trains the served model with both, keeps the one that is more
accurate on the random validation labels, and runs cross-fitting with that one only. Choosing
between two learners on data that later certifies is paid for in the certificate (a Bonferroni
split over the candidates: docs/certification.md), so the choice never weakens the promise.
Every learner returns engine.fit's result (`best` state dict, `history`, `best_epoch`,
`pseudo`) and scores samples from it with `logits` and `features`.
"""

from __future__ import annotations

import numpy as np
import torch

from classifier import data, engine, heads, models

AUTO = "auto"
AUTO_CANDIDATES = ("small_cnn", models.EFFICIENTNET_LITE0)


class ImageLearner:
    collective = True  # under torchrun every process trains (DDP)

    def __init__(self, run):
        self.run, self.name = run, run.arch
        self.description = f"{run.arch} trained on the images at {run.size} px"

    def fit(self, stage, train, val, unlabeled, init=None, checkpoint_dir="") -> dict:
        result = engine.fit(self.run, stage, train, val, unlabeled, init, checkpoint_dir)
        model = models.build_model(self.run.arch, len(self.run.classes))
        model.load_state_dict(result["best"])
        result["model"] = model.to(self.run.device, memory_format=torch.channels_last)
        return result

    def logits(self, result, samples) -> tuple[np.ndarray, np.ndarray]:
        return self.run.logits(result["model"], samples)

    def features(self, result, samples) -> tuple[np.ndarray, np.ndarray]:
        return self.run.features(result["model"], samples)


class HeadLearner:
    collective = False  # seconds on one process: rank 0 alone, the others wait

    def __init__(self, run, labeled: list[str], images: list[str]):
        self.run, self.name = run, run.arch
        self.description = f"{run.arch} (ImageNet weights, frozen) + a linear head, {run.size} px"
        self.labeled, self.images = labeled, images
        self.bank: heads.FeatureBank | None = None

    def fit(self, stage, train, val, unlabeled, init=None, checkpoint_dir="") -> dict:
        if self.bank is None:  # every image once per view, for every model of the job
            backbone = models.build_model(self.run.arch, len(self.run.classes), pretrained=True)
            backbone.to(self.run.device, memory_format=torch.channels_last)
            self.bank = heads.FeatureBank(self.run, backbone, self.labeled, self.images)
        seed = self.run.args.seed + sum(map(ord, stage))  # each model its own draws
        return heads.train_head(self.run, stage, self.bank, train, val, unlabeled, seed)

    def logits(self, result, samples) -> tuple[np.ndarray, np.ndarray]:
        assert self.bank is not None, "fit first"
        paths = [p for p, _ in samples]
        labels = np.array([self.run.class_to_idx[c] for _, c in samples], np.int64)
        return heads.head_logits(self.bank, result["best"], paths).astype(np.float32), labels

    def features(self, result, samples) -> tuple[np.ndarray, np.ndarray]:
        assert self.bank is not None, "fit first"
        labels = np.array([self.run.class_to_idx[c] for _, c in samples], np.int64)
        return self.bank([p for p, _ in samples]), labels


def candidate_archs(args) -> list[str]:
    return list(AUTO_CANDIDATES) if args.arch == AUTO else [args.arch]


def is_head(arch: str, args) -> bool:
    """A frozen pretrained backbone with a head: the auto candidate, or asked for by flags."""
    pretrained = args.pretrained or args.arch == AUTO
    return arch != "small_cnn" and pretrained and args.freeze_backbone


def build(run, args, labeled: list[data.Sample], images: list[str]):
    if is_head(run.arch, args):
        return HeadLearner(run, [p for p, _ in labeled], images)
    return ImageLearner(run)


def choose(results: dict[str, dict]) -> tuple[str, dict]:
    """The learner whose served model is best on validation: accuracy, then loss (as fit
    ranks epochs). Returns its name and each candidate's figures, for metrics.json."""
    scores = {}
    for name, result in results.items():
        best = next(h for h in result["history"] if h["epoch"] == result["best_epoch"])
        scores[name] = {"val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"]}
    chosen = max(scores, key=lambda n: (scores[n]["val_accuracy"], -scores[n]["val_loss"]))
    return chosen, scores
