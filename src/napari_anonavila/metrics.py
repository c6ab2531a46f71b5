"""Evaluation as in the paper: AUROC and AUPR (average precision) with seeded percentile bootstrap CIs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .calibration import clopper_pearson

__all__ = ["DECISIONS", "MetricCI", "bootstrap_metrics", "decision_rates", "flag_slides"]

# calibrated slide-level decisions: column of a slide table -> when a slide is called abnormal
DECISIONS = {"n_significant": "any patch significant at the calibrated false-discovery rate",
             "p_slide": "slide p-value against normal slides at most alpha"}


@dataclass(frozen=True)
class MetricCI:
    """A point estimate and its 95% percentile bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_metrics(labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> dict[str, MetricCI]:
    """AUROC and AUPR of ``scores`` for binary ``labels`` (1 = abnormal), with bootstrap CIs.

    Each resample draws the full test set with replacement; resamples with a single class are redrawn.
    """
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got values {sorted(set(np.unique(y)))[:5]}")
    if y.min() == y.max():
        raise ValueError("AUROC needs both classes among the labels")
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} score(s) are NaN")
    rng = np.random.default_rng(seed)
    boots = {"auroc": [], "aupr": []}
    while len(boots["auroc"]) < n_boot:
        idx = rng.integers(0, y.size, y.size)
        if y[idx].min() == y[idx].max():
            continue
        boots["auroc"].append(roc_auc_score(y[idx], s[idx]))
        boots["aupr"].append(average_precision_score(y[idx], s[idx]))
    point = {"auroc": roc_auc_score(y, s), "aupr": average_precision_score(y, s)}
    q = (100 * alpha / 2, 100 * (1 - alpha / 2))
    return {k: MetricCI(float(point[k]), *map(float, np.percentile(boots[k], q))) for k in point}


def flag_slides(column: str, values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """The calibrated decision of ``DECISIONS[column]`` for each slide's value."""
    v = np.asarray(values, dtype=np.float64)
    if column == "n_significant":
        return v > 0
    if column == "p_slide":
        return v <= alpha
    raise ValueError(f"no calibrated decision for column {column!r}; use one of {sorted(DECISIONS)}")


def decision_rates(labels: np.ndarray, flagged: np.ndarray) -> dict:
    """False-alarm rate on normal slides and sensitivity on abnormal ones of a yes/no decision, each with its exact
    (Clopper-Pearson) 95% interval."""
    y = np.asarray(labels).astype(int).ravel()
    f = np.asarray(flagged, dtype=bool).ravel()
    if y.shape != f.shape:
        raise ValueError(f"labels ({y.size}) and decisions ({f.size}) differ in length")
    out: dict = {"n_normal": int((y == 0).sum()), "n_abnormal": int((y == 1).sum())}
    for name, cls in (("false_alarm_rate", 0), ("sensitivity", 1)):
        n = int((y == cls).sum())
        k = int(f[y == cls].sum())
        out[name] = MetricCI(k / n, *clopper_pearson(k, n)).to_dict() if n else None
    return out
