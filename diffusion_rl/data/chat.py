"""Prompts -> left-padded token batches through the tokenizer's chat template.

Why a helper: every consumer (trainer, evaluation, SFT) must turn the same dataset `prompt` column into the same
token ids. A few details are easy to get wrong and are handled once here:

* Chat templates of LLaDA/Llama-3 style models already emit the BOS token, so the rendered text is tokenized with
  ``add_special_tokens=False``; tokenizing it the default way would prepend a second BOS.
* The sampler appends the completion canvas on the right, so prompts are padded on the *left*; with the attention
  mask and relative (RoPE) positions the padding does not change the model's view of the prompt.
* The rendered text is tokenized as a whole, so a special token *written* inside user content (``<|eot_id|>``,
  ``<|start_header_id|>system<|end_header_id|>``, ``<|endoftext|>``, the mask token) would become the real control
  token: an injected turn, an early end of text, or a position the sampler treats as "to generate". User text
  (string prompts, every message's role and content, the system prompt, SFT answers) is therefore checked with
  [`check_plain_text`] and a special token in it raises [`ControlTokenError`]. Refusing is the one consistent
  choice for every consumer (training, evaluation, SFT); encoding the characters as plain text would need every
  path to tokenize content separately from the template.
* A conversation whose last message is the assistant's is a *prefill* (``[..., {"role": "assistant", "content": "The
  answer is"}]``): as in TRL (``trl.data_utils.apply_chat_template``), it is rendered with
  ``continue_final_message=True`` and no generation prompt, so the text ends with the prefill (no end-of-turn token)
  and the model continues it. Closing the turn and opening a new one would have the model answer after its own
  unfinished sentence. See [`render_prompt`].
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

Message = Mapping[str, Any]


class ControlTokenError(ValueError):
    """User text contains one of the tokenizer's special (control) tokens, e.g. `<|eot_id|>` or the mask token."""


@functools.lru_cache(maxsize=32)
def _special_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    # Longest first, so that a token that contains another one is reported whole.
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def special_token_strings(tokenizer) -> tuple[str, ...]:
    """Every special token string of `tokenizer`: the named ones (BOS, EOS, pad, mask) and added special tokens."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            tokens.add(str(added.content))
    return tuple(sorted(t for t in tokens if t))


def find_control_tokens(tokenizer, text: str) -> list[str]:
    """The special tokens of `tokenizer` written inside `text`, in order of appearance (duplicates removed)."""
    tokens = special_token_strings(tokenizer)
    if not tokens or not text:
        return []
    return list(dict.fromkeys(_special_pattern(tokens).findall(text)))


def check_plain_text(tokenizer, text: str, where: str) -> None:
    """Raise [`ControlTokenError`] if `text` contains a special token of `tokenizer` (see the module docstring).

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer whose special tokens are refused.
        text (`str`):
            User-provided text (a prompt, a message's role or content, a system prompt, an answer).
        where (`str`):
            What the text is, for the message (e.g. `"prompt 3, message 1 (user) content"`).
    """
    found = find_control_tokens(tokenizer, text)
    if found:
        raise ControlTokenError(
            f"{where} contains the special token(s) {found} of the tokenizer. Written inside user text they would "
            "become real control tokens (an injected turn, an early end of text, or a mask position); remove them "
            "from the data or replace them with plain text (e.g. '<eot>')."
        )


# The roles of LLaDA's (Llama-3-style) chat template. It renders any string as a turn header, so a typo such as
# "usr" would otherwise train on a prompt the model has never seen the like of, without a word.
CHAT_ROLES = ("system", "user", "assistant")


def check_role(role: str, where: str) -> None:
    """Raise a `ValueError` unless `role` is one of `CHAT_ROLES` (`where` names the message, e.g. `"prompt 3, message
    1"`)."""
    if role not in CHAT_ROLES:
        raise ValueError(
            f"{where}: role {role!r} is not one of {list(CHAT_ROLES)}; the chat template would render it as a turn "
            "header of its own. Rename the role (user turns are 'user', the model's are 'assistant')."
        )


def _as_messages(
    prompt: str | Sequence[Message], index: int, system_prompt: str | None, tokenizer=None
) -> list[dict[str, Any]]:
    def plain(text: str, where: str) -> None:
        if tokenizer is not None:
            check_plain_text(tokenizer, text, where)

    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"prompt {index} is empty; remove the row or give it text.")
        plain(prompt, f"prompt {index}")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence) and prompt and all(isinstance(m, Mapping) for m in prompt):
        messages = []
        for j, m in enumerate(prompt):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(
                    f"prompt {index}, message {j}: chat messages need string 'role' and 'content' keys, "
                    f"got {dict(m)!r}."
                )
            check_role(m["role"], f"prompt {index}, message {j}")
            if not m["content"].strip():  # rendered as an empty turn: a prompt the model has never seen the like of
                raise ValueError(
                    f"prompt {index}, message {j} ({m['role']}) has empty content; remove the message (or the row) "
                    "or give it text."
                )
            plain(m["content"], f"prompt {index}, message {j} ({m['role']}) content")
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
        plain(system_prompt, "system_prompt")
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompt(tokenizer, messages: Sequence[Message]) -> str:
    """Render one conversation as a prompt for the model to answer or to continue, as TRL does.

    A conversation that ends with a user (or system) message gets the generation prompt (the assistant header). One
    that ends with an assistant message is a prefill: it is rendered with ``continue_final_message=True`` and no
    generation prompt, so the text ends with that message's content (trimmed as the template trims it), with no
    end-of-turn token after it, and the completion continues it.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            A tokenizer with a ``chat_template``.
        messages (`list[dict]`):
            The conversation (``[{"role": ..., "content": ...}, ...]``), already checked.

    Returns:
        `str`: the rendered text (the template's BOS included).
    """
    prefill = messages[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
    )


def template_length(tokenizer, system_prompt: str | None = None) -> int:
    """The fewest tokens a prompt renders to: the chat template around one empty message (BOS, turn header, end of
    turn, the generation prompt; the system prompt when given), over the roles a prompt may start with.

    A conversation made of a lone assistant prefill (no turn before it, see [`render_prompt`]) renders without the
    end of turn and the generation prompt, so it can be shorter; it is not counted, so that the floor stays that of
    every prompt which asks the model for an answer."""
    roles = [role for role in CHAT_ROLES if system_prompt is None or role != "system"]
    lengths = []
    for role in roles:
        messages = [{"role": role, "content": ""}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return min(lengths)


def check_max_prompt_length(tokenizer, max_prompt_length: int, system_prompt: str | None = None) -> None:
    """Raise a `ValueError` if left-truncation to `max_prompt_length` would cut into the chat template of every
    prompt (a limit below the template's own tokens; some prompts longer than it are only warned about)."""
    frame = template_length(tokenizer, system_prompt)
    if max_prompt_length < frame:
        raise ValueError(
            f"max_prompt_length={max_prompt_length} is less than the {frame} tokens the chat template itself adds "
            "around a prompt's text (BOS, turn headers, the generation prompt"
            f"{', the system prompt' if system_prompt is not None else ''}): every prompt would be left-truncated "
            "into garbage, its BOS, turn header and most or all of its text cut. Raise max_prompt_length well above "
            f"{frame} (to the longest templated prompt to keep every prompt whole), or leave it unset."
        )


def tokenize_prompts(
    tokenizer,
    prompts: Sequence[str | Sequence[Message]],
    *,
    max_prompt_length: int | None = None,
    system_prompt: str | None = None,
    truncate_left: bool = False,
) -> dict[str, torch.Tensor]:
    """Render prompts with the chat template (generation prompt added) and left-pad them into one batch.

    A conversation that ends with an assistant message (a prefill such as ``[{"role": "user", "content": "Q"},
    {"role": "assistant", "content": "The answer is"}]``) is continued instead, as in TRL: no end of turn after the
    prefill and no generation prompt (see [`render_prompt`]). The completion is then the continuation only.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            A tokenizer with a ``chat_template`` and a ``pad_token_id``.
        prompts (`list[str | list[dict]]`):
            Each prompt is a user message string or a whole conversation (``[{"role": ..., "content": ...}, ...]``);
            a conversation whose last message is the assistant's is continued.
        max_prompt_length (`int`, *optional*, defaults to `None`):
            Longest allowed prompt in tokens (after templating). Longer prompts raise a `ValueError` unless
            ``truncate_left=True``.
        system_prompt (`str`, *optional*, defaults to `None`):
            System message prepended to every conversation (an error if a conversation already has one).
        truncate_left (`bool`, *optional*, defaults to `False`):
            Keep only the last ``max_prompt_length`` tokens of over-long prompts instead of raising (with a warning,
            once). The start of the template (BOS, system message) is what gets cut, so use it only when that is
            acceptable. A ``max_prompt_length`` below the template's own tokens (see [`template_length`]) would cut
            every prompt into garbage and raises a `ValueError`.

    Returns:
        `dict[str, torch.Tensor]`: ``input_ids`` and ``attention_mask``, both ``(B, L)`` `torch.long`, left-padded
        with ``tokenizer.pad_token_id`` and ``L`` the longest prompt in the batch.

    Raises:
        `ControlTokenError`: (a `ValueError`) a prompt, message role/content or the system prompt contains a
            special token of the tokenizer (e.g. `<|eot_id|>`, the mask token).
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
    if truncate_left:
        check_max_prompt_length(tokenizer, max_prompt_length, system_prompt)

    rows: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        messages = _as_messages(prompt, i, system_prompt, tokenizer)
        text = render_prompt(tokenizer, messages)
        # The template already carries BOS: adding special tokens again would double it.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            if not truncate_left:
                raise ValueError(
                    f"prompt {i} is {len(ids)} tokens long after the chat template, more than "
                    f"max_prompt_length={max_prompt_length}; raise max_prompt_length, shorten the prompt or pass "
                    "truncate_left=True."
                )
            # Once per process and limit, not per batch: the trainer truncates on every step.
            logger.warning_once(
                f"Prompts longer than max_prompt_length={max_prompt_length} tokens (after the chat template) are "
                "left-truncated, as TRL does: their start (BOS, system message, first turns) is cut. Raise "
                "max_prompt_length or shorten the prompts to keep them whole."
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
