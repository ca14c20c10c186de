"""Training one model: the epoch loop, early stopping, self-training, checkpoints, prediction.

`fit` is what train.py runs once for the served model and once per cross-fitting fold: the same
procedure each time, so the folds' scores speak for the served model (docs/certification.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from classifier import artifact, calibration, data, metrics, models

MIN_EPOCH_SAMPLES = 512


# ----------------------------------------------------------------------------- training, evaluation


def lr_at(step: int, peak: float, total: int, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_one_epoch(model, loader, optimizer, step, schedule, device, amp, mean, std):
    """One pass over `loader`; `schedule` is (peak lr, total steps, warmup steps)."""
    model.train()
    loss_sum, count = torch.zeros((), device=device), 0
    for images, labels in loader:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, *schedule)
        images = data.normalize(images.to(device, non_blocking=True), mean, std)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float() * len(labels)  # no .item(): keep the GPU running ahead
        count, step = count + len(labels), step + 1
    totals = torch.stack([loss_sum, torch.tensor(float(count), device=device)])
    if dist.is_initialized():
        dist.all_reduce(totals)
    return (totals[0] / totals[1]).item(), step


@torch.no_grad()
def predict(model, loader, device, amp, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and labels of a whole loader, in order."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(data.normalize(images.to(device, non_blocking=True), mean, std))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def make_loader(dataset, args, device, sampler=None, shuffle=False) -> DataLoader:
    workers = min(args.workers, max(1, len(dataset) // args.batch_size))
    return DataLoader(
        dataset, batch_size=args.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        worker_init_fn=data.worker_init,
        drop_last=shuffle and len(dataset) > args.batch_size,  # a batch of 1 breaks BatchNorm
    )  # fmt: skip


def evaluate_champion(path, test, args, device, amp) -> dict | None:
    """The serving model on the same test images (its own classes, input size and normalisation)."""
    try:
        champion, config = artifact.load_model(artifact.find_artifact(path), device)
    except ValueError as error:
        print(f"champion not evaluated: {error}", flush=True)
        return None
    index = {name: i for i, name in enumerate(sorted({c for _, c in test}))}
    loader = make_loader(data.ImageDataset(test, index, config["image_size"]), args, device)
    logits, _ = predict(champion, loader, device, amp, config["mean"], config["std"])
    predicted = [config["classes"][i] for i in logits.argmax(1)]
    report = metrics.classification_report([c for _, c in test], predicted, config["classes"])
    return {**report, "model_version": config.get("model_version", "unknown")}


class Run:
    """What every model of one job shares: arguments, processes, device, classes, input size."""

    def __init__(self, args, device, amp, rank, distributed, classes, arch, size, log):
        self.args, self.device, self.amp, self.rank = args, device, amp, rank
        self.arch = arch  # this run's network: train.py runs one per candidate learner
        self.distributed, self.master, self.log = distributed, rank == 0, log
        self.classes, self.class_to_idx = classes, {name: i for i, name in enumerate(classes)}
        self.size = size
        self.mean, self.std = models.normalization(arch)

    def broadcast(self, value):
        """Rank 0's value on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box)
        return box[0]

    def loader(self, samples, augment=0.0, shuffle=False, sampler=None) -> DataLoader:
        dataset = data.ImageDataset(samples, self.class_to_idx, self.size, augment)
        return make_loader(dataset, self.args, self.device, sampler, shuffle)

    def logits(self, model, samples) -> tuple[np.ndarray, np.ndarray]:
        return predict(model, self.loader(samples), self.device, self.amp, self.mean, self.std)

    @torch.no_grad()
    def features(self, model, samples) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (the head's input) and labels, un-augmented."""
        model.eval()
        features, labels = [], []
        for images, y in self.loader(samples):
            batch = data.normalize(images.to(self.device), self.mean, self.std)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                _, f = models.embed(model, batch)
            features.append(f.float().cpu())
            labels.append(y)
        return torch.cat(features).numpy(), torch.cat(labels).numpy()

    def unlabeled(self, paths: list[str]) -> list[data.Sample]:
        return [(path, self.classes[0]) for path in paths]  # the label is never read


# ----------------------------------------------------------------------------- one model


def fit(run: Run, stage: str, train, val, pool: list[str], init=None, checkpoint_dir="") -> dict:
    """Train one model: supervised on `train`, early-stopped on `val`, then self-training on
    `pool` (teacher pseudo-labels above --pseudo-threshold, student fine-tuned on labels + pseudo
    labels). The held-out guard: every epoch of either phase competes on validation, so a student
    that does not beat its teacher is never kept. Returns the best weights and their history.

    The served model's metric lines (`stage` "final") are the ones the tuning regexes read;
    cross-fitting models log in words, so the regexes never see them.
    """
    args, device, log = run.args, run.device, run.log
    torch.manual_seed(args.seed + run.rank)
    model = models.build_model(run.arch, len(run.classes), args.pretrained)
    if init:
        carried = models.transfer_weights(model, run.classes, init[1], init[0]["classes"])
        if stage == "final":
            log(f"init-model {init[0].get('model_version')}: {carried}/{len(run.classes)} "
                "classes carried")  # fmt: skip
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_key": [-1.0, 0.0],
                             "best_epoch": 0, "bad_epochs": 0, "pseudo": None,
                             "teacher_epochs": None}  # fmt: skip
    checkpoint = artifact.load_checkpoint(checkpoint_dir) if run.master else None
    checkpoint = run.broadcast(checkpoint)  # every process resumes from rank 0's checkpoint
    if checkpoint and checkpoint["classes"] == run.classes and checkpoint["arch"] == run.arch:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = {**state, **checkpoint["state"]}
        log(f"resumed from {checkpoint_dir}/checkpoint.pt after epoch {state['epoch']}")
    raw_model = model
    if run.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if run.amp else None)
    val_loader = run.loader(val)

    def epochs(samples, first, last, peak, patience):
        # A few hundred labels would make an epoch one or two steps (BatchNorm statistics never
        # settle): an epoch is at least MIN_EPOCH_SAMPLES images, repeating the set when smaller.
        epoch_samples = samples * max(1, math.ceil(MIN_EPOCH_SAMPLES / len(samples)))
        dataset = data.ImageDataset(epoch_samples, run.class_to_idx, run.size, args.augment)
        sampler = DistributedSampler(dataset, seed=args.seed) if run.distributed else None
        loader = make_loader(dataset, args, device, sampler, shuffle=True)
        warmup = int(args.warmup_epochs * len(loader)) if first == 1 else len(loader) // 2
        schedule = (peak, (last - first + 1) * len(loader), warmup)
        step = (state["epoch"] + 1 - first) * len(loader)
        for epoch in range(state["epoch"] + 1, last + 1):
            if run.broadcast(bool(patience and state["bad_epochs"] >= patience)):
                break  # only rank 0 evaluates: it decides for everyone
            if sampler:
                sampler.set_epoch(epoch)
            train_loss, step = train_one_epoch(
                model, loader, optimizer, step, schedule, device, run.amp, run.mean, run.std
            )
            if not run.master:
                state["epoch"] = epoch
                continue
            logits, labels = predict(raw_model, val_loader, device, run.amp, run.mean, run.std)
            val_loss = F.cross_entropy(
                torch.from_numpy(logits), torch.from_numpy(labels).long()
            ).item()
            val_accuracy = float((logits.argmax(1) == labels).mean())
            if stage == "final":
                log(f"epoch={epoch} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                    f"val_accuracy={val_accuracy:.4f}")  # fmt: skip
            else:
                log(f"{stage} epoch {epoch}: train loss {train_loss:.4f}, "
                    f"validation accuracy {val_accuracy:.4f}")  # fmt: skip
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
            state["history"].append({**row, "val_accuracy": val_accuracy})
            # Accuracy first, loss breaks ties: a small validation set saturates at 1.0 early.
            if [val_accuracy, -val_loss] > state["best_key"]:
                best = {k: v.detach().cpu().clone() for k, v in raw_model.state_dict().items()}
                state.update(best=best, best_key=[val_accuracy, -val_loss], best_epoch=epoch,
                             bad_epochs=0)  # fmt: skip
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            if checkpoint_dir:
                artifact.save_checkpoint(checkpoint_dir, {
                    "classes": run.classes, "arch": run.arch, "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(), "state": state})  # fmt: skip

    # -- supervised
    if state["teacher_epochs"] is None:
        epochs(train, 1, args.epochs, args.lr, args.patience)
        state["teacher_epochs"] = state["epoch"]
    # -- self-training: the teacher's confident pseudo-labels, balanced across classes
    if pool and args.pseudo_label and args.pseudo_epochs:
        if state["pseudo"] is None:
            raw_model.load_state_dict(run.broadcast(state["best"]))
            chosen = select_pseudo_labels(run, raw_model, pool) if run.master else None
            pseudo: list[data.Sample] = run.broadcast(chosen)  # rank 0's, on every process
            state["pseudo"] = pseudo
            log(f"{stage}: {len(pseudo)} pseudo-labels of {len(pool)} unlabeled images")
        first = state["teacher_epochs"] + 1
        if state["pseudo"]:
            state["bad_epochs"] = 0 if state["epoch"] < first else state["bad_epochs"]
            epochs(train + state["pseudo"], first, first + args.pseudo_epochs - 1, args.lr / 3,
                   args.patience)  # fmt: skip
    if checkpoint_dir and run.master:
        artifact.save_checkpoint(checkpoint_dir, {
            "classes": run.classes, "arch": run.arch, "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(), "state": state})  # fmt: skip
    return {
        "best": run.broadcast(state["best"]),
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "pseudo": len(state["pseudo"] or []),
    }


def select_pseudo_labels(run: Run, teacher, pool: list[str]) -> list[data.Sample]:
    """Pool images the teacher labels with softmax confidence >= --pseudo-threshold, at most
    --max-pseudo-labels, the most confident of each class first (classes stay balanced)."""
    args = run.args
    logits, _ = run.logits(teacher, run.unlabeled(pool))
    probs = calibration.softmax(logits)
    confidence, predicted = probs.max(1), probs.argmax(1)
    per_class = max(1, args.max_pseudo_labels // len(run.classes))
    chosen: list[data.Sample] = []
    for c, name in enumerate(run.classes):
        members = np.flatnonzero((predicted == c) & (confidence >= args.pseudo_threshold))
        members = members[np.argsort(-confidence[members], kind="stable")][:per_class]
        chosen += [(pool[i], name) for i in sorted(members)]
    return chosen


def confidence_and_correct(logits, labels, temperature) -> tuple[np.ndarray, np.ndarray]:
    probs = calibration.softmax(logits, temperature)
    return probs.max(1), probs.argmax(1) == labels
