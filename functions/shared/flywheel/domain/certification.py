"""What a model's certificate says, in words: why it auto-labels what it does, or nothing.

Reads the `threshold` block of metrics.json (training_jobs/classifier/calibration.py writes it):
`reached`, `threshold`, `coverage`, `n` (random labels that certified), `target_accuracy`,
`confidence`, `min_all_correct` (the fewest all-correct labels that can certify anything under
the model's procedure), and `labels_needed` (rows of coverage -> random labels in all that
would certify it if the model's accuracy stays what it is).
"""

from __future__ import annotations

import math


def min_all_correct(target: float, confidence: float) -> int:
    """Fewest random labels, all correct, that can certify `target` at all, for models whose
    metrics.json predates `min_all_correct` (one Clopper-Pearson sequence)."""
    return math.ceil(math.log(1 - confidence) / math.log(target))


def explain(threshold: dict) -> str:
    target, confidence = float(threshold["target_accuracy"]), float(threshold["confidence"])
    n = int(threshold.get("n", 0))
    promise = f"accuracy >= {target:.0%} with probability {confidence:.0%}"
    if threshold.get("reached"):
        text = (
            f"auto-labels confidence >= {float(threshold['threshold']):.3f}: "
            f"{float(threshold['coverage']):.1%} of {n} random labels certify {promise}"
        )
    else:
        text = (
            f"auto-labels nothing: {n} random labels cannot certify {promise} "
            f"(at least {threshold.get('min_all_correct') or min_all_correct(target, confidence)} "
            "all correct are needed)"
        )
    better = [
        row
        for row in threshold.get("labels_needed") or []
        if row.get("labels") and float(row["coverage"]) > float(threshold.get("coverage", 0))
    ]
    if better:
        row = min(better, key=lambda r: r["labels"])
        more = max(0, int(row["labels"]) - n)
        text += (
            f"; about {more} more random labels (audit answers or a random seed) would certify "
            f"{float(row['coverage']):.0%} if the model stays as accurate"
        )
    return text


def curve(threshold: dict) -> list[dict]:
    """The coverage-accuracy curve on the random labels (`labels_needed`), each step with
    what it needs: `certified` (the certificate covers it), `more` random labels (if the model
    stays as accurate), or `better_model` (the model itself is below the target there)."""
    n = int(threshold.get("n", 0))
    covered = float(threshold.get("coverage") or 0.0) if threshold.get("reached") else 0.0
    rows = []
    for row in threshold.get("labels_needed") or []:
        coverage, labels = float(row["coverage"]), row.get("labels")
        accuracy = row.get("observed_accuracy")
        if coverage <= covered + 1e-9:
            status, more = "certified", 0
        elif labels is None:
            status, more = "better_model", None
        else:
            status, more = "more_labels", max(0, int(labels) - n)
        rows.append({
            "coverage": coverage,
            "observed_accuracy": None if accuracy is None else float(accuracy),
            "labels": None if labels is None else int(labels),
            "more": more,
            "status": status,
        })  # fmt: skip
    return rows


def curve_lines(threshold: dict) -> list[str]:
    """`curve` as `flywheel status` prints it, one coverage step a line."""
    out = []
    for row in curve(threshold):
        accuracy = row["observed_accuracy"]
        seen = "-" if accuracy is None else f"{accuracy:.1%}"
        if row["status"] == "certified":
            need = "certified"
        elif row["status"] == "better_model":
            need = "below the target: more labels cannot certify it, a better model can"
        else:
            need = f"about {row['more']} more random labels ({row['labels']} in all)"
        out.append(f"most confident {row['coverage']:.0%}: {seen} right; {need}")
    return out
