"""Paired bootstrap confidence intervals for before/after differences.

The base model and the adapter answer the *same* prompts with the *same* sampler seeds, so each prompt gives a pair
(before_i, after_i). Resampling prompts (pairs) rather than the two arms independently keeps the prompt-to-prompt
variation out of the interval, which is what makes small effects visible on a few hundred prompts. Intervals are
percentile intervals of the resampled mean difference; the RNG is a `numpy.random.Generator` built from an explicit
seed, so a report is reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class BootstrapCI:
    """Mean paired difference ``after - before`` with a percentile bootstrap interval.

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
) -> BootstrapCI:
    """Percentile bootstrap interval of the mean paired difference ``mean(after - before)``.

    Args:
        before (`Sequence[float]`): per-prompt values of the reference arm (e.g. the base model).
        after (`Sequence[float]`): per-prompt values of the treated arm, aligned with `before`.
        num_resamples (`int`, *optional*, defaults to `2000`): bootstrap resamples of the pairs.
        confidence (`float`, *optional*, defaults to `0.95`): interval coverage, in (0, 1).
        seed (`int`, *optional*, defaults to `0`): seed of the local `numpy.random.Generator`.

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
    diffs = after - before
    diffs = diffs[~np.isnan(diffs)]  # a NaN on either side (metric not applicable) drops the pair
    n = int(diffs.size)
    if n == 0:
        return BootstrapCI(diff=float("nan"), low=float("nan"), high=float("nan"), n=0, confidence=confidence)
    rng = np.random.default_rng(seed)
    # The mean of resampled differences equals the difference of resampled means (same indices in both arms).
    idx = rng.integers(0, n, size=(num_resamples, n))  # (R, n)
    resampled = diffs[idx].mean(axis=1)  # (R,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return BootstrapCI(diff=float(diffs.mean()), low=float(low), high=float(high), n=n, confidence=confidence)


def compare(
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    metrics: Sequence[str],
    by: Sequence[str] = ("temperature", "question_type"),
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
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
            ci = paired_bootstrap(b, a, num_resamples=num_resamples, confidence=confidence, seed=seed)
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
