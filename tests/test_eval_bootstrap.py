"""Paired bootstrap: exact values, exact enumeration of the bootstrap distribution, determinism, pairing."""

import itertools

import numpy as np
import pandas as pd
import pytest

from diffusion_rl.evaluation.bootstrap import compare, paired_bootstrap


def test_constant_difference_has_a_degenerate_interval():
    ci = paired_bootstrap([1.0, 2.0, 5.0], [1.5, 2.5, 5.5], num_resamples=50)
    assert ci.diff == pytest.approx(0.5) and ci.low == pytest.approx(0.5) and ci.high == pytest.approx(0.5)
    assert ci.n == 3


def test_quantiles_match_exact_enumeration():
    diffs = np.array([0.0, 1.0, 3.0, 7.0])
    # Exact bootstrap distribution of the mean: all 4^4 index tuples are equally likely.
    means = np.sort([diffs[list(t)].mean() for t in itertools.product(range(4), repeat=4)])
    cdf_atoms = np.unique(means)
    cdf = np.array([(means <= a).mean() for a in cdf_atoms])
    low_atom = cdf_atoms[np.argmax(cdf >= 0.1)]
    high_atom = cdf_atoms[np.argmax(cdf >= 0.9)]
    # Both quantiles are well inside an atom (no CDF value within 0.01 of 0.1 / 0.9), so sampling lands on it.
    assert np.min(np.abs(cdf - 0.1)) > 0.01 and np.min(np.abs(cdf - 0.9)) > 0.01
    ci = paired_bootstrap(np.zeros(4), diffs, num_resamples=20000, confidence=0.80, seed=3, method="percentile")
    assert ci.diff == pytest.approx(2.75)
    assert ci.low == pytest.approx(low_atom) and ci.high == pytest.approx(high_atom)


def test_bca_moves_the_interval_towards_the_long_tail():
    """BCa (the default) corrects the percentile interval for skew: on right-skewed samples both of its ends lie
    above the percentile interval's (190 of 200 seeded exponential samples of 15; the rest are near-symmetric)."""
    rng = np.random.default_rng(0)
    shifted = 0
    for i, sample in enumerate(rng.exponential(1.0, size=(200, 15))):
        bca = paired_bootstrap(np.zeros(15), sample, num_resamples=500, seed=i)
        percentile = paired_bootstrap(np.zeros(15), sample, num_resamples=500, seed=i, method="percentile")
        assert bca.diff == percentile.diff == pytest.approx(sample.mean())
        shifted += bca.low > percentile.low and bca.high > percentile.high
    assert shifted >= 180


def test_pairs_are_resampled_together():
    """Large prompt-to-prompt variation, a near-constant shift: the paired interval is as narrow as its noise."""
    rng = np.random.default_rng(1)
    before = rng.uniform(0, 10, size=100)
    after = before + 0.1 + rng.normal(0, 0.01, size=100)
    ci = paired_bootstrap(before, after, seed=0)
    assert ci.low < 0.1 < ci.high and ci.high - ci.low < 0.01


def test_deterministic_and_pairs_with_nan_dropped():
    before = [0.1, np.nan, 0.3, 0.4, 0.0]
    after = [0.0, 0.2, np.nan, 0.1, 0.2]
    a = paired_bootstrap(before, after, seed=7)
    b = paired_bootstrap(before, after, seed=7)
    assert a == b and a.n == 3
    assert a.diff == pytest.approx(((0.0 - 0.1) + (0.1 - 0.4) + (0.2 - 0.0)) / 3)
    empty = paired_bootstrap([np.nan], [1.0])
    assert empty.n == 0 and np.isnan(empty.diff)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"before": [1.0, 2.0], "after": [1.0]}, "same length"),
        ({"before": [1.0], "after": [1.0], "confidence": 1.0}, "confidence"),
        ({"before": [1.0], "after": [1.0], "num_resamples": 0}, "num_resamples"),
        ({"before": [1.0], "after": [1.0], "method": "bca"}, "method must be one of"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(**kwargs)


def test_compare_pairs_on_prompt_index_not_row_order():
    base = pd.DataFrame(
        {"temperature": 0.0, "question_type": "free_text", "index": [0, 1, 2], "rate": [0.5, 0.2, 0.1]}
    )
    # Same prompts, shuffled rows: pairing must follow `index`.
    adapter = pd.DataFrame(
        {"temperature": 0.0, "question_type": "free_text", "index": [2, 0, 1], "rate": [0.1, 0.3, 0.2]}
    )
    out = compare(base, adapter, metrics=["rate"], num_resamples=100)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["diff"] == pytest.approx(-0.2 / 3) and row["n"] == 3
    assert row["before"] == pytest.approx(0.8 / 3) and row["after"] == pytest.approx(0.6 / 3)
    assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    with pytest.raises(ValueError, match="columns"):
        compare(base, adapter, metrics=["missing"])
