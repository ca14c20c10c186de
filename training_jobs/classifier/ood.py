"""Out-of-distribution refusal: is an input unlike anything the model was trained on?

The detector (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
samples and adversarial attacks") models the penultimate features (models.embed) of each class
as a Gaussian with its own mean and one covariance shared by all classes; the score of an input
is its squared Mahalanobis distance to the nearest class mean. The shared covariance is the
within-class scatter shrunk towards a multiple of the identity with the Ledoit-Wolf (2004)
coefficient, so that it stays well conditioned with fewer images than feature dimensions.
Beyond `max_components` dimensions only the leading eigenvectors are kept and the other
directions share their mean variance (a probabilistic-PCA covariance): the detector stays a few
MB of JSON for 1280-d features, and is the exact Mahalanobis distance below that.

The refusal threshold is a conformal quantile of the score on HELD-OUT in-distribution features
(validation images the means and covariance never saw): if a new in-distribution image is
exchangeable with those, P(refused) <= 1 - quantile (e.g. 1% at the default 0.99), and no more
than that plus 1/(n+1) on average. What it does not promise: that every out-of-distribution
input is refused; a nearby domain (other handwriting, another camera) can score like the
training data. Images with almost no pixel variation (blank, constant) are refused by
`is_blank`, since a constant image can land near a class mean.

Pure numpy: the detector is a JSON-serialisable dict stored in the model config under "ood".
"""

from __future__ import annotations

import math

import numpy as np

VERSION = 1
MIN_PIXEL_STD = 2.0  # grey levels (0..255): below this an image is blank, whatever the model says


def ledoit_wolf(centered: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrunk covariance (1 - a) S + a mu I of rows already centred, and the coefficient a
    (Ledoit & Wolf 2004, as scikit-learn's LedoitWolf computes it)."""
    n, d = centered.shape
    sample = centered.T @ centered / n
    mu = np.trace(sample) / d
    delta = np.sum((sample - mu * np.eye(d)) ** 2) / d
    squares = centered**2
    beta = np.sum(squares.T @ squares / n - sample**2) / (d * n)
    shrinkage = 0.0 if delta == 0 else float(min(beta, delta) / delta)
    return (1 - shrinkage) * sample + shrinkage * mu * np.eye(d), shrinkage


def fit(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    heldout_features: np.ndarray,
    quantile: float = 0.99,
    max_components: int = 128,
) -> dict:
    """A detector from the training features (N, D) and their class indices (N,), with its
    refusal threshold at the conformal `quantile` of the held-out in-distribution scores.

    Classes without training features get no mean (nothing can be near them). The result is
    JSON-serialisable: {"version", "method", "means", "classes", "components", "eigenvalues",
    "residual_variance", "threshold", "quantile", "n_train", "n_heldout", "shrinkage"}.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    x = np.asarray(train_features, np.float64)
    labels = np.asarray(train_labels)
    heldout = np.asarray(heldout_features, np.float64)
    if x.ndim != 2 or len(x) != len(labels) or len(x) < 2:
        raise ValueError("need at least 2 training feature rows (N, D) with N labels")
    if heldout.ndim != 2 or heldout.shape[1] != x.shape[1] or not len(heldout):
        raise ValueError("need held-out features (M, D) with the training features' D")
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(0) for c in classes])
    centered = x - means[np.searchsorted(classes, labels)]
    covariance, shrinkage = ledoit_wolf(centered)
    eigenvalues, vectors = np.linalg.eigh(covariance)  # ascending
    eigenvalues = np.maximum(eigenvalues[::-1], 1e-12 * max(eigenvalues[-1], 1e-30))
    vectors = vectors[:, ::-1]
    k = min(max_components, x.shape[1])
    rest = eigenvalues[k:]
    detector = {
        "version": VERSION,
        "method": "mahalanobis-shared-covariance",
        "classes": [int(c) for c in classes],
        "means": compact(means),
        "components": compact(vectors[:, :k].T),  # (k, D), orthonormal rows
        "eigenvalues": compact(eigenvalues[:k]),
        "residual_variance": float(rest.mean()) if len(rest) else 1.0,
        "shrinkage": shrinkage,
        "n_train": len(x),
    }
    detector.update(threshold=heldout_threshold(score(detector, heldout), quantile),
                    quantile=quantile, n_heldout=len(heldout))  # fmt: skip
    return detector


def compact(array: np.ndarray) -> list:
    """Nested lists of floats with 7 significant digits (float32 precision): about half the
    JSON of full-precision floats, and the same numbers after a JSON round trip."""
    return np.vectorize(lambda v: float(f"{v:.7g}"), otypes=[float])(array).tolist()


def heldout_threshold(scores: np.ndarray, quantile: float) -> float:
    """The ceil((n + 1) q)-th smallest of n held-out scores (split-conformal quantile); with
    fewer than q / (1 - q) scores that rank does not exist and the largest score is used
    (the guarantee then weakens to 1 / (n + 1))."""
    ordered = np.sort(np.asarray(scores, np.float64))
    rank = min(math.ceil((len(ordered) + 1) * quantile), len(ordered))
    return float(ordered[rank - 1])


def score(detector: dict, features: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of `features` (N, D) to its nearest class mean:
    higher is less like the training data."""
    x = np.asarray(features, np.float64)
    means = np.asarray(detector["means"], np.float64)
    components = np.asarray(detector["components"], np.float64)
    if x.ndim != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"features must be (N, {means.shape[1]}), got {x.shape}")
    inverse = 1 / np.asarray(detector["eigenvalues"], np.float64)
    exact = components.shape[0] == means.shape[1]  # every direction is a component
    best = np.full(len(x), np.inf)
    for mean in means:  # one class at a time: (N, D) memory, whatever the number of classes
        z = x - mean
        projected = z @ components.T  # (N, k)
        distance = (projected**2) @ inverse
        if not exact:  # the directions left over share one variance
            left = np.maximum((z**2).sum(1) - (projected**2).sum(1), 0)
            distance += left / detector["residual_variance"]
        best = np.minimum(best, distance)
    return best


def is_outlier(detector: dict, features: np.ndarray) -> np.ndarray:
    """True where the score exceeds the held-out threshold: refuse to auto-label those."""
    return score(detector, features) > detector["threshold"]


def is_blank(images: np.ndarray | list[np.ndarray], min_std: float = MIN_PIXEL_STD) -> np.ndarray:
    """True for images (HWC or CHW uint8, any size) whose pixels barely vary: a constant image
    carries no content to label, and its features can still land close to a class mean."""
    return np.array([float(np.asarray(image, np.float32).std()) < min_std for image in images])
