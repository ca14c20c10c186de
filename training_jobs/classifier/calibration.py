"""Calibration and the auto-label threshold: pure functions, arrays in, numbers out.

- `fit_temperature`: one scalar T for softmax(logits / T), fitted by LBFGS on the negative
  log-likelihood of held-out data (Guo et al. 2017, "On Calibration of Modern Neural Networks").
- `choose_threshold`: the lowest confidence threshold whose auto-labels are at least
  `target_accuracy` accurate with a one-sided Clopper-Pearson lower bound at `confidence`.
  Thresholds are tested from the highest down and the scan stops at the first one that
  fails (fixed-sequence testing), so picking the lowest one does not cherry-pick noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import beta

NO_AUTO_LABEL = 1.01  # a threshold above any confidence: auto-label nothing
# Candidate thresholds, fixed before seeing data: 0.001 steps, finer close to 1.
THRESHOLD_GRID = np.unique(
    np.concatenate([np.linspace(0, 0.999, 1000), 1 - np.logspace(-3, -6, 31)])
)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """Temperature minimising the NLL of `labels` under softmax(logits / T), the labels
    smoothed by 1/(n+2) (see below)."""
    if len(labels) == 0:
        return 1.0
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    # Laplace's rule of succession: n of n right is evidence for accuracy (n+1)/(n+2), not 1.
    # Without it a perfectly separated validation set drives T to 0 and every confidence, the
    # wrong ones too, rounds to 1.0, leaving the threshold nothing to separate.
    n, k = len(y), x.shape[1]
    smoothing = min(1.0, k / ((k - 1) * (n + 2))) if k > 1 else 0.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) > 0
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y, label_smoothing=smoothing)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    # Guard rails only: the smoothed optimum is finite.
    return float(np.clip(temperature, 0.05, 20.0)) if np.isfinite(temperature) else 1.0


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    confidences, correct = np.asarray(confidences, float), np.asarray(correct, float)
    if len(confidences) == 0:
        return 0.0
    which = np.minimum((confidences * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidences[in_bin].mean())
    return float(ece)


def lower_confidence_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound on a binomial proportion (k successes of n)."""
    if n == 0 or k == 0:
        return 0.0
    return float(beta.ppf(1 - confidence, k, n - k + 1))


def min_samples_for(target_accuracy: float, confidence: float = 0.95) -> int:
    """Fewest all-correct samples whose lower bound reaches the target: n = log(1-c)/log(t)."""
    return int(np.ceil(np.log(1 - confidence) / np.log(target_accuracy)))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # auto-label when calibrated confidence >= threshold
    target_accuracy: float
    confidence: float  # of the lower bound
    reached: bool  # False: no threshold certifies the target, auto-label nothing
    coverage: float  # fraction of the calibration samples at or above the threshold
    accuracy: float  # their observed accuracy
    lower_bound: float  # its Clopper-Pearson lower bound
    n: int  # calibration samples
    n_selected: int

    def as_dict(self) -> dict:
        return asdict(self)


def choose_threshold(
    confidences: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float = 0.95,
    confidence: float = 0.95,
) -> ThresholdChoice:
    confidences, correct = np.asarray(confidences, float), np.asarray(correct, bool)
    n = len(confidences)
    order = np.argsort(-confidences)
    cum_correct = np.concatenate([[0], np.cumsum(correct[order])])
    grid = THRESHOLD_GRID[::-1]  # highest first
    selected = np.searchsorted(-confidences[order], -grid, side="right")  # count of conf >= t
    k = cum_correct[selected]
    with np.errstate(invalid="ignore"):
        bounds = np.where(k > 0, beta.ppf(1 - confidence, np.maximum(k, 1), selected - k + 1), 0.0)
    passed = bounds >= target_accuracy
    if not passed.any():
        return ThresholdChoice(
            NO_AUTO_LABEL, target_accuracy, confidence, False, 0.0, 0.0, 0.0, n, 0
        )
    # Fixed sequence: from the first threshold that passes, go down until the first failure.
    first = int(np.argmax(passed))
    failures = np.flatnonzero(~passed[first:])
    last = first + (int(failures[0]) - 1 if len(failures) else len(grid) - first - 1)
    m, hits = int(selected[last]), int(k[last])
    # The least confident certified sample, not the grid point below it: confidences in the gap
    # down to the next grid point were never observed, so they are not certified.
    return ThresholdChoice(
        float(confidences[order][m - 1]),
        target_accuracy,
        confidence,
        True,
        m / n,
        hits / m,
        float(bounds[last]),
        n,
        m,
    )
