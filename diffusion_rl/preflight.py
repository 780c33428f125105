"""Checks that need the model's config, the tokenizer and the first dataset rows, but no compute.

They run in the trainer's `__init__` after the model is loaded and before it is wrapped (adapter, accelerator),
so a mistake that used to raise only at the first training step - inside the sampler, after minutes of set-up on a
large model - raises at once, naming the fix:

* the tokenizer: no chat template, no pad token, pad or EOS equal to the mask token;
* the data: an empty training set (no step would run), special tokens written in any prompt (a full scan of the
  prompt column: [`ControlTokenError`]), a `max_prompt_length` below the chat template's own tokens (every prompt
  would be left-truncated into garbage), and, on the first rows, prompts longer than the model's positions once the
  completion is appended (with `max_prompt_length` the bound is `max_prompt_length + max_completion_length`);
* the weights: a NaN or inf in any floating-point parameter (it would turn every loss into NaN, which
  `transformers.Trainer` hides from the logs by default).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import nn

from .checks import check_tokenizer_mask
from .data.chat import check_max_prompt_length, check_plain_text, tokenize_prompts

__all__ = [
    "NonFiniteWeightsError",
    "check_before_wrapping",
    "check_finite_weights",
    "check_first_rows",
    "check_not_empty",
    "check_prompt_tokens",
    "check_tokenizer",
]

FIRST_ROWS = 64


class NonFiniteWeightsError(ValueError):
    """A floating-point parameter of the model holds NaN or inf."""


def check_tokenizer(tokenizer, mask_token_id: int) -> None:
    """Raise a `ValueError` unless `tokenizer` can render and pad prompts for a model with mask id `mask_token_id`."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "the tokenizer has no chat_template; set tokenizer.chat_template (e.g. copy it from the model's "
            "tokenizer_config.json) before training: prompts are rendered with it."
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has no pad_token_id: prompts of a batch are left-padded. Set tokenizer.pad_token (LLaDA "
            "pads with <|endoftext|>, id 126081); it must differ from the mask token."
        )
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) == mask_token_id:
            raise ValueError(
                f"tokenizer.{name} equals the mask token id {mask_token_id}: padding / end of text would be read as "
                "positions to generate. Use a distinct token (LLaDA pads with <|endoftext|>, 126081)."
            )
    check_tokenizer_mask(tokenizer, mask_token_id)


def _is_map_style(dataset) -> bool:
    return hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")


def _datasets(dataset, name: str):
    if dataset is None:
        return []
    if isinstance(dataset, Mapping):  # eval_dataset may be a dict of datasets
        return [(value, f"{name}[{key!r}]") for key, value in dataset.items()]
    return [(dataset, name)]


def check_not_empty(dataset, name: str) -> None:
    """Raise a `ValueError` if a map-style `dataset` has no row (the run would end without a single step)."""
    for data, label in _datasets(dataset, name):
        if _is_map_style(data) and len(data) == 0:
            raise ValueError(f"{label} is empty: training would end without a single step. Pass a dataset with rows.")


def _prompts(data, limit: int | None):
    if hasattr(data, "column_names") and _is_map_style(data):  # datasets.Dataset: one column read, no row dicts
        column = data["prompt"] if limit is None else data.select(range(min(limit, len(data))))["prompt"]
        return list(column)
    if _is_map_style(data):
        rows = range(len(data)) if limit is None else range(min(limit, len(data)))
        return [data[i]["prompt"] for i in rows]
    return [row["prompt"] for row in itertools.islice(iter(data), limit or FIRST_ROWS)]


def check_prompt_tokens(tokenizer, dataset, name: str) -> None:
    """Raise [`ControlTokenError`] for the first prompt of a map-style `dataset` that contains a special token.

    Every row is scanned (a string search, no tokenization), so that a forged `<|eot_id|>` in row 90,000 fails
    before training rather than at the step that reaches it.
    """
    for data, label in _datasets(dataset, name):
        if not _is_map_style(data):
            continue
        for index, prompt in enumerate(_prompts(data, None)):
            where = f"{label} row {index}"
            if isinstance(prompt, str):
                check_plain_text(tokenizer, prompt, f"{where} (prompt)")
            elif isinstance(prompt, list):
                for j, message in enumerate(prompt):
                    if isinstance(message, Mapping):
                        for key in ("role", "content"):
                            if isinstance(message.get(key), str):
                                check_plain_text(tokenizer, message[key], f"{where}, message {j} {key}")


def check_first_rows(
    tokenizer,
    dataset,
    name: str,
    *,
    max_prompt_length: int | None,
    max_completion_length: int,
    max_position_embeddings: int | None,
    num_rows: int = FIRST_ROWS,
) -> None:
    """Tokenize the first `num_rows` prompts as a training step would and check prompt + completion lengths.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The trainer's tokenizer.
        dataset (`datasets.Dataset`, `dict` or iterable):
            Rows with a `prompt`.
        name (`str`):
            `"train_dataset"` or `"eval_dataset"`, for messages.
        max_prompt_length (`int`, *optional*):
            Longer prompts are left-truncated (TRL's semantics); `None` keeps them whole.
        max_completion_length (`int`):
            The completion canvas appended after the prompt.
        max_position_embeddings (`int`, *optional*):
            The model's maximum sequence length (`None`: not checked).
        num_rows (`int`, *optional*, defaults to `64`):
            How many rows to tokenize.
    """
    if max_position_embeddings is not None and max_prompt_length is not None:
        if max_prompt_length + max_completion_length > max_position_embeddings:
            raise ValueError(
                f"max_prompt_length={max_prompt_length} + max_completion_length={max_completion_length} exceeds the "
                f"model's max_position_embeddings={max_position_embeddings}: positions past it were never trained "
                "(RoPE decodes garbage without an error). Lower max_prompt_length or max_completion_length."
            )
    if max_prompt_length is not None:  # prompts are left-truncated to it: not into the template of every one
        check_max_prompt_length(tokenizer, max_prompt_length)
    for data, label in _datasets(dataset, name):
        for index, prompt in enumerate(_prompts(data, num_rows)):
            try:
                ids = tokenize_prompts(
                    tokenizer,
                    [prompt],
                    max_prompt_length=max_prompt_length,
                    truncate_left=max_prompt_length is not None,
                )["input_ids"]
            except (TypeError, ValueError) as error:
                raise type(error)(f"{label} row {index}: {error}") from error
            length = ids.shape[1]
            if max_position_embeddings is not None and length + max_completion_length > max_position_embeddings:
                raise ValueError(
                    f"{label} row {index} is {length} tokens after the chat template; with max_completion_length="
                    f"{max_completion_length} that exceeds the model's max_position_embeddings="
                    f"{max_position_embeddings}. Set max_prompt_length (prompts are then left-truncated) or shorten "
                    "the prompts."
                )


def check_finite_weights(model: nn.Module, max_names: int = 5) -> None:
    """Raise [`NonFiniteWeightsError`] naming the parameters (and buffers) that hold NaN or inf.

    Parameters that are not materialised (on the `meta` device, or DeepSpeed ZeRO-3 partitions of size 0) are
    skipped. One pass over the weights (an `isfinite` reduction per tensor).
    """
    bad = []
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not tensor.is_floating_point() or tensor.device.type == "meta" or tensor.numel() == 0:
                continue
            if not bool(torch.isfinite(tensor).all()):
                bad.append(name)
    if bad:
        shown = ", ".join(bad[:max_names]) + (f" and {len(bad) - max_names} more" if len(bad) > max_names else "")
        raise NonFiniteWeightsError(
            f"the model has NaN or inf weights in {len(bad)} tensor(s): {shown}. Every loss would be NaN. Reload the "
            "checkpoint (a half-written or corrupted file?) or check how the weights were produced."
        )


def check_before_wrapping(args, model: nn.Module, tokenizer, train_dataset, eval_dataset=None) -> None:
    """Every check of this module, in the trainer's `__init__` once the model is loaded and before it is wrapped.

    Args:
        args (`DiffusionReinforceConfig`):
            The run's configuration (`max_prompt_length`, `max_completion_length`).
        model (`nn.Module`):
            The loaded model (its config gives `mask_token_id` and `max_position_embeddings`).
        tokenizer (`PreTrainedTokenizerBase`):
            The trainer's tokenizer.
        train_dataset (`datasets.Dataset` or iterable):
            The training rows (a `prompt` column).
        eval_dataset (`datasets.Dataset` or `dict`, *optional*):
            The evaluation rows, `None`, or a dict of datasets.
    """
    config = model.config
    check_tokenizer(tokenizer, config.mask_token_id)
    check_not_empty(train_dataset, "train_dataset")
    check_not_empty(eval_dataset, "eval_dataset")
    for dataset, name in ((train_dataset, "train_dataset"), (eval_dataset, "eval_dataset")):
        check_prompt_tokens(tokenizer, dataset, name)
        check_first_rows(
            tokenizer,
            dataset,
            name,
            max_prompt_length=args.max_prompt_length,
            max_completion_length=args.max_completion_length,
            max_position_embeddings=getattr(config, "max_position_embeddings", None),
        )
    check_finite_weights(model)
