"""Evaluation metrics (the reports in metrics.json; its schema: flywheel.contracts.metrics)."""

from __future__ import annotations

import numpy as np


def classification_report(y_true: list[str], y_pred: list[str], classes: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows: truth)."""
    labels = list(classes) + sorted({*y_true, *y_pred} - set(classes))
    index = {name: i for i, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[index[t], index[p]] += 1
    per_class = {}
    for i, name in enumerate(labels):
        tp, predicted, support = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
        }
    n = len(y_true)
    return {
        "n": n,
        "accuracy": float(np.trace(matrix) / n) if n else 0.0,
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
    }
