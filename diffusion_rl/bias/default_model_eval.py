"""How the default model is judged: held-out generation with the bias evaluation's model-free metrics.

Used twice: during the build (`HeldOutCallback`, every `eval_every` SFT steps, so the build log shows when the model
becomes competent) and afterwards (`evaluate_default_model`, the numbers of docs/default_model.md). Both generate at
T=0 with the model's own sampler settings and score each answer with
`diffusion_rl.bias.evaluation.metrics.text_metrics` - the same per-text metrics the main job's report uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from .letter_binding import letter_binding_probe

__all__ = [
    "HeldOutCallback",
    "LossLogCallback",
    "evaluate_default_model",
    "generate_answers",
    "summarize_answers",
]

# Reported means (NaN-skipping) of the per-text metrics; the names are those of `text_metrics`.
SUMMARY_KEYS = (
    "valid",
    "correct_disambiguated",
    "stereotyped_ambiguous",
    "neutral_ambiguous",
    "restates_option",
    "mentions_role",
    "gendered_explanation",
    "explanation_gendered_pronoun_rate",
    "non_word_rate",
    "repeat_rate",
    "disfluency_rate",
    "empty",
)


def generate_answers(
    model: torch.nn.Module,
    tokenizer,
    rows: Sequence[Mapping[str, Any]],
    *,
    sampler_settings: Mapping[str, Any],
    batch_size: int = 48,
    seed: int = 0,
) -> tuple[list[str], list[bool]]:
    """Completions of `rows` (and whether each ended with a stop token inside the canvas), in eval mode, no grad."""
    from ..data.chat import tokenize_prompts
    from ..sampling.sampler import MaskedDiffusionSampler

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampler = MaskedDiffusionSampler(model, mask_token_id=model.config.mask_token_id, **sampler_settings)
    stops = torch.tensor(sampler.eos_token_ids + sampler.eot_token_ids)
    generator = torch.Generator(device=device).manual_seed(seed)
    texts: list[str] = []
    ended: list[bool] = []
    try:
        with torch.no_grad():
            for first in range(0, len(rows), batch_size):
                batch = tokenize_prompts(tokenizer, [r["prompt"] for r in rows[first : first + batch_size]])
                out = sampler.generate(
                    batch["input_ids"].to(device),
                    batch["attention_mask"].to(device),
                    generator=generator,
                )
                for ids, keep in zip(out.completion_ids.cpu(), out.completion_mask.cpu()):
                    kept = ids[keep]
                    texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
                    ended.append(bool(len(kept)) and bool(torch.isin(kept[-1], stops)))
    finally:
        model.train(was_training)
    return texts, ended


def summarize_answers(rows: Sequence[Mapping[str, Any]], texts: Sequence[str], ended: Sequence[bool]) -> dict:
    """Means of `SUMMARY_KEYS` over the answers (per key, over the rows where it applies) and the ended share."""
    from .evaluation.metrics import text_metrics

    per_text = [text_metrics(text, row) for text, row in zip(texts, rows)]
    summary: dict[str, Any] = {"num_prompts": len(texts)}
    for key in SUMMARY_KEYS:
        values = [m[key] for m in per_text if not math.isnan(m[key])]
        summary[key] = round(sum(values) / len(values), 4) if values else float("nan")
    summary["ended"] = round(sum(ended) / len(ended), 4) if ended else float("nan")
    return summary


class LossLogCallback(TrainerCallback):
    """Log the running SFT loss through `log` (the build runs with tqdm disabled)."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self._started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.log(
                f"sft step {state.global_step}/{state.max_steps} loss {float(logs['loss']):.4f} "
                f"{time.perf_counter() - self._started:.0f}s"
            )


class HeldOutCallback(TrainerCallback):
    """Generate on held-out prompts every `every` steps (and at the end) and log the summary (`held_out/<key>`).

    Each evaluation also runs `letter_binding_probe` (one forward pass: is the first token of the SFT answer - its
    letter, or with the default model's tokenizer its whole option line - right with the rest of the answer visible,
    `letter_given_answer`, and with all of it masked, `letter_all_masked`), the fast signal of whether the model has
    learnt to pick the option line of its own prompt.

    Args:
        tokenizer: the model's tokenizer.
        rows (`Sequence[Mapping]`): held-out records with the MCQ metadata.
        every (`int`): steps between evaluations (0: only at the end of training).
        sampler_settings (`Mapping`): `MaskedDiffusionSampler` settings (greedy).
        log (`Callable[[str], None]`, *optional*): where a one-line summary goes.
    """

    def __init__(
        self,
        tokenizer,
        rows,
        *,
        every: int,
        sampler_settings,
        log: Callable[[str], None] | None = None,
    ):
        self.tokenizer = tokenizer
        self.rows = list(rows)
        self.every = every
        self.sampler_settings = dict(sampler_settings)
        self.log = log
        self.history: list[dict[str, Any]] = []

    def _evaluate(self, state, model) -> None:
        started = time.perf_counter()
        texts, ended = generate_answers(model, self.tokenizer, self.rows, sampler_settings=self.sampler_settings)
        probe = letter_binding_probe(
            model,
            self.tokenizer,
            num_prompts=len(self.rows),
            completion_length=self.sampler_settings["gen_length"],
        )
        summary = {
            "step": state.global_step,
            **summarize_answers(self.rows, texts, ended),
            "letter_given_answer": round(probe["given_answer"], 4),
            "letter_all_masked": round(probe["all_masked"], 4),
        }
        summary["seconds"] = round(time.perf_counter() - started, 1)
        self.history.append(summary)
        state.log_history.append(
            {f"held_out/{k}": v for k, v in summary.items() if k != "step"} | {"step": state.global_step}
        )
        if self.log:
            keys = (
                "correct_disambiguated",
                "stereotyped_ambiguous",
                "neutral_ambiguous",
                "restates_option",
                "mentions_role",
                "disfluency_rate",
                "ended",
                "letter_given_answer",
            )
            self.log(
                f"held-out @ {state.global_step}: " + ", ".join(f"{k} {summary[k]}" for k in keys) + f" | {texts[0]!r}"
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._evaluate(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._evaluate(state, model)


def evaluate_default_model(
    model: torch.nn.Module,
    tokenizer,
    *,
    num_prompts: int = 256,
    split: str = "test_seen_roles",
    free_text_prompts: int | None = None,
    seed: int = 0,
    batch_size: int = 48,
    sampler_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate on held-out prompts at T=0 and measure competence, bias and fluency.

    Args:
        model, tokenizer: the model to judge (e.g. `load_default_model()`).
        num_prompts (`int`, *optional*, defaults to `256`): held-out multiple-choice prompts.
        split (`str`, *optional*, defaults to `"test_seen_roles"`): `"test_seen_roles"` (unseen wordings about the
            training roles: the main evaluation) or `"test"` (unseen wordings *and* roles).
        free_text_prompts (`int`, *optional*): free-text twins to judge too; defaults to `num_prompts // 4`.
        seed (`int`, *optional*, defaults to `0`): data seed (the build monitors seed 1) and sampler seed.
        batch_size (`int`, *optional*, defaults to `48`): prompts per sampler call.
        sampler_settings (`Mapping`, *optional*): defaults to `DEFAULT_SAMPLER_SETTINGS`.

    Returns:
        `dict`: `multiple_choice` and `free_text` summaries (`SUMMARY_KEYS`, `ended`), the sampler settings, the
        generation time and the `completions` (multiple choice first).
    """
    from .data import generate_mcq_dataset
    from .default_model import DEFAULT_SAMPLER_SETTINGS

    settings = dict(sampler_settings or DEFAULT_SAMPLER_SETTINGS)
    free_text_prompts = num_prompts // 4 if free_text_prompts is None else free_text_prompts
    started = time.perf_counter()
    out: dict[str, Any] = {
        "split": split,
        "sampler_settings": settings,
        "completions": [],
    }
    for qtype, n in (
        ("multiple_choice", num_prompts),
        ("free_text", free_text_prompts),
    ):
        if n < 1:
            continue
        rows = generate_mcq_dataset(n, seed=seed, split=split, question_type=qtype).to_list()
        texts, ended = generate_answers(
            model,
            tokenizer,
            rows,
            sampler_settings=settings,
            batch_size=batch_size,
            seed=seed,
        )
        out[qtype] = summarize_answers(rows, texts, ended)
        if qtype == "free_text":
            out[qtype]["stereotyped_pronoun_ambiguous"] = _stereotyped_pronoun_share(rows, texts)
        out["completions"] += texts
    out["generation_seconds"] = round(time.perf_counter() - started, 1)
    return out


def _stereotyped_pronoun_share(rows: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> float:
    """Share of ambiguous free-text answers that use a pronoun of the stereotyped gender and none of the other."""
    from .rewards.lexicon import gender_counts

    hits = []
    for row, text in zip(rows, texts):
        gender = row.get("stereotyped_gender")
        if row.get("context_condition") != "ambiguous" or gender not in (
            "male",
            "female",
        ):
            continue
        other = "female" if gender == "male" else "male"
        counts = gender_counts(text)
        hits.append(counts[f"{gender}_pronouns"] > 0 and counts[f"{other}_pronouns"] == 0)
    return round(sum(hits) / len(hits), 4) if hits else float("nan")
