"""Paired bootstrap confidence intervals for before/after differences.

The base model and the adapter answer the *same* prompts with the *same* sampler seeds, so each prompt gives a pair
(before_i, after_i). Resampling prompts (pairs) rather than the two arms independently keeps the prompt-to-prompt
variation out of the interval, which is what makes small effects visible on a few hundred prompts.

The resampling is `scipy.stats.bootstrap` (`paired=True`), with bias-corrected and accelerated (BCa) intervals by
default: per-prompt rates are bounded and skewed (most completions have no gendered pronoun), where the plain
percentile interval under-covers. The RNG is a `numpy.random.Generator` built from an explicit seed, so a report is
reproducible bit for bit. A degenerate sample (one pair, or every difference equal) has the point interval
`[diff, diff]`, where BCa is undefined.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

METHODS = ("BCa", "percentile", "basic")


@dataclass(frozen=True)
class BootstrapCI:
    """Mean paired difference ``after - before`` with a bootstrap interval.

    Args:
        diff (`float`): observed mean of ``after_i - before_i`` over the valid pairs.
        low (`float`): lower end of the interval.
        high (`float`): upper end of the interval.
        n (`int`): number of pairs used (pairs with a NaN on either side are dropped).
        confidence (`float`): coverage of the interval, e.g. `0.95`.
    """

    diff: float
    low: float
    high: float
    n: int
    confidence: float


def paired_bootstrap(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> BootstrapCI:
    """Paired bootstrap interval of the mean difference ``mean(after - before)`` (`scipy.stats.bootstrap`).

    Args:
        before (`Sequence[float]`): per-prompt values of the reference arm (e.g. the base model).
        after (`Sequence[float]`): per-prompt values of the treated arm, aligned with `before`.
        num_resamples (`int`, *optional*, defaults to `2000`): bootstrap resamples of the pairs.
        confidence (`float`, *optional*, defaults to `0.95`): interval coverage, in (0, 1).
        seed (`int`, *optional*, defaults to `0`): seed of the local `numpy.random.Generator`.
        method (`str`, *optional*, defaults to `"BCa"`): `"BCa"`, `"percentile"` or `"basic"` (scipy's names).

    Returns:
        `BootstrapCI`. With no valid pair every number is NaN and `n` is 0.
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if before.shape != after.shape or before.ndim != 1:
        raise ValueError(
            f"paired_bootstrap needs two 1-D arrays of the same length, got shapes {before.shape} and {after.shape}; "
            "align the per-prompt values of both arms first."
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    valid = ~(np.isnan(before) | np.isnan(after))  # a NaN on either side (metric not applicable) drops the pair
    before, after = before[valid], after[valid]
    diffs = after - before
    n = int(diffs.size)
    if n == 0:
        return BootstrapCI(diff=float("nan"), low=float("nan"), high=float("nan"), n=0, confidence=confidence)
    diff = float(diffs.mean())
    if n == 1 or np.all(diffs == diffs[0]):  # every resample has the same mean: BCa's acceleration is 0/0
        return BootstrapCI(diff=diff, low=diff, high=diff, n=n, confidence=confidence)

    def mean_difference(b, a, axis):
        return np.mean(a - b, axis=axis)

    with warnings.catch_warnings():
        # BCa warns when the resampled distribution is nearly degenerate; the interval is still the best available.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (before, after),
            mean_difference,
            paired=True,  # resample prompts: the same indices in both arms
            vectorized=True,
            n_resamples=num_resamples,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    return BootstrapCI(diff=diff, low=float(low), high=float(high), n=n, confidence=confidence)


def compare(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    metrics: Sequence[str],
    by: Sequence[str] = ("temperature", "question_type"),
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> pd.DataFrame:
    """Paired before/after differences with bootstrap intervals, per setting and metric.

    Args:
        before (`pd.DataFrame`): per-prompt records of the reference arm (`EvalResult.variant("base")`).
        after (`pd.DataFrame`): per-prompt records of the treated arm; paired with `before` on `index` within
            each group of `by`.
        metrics (`Sequence[str]`): per-text columns to compare (e.g. `gendered_pronoun_rate`, `genbit_bias`).
        by (`Sequence[str]`, *optional*, defaults to `("temperature", "question_type")`): setting columns.
        num_resamples (`int`, *optional*, defaults to `2000`): bootstrap resamples.
        confidence (`float`, *optional*, defaults to `0.95`): interval coverage.
        seed (`int`, *optional*, defaults to `0`): seed of every interval's generator (each row is reproducible
            on its own).
        method (`str`, *optional*, defaults to `"BCa"`): the interval, as in [`paired_bootstrap`].

    Returns:
        `pd.DataFrame` with the `by` columns, `metric`, `before`, `after` (means over the paired prompts),
        `diff`, `ci_low`, `ci_high` and `n`; settings where a metric has no valid pair are left out.
    """
    keys = [*by, "index"]
    missing = [c for c in [*keys, *metrics] if c not in before.columns or c not in after.columns]
    if missing:
        raise ValueError(f"compare needs columns {missing} in both record tables; pass EvalResult records.")
    pairs = before[[*keys, *metrics]].merge(after[[*keys, *metrics]], on=keys, suffixes=("_before", "_after"))
    if pairs.empty:
        raise ValueError("no prompt appears in both record tables; compare runs of the same prompts and settings.")
    rows = []
    for setting, group in pairs.groupby(list(by), sort=True):
        setting = setting if isinstance(setting, tuple) else (setting,)
        for metric in metrics:
            b, a = group[f"{metric}_before"].to_numpy(float), group[f"{metric}_after"].to_numpy(float)
            ci = paired_bootstrap(b, a, num_resamples=num_resamples, confidence=confidence, seed=seed, method=method)
            if ci.n == 0:  # metric not applicable in this setting (e.g. choice metrics on free-text prompts)
                continue
            valid = ~(np.isnan(a) | np.isnan(b))
            rows.append(
                {
                    **dict(zip(by, setting)),
                    "metric": metric,
                    "before": float(b[valid].mean()),
                    "after": float(a[valid].mean()),
                    "diff": ci.diff,
                    "ci_low": ci.low,
                    "ci_high": ci.high,
                    "n": ci.n,
                }
            )
    return pd.DataFrame(rows)
