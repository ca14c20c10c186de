"""Spot checks of auto-labels: the measured accuracy of a champion, and when to stop it.

A share ``AutoLabelAuditFraction`` of the items a champion decides to auto-label is drawn
(by a hash of the item id salted with the model version) and sent to people blind instead
(review reason ``spot_check``); the model's answer is kept on the item, hidden. Each
person's answer is one observation, correct or not, of that champion's accuracy on what it
auto-labels, ``P(correct | confidence >= threshold)``: exactly the rate its certificate
promises to be at least the target.

- The figures: answered, correct, accuracy and a two-sided Clopper-Pearson interval at the
  stack's ``CertificationConfidence``.
- The alarm: a champion is suspended when the interval's upper bound is below the target
  AND the evidence survives looking after every answer: a Beta(1, 1) mixture of likelihood
  ratios against the target (a nonnegative supermartingale while the true accuracy is at
  least the target) reaches ``1 / alpha``. By Ville's inequality a champion that does meet
  its target is suspended, over all the answers it will ever get, with probability at most
  ``alpha = 1 - CertificationConfidence``. The interval alone, checked after each answer,
  would raise false alarms far more often (each look is another chance).

Pure Python (the functions have no scipy: Lambda layers are size-limited); the beta
quantiles match ``scipy.stats.beta.ppf``, which ``training_jobs/classifier/calibration.py``
uses (``tests/unit/test_audit.py`` checks the two agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.domain.sampling import SPOT_CHECK, unit_hash

# Items table record of a champion's tally (no ``state``: never in the state index).
TALLY_PREFIX = "meta#audit#"


def tally_id(model_version: str) -> str:
    return f"{TALLY_PREFIX}{model_version}"


def is_spot_check_draw(item_id: str, model_version: str, fraction: float) -> bool:
    """Independent of the ingest audit draw (another salt) and of other champions' draws."""
    return unit_hash(f"spot-check:{model_version}", item_id) < fraction


# -- beta quantiles (regularized incomplete beta by Lentz's continued fraction) --------------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _continued_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def log_betainc(a: float, b: float, x: float) -> float:
    """log of the regularized incomplete beta function I_x(a, b) (a, b > 0), without underflow."""
    if x <= 0.0:
        return -math.inf
    if x >= 1.0:
        return 0.0
    front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return front + math.log(_continued_fraction(a, b, x)) - math.log(a)
    tail = math.exp(front) * _continued_fraction(b, a, 1.0 - x) / b
    return math.log1p(-min(tail, 1.0)) if tail < 1.0 else -math.inf


def betainc(a: float, b: float, x: float) -> float:
    return math.exp(log_betainc(a, b, x))


def beta_ppf(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b), by bisection on the (monotone) distribution function."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2.0


def clopper_pearson(correct: int, answered: int, confidence: float) -> tuple[float, float]:
    """Two-sided exact binomial interval for the accuracy at level ``confidence``."""
    if answered <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if correct <= 0 else beta_ppf(alpha / 2, correct, answered - correct + 1)
    high = 1.0 if correct >= answered else beta_ppf(1 - alpha / 2, correct + 1, answered - correct)
    return low, high


def log_evidence_below(correct: int, answered: int, target: float) -> float:
    """log of the Beta(1, 1)-mixture likelihood ratio of "accuracy p < target" against
    "p = target": ``int_0^t p^k (1-p)^(n-k) dp / t`` over ``t^k (1-t)^(n-k)``.

    For every p' >= target the factor each answer contributes has expectation <= 1, so this
    is a nonnegative supermartingale with start 1 under "accuracy >= target", whatever the
    number of answers looked at.
    """
    k, n = correct, answered
    mixture = _log_beta(k + 1, n - k + 1) + log_betainc(k + 1, n - k + 1, target)
    return mixture - math.log(target) - k * math.log(target) - (n - k) * math.log1p(-target)


@dataclass(frozen=True)
class Measurement:
    model_version: str
    answered: int
    correct: int
    target: float
    confidence: float

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def interval(self) -> tuple[float, float]:
        return clopper_pearson(self.correct, self.answered, self.confidence)

    @property
    def below_target(self) -> bool:
        """The alarm: upper bound below the target, and evidence valid under repeated looks."""
        if self.answered <= 0:
            return False
        alpha = 1.0 - self.confidence
        # the evidence first: it is cheap, and almost always decides (quantiles bisect)
        if log_evidence_below(self.correct, self.answered, self.target) < math.log(1 / alpha):
            return False
        return self.interval[1] < self.target

    def describe(self) -> str:
        low, high = self.interval
        return (
            f"audited accuracy {self.accuracy or 0.0:.2f} "
            f"({self.confidence:.0%} CI {low:.2f}-{high:.2f}, {self.correct}/{self.answered}) "
            f"below {self.target:.2f}"
        )


def measurement(tally: Mapping[str, Any], target: float, confidence: float) -> Measurement:
    return Measurement(
        model_version=str(tally.get("model_version", "")),
        answered=max(0, int(tally.get("answered") or 0)),
        correct=max(0, int(tally.get("correct") or 0)),
        target=target,
        confidence=confidence,
    )


# -- observations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What one answer changes: the champion's tally (deltas) and the item's ``spot_check``."""

    model_version: str
    answered: int  # +1 for a first answer, 0 for a correction
    correct: int  # -1, 0 or +1
    record: dict  # the item's ``spot_check`` attribute after the answer


def observation(current: Mapping[str, Any], label: str) -> Observation | None:
    """The tally change a person's ``label`` for the item as read (``current``) makes.

    A first answer to a spot-check item counts once (the item's conditional write makes the
    transition happen once); a later correction of that answer moves ``correct`` only.
    """
    if current.get("state") == "needs_review" and current.get("review_reason") == SPOT_CHECK:
        version = current.get("model_version")
        if not version or current.get("label_source") != "model":
            return None
        correct = label == current.get("label")
        record = {
            "model_version": str(version),
            "model_label": str(current.get("label")),
            "confidence": float(current.get("confidence") or 0.0),
            "correct": correct,
        }
        return Observation(str(version), 1, int(correct), record)
    previous = current.get("spot_check")
    if current.get("state") == "human_labeled" and isinstance(previous, Mapping):
        correct = label == previous.get("model_label")
        delta = int(correct) - int(bool(previous.get("correct")))
        return Observation(
            str(previous.get("model_version")), 0, delta, {**previous, "correct": correct}
        )
    return None


def reverse(o: Observation) -> Observation:
    """The tally change that takes an observation back (undo)."""
    return Observation(o.model_version, -o.answered, -o.correct, o.record)
