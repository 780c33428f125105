"""Masked-diffusion supervised fine-tuning: LLaDA's SFT objective and the sampler-shaped layout of its batches.

The training loop is `diffusion_rl.DiffusionSFTTrainer` (`sft_trainer.py`), on `transformers.Trainer`.

LLaDA (arXiv 2502.09992, Appendix B.1 and the upstream GUIDELINES.md) fine-tunes with the pre-training loss applied to
the answer only:

* the prompt stays clean (never masked, never in the loss);
* per example, ``t ~ U(0, 1)`` and ``p = (1 - eps) * t + eps``; every answer token is replaced by the mask token with
  probability ``p``. The answer includes its closing ``<|eot_id|>`` and the ``<|endoftext|>`` padding that fills the
  sequence: the model must learn where an answer stops, which is how the sampler ends a fixed-length canvas;
* loss = ``(1 / B) * sum_i (1 / |answer_i|) * sum_{masked j} CE_ij / p_i`` - cross-entropy on masked tokens weighted by
  ``1 / p`` (the ELBO weight) and normalised by the answer length including the padding, as upstream does.

What differs from upstream: rows are laid out the way the RL trainer feeds the sampler - chat-templated prompts
*left*-padded (with an attention mask), then the answer padded with EOS to a fixed ``completion_length`` (the
sampler's ``gen_length``). Every answer then occupies the same trailing slice, so only those positions go through
the LM head (``logits_to_keep``), and the model learns to fill exactly the canvas it will be asked to fill.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "forward_process",
    "masked_diffusion_sft_loss",
    "sft_loss_from_logits",
    "tokenize_sft_pairs",
]


def forward_process(
    answer_mask: torch.Tensor, *, generator: torch.Generator | None = None, eps: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample which answer tokens to mask (LLaDA's forward process restricted to the answer).

    Args:
        answer_mask (`torch.Tensor`):
            `(B, L)` bool, `True` at answer positions (answer, its EOT and the EOS padding).
        generator (`torch.Generator`, *optional*):
            Source of randomness (on the device of `answer_mask`); the global RNG is used only when it is `None`.
        eps (`float`, *optional*, defaults to `1e-3`):
            Lower bound of the masking probability, `p = (1 - eps) * t + eps`.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: `masked` `(B, L)` bool (always `False` outside the answer) and `p_mask`
        `(B,)` float32, the per-example masking probability.
    """
    if answer_mask.dim() != 2 or answer_mask.dtype != torch.bool:
        raise ValueError(
            f"answer_mask must be a (B, L) bool tensor, got shape {tuple(answer_mask.shape)} of {answer_mask.dtype}"
        )
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    batch_size, length = answer_mask.shape
    # Drawn on the generator's own device, so that a CPU generator also drives a batch on a GPU.
    source = generator.device if generator is not None else answer_mask.device
    t = torch.rand(batch_size, generator=generator, device=source).to(answer_mask.device)  # (B,)
    p_mask = (1.0 - eps) * t + eps  # (B,)
    draws = torch.rand((batch_size, length), generator=generator, device=source).to(answer_mask.device)  # (B, L)
    masked = (draws < p_mask[:, None]) & answer_mask
    return masked, p_mask


def sft_loss_from_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    p_mask: torch.Tensor,
    answer_mask: torch.Tensor,
) -> torch.Tensor:
    """LLaDA's SFT loss given the logits of the noised input.

    Args:
        logits (`torch.Tensor`): `(B, L, V)` logits of the model on the noised sequence (any float dtype; the
            cross-entropy is computed in float32).
        input_ids (`torch.Tensor`): `(B, L)` clean token ids (the targets).
        masked (`torch.Tensor`): `(B, L)` bool, positions that were replaced by the mask token.
        p_mask (`torch.Tensor`): `(B,)` masking probability of each example.
        answer_mask (`torch.Tensor`): `(B, L)` bool answer positions; their count per row is the normaliser.

    Returns:
        `torch.Tensor`: scalar `(1/B) sum_i (1/|answer_i|) sum_{j masked} CE_ij / p_i`.
    """
    if logits.shape[:2] != input_ids.shape or masked.shape != input_ids.shape or answer_mask.shape != input_ids.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, input_ids {tuple(input_ids.shape)}, masked "
            f"{tuple(masked.shape)}, answer_mask {tuple(answer_mask.shape)}; logits must be (B, L, V), the rest (B, L)"
        )
    if bool((masked & ~answer_mask).any()):
        raise ValueError("masked marks positions outside answer_mask: the prompt must never be masked")
    answer_lengths = answer_mask.sum(dim=1).clamp(min=1).to(torch.float32)  # (B,)
    ce = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")  # (M,)
    weight = (1.0 / (p_mask.to(torch.float32)[:, None] * answer_lengths[:, None])).expand_as(masked)[masked]  # (M,)
    return (ce * weight).sum() / input_ids.shape[0]


def masked_diffusion_sft_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    answer_mask: torch.Tensor | None = None,
    *,
    prompt_lengths: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    mask_token_id: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
) -> torch.Tensor:
    """One stochastic estimate of LLaDA's SFT loss (see the module docstring).

    Args:
        model (`torch.nn.Module`):
            A bidirectional mask predictor returning `.logits` `(B, L, V)` (e.g. `LladaForMaskedDiffusion`, or a
            PEFT-wrapped one). When answers form a common trailing slice, `logits_to_keep` is passed so that only
            those positions go through the LM head.
        input_ids (`torch.Tensor`):
            `(B, L)` clean sequences: prompt then answer (answer incl. EOT and EOS padding).
        answer_mask (`torch.Tensor`, *optional*):
            `(B, L)` bool answer positions. Give exactly one of `answer_mask` and `prompt_lengths`.
        prompt_lengths (`torch.Tensor`, *optional*):
            `(B,)` upstream-style layout: positions `>= prompt_lengths[i]` are the answer of row `i`.
        attention_mask (`torch.Tensor`, *optional*):
            `(B, L)` 1 for real tokens, 0 for (left) padding of the prompt.
        mask_token_id (`int`):
            Id of the mask token (`<|mdm_mask|>`; 126336 for LLaDA-8B).
        generator (`torch.Generator`, *optional*):
            Draws `t` and the mask; the global RNG is used only when it is `None`.
        eps (`float`, *optional*, defaults to `1e-3`):
            Lower bound of the masking probability.

    Returns:
        `torch.Tensor`: scalar loss with gradient through `model`.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    if (answer_mask is None) == (prompt_lengths is None):
        raise ValueError("pass exactly one of answer_mask (B, L) bool and prompt_lengths (B,)")
    if answer_mask is None:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        answer_mask = positions[None, :] >= prompt_lengths.to(input_ids.device)[:, None]  # (B, L)
    if answer_mask.shape != input_ids.shape:
        raise ValueError(f"answer_mask shape {tuple(answer_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    answer_mask = answer_mask.to(torch.bool)
    if bool((input_ids == mask_token_id).any()):
        raise ValueError(f"input_ids already contain the mask token id {mask_token_id}; clean sequences are expected")

    masked, p_mask = forward_process(answer_mask, generator=generator, eps=eps)
    noisy = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)  # (B, L)

    # Answers that share a trailing slice (left-padded prompts) need logits only there.
    length = input_ids.shape[1]
    columns_with_answer = answer_mask.any(dim=0).nonzero()
    start = int(columns_with_answer.min()) if len(columns_with_answer) else length
    kwargs: dict[str, Any] = {}
    if 0 < start < length and bool(answer_mask[:, start:].all()) and not bool(answer_mask[:, :start].any()):
        kwargs["logits_to_keep"] = length - start
    else:
        start = 0
    logits = model(input_ids=noisy, attention_mask=attention_mask, **kwargs).logits  # (B, L - start, V)
    # The slice holds every answer position, so the per-row answer lengths (the normaliser) are unchanged.
    return sft_loss_from_logits(logits, input_ids[:, start:], masked[:, start:], p_mask, answer_mask[:, start:])


def _special_id(tokenizer: Any, token: str, fallback: int | None) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
        return fallback
    return int(token_id)


def tokenize_sft_pairs(
    tokenizer: Any,
    prompts: Sequence[str | list[dict[str, str]]],
    answers: Sequence[str],
    *,
    completion_length: int,
    max_prompt_length: int | None = None,
    system_prompt: str | None = None,
) -> dict[str, torch.Tensor]:
    """Lay out (prompt, answer) pairs exactly as the RL sampler sees them.

    Prompts go through `diffusion_rl.data.chat.tokenize_prompts` (chat template with generation prompt, left padding);
    each answer is tokenised without special tokens, closed with `<|eot_id|>` and right-padded with EOS to
    `completion_length`.

    Args:
        tokenizer: a chat tokenizer with `eos_token_id` and an `<|eot_id|>` token (falls back to EOS when absent).
        prompts (`Sequence[str | list[dict]]`): user messages or chat message lists.
        answers (`Sequence[str]`): assistant answers (plain text).
        completion_length (`int`): answer slot length (the sampler's `gen_length`).
        max_prompt_length (`int`, *optional*): forwarded to `tokenize_prompts` (too long -> `ValueError`).
        system_prompt (`str`, *optional*): forwarded to `tokenize_prompts`.

    Returns:
        `dict[str, torch.Tensor]`: `input_ids` `(B, P + C)`, `attention_mask` `(B, P + C)` and `answer_mask`
        `(B, P + C)` bool.

    Raises:
        `ControlTokenError`: (a `ValueError`) a prompt or an answer contains a special token of the tokenizer.
    """
    from .data.chat import check_plain_text, tokenize_prompts

    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    if not answers:
        raise ValueError("no (prompt, answer) pairs to tokenize")
    bad = [i for i, a in enumerate(answers) if not isinstance(a, str)]
    if bad:
        raise TypeError(f"answers must be strings; item {bad[0]} is {type(answers[bad[0]]).__name__}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token_id; LLaDA-style answers are padded with EOS")
    eot_id = _special_id(tokenizer, "<|eot_id|>", eos_id)
    prompt_batch = tokenize_prompts(
        tokenizer, list(prompts), max_prompt_length=max_prompt_length, system_prompt=system_prompt
    )
    rows = []
    for i, answer in enumerate(answers):
        # Tokenized on its own, a written "<|eot_id|>" would still become the real token: refuse it as in prompts.
        check_plain_text(tokenizer, answer, f"answer {i}")
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eot_id]
        if len(ids) > completion_length:
            raise ValueError(
                f"answer {i} needs {len(ids)} tokens with its EOT but completion_length is {completion_length}; "
                "raise completion_length or shorten the answer"
            )
        rows.append(ids + [eos_id] * (completion_length - len(ids)))
    answer_ids = torch.tensor(rows, dtype=prompt_batch["input_ids"].dtype)  # (B, C)
    input_ids = torch.cat([prompt_batch["input_ids"], answer_ids], dim=1)  # (B, P + C)
    attention_mask = torch.cat([prompt_batch["attention_mask"], torch.ones_like(answer_ids)], dim=1)
    answer_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    answer_mask[:, -completion_length:] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}
