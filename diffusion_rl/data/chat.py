"""Prompts -> left-padded token batches through the tokenizer's chat template.

Why a helper: every consumer (trainer, evaluation, SFT) must turn the same dataset `prompt` column into the same
token ids. Two details are easy to get wrong and are handled once here:

* Chat templates of LLaDA/Llama-3 style models already emit the BOS token, so the rendered text is tokenized with
  ``add_special_tokens=False``; tokenizing it the default way would prepend a second BOS.
* The sampler appends the completion canvas on the right, so prompts are padded on the *left*; with the attention
  mask and relative (RoPE) positions the padding does not change the model's view of the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

Message = Mapping[str, Any]


def _as_messages(prompt: str | Sequence[Message], index: int, system_prompt: str | None) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"prompt {index} is empty; remove the row or give it text.")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt):
        messages = []
        for j, m in enumerate(prompt):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(
                    f"prompt {index}, message {j}: chat messages need string 'role' and 'content' keys, "
                    f"got {dict(m)!r}."
                )
            messages.append({"role": m["role"], "content": m["content"]})
    else:
        raise TypeError(
            f"prompt {index} must be a string or a non-empty list of {{'role', 'content'}} dicts, "
            f"got {type(prompt).__name__}: {prompt!r:.80}."
        )
    if system_prompt is not None:
        if messages[0]["role"] == "system":
            raise ValueError(
                f"prompt {index} already starts with a system message; pass system_prompt=None or remove it from the "
                "conversation."
            )
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def tokenize_prompts(
    tokenizer,
    prompts: Sequence[str | Sequence[Message]],
    *,
    max_prompt_length: int | None = None,
    system_prompt: str | None = None,
    truncate_left: bool = False,
) -> dict[str, torch.Tensor]:
    """Render prompts with the chat template (generation prompt added) and left-pad them into one batch.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            A tokenizer with a ``chat_template`` and a ``pad_token_id``.
        prompts (`list[str | list[dict]]`):
            Each prompt is a user message string or a whole conversation (``[{"role": ..., "content": ...}, ...]``).
        max_prompt_length (`int`, *optional*, defaults to `None`):
            Longest allowed prompt in tokens (after templating). Longer prompts raise a `ValueError` unless
            ``truncate_left=True``.
        system_prompt (`str`, *optional*, defaults to `None`):
            System message prepended to every conversation (an error if a conversation already has one).
        truncate_left (`bool`, *optional*, defaults to `False`):
            Keep only the last ``max_prompt_length`` tokens of over-long prompts instead of raising. The start of the
            template (BOS, system message) is what gets cut, so use it only when that is acceptable.

    Returns:
        `dict[str, torch.Tensor]`: ``input_ids`` and ``attention_mask``, both ``(B, L)`` `torch.long`, left-padded
        with ``tokenizer.pad_token_id`` and ``L`` the longest prompt in the batch.
    """
    if isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise TypeError("prompts must be a non-empty list of strings or chat-message lists.")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "the tokenizer has no chat_template; set tokenizer.chat_template (e.g. copy it from the model's "
            "tokenizer_config.json) before tokenizing prompts."
        )
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad_token_id; set tokenizer.pad_token (it must differ from the mask).")
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(f"max_prompt_length must be a positive int or None, got {max_prompt_length}.")
    if truncate_left and max_prompt_length is None:
        raise ValueError("truncate_left=True needs max_prompt_length.")

    rows: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        messages = _as_messages(prompt, i, system_prompt)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already carries BOS: adding special tokens again would double it.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            if not truncate_left:
                raise ValueError(
                    f"prompt {i} is {len(ids)} tokens long after the chat template, more than "
                    f"max_prompt_length={max_prompt_length}; raise max_prompt_length, shorten the prompt or pass "
                    "truncate_left=True."
                )
            ids = ids[-max_prompt_length:]
        rows.append(ids)

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
    for b, ids in enumerate(rows):
        if ids:
            input_ids[b, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[b, width - len(ids) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
