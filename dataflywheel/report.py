"""The demo's report: per-round figures, markdown + JSON, and the plots.

Pure data in, files out (matplotlib with the Agg backend); ``dataflywheel/demo.py``
collects the data through the stack's APIs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def accuracy_text(round_: dict) -> str:
    """Auto-label accuracy as a percentage, or "n/a" when the round auto-labeled nothing."""
    return f"{round_['auto_label_accuracy']:.2%}" if round_["auto_labeled"] else "n/a"


def round_metrics(
    items: list[dict[str, Any]],
    truth: dict[str, str],
    n_uploaded_unlabeled: int,
    champion: dict[str, Any] | None,
) -> dict[str, Any]:
    """Coverage and accuracy of the auto-labels against the true labels."""
    by_state: dict[str, int] = {}
    for i in items:
        by_state[i["state"]] = by_state.get(i["state"], 0) + 1
    auto = [i for i in items if i["state"] == "auto_labeled" and i["item_id"] in truth]
    correct = sum(str(i.get("label")) == truth[i["item_id"]] for i in auto)
    human = by_state.get("human_labeled", 0)
    not_human = [
        i
        for i in items
        if i["state"] in ("auto_labeled", "needs_review", "unlabeled") and i["item_id"] in truth
    ]
    return {
        "items": by_state,
        "human_labels": human,
        "human_label_share": human / max(1, len(truth)),
        "auto_labeled": len(auto),
        "auto_label_accuracy": correct / len(auto) if auto else 0.0,
        # share of everything uploaded without a label that the model labeled
        "coverage_of_unlabeled_uploads": len(auto) / max(1, n_uploaded_unlabeled),
        # share of what no person has labeled (yet) that the model labeled
        "coverage_of_remaining": len(auto) / max(1, len(not_human)),
        "needs_review": by_state.get("needs_review", 0),
        "champion": {
            k: (champion or {}).get(k)
            for k in (
                "model_version",
                "test_accuracy",
                "threshold",
                "target_accuracy",
                "promoted_at",
            )
        },
    }


def coverage_curve(
    items: list[dict[str, Any]], truth: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the k most confident model labels vs k / n (items no person labeled)."""
    scored = [
        (float(i["confidence"]), str(i.get("label")) == truth[i["item_id"]])
        for i in items
        if i["state"] in ("auto_labeled", "needs_review")
        and i.get("confidence") is not None
        and i["item_id"] in truth
    ]
    if not scored:
        return np.array([]), np.array([])
    scored.sort(key=lambda s: -s[0])
    hits = np.cumsum([s[1] for s in scored])
    k = np.arange(1, len(scored) + 1)
    return k / len(scored), hits / k


def plot_coverage(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    points: dict[str, tuple[float, float]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, (cov, acc) in curves.items():
        if len(cov):
            (line,) = ax.plot(cov, acc, label=name)
            if name in points:
                ax.scatter(*points[name], color=line.get_color(), zorder=3)
    ax.axhline(0.97, color="grey", ls="--", lw=0.8, label="97% target")
    ax.set_xlabel("coverage (share of model-labeled items, most confident first)")
    ax.set_ylabel("accuracy against true labels")
    ax.set_ylim(0.8, 1.005)
    ax.set_title("Auto-label accuracy vs coverage (dot = champion's threshold)")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(
    items: list[dict[str, Any]], truth: dict[str, str], classes: list[str], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = {c: n for n, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for i in items:
        if i["state"] == "auto_labeled" and i["item_id"] in truth and str(i.get("label")) in idx:
            m[idx[truth[i["item_id"]]], idx[str(i["label"])]] += 1
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(np.log1p(m), cmap="Blues")
    for r in range(len(classes)):
        for c in range(len(classes)):
            if m[r, c]:
                ax.text(
                    c,
                    r,
                    str(m[r, c]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if r == c else "black",
                )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("auto-label")
    ax.set_ylabel("true label")
    ax.set_title("Final auto-labels: confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, epochs in curves.items():
        if not epochs:
            continue
        e = [x["epoch"] for x in epochs]
        a1.plot(e, [x.get("train_loss") for x in epochs], label=f"{name} train")
        a1.plot(e, [x.get("val_loss") for x in epochs], ls="--", label=f"{name} val")
        a2.plot(e, [x.get("val_accuracy") for x in epochs], label=name)
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend(fontsize=7)
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation accuracy")
    a2.legend(fontsize=7)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle("Training curves per round")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_dir: Path, report: dict[str, Any]) -> str:
    """Write report.json and report.md; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    t = report["targets"]
    goals = t["goals"]

    def met(key: str) -> str:
        return "yes" if t[key] else "NO"

    runtime = f"{report['runtime_s'] / 60:.1f} min"
    lines = [
        "# dataflywheel demo report",
        "",
        f"Dataset: scikit-learn digits, {report['dataset']['images']} images "
        f"(8x8 upscaled to {report['dataset']['image_size']}px PNG), seed {report['seed']}. "
        f"Runtime {report['runtime_s'] / 60:.1f} min on {report['cpus']} CPU core(s).",
        "",
        "## Final figures",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
        f"| auto-labeled share of the unlabeled uploads | {t['coverage']:.1%} "
        f"| >= {goals['coverage']:.0%} | {met('coverage_met')} |",
        f"| accuracy of auto-labels vs true labels | {t['accuracy']:.2%} "
        f"| >= {goals['accuracy']:.0%} | {met('accuracy_met')} |",
        f"| dataset labeled by people (seed + review) | {t['human_share']:.1%} "
        f"| <= {goals['human_share']:.0%} | {met('human_met')} |",
        f"| runtime | {runtime} | < {goals['runtime_s'] / 60:.0f} min | {met('runtime_met')} |",
        "",
        "## Rounds",
        "",
        "| round | human labels | auto-labeled | coverage (of unlabeled uploads) "
        "| coverage (of items no person labeled) | auto-label accuracy | needs review "
        "| champion | champion test acc | threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        ch = r["champion"]
        lines.append(
            f"| {r['round']} | {r['human_labels']} ({r['human_label_share']:.1%}) "
            f"| {r['auto_labeled']} | "
            f"{r['coverage_of_unlabeled_uploads']:.1%} | {r['coverage_of_remaining']:.1%} | "
            f"{accuracy_text(r)} | {r['needs_review']} | {ch.get('model_version')} | "
            f"{float(ch.get('test_accuracy') or 0):.4f} | {float(ch.get('threshold') or 0):.3f} |"
        )
    lines += ["", "## Timeline", ""]
    lines += [f"- {e['t']:6.1f}s  {e['what']}" for e in report["timeline"]]
    lines += [
        "",
        "## Plots",
        "",
        "![accuracy vs coverage](coverage.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "![training curves](training.png)",
        "",
    ]
    md = "\n".join(lines)
    (out_dir / "report.md").write_text(md)
    return md
