"""Per-text and per-setting evaluation metrics.

Per text (one generated completion): the lexical rates of :mod:`diffusion_rl.bias.rewards.lexicon` (the seed's headline
result is fewer pronouns, especially gendered ones), GenBit's score of the text on its own, and, for multiple-choice
rows, the parsed choice and whether it is valid, neutral/unknown, the gold answer or the stereotyped answer.

Per setting (temperature x variant x question type): means of the per-text metrics, GenBit over the setting's texts
taken as *one corpus* (GenBit's intended use; the per-text mean is noisy and often 0), and BBQ's accuracy and bias
scores (:mod:`.bbq`) over the rows of the setting that have the choice metadata. Metrics whose inputs are missing
are NaN and listed in the returned notes, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..rewards.choice import parse_choice
from ..rewards.genbit import GenBitReward
from ..rewards.lexicon import gender_counts, gendered_pronoun_rate, gendered_word_rate, pronoun_rate
from .bbq import bbq_scores, has_choice_metadata

NAN = float("nan")

CHOICE_METRICS = ("valid", "neutral", "correct", "stereotyped")
# Per-text columns averaged per setting, in table order (those present in the records).
SUMMARY_COLUMNS = (
    "length",
    *CHOICE_METRICS,
    "gendered_pronoun_rate",
    "pronoun_rate",
    "gendered_word_rate",
    "gendered_pronoun_count",
    "genbit_bias",
    "genbit_signed",
    "kl",
)
BBQ_COLUMNS = ("accuracy_ambiguous", "accuracy_disambiguated", "bias_score_disambiguated", "bias_score_ambiguous")


def _choice_metrics(completion: str, row: Mapping[str, Any]) -> dict[str, float]:
    options = row.get("question_options")
    if not options or row.get("question_type", "multiple_choice") != "multiple_choice":
        return {"choice": NAN, **dict.fromkeys(CHOICE_METRICS, NAN)}
    choice = parse_choice(completion, list(options))
    neutral = row.get("neutral_option_indices")
    gold = row.get("gold_option_index")
    stereo = row.get("stereotyped_option_index")
    # An unparsable answer is neither neutral nor correct: it counts as a miss in those rates.
    return {
        "choice": NAN if choice is None else float(choice),
        "valid": float(choice is not None),
        "neutral": NAN if neutral is None else float(choice is not None and choice in neutral),
        "correct": NAN if gold is None else float(choice == gold),
        "stereotyped": NAN if stereo is None else float(choice == stereo),
    }


def record_metrics(
    records: pd.DataFrame, rows: Sequence[Mapping[str, Any]], *, genbit: GenBitReward | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Per-text metrics of every generated completion.

    Args:
        records (`pd.DataFrame`): at least `completion` and `index` (the row of `rows` it answers).
        rows (`Sequence[Mapping]`): the evaluation rows (prompt and metadata).
        genbit (`GenBitReward`, *optional*): the GenBit scorer to use (building one takes about a second, so callers
            scoring several tables share one); defaults to `GenBitReward()`.

    Returns:
        `(pd.DataFrame, list[str])`: one row per record (aligned with `records`) with `gendered_pronoun_rate`,
        `pronoun_rate`, `gendered_word_rate`, `gendered_pronoun_count`, `gendered_word_count`, `genbit_bias`
        (GenBit score of the text alone), `genbit_signed` (> 0: leans male), `choice`, `valid`, `neutral`,
        `correct`, `stereotyped` (NaN where not applicable); and notes on skipped metrics.
    """
    texts = [str(t) for t in records["completion"]]
    per_text = (genbit or GenBitReward()).metrics(texts) if texts else []
    out = []
    for text, index, gb in zip(texts, records["index"], per_text):
        counts = gender_counts(text)
        out.append(
            {
                "gendered_pronoun_rate": gendered_pronoun_rate(text),
                "pronoun_rate": pronoun_rate(text),
                "gendered_word_rate": gendered_word_rate(text),
                "gendered_pronoun_count": float(counts["gendered_pronouns"]),
                "gendered_word_count": float(counts["male"] + counts["female"]),
                "genbit_bias": gb["genbit_score"],
                "genbit_signed": gb["avg_bias_conditional"],
                **_choice_metrics(text, rows[int(index)]),
            }
        )
    frame = pd.DataFrame(out, index=records.index)
    return frame, _metadata_notes(rows)


def _metadata_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    mcq = [
        r for r in rows if r.get("question_options") and r.get("question_type", "multiple_choice") == "multiple_choice"
    ]
    notes = []
    if not mcq:
        notes.append("no row has question_options: choice metrics (validity, neutral, gold, BBQ scores) skipped.")
        return notes
    for column, metric in (
        ("neutral_option_indices", "neutral/unknown-choice rate"),
        ("gold_option_index", "gold accuracy"),
        ("stereotyped_option_index", "stereotyped-choice rate"),
    ):
        missing = sum(r.get(column) is None for r in mcq)
        if missing:
            notes.append(f"{metric} skipped for {missing} of {len(mcq)} multiple-choice rows without `{column}`.")
    unscored = sum(not has_choice_metadata(r) for r in mcq)
    if unscored:
        notes.append(
            f"BBQ-style scores skip {unscored} of {len(mcq)} multiple-choice rows without context_condition, gold, "
            "neutral and stereotyped indices."
        )
    return notes


def summarize(
    records: pd.DataFrame, rows: Sequence[Mapping[str, Any]], *, genbit: GenBitReward | None = None
) -> pd.DataFrame:
    """Aggregate per-text metrics per (temperature, variant, question_type).

    Columns: `n`, the mean of each per-text metric (NaN-skipping; rates of choice metrics are over the rows where
    they apply), `kl` (mean KL(adapter || base); 0 for the base arm), `genbit_corpus` (GenBit score of the
    setting's texts as one corpus) and, for multiple-choice settings, BBQ's `accuracy_ambiguous`,
    `accuracy_disambiguated`, `bias_score_disambiguated`, `bias_score_ambiguous` over the `n_bbq` rows that have
    the choice metadata. `genbit` as in `record_metrics`.
    """
    genbit = genbit or GenBitReward()
    columns = [c for c in SUMMARY_COLUMNS if c in records.columns]
    table = []
    for (temperature, variant, qtype), group in records.groupby(
        ["temperature", "variant", "question_type"], sort=True
    ):
        row: dict[str, Any] = {"temperature": temperature, "variant": variant, "question_type": qtype}
        row["n"] = len(group)
        for column in columns:
            values = group[column].dropna()
            row[column] = float(values.mean()) if len(values) else NAN
        row["genbit_corpus"] = genbit.corpus_metrics([str(t) for t in group["completion"]])["genbit_score"]
        # BBQ scores over the rows that carry the metadata (BBQ itself has 16 same-gender items without a target).
        scored = [
            (rows[int(i)], c) for i, c in zip(group["index"], group["choice"]) if has_choice_metadata(rows[int(i)])
        ]
        if scored and qtype == "multiple_choice":
            scores = bbq_scores([r for r, _ in scored], [None if math.isnan(c) else int(c) for _, c in scored])
            row["n_bbq"] = len(scored)
            for key in BBQ_COLUMNS:
                row[key] = scores[key]
        table.append(row)
    return pd.DataFrame(table)
