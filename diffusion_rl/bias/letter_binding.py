"""A one-forward-pass probe of whether a model binds an option letter to its option text.

Why: choosing an option in the trained answer format (``"B) her. <explanation>"``) needs the letter that labels the
chosen text in the prompt. An earlier default model's choices stayed near chance because it never learnt that binding
(docs/default_model.md), and greedy generation on held-out prompts is a slow, noisy way to watch for it during an
experiment. This probe takes each prompt's SFT answer (`default_answers.write_answers`, no style flip), masks only
its first token (``given_answer``: the restated option and the explanation stay visible, so the letter is a pure
lookup) or the whole answer (``all_masked``), and reads the model's arg-max there. Chance is about one over the
number of options. With the default model's word tokenizer the first token is the whole option line
(``B)▁The▁young▁woman``), so there the probe asks for the right option line of the prompt.
"""

from __future__ import annotations

import random
from typing import Any

import torch

__all__ = ["letter_batch", "letter_binding_probe"]


def letter_batch(
    tokenizer: Any, num_prompts: int, *, split: str, seed: int, completion_length: int
) -> tuple[dict[str, torch.Tensor], int]:
    """The probe's held-out prompts with their SFT answers, tokenized, and the column of every answer's letter."""
    from ..sft import tokenize_sft_pairs
    from .data import generate_mcq_dataset
    from .default_answers import answer_style, write_answers

    rows = generate_mcq_dataset(num_prompts, seed=seed, split=split, question_type="multiple_choice").to_list()
    rng = random.Random(f"letter_binding/{seed}")
    answers = [write_answers(row, None, answer_style(row, rng, 0.0), rng)[0] for row in rows]
    batch = tokenize_sft_pairs(
        tokenizer, [row["prompt"] for row in rows], answers, completion_length=completion_length
    )
    # The answer slot is right-aligned (left padding), so every answer starts at the same column: its letter.
    return batch, batch["input_ids"].shape[1] - completion_length


def letter_binding_probe(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    num_prompts: int = 96,
    split: str = "test_seen_roles",
    seed: int = 1,
    completion_length: int = 40,
) -> dict[str, float]:
    """Accuracy of the letter of the SFT answer, predicted in one forward pass, on held-out multiple-choice prompts.

    Args:
        model (`torch.nn.Module`): a masked diffusion LM (`LladaForMaskedDiffusion`); its `config.mask_token_id` is
            used.
        tokenizer: its tokenizer.
        num_prompts (`int`, *optional*, defaults to `96`): held-out multiple-choice prompts.
        split (`str`, *optional*, defaults to `"test_seen_roles"`): data split of the prompts.
        seed (`int`, *optional*, defaults to `1`): data seed (the build's monitor uses seed 1 too).
        completion_length (`int`, *optional*, defaults to `40`): answer slot (the model's `gen_length`).

    Returns:
        `dict[str, float]`: `given_answer` and `all_masked` accuracies and `num_prompts`.
    """
    batch, letter_at = letter_batch(
        tokenizer, num_prompts, split=split, seed=seed, completion_length=completion_length
    )
    # The batch is built on the CPU; the model may live on a GPU (a probe model may have no parameters at all).
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
    gold = batch["input_ids"][:, letter_at]
    mask_id = model.config.mask_token_id
    was_training = model.training
    model.eval()
    result: dict[str, float] = {"num_prompts": float(len(gold))}
    with torch.no_grad():
        for name, masked in (
            ("given_answer", slice(letter_at, letter_at + 1)),
            ("all_masked", slice(letter_at, None)),
        ):
            ids = batch["input_ids"].clone()
            ids[:, masked] = mask_id
            logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, letter_at]
            result[name] = float((logits.argmax(-1) == gold).float().mean())
    model.train(was_training)
    return result
