"""PNG figures for the report: training curves (the seed's Figure 1), before/after bars, distributions, grid results.

What a reader needs from each figure, and how it is drawn:

- every panel has a title in words and axis labels with units ([`MetricLabel`]); an application passes its own
  metrics' labels (`labels=`), the generic ones are in `METRIC_LABELS`;
- per-step curves are noisy (each logged value is a few dozen samples): the logged values are drawn faint and a
  centred moving average on top;
- before/after bars carry 95 % bootstrap intervals of each arm's mean, and the panel states the paired difference
  with its interval (`paired_bootstrap`), the number that matters;
- integer-valued metrics (counts) get one bar per integer, the two arms side by side, as a share of completions
  (no fractional bins, no overlapping translucent histograms); continuous ones get outlined step histograms;
- metrics without a value are left out rather than drawn as empty panels.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas directly, not through `pyplot`, so the
library never switches the process-wide matplotlib backend or keeps figures alive in pyplot's global registry.
Every function returns a `Plot` naming the file and its panels (the report uses the names as captions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MetricLabel:
    """How a metric is named on a figure.

    Args:
        title (`str`): the panel title, in words.
        unit (`str`): the value axis label, with its unit.
        integer (`bool`, *optional*, defaults to `False`): the metric counts things (one bar per integer value).
    """

    title: str
    unit: str
    integer: bool = False


# Generic metrics (the trainer's TRL names and the evaluation's columns); applications add theirs with `labels=`.
METRIC_LABELS: dict[str, MetricLabel] = {
    "loss": MetricLabel("Training loss", "loss (nats x advantage)"),
    "reward": MetricLabel("Mean reward", "reward (higher is better)"),
    "reward_std": MetricLabel("Reward spread within a prompt's group", "reward std"),
    "kl": MetricLabel("KL from the base model, completion masked", "KL(adapter || base), nats per position"),
    "entropy": MetricLabel("Policy entropy", "entropy (nats per token)"),
    "completions/mean_length": MetricLabel("Completion length", "tokens"),
    "length": MetricLabel("Completion length", "tokens", integer=True),
    "logprob/mean": MetricLabel("Estimated log-probability of a completion", "log p (nats)"),
}
# Plotted by `plot_training_curves` when present and no `keys` are given.
TRAINING_KEYS: tuple[str, ...] = ("loss", "reward", "kl", "completions/mean_length")
# Colours of the two arms (colour-blind safe pair) and of curves.
ARM_COLORS = ("#D55E00", "#0072B2")
CURVE_COLOR = "#0072B2"
PLOTS_HINT = "pip install 'diffusion_rl[plots]'"


@dataclass(frozen=True)
class Plot:
    """A written figure.

    Args:
        path (`Path`): the PNG file.
        panels (`list[str]`): the title of each panel, left to right, top to bottom.
    """

    path: Path
    panels: list[str]


def plots_available() -> bool:
    """Whether matplotlib (the optional `plots` extra) can be imported.

    Callers that write a report after hours of training check this *first*, and write the report without figures
    (saying how to get them) rather than crash at the very end.
    """
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def metric_label(name: str, labels: Mapping[str, MetricLabel] | None = None) -> MetricLabel:
    """The label of `name`: from `labels`, else `METRIC_LABELS`, else its name in words (`eval_` noted)."""
    table = {**METRIC_LABELS, **(labels or {})}
    if name in table:
        return table[name]
    if name.startswith("eval_") and name[5:] in table:
        base = table[name[5:]]
        return MetricLabel(f"{base.title} (held-out)", base.unit, base.integer)
    words = name.replace("/", " ").replace("_", " ").strip()
    return MetricLabel(words[:1].upper() + words[1:], "value")


def _new_figure(num_panels: int, *, panel_size: tuple[float, float] = (4.5, 3.3), max_cols: int = 3):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # matplotlib is an optional dependency
        raise ImportError(f"plots need matplotlib: {PLOTS_HINT}.") from err
    cols = min(num_panels, max_cols)
    rows = math.ceil(num_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(num_panels)]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def _figure_legend(fig, axes) -> None:
    """One legend for the whole figure, above the panels, from the first panel that has each entry."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
    if entries:
        fig.legend(
            list(entries.values()), list(entries), loc="outside upper center", ncols=len(entries), frameon=False
        )


def _signed(value: float) -> str:
    """`-0.051`, `+0.00084`: three decimals, or two significant digits below 0.01 (panel titles stay short)."""
    return f"{value:+.2g}" if abs(value) < 0.01 else f"{value:+.3f}"


def _start_at_zero(ax, values: np.ndarray) -> None:
    """Bars of a quantity that is never negative start at 0, and all-zero bars get the axis 0..1: matplotlib gives a
    flat series a symmetric -0.04..0.04, which reads as a negative share."""
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() >= 0:
        top = finite.max()
        ax.set_ylim(0, top * 1.05 if top > 0 else 1)


def _save(fig, path: str | Path, panels: list[str], title: str | None = None) -> Plot:
    if title:  # which run or split the figure shows, once the PNG is opened on its own
        if fig.legends:  # the legend sits above the panels, where a suptitle would overlap it
            fig.legends[0].set_title(title, prop={"size": 11, "weight": "bold"})
        else:
            fig.suptitle(title, fontsize=11, fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return Plot(path=path, panels=panels)


def load_log_history(source: str | Path | Sequence[Mapping]) -> list[dict]:
    """The trainer's `log_history`, from a list, a `trainer_state.json` file or an output directory.

    A directory is searched for `trainer_state.json`, then for the one in its latest `checkpoint-<step>` folder, then
    for `train_log.jsonl` (one log dict a line, what the bias job writes when it saves no checkpoint).
    """
    if not isinstance(source, (str, Path)):
        return [dict(entry) for entry in source]
    path = Path(source)
    if path.is_dir():
        candidates = [path / "trainer_state.json"]
        # Latest checkpoint first, by step number ("checkpoint-10" after "checkpoint-2").
        checkpoints = [p for p in path.glob("checkpoint-*") if p.name.rsplit("-", 1)[-1].isdigit()]
        checkpoints.sort(key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)
        candidates += [c / "trainer_state.json" for c in checkpoints]
        path = next((c for c in candidates if c.is_file()), candidates[0])
        if not path.is_file() and (Path(source) / "train_log.jsonl").is_file():
            lines = (Path(source) / "train_log.jsonl").read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]
    if not path.is_file():
        raise FileNotFoundError(
            f"no trainer_state.json (or train_log.jsonl) at {source}; pass the trainer's output_dir or log_history."
        )
    return list(json.loads(path.read_text())["log_history"])


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average; the window shrinks at the ends (no padding), so the curve spans every step."""
    values = np.asarray(values, dtype=float)
    half = window // 2
    return np.array([values[max(0, i - half) : i + half + 1].mean() for i in range(values.size)])


def _series(history: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(e.get("step", i), e[key]) for i, e in enumerate(history) if e.get(key) is not None]
    points = [(s, v) for s, v in points if isinstance(v, int | float) and math.isfinite(v)]
    steps, values = zip(*points) if points else ((), ())
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def plot_training_curves(
    log_history: str | Path | Sequence[Mapping],
    path: str | Path,
    *,
    keys: Sequence[str] | None = None,
    labels: Mapping[str, MetricLabel] | None = None,
    smoothing: int | None = None,
    title: str | None = None,
) -> Plot:
    """Training curves over optimizer steps, one panel per logged quantity, with a moving average.

    Args:
        log_history (`str`, `Path` or `Sequence[Mapping]`): see `load_log_history`.
        path (`str` or `Path`): where to write the PNG.
        keys (`Sequence[str]`, *optional*): metric names to plot; defaults to those of `TRAINING_KEYS` present in
            the log. A key whose `eval_` twin was logged (in-training evaluation) gets those points too.
        labels (`Mapping[str, MetricLabel]`, *optional*): titles and units of the application's metrics.
        smoothing (`int`, *optional*): moving-average window in logged values; default about an eighth of them
            (at least 3; none below 5 logged values).
        title (`str`, *optional*): the figure's title (the run it shows).

    Returns:
        `Plot` with one panel per plotted key.
    """
    history = load_log_history(log_history)
    logged = {k for entry in history for k in entry}
    if keys is None:
        keys = [k for k in TRAINING_KEYS if k in logged]
    missing = [k for k in keys if k not in logged]
    keys = [k for k in keys if k in logged and _series(history, k)[0].size]
    if missing or not keys:
        raise ValueError(
            f"the log history has none of {missing or list(TRAINING_KEYS)} (logged: {sorted(logged)}); "
            "train with logging_steps set or pass keys= that were logged."
        )
    fig, axes = _new_figure(len(keys))
    titles = []
    for ax, key in zip(axes, keys):
        label = metric_label(key, labels)
        steps, values = _series(history, key)
        window = smoothing if smoothing is not None else (max(3, values.size // 8) if values.size >= 5 else 1)
        faint = {"color": CURVE_COLOR, "alpha": 0.3, "linewidth": 1, "marker": "o", "markersize": 2.5}
        if window > 1:
            ax.plot(steps, values, **faint, label="logged value")
            average = moving_average(values, window)
            ax.plot(steps, average, color=CURVE_COLOR, linewidth=2, label=f"moving average ({window} logs)")
        else:
            ax.plot(steps, values, color=CURVE_COLOR, linewidth=1.5, marker="o", markersize=3, label="logged value")
        eval_steps, eval_values = _series(history, f"eval_{key}")
        if eval_steps.size:
            held_out = {"color": ARM_COLORS[0], "marker": "s", "markersize": 4}
            ax.plot(eval_steps, eval_values, **held_out, label="held-out evaluation")
        ax.set_title(label.title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label.unit)
        ax.grid(alpha=0.3)
        titles.append(label.title)
    _figure_legend(fig, axes)
    return _save(fig, path, titles, title)


def _arms(records: pd.DataFrame, before: str, after: str, temperature: float | None) -> dict[str, pd.DataFrame]:
    frame = records if temperature is None else records[records["temperature"] == temperature]
    arms = {name: frame[frame["variant"] == name] for name in (before, after)}
    for name, arm in arms.items():
        if arm.empty:
            raise ValueError(
                f"no records for variant {name!r} (temperature={temperature}); evaluate with compare_base."
            )
    return arms


def _check_columns(records: pd.DataFrame, metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in records.columns]
    if unknown:
        raise ValueError(f"records have no column(s) {unknown}; available: {sorted(records.columns)}.")


def _is_integer(values: np.ndarray, label: MetricLabel) -> bool:
    return label.integer or (values.size > 0 and bool(np.all(values == np.round(values))) and np.ptp(values) <= 30)


def plot_bias_distribution(
    records: pd.DataFrame,
    path: str | Path,
    *,
    metrics: Sequence[str] = ("genbit_bias", "gendered_pronoun_count"),
    before: str = "base",
    after: str = "adapter",
    temperature: float | None = None,
    labels: Mapping[str, MetricLabel] | None = None,
    title: str | None = None,
) -> Plot:
    """Distributions of per-text metrics before vs after training, one panel per metric.

    Integer-valued metrics (counts) get one bar per value, the arms side by side; continuous ones get outlined step
    histograms on shared bins. Heights are shares of each arm's completions, so arms of different sizes compare.
    Metrics with no value in either arm are left out.

    Args:
        records (`pd.DataFrame`): `EvalResult.records`.
        path (`str` or `Path`): where to write the PNG.
        metrics (`Sequence[str]`, *optional*): per-text columns to show.
        before (`str`, *optional*, defaults to `"base"`): variant drawn as "before".
        after (`str`, *optional*, defaults to `"adapter"`): variant drawn as "after".
        temperature (`float`, *optional*): restrict to one temperature (default: all rows of both variants).
        labels (`Mapping[str, MetricLabel]`, *optional*): titles and units of the application's metrics.
        title (`str`, *optional*): the figure's title (the run or split it shows).
    """
    _check_columns(records, metrics)
    arms = _arms(records, before, after, temperature)
    values = {m: {name: arm[m].dropna().to_numpy(dtype=float) for name, arm in arms.items()} for m in metrics}
    shown = [m for m in metrics if any(v.size for v in values[m].values())]
    if not shown:
        raise ValueError(f"no values of {list(metrics)} in either arm; nothing to plot.")
    fig, axes = _new_figure(len(shown))
    titles = []
    for ax, metric in zip(axes, shown):
        label = metric_label(metric, labels)
        pooled = np.concatenate(list(values[metric].values()))
        if _is_integer(pooled, label):
            ticks = np.arange(int(pooled.min()), int(pooled.max()) + 1)
            for offset, ((name, vals), color) in zip((-0.2, 0.2), zip(values[metric].items(), ARM_COLORS)):
                share = [100 * np.mean(vals == k) if vals.size else 0.0 for k in ticks]
                mean = f"mean {vals.mean():.2f}" if vals.size else "no values"
                ax.bar(ticks + offset, share, width=0.4, color=color, label=f"{name} ({mean})")
            ax.set_xticks(ticks)
        else:
            # numpy's "auto" (Sturges / Freedman-Diaconis) suits a few dozen completions; at most 20 bins.
            bins = np.histogram_bin_edges(pooled, bins="auto")
            bins = bins if len(bins) <= 21 else np.histogram_bin_edges(pooled, bins=20)
            for (name, vals), color in zip(values[metric].items(), ARM_COLORS):
                weights = np.full(vals.size, 100 / vals.size) if vals.size else None
                mean = f"mean {vals.mean():.3g}" if vals.size else "no values"
                ax.hist(
                    vals,
                    bins=bins,
                    weights=weights,
                    histtype="step",
                    linewidth=2,
                    color=color,
                    label=f"{name} ({mean})",
                )
        ax.set_title(label.title, fontsize=10)
        ax.set_xlabel(label.unit)
        ax.set_ylabel("share of completions (%)")
        ax.legend(fontsize=7, frameon=False)
        titles.append(label.title)
    return _save(fig, path, titles, title)


def mean_interval(values: np.ndarray, *, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap (BCa) interval of the mean of one arm's values; a point for fewer than two distinct values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2 or np.all(values == values[0]):
        mean = float(values.mean()) if values.size else math.nan
        return mean, mean
    result = stats.bootstrap(
        (values,), np.mean, confidence_level=confidence, n_resamples=2000, rng=np.random.default_rng(seed)
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def plot_before_after(
    records: pd.DataFrame,
    path: str | Path,
    *,
    metrics: Sequence[str],
    before: str = "base",
    after: str = "adapter",
    labels: Mapping[str, MetricLabel] | None = None,
    seed: int = 0,
    title: str | None = None,
) -> Plot:
    """Mean of each metric before and after, per temperature, with 95 % bootstrap intervals; one panel per metric.

    Each panel's second title line states the paired difference `after - before` (pooled over temperatures, pairs
    matched on prompt `index` and temperature), its 95 % paired bootstrap interval and the number of pairs; the
    bars' intervals are each arm's own. Bars of a metric that is never negative start at 0.

    Args:
        records (`pd.DataFrame`): `EvalResult.records`.
        path (`str` or `Path`): where to write the PNG.
        metrics (`Sequence[str]`): per-text columns to show (those without values are left out).
        before (`str`, *optional*, defaults to `"base"`): variant drawn as "before".
        after (`str`, *optional*, defaults to `"adapter"`): variant drawn as "after".
        labels (`Mapping[str, MetricLabel]`, *optional*): titles and units of the application's metrics.
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.
        title (`str`, *optional*): the figure's title (the run or split it shows).
    """
    from .bootstrap import paired_bootstrap

    _check_columns(records, metrics)
    arms = _arms(records, before, after, None)
    shown = [m for m in metrics if all(arm[m].notna().any() for arm in arms.values())]
    if not shown:
        raise ValueError(f"no values of {list(metrics)} in both arms; nothing to plot.")
    temperatures = sorted(set(records["temperature"]))
    fig, axes = _new_figure(len(shown), panel_size=(4.6, 3.4))
    titles = []
    for ax, metric in zip(axes, shown):
        label = metric_label(metric, labels)
        x = np.arange(len(temperatures))
        drawn = []
        for offset, (name, color) in zip((-0.2, 0.2), zip((before, after), ARM_COLORS)):
            arm = arms[name]
            means, lows, highs = [], [], []
            for t in temperatures:
                vals = arm.loc[arm["temperature"] == t, metric].to_numpy(dtype=float)
                low, high = mean_interval(vals, seed=seed)
                means.append(np.nanmean(vals) if np.any(~np.isnan(vals)) else np.nan)
                lows.append(low)
                highs.append(high)
            means, lows, highs = map(np.asarray, (means, lows, highs))
            errors = np.vstack([means - lows, highs - means])
            drawn += [means, lows, highs]
            ax.bar(
                x + offset, means, width=0.4, color=color, label=f"{'before' if name == before else 'after'} ({name})"
            )
            interval = "mean's 95 % bootstrap interval"
            ax.errorbar(x + offset, means, yerr=errors, fmt="none", ecolor="black", capsize=3, linewidth=1,
                        label=interval)  # fmt: skip
        paired = arms[before][["index", "temperature", metric]].merge(
            arms[after][["index", "temperature", metric]], on=["index", "temperature"], suffixes=("_b", "_a")
        )
        ci = paired_bootstrap(paired[f"{metric}_b"], paired[f"{metric}_a"], seed=seed)
        change = f"change {_signed(ci.diff)}, 95 % CI [{_signed(ci.low)}, {_signed(ci.high)}], n = {ci.n}"
        ax.set_title(f"{label.title}\n{change}", fontsize=9)
        _start_at_zero(ax, np.concatenate(drawn))
        ax.set_xticks(x, [f"T = {t:g}" for t in temperatures])
        ax.set_ylabel(label.unit)
        ax.grid(axis="y", alpha=0.3)
        titles.append(label.title)
    _figure_legend(fig, axes[:1])
    return _save(fig, path, titles, title)


def plot_grid(
    grid: pd.DataFrame,
    path: str | Path,
    *,
    metrics: Sequence[str],
    x: str = "dataset_size",
    hue: str = "temperature",
    labels: Mapping[str, MetricLabel] | None = None,
) -> Plot:
    """Metric vs dataset size, one line per temperature, one panel per metric.

    Args:
        grid (`pd.DataFrame`): one row per (dataset size, temperature) with the metric columns.
        path (`str` or `Path`): where to write the PNG.
        metrics (`Sequence[str]`): columns to plot.
        x (`str`, *optional*, defaults to `"dataset_size"`): x-axis column.
        hue (`str`, *optional*, defaults to `"temperature"`): one line per value of this column.
        labels (`Mapping[str, MetricLabel]`, *optional*): titles and units of the application's metrics.
    """
    unknown = [c for c in (x, hue, *metrics) if c not in grid.columns]
    if unknown or grid.empty or not metrics:
        raise ValueError(f"grid needs non-empty columns {[x, hue, *metrics]}; missing {unknown}.")
    x_label = {"dataset_size": "training prompts"}.get(x, metric_label(x, labels).title.lower())
    hue_name = {"temperature": "T"}.get(hue, hue)
    fig, axes = _new_figure(len(metrics))
    titles = []
    for ax, metric in zip(axes, metrics):
        label = metric_label(metric, labels)
        for value, group in grid.groupby(hue, sort=True):
            group = group.sort_values(x)
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            ax.plot(group[x], group[metric], marker="o", label=f"{hue_name} = {shown}")
        ax.set_title(label.title, fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel(label.unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        titles.append(label.title)
    return _save(fig, path, titles)
