"""The reproductions' statistics (``monai_dpaat.reproduce.stats``): one rule for whether a paired test settles a
paper's claim, used by both papers' verdicts."""

from __future__ import annotations

import pytest
from scipy import stats

from monai_dpaat.reproduce.stats import claim_outcome, paired_test, summarize


def test_paired_test_is_scipys_ttest_rel():
    a, b = [0.61, 0.58, 0.66, 0.70], [0.52, 0.55, 0.57, 0.60]
    test = paired_test(a, b)
    reference = stats.ttest_rel(a, b)
    assert test["p"] == pytest.approx(reference.pvalue) and test["t"] == pytest.approx(reference.statistic)
    assert test["mean_difference"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 4)


@pytest.mark.parametrize("a, b, direction, outcome", [
    ([0.61, 0.58, 0.66, 0.70], [0.52, 0.55, 0.57, 0.60], +1, "held"),
    ([0.61, 0.58, 0.66, 0.70], [0.52, 0.55, 0.57, 0.60], -1, "contradicted"),
    ([0.61, 0.50, 0.66, 0.52], [0.52, 0.55, 0.57, 0.60], +1, "not significant"),
    ([0.61], [0.52], +1, "untested"),
    ([0.6, 0.7], [0.5, 0.6], +1, "untested"),  # every difference equal: no variance, no test
])
def test_claim_outcome(a, b, direction, outcome):
    assert claim_outcome(paired_test(a, b), direction) == outcome


def test_one_seed_has_no_spread():
    assert summarize([0.5])["std"] is None and summarize([0.5, 0.7])["std"] == pytest.approx(0.1414, abs=1e-4)
