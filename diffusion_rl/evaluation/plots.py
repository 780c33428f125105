"""PNG figures for the report: training trends (the seed's Figure 1), bias distributions, grid results.

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

# Logged metric names (TRL-compatible, as the trainer writes them) and their panel titles.
TRAINING_KEYS: dict[str, str] = {
    "loss": "loss",
    "reward": "reward",
    "kl": "KL(adapter || base)",
    "bias/genbit": "GenBit bias",
    "completions/gendered_pronoun_rate": "gendered-pronoun rate",
}


@dataclass(frozen=True)
class Plot:
    """A written figure.

    Args:
        path (`Path`): the PNG file.
        panels (`list[str]`): the title of each panel, left to right, top to bottom.
    """

    path: Path
    panels: list[str]


PLOTS_HINT = "pip install 'diffusion_rl[plots]'"


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


def _new_figure(num_panels: int, *, panel_size: tuple[float, float] = (4.0, 3.0)):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # matplotlib is an optional dependency
        raise ImportError(f"plots need matplotlib: {PLOTS_HINT}.") from err
    cols = min(num_panels, 3)
    rows = math.ceil(num_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(num_panels)]
    return fig, axes


def _save(fig, path: str | Path, panels: list[str]) -> Plot:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return Plot(path=path, panels=panels)


def load_log_history(source: str | Path | Sequence[Mapping]) -> list[dict]:
    """The trainer's `log_history`, from a list, a `trainer_state.json` file or an output directory.

    A directory is searched for `trainer_state.json`, then for the one in its latest `checkpoint-<step>` folder.
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
    if not path.is_file():
        raise FileNotFoundError(f"no trainer_state.json at {source}; pass the trainer's output_dir or log_history.")
    return list(json.loads(path.read_text())["log_history"])


def plot_training_curves(
    log_history: str | Path | Sequence[Mapping], path: str | Path, *, keys: Sequence[str] | None = None
) -> Plot:
    """Loss, reward, KL and bias trends over training steps, one panel per logged quantity.

    Args:
        log_history (`str`, `Path` or `Sequence[Mapping]`): see `load_log_history`.
        path (`str` or `Path`): where to write the PNG.
        keys (`Sequence[str]`, *optional*): metric names to plot; defaults to those of `TRAINING_KEYS` present in
            the log.

    Returns:
        `Plot` with one panel per plotted key.
    """
    history = load_log_history(log_history)
    logged = {k for entry in history for k in entry}
    if keys is None:
        keys = [k for k in TRAINING_KEYS if k in logged]
    missing = [k for k in keys if k not in logged]
    if missing or not keys:
        raise ValueError(
            f"the log history has none of {missing or list(TRAINING_KEYS)} (logged: {sorted(logged)}); "
            "train with logging_steps set or pass keys= that were logged."
        )
    fig, axes = _new_figure(len(keys))
    for ax, key in zip(axes, keys):
        points = [(e.get("step", i), e[key]) for i, e in enumerate(history) if key in e and e[key] is not None]
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o", markersize=3, linewidth=1)
        ax.set_title(TRAINING_KEYS.get(key, key))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, path, [TRAINING_KEYS.get(k, k) for k in keys])


def plot_bias_distribution(
    records: pd.DataFrame,
    path: str | Path,
    *,
    metrics: Sequence[str] = ("genbit_bias", "gendered_pronoun_count"),
    before: str = "base",
    after: str = "adapter",
    temperature: float | None = None,
) -> Plot:
    """Histograms of per-text metrics before vs after training, one panel per metric.

    Args:
        records (`pd.DataFrame`): `EvalResult.records`.
        path (`str` or `Path`): where to write the PNG.
        metrics (`Sequence[str]`, *optional*): per-text columns to show.
        before (`str`, *optional*, defaults to `"base"`): variant drawn as "before".
        after (`str`, *optional*, defaults to `"adapter"`): variant drawn as "after".
        temperature (`float`, *optional*): restrict to one temperature (default: all rows of both variants).
    """
    frame = records if temperature is None else records[records["temperature"] == temperature]
    arms = {name: frame[frame["variant"] == name] for name in (before, after)}
    for name, arm in arms.items():
        if arm.empty:
            raise ValueError(
                f"no records for variant {name!r} (temperature={temperature}); evaluate with compare_base."
            )
    unknown = [m for m in metrics if m not in records.columns]
    if unknown:
        raise ValueError(f"records have no column(s) {unknown}; available: {sorted(records.columns)}.")
    fig, axes = _new_figure(len(metrics))
    for ax, metric in zip(axes, metrics):
        values = {name: arm[metric].dropna().to_numpy(dtype=float) for name, arm in arms.items()}
        pooled = np.concatenate(list(values.values()))
        bins = np.histogram_bin_edges(pooled, bins=min(20, max(len(np.unique(pooled)), 1))) if pooled.size else 10
        for (name, vals), color in zip(values.items(), ("tab:red", "tab:blue")):
            ax.hist(
                vals,
                bins=bins,
                alpha=0.5,
                color=color,
                label=f"{name} (mean {np.mean(vals):.3g})" if vals.size else name,
            )
        ax.set_title(metric)
        ax.set_ylabel("texts")
        ax.legend(fontsize=8)
    return _save(fig, path, list(metrics))


def plot_grid(
    grid: pd.DataFrame,
    path: str | Path,
    *,
    metrics: Sequence[str],
    x: str = "dataset_size",
    hue: str = "temperature",
) -> Plot:
    """Metric vs dataset size, one line per temperature, one panel per metric.

    Args:
        grid (`pd.DataFrame`): one row per (dataset size, temperature) with the metric columns.
        path (`str` or `Path`): where to write the PNG.
        metrics (`Sequence[str]`): columns to plot.
        x (`str`, *optional*, defaults to `"dataset_size"`): x-axis column.
        hue (`str`, *optional*, defaults to `"temperature"`): one line per value of this column.
    """
    unknown = [c for c in (x, hue, *metrics) if c not in grid.columns]
    if unknown or grid.empty or not metrics:
        raise ValueError(f"grid needs non-empty columns {[x, hue, *metrics]}; missing {unknown}.")
    fig, axes = _new_figure(len(metrics))
    for ax, metric in zip(axes, metrics):
        for value, group in grid.groupby(hue, sort=True):
            group = group.sort_values(x)
            ax.plot(group[x], group[metric], marker="o", label=f"{hue}={value}")
        ax.set_title(metric)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path, list(metrics))
