"""Before/after evaluation of the gender-bias application: the core's paired generation, then the bias metrics.

`diffusion_rl.evaluation.generate_completions` generates with the adapter on and off (same prompts, same sampler
seeds); this module scores its records with the per-text metrics and per-setting summary of `metrics.py` (lexical
rates, GenBit, choice and BBQ scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ...evaluation.generate import EvalResult, generate_completions
from ..rewards.choice import _check_choice_row
from ..rewards.genbit import GenBitReward
from .metrics import record_metrics, summarize

# The row metadata written beside each completion in `records.jsonl`, so that anyone can re-score it on its own.
RECORD_METADATA = (
    "id",
    "question_type",
    "question_options",
    "context_condition",
    "gold_option_index",
    "stereotyped_option_index",
    "anti_stereotyped_option_index",
    "neutral_option_indices",
    "option_genders",
    "occupation",
    "stereotyped_gender",
    "template_family",
    "template_id",
    "scenario_id",
    "split",
)


def evaluate_model(
    model: torch.nn.Module,
    tokenizer,
    dataset: Sequence[Mapping] | Any,
    *,
    temperatures: Sequence[float] = (0.0,),
    sampler_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    compare_base: bool = True,
    max_prompt_length: int | None = None,
    genbit_kwargs: Mapping[str, Any] | None = None,
    sequence_kl_paths: bool = False,
) -> EvalResult:
    """Generate on `dataset` at each temperature with the adapter (and the base model) and compute the metrics.

    Args:
        model (`torch.nn.Module`): a PEFT model (adapter on/off gives the two arms) or a plain model (one arm,
            reported as variant `"model"`; then `compare_base` must be `False`).
        tokenizer: the model's tokenizer with a chat template.
        dataset (`datasets.Dataset` or `Sequence[Mapping]`): rows with a `prompt` (string or chat messages) and
            optionally the MCQ metadata (`question_type`, `question_options`, `neutral_option_indices`,
            `gold_option_index`, `stereotyped_option_index`, `context_condition`).
        temperatures (`Sequence[float]`, *optional*, defaults to `(0.0,)`): sampling temperatures, each in
            [0, 10].
        sampler_kwargs (`Mapping`, *optional*): settings for `MaskedDiffusionSampler` (`steps`, `gen_length`,
            `block_length`, `remasking`, `cfg_scale`, ...); the temperature comes from `temperatures`.
        seed (`int`, *optional*, defaults to `0`): base seed of the per-batch sampler generators.
        batch_size (`int`, *optional*, defaults to `8`): prompts per sampler call.
        compare_base (`bool`, *optional*, defaults to `True`): also generate with the adapter disabled.
        max_prompt_length (`int`, *optional*): passed to `tokenize_prompts` (longer prompts raise).
        genbit_kwargs (`Mapping`, *optional*): options for `GenBitReward` (e.g. `lemmatizer`).
        sequence_kl_paths (`bool`, *optional*, defaults to `False`): also estimate the KL between the adapter's and
            the base model's answer distributions (`kl_sequence`; see `generate_completions`).

    Returns:
        `EvalResult`.
    """
    genbit = GenBitReward(**dict(genbit_kwargs or {}))  # before any generation: bad options fail fast
    rows = [dict(r) for r in dataset]  # materialised once: the generation and the metrics both read the rows
    _check_choice_metadata(rows)
    generated = generate_completions(
        model,
        tokenizer,
        rows,
        temperatures=temperatures,
        sampler_kwargs=sampler_kwargs,
        seed=seed,
        batch_size=batch_size,
        compare_base=compare_base,
        max_prompt_length=max_prompt_length,
        metadata_columns=[c for c in RECORD_METADATA if c not in ("id", "question_type")],
        sequence_kl_paths=sequence_kl_paths,
    )
    per_text, notes = record_metrics(generated.records, rows, genbit=genbit)
    records = pd.concat([generated.records, per_text], axis=1)
    metrics = summarize(records, rows, genbit=genbit)
    return EvalResult(records=records, metrics=metrics, notes=notes, config=generated.config)


def _check_choice_metadata(rows: Sequence[Mapping[str, Any]]) -> None:
    """The choice metadata of every multiple-choice row, checked as the training reward checks it and before the
    first batch is generated: the metrics read it only after the whole generation, where options given as one string
    were scored as a list of characters, an out-of-range index made every answer wrong, and a non-list of neutral
    indices raised a bare `TypeError`."""
    for index, row in enumerate(rows):
        options = row.get("question_options")
        if options and row.get("question_type", "multiple_choice") == "multiple_choice":
            _check_choice_row(index, options, row.get("neutral_option_indices"), row.get("gold_option_index"))
