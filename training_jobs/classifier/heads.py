"""A pretrained backbone, frozen, with a linear head trained by FixMatch on its features.

Why: from a few hundred labels a network trained from scratch is only as good as the labels
allow; ImageNet features (EfficientNet-Lite0's, which ship in a PyPI package) separate most
image classes already, and a linear head on them needs little data. On 2 CPU cores this is
also the fast path: every image goes through the backbone once per view (`FeatureBank`), and
each model the job trains (the served one and one per cross-fitting fold) is a head fitted in
seconds on those features.

Semi-supervised (`train_head`): FixMatch (Sohn et al. 2020) on the features: the head labels
the plain view of an unlabeled image, and where it is confident it is trained to give the same
label to a strongly augmented view of that image (data.strong_augment). The confidence mask
is class-balanced as in FlexMatch (Zhang et al. 2021): each class's threshold is scaled by how
many unlabeled images that class already claims, so a class the head finds hard still gets
pseudo-labels instead of being left to the easy ones.

Cross-fitting stays valid: the backbone's weights come from ImageNet and never see a label of
ours, so one feature bank serves every fold; a fold's head is fitted on that fold's training
labels only (docs/certification.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from classifier import data, models
from classifier.engine import make_loader

STEPS_PER_EPOCH = 50  # an "epoch" of the head: this many steps, then a validation look
UNLABELED_RATIO = 7  # FixMatch's mu: unlabeled images per labeled one in a step
HEAD_LR = 0.01  # AdamW on standardised features; the head is one Linear layer


class FeatureBank:
    """Backbone features of every image a job uses: one plain view of each, one strongly
    augmented view of each (FixMatch's), and `weak_views` weakly augmented views of the labeled
    images (the supervised loss's augmentation). Rows are looked up by image path."""

    def __init__(self, run, backbone, labeled: list[str], images: list[str], weak_views: int = 2):
        self.backbone = backbone
        self.paths = list(dict.fromkeys(images + labeled))
        self.row = {path: i for i, path in enumerate(self.paths)}
        run.log(f"features: {len(self.paths)} images through {run.arch}, plain and strong views, "
                f"{weak_views} weak views of {len(labeled)} labeled")  # fmt: skip
        self.plain = extract(run, backbone, self.paths)
        self.strong = extract(run, backbone, self.paths, strong=True)
        augment = run.args.augment
        weak = [extract(run, backbone, labeled, augment) for _ in range(weak_views)]
        self.weak = {path: [view[i] for view in weak] for i, path in enumerate(labeled)}
        # Standardising makes one learning rate fit every backbone; label-free, so fold-safe.
        self.mean = self.plain.mean(0)
        self.std = self.plain.std(0) + 1e-6

    def __call__(self, paths: list[str], view: str = "plain") -> np.ndarray:
        table = self.plain if view == "plain" else self.strong
        return table[[self.row[p] for p in paths]]

    def labeled_views(self, paths: list[str]) -> np.ndarray:
        """(views, N, D): the plain view and the weak ones of each labeled image."""
        plain = self(paths)
        weak = [np.stack([self.weak[p][v] for p in paths]) for v in range(len(self.weak[paths[0]]))]
        return np.stack([plain, *weak])


@torch.no_grad()
def extract(run, backbone, paths: list[str], augment: float = 0.0, strong=False) -> np.ndarray:
    """Penultimate features (float32, N x D) of the images, un-augmented unless asked."""
    backbone.eval()
    samples = run.unlabeled(paths)
    dataset = data.ImageDataset(samples, run.class_to_idx, run.size, augment, strong)
    out = []
    for images, _ in make_loader(dataset, run.args, run.device):
        batch = data.normalize(images.to(run.device), run.mean, run.std)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
            _, features = models.embed(backbone, batch)
        out.append(features.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def flexmatch_thresholds(
    confidence: np.ndarray, predicted: np.ndarray, classes: int, threshold: float
) -> np.ndarray:
    """FlexMatch's class-wise thresholds: tau * M(beta_c), beta_c = sigma_c / max(max sigma,
    unused) where sigma_c counts unlabeled images predicted c above tau (the warm-up's
    denominator counts the unused ones too) and M(x) = x / (2 - x)."""
    above = confidence >= threshold
    sigma = np.bincount(predicted[above], minlength=classes).astype(float)
    unused = float((~above).sum())
    beta = sigma / max(sigma.max(), unused, 1.0)
    return threshold * beta / (2 - beta)


def train_head(
    run, stage: str, bank: FeatureBank, train: list[data.Sample], val: list[data.Sample],
    unlabeled: list[str], seed: int,
) -> dict:  # fmt: skip
    """A linear head on `bank`'s features: supervised on `train` (plain and weak views), FixMatch
    on `unlabeled`, early-stopped on `val` like engine.fit. Returns engine.fit's shape: the best
    state dict of the whole network (backbone and head), its history, the pseudo-label count."""
    args, log = run.args, run.log
    generator = torch.Generator().manual_seed(seed)
    mean, std = torch.from_numpy(bank.mean), torch.from_numpy(bank.std)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(x) - mean) / std

    x_lab = tensor(bank.labeled_views([p for p, _ in train]))  # (V, N, D)
    y_lab = torch.tensor([run.class_to_idx[c] for _, c in train])
    x_val = tensor(bank([p for p, _ in val]))
    y_val = torch.tensor([run.class_to_idx[c] for _, c in val])
    use_pool = bool(unlabeled) and args.pseudo_label
    x_weak = tensor(bank(unlabeled)) if use_pool else None
    x_strong = tensor(bank(unlabeled, "strong")) if use_pool else None
    classes = len(run.classes)
    head = torch.nn.Linear(x_lab.shape[-1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=HEAD_LR, weight_decay=args.weight_decay)
    total = args.epochs * STEPS_PER_EPOCH
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, HEAD_LR, total_steps=total,
                                                   pct_start=0.05)  # fmt: skip
    batch = min(args.batch_size, len(train))
    state: dict[str, Any] = {"best": None, "key": [-1.0, 0.0], "epoch": 0, "bad": 0,
                             "history": [], "pseudo": 0}  # fmt: skip
    tau = torch.full((classes,), args.pseudo_threshold)
    for epoch in range(1, args.epochs + 1):
        head.train()
        losses = []
        for _ in range(STEPS_PER_EPOCH):
            i = torch.randint(len(y_lab), (batch,), generator=generator)
            v = torch.randint(x_lab.shape[0], (batch,), generator=generator)
            loss = F.cross_entropy(head(x_lab[v, i]), y_lab[i])
            if x_weak is not None and x_strong is not None:
                j = torch.randint(len(x_weak), (batch * UNLABELED_RATIO,), generator=generator)
                with torch.no_grad():
                    confidence, pseudo = head(x_weak[j]).softmax(1).max(1)
                mask = (confidence >= tau[pseudo]).float()
                unsup = F.cross_entropy(head(x_strong[j]), pseudo, reduction="none")
                loss = loss + (unsup * mask).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        head.eval()
        with torch.no_grad():
            if x_weak is not None:  # the class-balanced thresholds for the next epoch
                confidence, pseudo = head(x_weak).softmax(1).max(1)
                tau = torch.from_numpy(flexmatch_thresholds(
                    confidence.numpy(), pseudo.numpy(), classes, args.pseudo_threshold
                )).float()  # fmt: skip
                state["pseudo"] = int((confidence >= tau[pseudo]).sum())
            logits = head(x_val)
            val_loss = F.cross_entropy(logits, y_val).item()
            val_accuracy = float((logits.argmax(1) == y_val).float().mean())
        train_loss = float(np.mean(losses))
        if stage == "final":
            log(f"epoch={epoch} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                f"val_accuracy={val_accuracy:.4f}")  # fmt: skip
        elif epoch % 10 == 0:
            log(f"{stage} epoch {epoch}: train loss {train_loss:.4f}, "
                f"validation accuracy {val_accuracy:.4f}")  # fmt: skip
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_accuracy": val_accuracy})  # fmt: skip
        if [val_accuracy, -val_loss] > state["key"]:
            state.update(best={k: v.clone() for k, v in head.state_dict().items()},
                         key=[val_accuracy, -val_loss], epoch=epoch, bad=0)  # fmt: skip
        else:
            state["bad"] += 1
            if args.patience and state["bad"] >= args.patience:
                break
    log(f"{stage}: head on {run.arch} features, {state['pseudo']} of {len(unlabeled)} unlabeled "
        f"images above their class threshold")  # fmt: skip
    return {
        "best": network_state(bank.backbone, state["best"], mean, std),
        "history": state["history"],
        "best_epoch": state["epoch"],
        "pseudo": state["pseudo"],
    }


def network_state(backbone, head: dict, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """The backbone's weights with the head folded in: the standardisation moves into the
    Linear layer (W / std, b - W mean / std), so the served network is the plain architecture
    and inference.py needs nothing of this module."""
    weight = head["weight"] / std
    bias = head["bias"] - weight @ mean
    name = models.head_name(backbone)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    state[f"{name}.weight"], state[f"{name}.bias"] = weight.float(), bias.float()
    return state


def head_logits(bank: FeatureBank, state: dict, paths: list[str]) -> np.ndarray:
    """The logits the served network gives these images, from the bank (no backbone pass)."""
    name = models.head_name(bank.backbone)
    weight, bias = state[f"{name}.weight"].numpy(), state[f"{name}.bias"].numpy()
    return bank(paths) @ weight.T + bias
