"""Evaluation against scikit-learn, with seeded bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from napari_anonavila.metrics import bootstrap_metrics


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    s = rng.normal(size=n) + y
    return y, s


def test_point_estimates_equal_sklearn():
    y, s = _data()
    m = bootstrap_metrics(y, s, n_boot=200, seed=1)
    assert m["auroc"].value == pytest.approx(roc_auc_score(y, s))
    assert m["aupr"].value == pytest.approx(average_precision_score(y, s))
    for v in m.values():
        assert v.ci_low <= v.value <= v.ci_high


def test_bootstrap_is_seeded():
    y, s = _data()
    a = bootstrap_metrics(y, s, n_boot=300, seed=5)
    b = bootstrap_metrics(y, s, n_boot=300, seed=5)
    c = bootstrap_metrics(y, s, n_boot=300, seed=6)
    assert a == b
    assert a["auroc"].ci_low != c["auroc"].ci_low


@pytest.mark.parametrize(("y", "s", "match"), [
    ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
    ([0, 1], [0.1], "differ in length"),
    ([0, 2], [0.1, 0.2], "0/1"),
    ([0, 1], [0.1, np.nan], "NaN"),
])
def test_bad_inputs(y, s, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_metrics(np.array(y), np.array(s), n_boot=10)
