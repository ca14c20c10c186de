"""Calibration and the auto-label threshold: pure functions, arrays in, numbers out.

- `fit_temperature`: one scalar T for softmax(logits / T), fitted by LBFGS on the negative
  log-likelihood of held-out data (Guo et al. 2017, "On Calibration of Modern Neural Networks").
- `certify_threshold`: the lowest confidence threshold whose auto-labels are at least
  `target_accuracy` accurate with probability `confidence` (Learn-then-Test: binomial tests on
  a fixed grid, run as a few fixed sequences from pre-declared starts).
- `labels_needed`: how many representative labels would certify more coverage.
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


def min_samples_for(target_accuracy: float, confidence: float = 0.95, sequences: int = 1) -> int:
    """Fewest all-correct samples whose lower bound, at level 1 - (1 - c) / sequences, reaches
    the target: n = log(alpha) / log(t). certify_threshold runs len(START_MULTIPLES) sequences."""
    return int(np.ceil(np.log((1 - confidence) / sequences) / np.log(target_accuracy)))


# Where the fixed sequences start: at the highest threshold that selects START_MULTIPLES times
# n_min calibration samples, n_min being the fewest that could pass with no error at all. The
# starts depend only on how many confidences reach each threshold, never on which samples are
# right; several starts, so one confidently wrong image near the top ends one sequence, not the
# certificate (what made the single all-correct run of the earlier rule brittle).
START_MULTIPLES = (1.0, 1.5, 2.5, 4.0)


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # auto-label when calibrated confidence >= threshold
    target_accuracy: float
    confidence: float  # probability that the certificate holds (1 - delta)
    reached: bool  # False: no threshold certifies the target, auto-label nothing
    coverage: float  # fraction of the calibration samples at or above the threshold
    accuracy: float  # their observed accuracy
    lower_bound: float  # Clopper-Pearson lower bound at the per-sequence level
    n: int  # calibration samples
    n_selected: int
    method: str = "ltt-fixed-sequence"

    def as_dict(self) -> dict:
        return asdict(self)


def _selected_counts(confidences: np.ndarray, correct: np.ndarray, grid: np.ndarray):
    """For each threshold of a descending grid: how many samples reach it, how many are right."""
    order = np.argsort(-confidences, kind="stable")
    cum_correct = np.concatenate([[0], np.cumsum(correct[order])])
    selected = np.searchsorted(-confidences[order], -grid, side="right")  # count of conf >= t
    return order, selected, cum_correct[selected]


def certify_threshold(
    confidences: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float = 0.95,
    confidence: float = 0.95,
    starts: tuple[float, ...] = START_MULTIPLES,
    families: int = 1,
) -> ThresholdChoice:
    """The lowest threshold whose auto-labels are certified at least `target_accuracy` accurate.

    Learn-then-Test (Angelopoulos et al. 2021) over the fixed grid THRESHOLD_GRID: threshold t
    is certified when the binomial test of H0 "accuracy of samples with confidence >= t is below
    the target" rejects at level alpha = (1 - confidence) / len(starts), i.e. when the one-sided
    Clopper-Pearson lower bound at 1 - alpha reaches the target. The tests run as len(starts)
    fixed sequences, each from its start (START_MULTIPLES) down the grid until its first failure;
    the family-wise error is at most (1 - confidence) (Bonferroni over the sequences). `families`
    splits (1 - confidence) further: when one of `families` score functions (learners) was
    chosen on data that certifies, each is tested at its share, so the chosen one's certificate
    holds with probability >= confidence whichever was chosen (a union bound). Hence, when
    the calibration samples are drawn like the items to label (exchangeable), the accuracy of the
    auto-labels at the returned threshold is >= target with probability >= confidence. See
    docs/certification.md for what this does not cover.
    """
    confidences, correct = np.asarray(confidences, float), np.asarray(correct, bool)
    n = len(confidences)
    grid = THRESHOLD_GRID[::-1]  # highest first
    order, selected, k = _selected_counts(confidences, correct, grid)
    alpha = (1 - confidence) / (len(starts) * families)
    with np.errstate(invalid="ignore"):
        bounds = np.where(k > 0, beta.ppf(alpha, np.maximum(k, 1), selected - k + 1), 0.0)
    passed = bounds >= target_accuracy
    certified = np.zeros(len(grid), bool)
    n_min = np.log(alpha) / np.log(target_accuracy)
    for multiple in starts:
        reach = np.flatnonzero(selected >= np.ceil(multiple * n_min))
        if not len(reach):
            continue  # too few samples for this sequence: its share of the error stays unspent
        i = int(reach[0])
        while i < len(grid) and passed[i]:
            certified[i] = True
            i += 1
    if not certified.any():
        return ThresholdChoice(
            NO_AUTO_LABEL, target_accuracy, confidence, False, 0.0, 0.0, 0.0, n, 0
        )
    last = int(np.flatnonzero(certified)[-1])  # the lowest certified threshold
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


def labels_needed(
    confidences: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float,
    confidence: float = 0.95,
    coverages: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    starts: int = len(START_MULTIPLES),
    families: int = 1,
) -> list[dict]:
    """How many representative labels in all would certify each coverage, if the accuracy the
    model shows on its most confident `coverage` share stays what it is now.

    A projection for planning ("about N more labels would auto-label 90%"), not a promise:
    `labels` is None where the observed accuracy is not above the target (a better model is
    needed, not more certification labels).
    """
    confidences, correct = np.asarray(confidences, float), np.asarray(correct, bool)
    n = len(confidences)
    ranked = correct[np.argsort(-confidences, kind="stable")]
    alpha = (1 - confidence) / (starts * families)
    out = []
    for coverage in coverages:
        m = max(1, int(np.ceil(coverage * n))) if n else 0
        accuracy = float(ranked[:m].mean()) if m else 0.0
        row = {"coverage": coverage, "observed_accuracy": round(accuracy, 4), "labels": None}
        if m and accuracy > target_accuracy:

            def passes(total: int, coverage=coverage, accuracy=accuracy) -> bool:
                selected = int(np.ceil(coverage * total))
                hits = int(np.floor(accuracy * selected))
                return hits > 0 and beta.ppf(alpha, hits, selected - hits + 1) >= target_accuracy

            high = max(n, 1)
            while not passes(high) and high < 10**9:
                high *= 2
            low = high // 2
            while high - low > 1 and low >= n:  # the smallest total that passes
                mid = (low + high) // 2
                low, high = (low, mid) if passes(mid) else (mid, high)
            row["labels"] = int(high)
        out.append(row)
    return out
