"""Markdown report of an evaluation: metric tables, before/after differences, BBQ, plots and real examples.

The examples section is chosen by a fixed rule, never by hand, so it cannot be cherry-picked: at the lowest
evaluated temperature and for each question type, the first `k` prompts in dataset order, then the `k` prompts with
the largest absolute change in gendered-pronoun count between the two arms (ties broken by dataset order), skipping
prompts already shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ...evaluation.bootstrap import compare
from ...evaluation.generate import EvalResult
from ...evaluation.plots import (
    PLOTS_HINT,
    MetricLabel,
    Plot,
    load_log_history,
    plot_before_after,
    plot_bias_distribution,
    plot_training_curves,
    plots_available,
)
from .metrics import BBQ_COLUMNS

# Per-text columns compared before/after by `report_evaluation` (those present in the records).
COMPARE_METRICS = (
    "gendered_pronoun_rate",
    "pronoun_rate",
    "gendered_word_rate",
    "genbit_bias",
    "length",
    "valid",
    "neutral",
    "correct",
    "stereotyped",
    "correct_disambiguated",
    "stereotyped_ambiguous",
    "neutral_ambiguous",
    "restates_option",
    "mentions_role",
    "explanation_gendered_pronoun_rate",
    "disfluency_rate",
    "empty",
    "kl",
    "kl_disambiguated",
    "kl_ambiguous",
    "kl_sequence",
)

# Titles and units of the bias metrics on figures (the generic ones are in `diffusion_rl.evaluation.plots`).
BIAS_LABELS: dict[str, MetricLabel] = {
    "bias/genbit": MetricLabel("GenBit bias of the completions", "GenBit |bias| (log ratio)"),
    "bias/genbit_corpus": MetricLabel("GenBit bias of the batch as a corpus", "GenBit |bias| (log ratio)"),
    "completions/gendered_pronoun_rate": MetricLabel("Gendered pronouns in completions", "pronouns per word"),
    "choice/correct_rate": MetricLabel("Multiple-choice answers correct", "share of applicable answers"),
    "genbit_bias": MetricLabel("GenBit bias per completion", "GenBit |bias| (log ratio)"),
    "gendered_pronoun_count": MetricLabel("Gendered pronouns per completion", "pronouns", integer=True),
    "gendered_word_count": MetricLabel("Gendered words per completion", "words", integer=True),
    "gendered_pronoun_rate": MetricLabel("Gendered-pronoun rate", "pronouns per word"),
    "pronoun_rate": MetricLabel("Pronoun rate (all pronouns)", "pronouns per word"),
    "gendered_word_rate": MetricLabel("Gendered-word rate", "gendered words per word"),
    "valid": MetricLabel("Answers naming one option", "share of answers"),
    "neutral": MetricLabel("Neutral / unknown option chosen", "share of answers"),
    "correct": MetricLabel("Correct option chosen", "share of answers"),
    "stereotyped": MetricLabel("Stereotyped option chosen", "share of answers"),
    "disfluency_rate": MetricLabel("Non-words and repeated words", "share of words"),
    "correct_disambiguated": MetricLabel("Correct where the context settles the answer", "share of answers"),
    "stereotyped_ambiguous": MetricLabel("Stereotyped option where the gender is open", "share of answers"),
    "neutral_ambiguous": MetricLabel("Neutral / unknown option where the gender is open", "share of answers"),
    "restates_option": MetricLabel("Text after the letter is the chosen option", "share of answers"),
    "mentions_role": MetricLabel("Explanation names the role", "share of answers"),
    "explanation_gendered_pronoun_rate": MetricLabel("Gendered pronouns in the explanation", "pronouns per word"),
    "kl_sequence": MetricLabel("KL between the answer distributions", "KL(adapter || base), nats per token"),
    "kl_disambiguated": MetricLabel("KL where the context settles the answer", "KL(adapter || base) per position"),
    "kl_ambiguous": MetricLabel("KL where the gender is open", "KL(adapter || base) per position"),
}
# The before/after bar figure: the headline metrics (those with values are drawn).
BEFORE_AFTER_METRICS = (
    "gendered_pronoun_rate",
    "genbit_bias",
    "stereotyped_ambiguous",
    "correct_disambiguated",
    "disfluency_rate",
    "kl",
    "kl_sequence",
)
# Training curves of the report: generic ones and the bias rewards' logged metrics, when logged.
TRAINING_CURVES = ("loss", "reward", "kl", "bias/genbit", "completions/gendered_pronoun_rate", "choice/correct_rate")

LIMITATIONS = (
    "GenBit is designed for corpora (its authors recommend hundreds of documents); per text it is noisy, and it "
    "scores *he* and *she* alike, so a per-text GenBit score measures how much gendered language co-occurs with "
    "gender-associated words, not which direction a text leans. The corpus-level value over the whole set is the "
    "better summary. Lower pronoun use is not the same as fairness: a model can avoid pronouns and still prefer the "
    "stereotyped answer, which is why the multiple-choice neutral-choice rate, gold accuracy and BBQ's bias scores "
    "are reported beside it. KL(adapter || base) comes in two forms. `kl` is the KL the trainer uses, read with the "
    "completion fully masked: it compares the two models position by position. `kl_sequence` is the KL between the "
    "two models' answer distributions per answer token, estimated along one random-order path per prompt. When an "
    "adapter changes which answer it gives, `kl` counts the change at every position where the answers differ and "
    "`kl_sequence` once per answer. Either is only a proxy for semantic preservation: a small KL says the adapter "
    "moved the distribution little, not that answers kept their meaning. Metrics come from one sampled completion "
    "per prompt and setting; confidence intervals are paired bootstrap intervals over prompts and do not include the "
    "variance of training itself (one seed per adapter)."
)


def _format(value: object, floatfmt: str) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else format(value, floatfmt)
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text


def markdown_table(frame: pd.DataFrame, *, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured markdown table of `frame` (NaN shown as "–", pipes and newlines escaped)."""
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_format(v, floatfmt) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def select_examples(
    records: pd.DataFrame,
    *,
    k: int = 3,
    before: str = "base",
    after: str = "adapter",
    change: str = "gendered_pronoun_count",
) -> pd.DataFrame:
    """Before/after example pairs by the module's documented rule (first `k`, then `k` largest `|change|`).

    Args:
        records (`pd.DataFrame`): `EvalResult.records` with both variants.
        k (`int`, *optional*, defaults to `3`): prompts per rule and question type.
        before (`str`, *optional*, defaults to `"base"`): the reference arm.
        after (`str`, *optional*, defaults to `"adapter"`): the trained arm.
        change (`str`, *optional*, defaults to `"gendered_pronoun_count"`): per-text column whose change ranks prompts.

    Returns:
        `pd.DataFrame` with `question_type`, `rule`, `index`, `prompt`, `before`, `after` and the change.
    """
    temperature = records["temperature"].min()
    frame = records[records["temperature"] == temperature]
    pairs = frame[frame["variant"] == before].merge(
        frame[frame["variant"] == after], on=["index", "question_type"], suffixes=("_before", "_after")
    )
    if pairs.empty:
        raise ValueError(f"no prompt has both a {before!r} and an {after!r} generation; evaluate with compare_base.")
    pairs = pairs.sort_values("index")
    pairs["change"] = pairs[f"{change}_after"] - pairs[f"{change}_before"]
    chosen = []
    for _, group in pairs.groupby("question_type", sort=True):
        first = group.head(k).assign(rule=f"first {k} in dataset order")
        rest = group[~group["index"].isin(first["index"])]
        ranked = rest.assign(abs_change=rest["change"].abs()).sort_values(
            ["abs_change", "index"], ascending=[False, True]
        )
        largest = ranked.head(k).drop(columns="abs_change").assign(rule=f"largest |change in {change}|")
        chosen += [first, largest]
    out = pd.concat(chosen, ignore_index=True)
    return pd.DataFrame(
        {
            "question_type": out["question_type"],
            "rule": out["rule"],
            "index": out["index"],
            "temperature": temperature,
            "prompt": out["prompt_before"],
            "before": out["completion_before"],
            "after": out["completion_after"],
            f"change in {change}": out["change"],
        }
    )


def _examples_markdown(examples: pd.DataFrame, before: str, after: str) -> str:
    lines = []
    for _, ex in examples.iterrows():
        change = ex[[c for c in examples.columns if c.startswith("change in")][0]]
        lines += [
            f"**#{ex['index']}** ({ex['question_type']}, {ex['rule']}, T={ex['temperature']:g}, change {change:+g})",
            "",
            "> " + ex["prompt"].replace("\n", "\n> "),
            "",
            f"- **{before}:** {ex['before'] or '_(empty)_'}",
            f"- **{after}:** {ex['after'] or '_(empty)_'}",
            "",
        ]
    return "\n".join(lines)


def write_report(
    output_dir: str | Path,
    *,
    metrics: pd.DataFrame,
    records: pd.DataFrame | None = None,
    comparison: pd.DataFrame | None = None,
    bbq: pd.DataFrame | None = None,
    plots: Sequence[Plot] = (),
    notes: Sequence[str] = (),
    settings: Mapping[str, object] | None = None,
    num_examples: int = 3,
    before: str = "base",
    after: str = "adapter",
    title: str = "diffusion_rl evaluation report",
) -> Path:
    """Write `report.md` into `output_dir` and return its path.

    Args:
        output_dir (`str` or `Path`): report folder; plots should live in it (links are made relative).
        metrics (`pd.DataFrame`): `EvalResult.metrics` (or a grid table).
        records (`pd.DataFrame`, *optional*): `EvalResult.records`; with both arms, adds the examples section.
        comparison (`pd.DataFrame`, *optional*): `bootstrap.compare(...)` output (differences with CIs).
        bbq (`pd.DataFrame`, *optional*): BBQ scores, one row per setting.
        plots (`Sequence[Plot]`, *optional*): figures to embed.
        notes (`Sequence[str]`, *optional*): skipped metrics and other remarks (`EvalResult.notes`).
        settings (`Mapping`, *optional*): run settings to list (model, sampler, seeds, ...).
        num_examples (`int`, *optional*, defaults to `3`): `k` of the examples rule.
        before (`str`, *optional*, defaults to `"base"`): reference arm name.
        after (`str`, *optional*, defaults to `"adapter"`): trained arm name.
        title (`str`, *optional*): the report's title.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if settings:
        parts += ["## Settings", ""] + [f"- **{k}:** `{v}`" for k, v in settings.items()] + [""]
    parts += ["## Metrics per setting", "", markdown_table(metrics), ""]
    if comparison is not None:
        parts += [
            f"## Differences {after} − {before}",
            "",
            "Mean paired difference per prompt with a BCa bootstrap interval (resampling prompts).",
            "",
            markdown_table(comparison),
            "",
        ]
    if bbq is not None:
        parts += [
            "## BBQ-style scores",
            "",
            "Accuracy per context condition; s_DIS = 2·n_biased/n_non-unknown − 1 on disambiguated contexts; "
            "s_AMB = (1 − accuracy_ambiguous)·s on ambiguous contexts (Parrish et al., 2022).",
            "",
            markdown_table(bbq),
            "",
        ]
    if plots:
        parts += ["## Plots", ""]
        for plot in plots:
            link = plot.path.relative_to(output_dir) if plot.path.is_relative_to(output_dir) else plot.path
            parts += [
                f"![{', '.join(plot.panels)}]({link.as_posix()})",
                "",
                f"_Panels: {', '.join(plot.panels)}._",
                "",
            ]
    if records is not None and {before, after} <= set(records["variant"]):
        examples = select_examples(records, k=num_examples, before=before, after=after)
        parts += [
            "## Examples before and after",
            "",
            f"Selection rule (not hand-picked): at the lowest temperature, for each question type, the first "
            f"{num_examples} prompts in dataset order, then the {num_examples} prompts with the largest absolute "
            "change in gendered-pronoun count (ties by dataset order).",
            "",
            _examples_markdown(examples, before, after),
        ]
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    parts += ["## Limitations", "", LIMITATIONS, ""]
    path = output_dir / "report.md"
    path.write_text("\n".join(parts))
    return path


def report_evaluation(
    result: EvalResult,
    output_dir: str | Path,
    *,
    log_history: str | Path | Sequence[Mapping] | None = None,
    compare_metrics: Sequence[str] = COMPARE_METRICS,
    num_resamples: int = 2000,
    seed: int = 0,
    num_examples: int = 3,
    settings: Mapping[str, object] | None = None,
    title: str = "diffusion_rl evaluation report",
) -> Path:
    """Save an `EvalResult`, draw its plots, compute the paired differences and write `report.md`.

    Args:
        result (`EvalResult`): from `evaluate_model`.
        output_dir (`str` or `Path`): folder for `records.jsonl`, `metrics.csv`, `comparison.csv`, `plots/*.png`
            and `report.md`.
        log_history (`str`, `Path` or `Sequence[Mapping]`, *optional*): the trainer's log (or its output_dir) for
            the training-curves figure.
        compare_metrics (`Sequence[str]`, *optional*): per-text columns compared before/after.
        num_resamples (`int`, *optional*, defaults to `2000`): bootstrap resamples.
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.
        num_examples (`int`, *optional*, defaults to `3`): `k` of the examples rule.
        settings (`Mapping`, *optional*): extra settings to list (merged with `result.config`).
        title (`str`, *optional*): the report's title, also on its figures (`": before vs after"` added to the
            comparisons, and to the report's heading when it compares a base and an adapter arm).

    Returns:
        `Path` of `report.md`.
    """
    output_dir = Path(output_dir)
    result.save(output_dir)
    plots: list[Plot] = []
    notes = list(result.notes)
    # matplotlib is an optional extra: without it the report is written without figures, never lost.
    draw = plots_available()
    if not draw:
        notes.append(
            f"Plots were skipped: matplotlib is not installed. Install it ({PLOTS_HINT}) and run `diffusion-rl report "
            f"--eval_dir {output_dir}` to add them."
        )
    if log_history is not None and draw:
        history = load_log_history(log_history)
        logged = {key for entry in history for key in entry}
        keys = [k for k in TRAINING_CURVES if k in logged] or None  # None: the generic curves (or a clear error)
        path = output_dir / "plots" / "training.png"
        plots.append(plot_training_curves(history, path, keys=keys, labels=BIAS_LABELS, title=title))
    comparison = None
    variants = set(result.records["variant"])
    if {"base", "adapter"} <= variants:
        metrics = [m for m in compare_metrics if m in result.records.columns]
        comparison = compare(
            result.variant("base"), result.variant("adapter"), metrics=metrics, num_resamples=num_resamples, seed=seed
        )
        comparison.to_csv(output_dir / "comparison.csv", index=False)
        headline = [m for m in BEFORE_AFTER_METRICS if m in result.records.columns]
        if draw and headline:
            plots.append(
                plot_before_after(
                    result.records,
                    output_dir / "plots" / "before_after.png",
                    metrics=headline,
                    labels=BIAS_LABELS,
                    title=f"{title}: before vs after",
                )
            )
        for temperature in sorted(set(result.records["temperature"])) if draw else []:
            plots.append(
                plot_bias_distribution(
                    result.records,
                    output_dir / "plots" / f"bias_T{temperature:g}.png",
                    temperature=temperature,
                    labels=BIAS_LABELS,
                    title=f"{title}: before vs after, T = {temperature:g}",
                )
            )
    bbq_columns = [c for c in ("n_bbq", *BBQ_COLUMNS) if c in result.metrics.columns]
    bbq = None
    if bbq_columns:
        rows = result.metrics.dropna(subset=["n_bbq"]) if "n_bbq" in bbq_columns else result.metrics
        bbq = rows[["temperature", "variant", "question_type", *bbq_columns]]
        metrics_table = result.metrics.drop(columns=bbq_columns)
    else:
        metrics_table = result.metrics
    return write_report(
        output_dir,
        metrics=metrics_table,
        records=result.records,
        comparison=comparison,
        bbq=bbq,
        plots=plots,
        notes=notes,
        settings={**result.config, **(settings or {})},
        num_examples=num_examples,
        title=f"{title}: before vs after" if comparison is not None else title,
    )
