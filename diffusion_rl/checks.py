"""Checks of the trainer's inputs that need no compute: a clear error naming the problem and the fix, raised before a
model is loaded or a step is run.
"""

from __future__ import annotations

import torch
from torch import nn

# Keyword arguments of every reward call that do not come from the dataset (`compute_rewards`' own and the trainer's).
RESERVED_REWARD_KWARGS = (
    "prompts",
    "completions",
    "reward_weights",
    "completion_ids",
    "trainer_state",
    "log_metric",
    "log_extra",
    "kl",
)


def check_one_process_per_gpu(args) -> None:
    """Refuse a single process that sees several GPUs (`args.n_gpu > 1`).

    `transformers.Trainer` then wraps the model in `torch.nn.DataParallel`: the per-device batch silently becomes
    `per_device_train_batch_size * n_gpu`, the rollouts run on the first GPU alone, and every forward copies the
    weights to each GPU. The trainers sample, gather and shard per process, so one process per GPU is the only layout.
    """
    if args.n_gpu > 1:
        raise ValueError(
            f"this process sees {args.n_gpu} GPUs: transformers would wrap the model in torch.nn.DataParallel "
            "(rollouts on GPU 0 only, batches silently n_gpu times larger). Start one process per GPU with "
            "`accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml ...` (set num_processes to "
            "the GPU count), or use one GPU: `CUDA_VISIBLE_DEVICES=0 ...`."
        )


def _for_each_dataset(check, dataset, name: str) -> bool:
    """For `None` or a dict of datasets (`eval_dataset` may be either): run `check(value, "name['key']")` on each
    and return `True` (nothing left to check); `False` for a single dataset."""
    if dataset is None:
        return True
    if isinstance(dataset, dict):
        for key, value in dataset.items():
            check(value, f"{name}[{key!r}]")
        return True
    return False


def check_map_style(dataset, name: str) -> None:
    """Refuse a streaming dataset (`datasets.IterableDataset`, or any dataset without `len` and indexing).

    The RL trainer's sampler repeats every prompt `num_generations` times by index, and transformers hands an
    iterable dataset to the dataloader without a sampler, so a stream failed deep inside accelerate at the first step.
    """
    if _for_each_dataset(check_map_style, dataset, name):
        return
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"{name} ({type(dataset).__name__}) is a stream without len() or indexing; the trainer repeats every "
            "prompt num_generations times by index, so it needs a map-style datasets.Dataset. Materialise it, e.g. "
            "`Dataset.from_generator(your_generator)` or `Dataset.from_list(list(stream))`."
        )


def _check_messages(prompt: list, where: str) -> None:
    # Arrow stores a conversation as a list of structs: a key missing from one message reads back as None.
    for j, message in enumerate(prompt):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(
                f"{where}, message {j} has no string 'role' (got {message!r:.80}); every chat message needs a 'role' "
                "('system', 'user' or 'assistant') and a 'content'."
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise ValueError(
                f"{where}, message {j} ({message['role']}) has no string 'content' (got {content!r:.80})."
            )
        if not content.strip():
            raise ValueError(
                f"{where}, message {j} ({message['role']}) has empty content; remove the message (or the row) or give "
                "it text."
            )


def _columns(dataset) -> list[str]:
    """The column names of a dataset (a `datasets.Dataset`'s, else the keys of its first row)."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        columns = list(dataset[0].keys()) if len(dataset) else []
    return list(columns)


def check_prompt_column(dataset, name: str) -> None:
    """Raise a `ValueError` unless `dataset` (or each dataset of a dict) has a `prompt` column with no empty prompt
    (nor a chat message without a string role or with empty content)."""
    if _for_each_dataset(check_prompt_column, dataset, name):
        return
    columns = _columns(dataset)
    if "prompt" not in columns:
        raise ValueError(
            f"{name} has no 'prompt' column (columns: {columns}). Rename the column holding the prompts to 'prompt' "
            "(a string or a list of chat messages); other columns are passed to the reward functions as kwargs."
        )
    reserved = sorted(set(columns) & set(RESERVED_REWARD_KWARGS))
    if reserved:
        # The trainer's own keyword would replace the column's values (or clash with them) in every reward call.
        raise ValueError(
            f"{name} has column(s) {reserved} whose names the trainer passes to the reward functions itself "
            f"({', '.join(RESERVED_REWARD_KWARGS)}); rename them (e.g. `dataset.rename_column({reserved[0]!r}, "
            f"'{reserved[0]}_data')`)."
        )
    import datasets

    if isinstance(dataset, datasets.Dataset):  # map-style: one Arrow column read (a stream is not scanned)
        for index, prompt in enumerate(dataset["prompt"]):
            if not prompt or (isinstance(prompt, str) and not prompt.strip()):
                raise ValueError(f"{name} row {index} has an empty prompt; remove the row or give it text.")
            if isinstance(prompt, list):
                _check_messages(prompt, f"{name} row {index}")


def _required_columns(func) -> list[tuple[str, ...]]:
    """A reward's `required_columns` as a list of alternatives: each entry is a column name or a tuple of names of
    which one is enough (see [`check_reward_columns`])."""
    declared = getattr(func, "required_columns", None)
    if declared is None:
        return []
    if isinstance(declared, str):  # one column, not a sequence of its characters
        declared = (declared,)
    entries = [(entry,) if isinstance(entry, str) else tuple(entry) for entry in declared]
    for entry in entries:
        if not entry or not all(isinstance(column, str) and column for column in entry):
            raise TypeError(
                f"the required_columns of reward {_reward_name(func)!r} must hold column names or tuples of column "
                f"names (one of which is enough), got {declared!r}."
            )
    return entries


def _reward_name(func) -> str:
    from .rewards.base import reward_name

    return reward_name(func)


def _filled_columns(dataset, wanted: set[str]) -> set[str]:
    """The columns of `wanted` that `dataset` has and at least one of its rows fills: a column that is null or an empty
    list in every row (an empty CSV column; the synthetic free-text rows' `question_options`) counts as absent. A
    dataset without `column_names` (a list of dicts, a torch dataset) is not scanned: its rows may differ in their
    keys, so every wanted column is assumed present."""
    import datasets

    if getattr(dataset, "column_names", None) is None:
        return set(wanted)
    columns = wanted.intersection(dataset.column_names)
    if not isinstance(dataset, datasets.Dataset):
        return columns
    import pyarrow as pa
    import pyarrow.compute as pc

    def filled(values) -> bool:
        if values.null_count == len(values):
            return False
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            return bool(pc.any(pc.greater(pc.list_value_length(values), 0)).as_py())
        return True

    # Arrow columns, through the arrow format so that a `select` / `shuffle` index mapping is honoured.
    rows = dataset.with_format("arrow")
    return {column for column in columns if filled(rows[column])}


def check_reward_columns(reward_funcs, dataset, name: str, fix: str | None = None) -> None:
    """Refuse a reward that can apply to no row of `dataset` because a column it needs is absent from it.

    A reward declares the dataset columns it needs in a `required_columns` attribute: each entry a column name, or a
    tuple of names of which one is enough (e.g. `NeutralChoiceReward`: `question_options`, `context_condition` and
    one of `neutral_option_indices` / `gold_option_index`). Without them the reward returns `None` for every row:
    it contributes nothing, and a run with it alone trains on zero advantages, which was only warned about once
    training had started. Rows that lack the columns while other rows have them are fine (mixed datasets); a column
    that is null or an empty list in every row counts as absent.

    Args:
        reward_funcs (`list[Callable]`):
            The reward functions (those without `required_columns` are not checked).
        dataset (`datasets.Dataset` or `dict`):
            The training rows (each dataset of a dict is checked).
        name (`str`):
            What the dataset is, for the message (e.g. `"train_dataset"`).
        fix (`str`, *optional*):
            How to add the columns, for the message (defaults to the Python API's way).
    """
    if _for_each_dataset(lambda value, label: check_reward_columns(reward_funcs, value, label, fix), dataset, name):
        return
    for func in reward_funcs:  # a reward's own look at the rows (e.g. NeutralChoiceReward: options shown)
        check_dataset = getattr(func, "check_dataset", None)
        if callable(check_dataset):
            check_dataset(dataset, name)
    needs = [(func, _required_columns(func)) for func in reward_funcs]
    needs = [(func, entries) for func, entries in needs if entries]
    if not needs:
        return
    present = _filled_columns(dataset, {column for _, entries in needs for entry in entries for column in entry})
    for func, entries in needs:
        missing = [entry for entry in entries if not present.intersection(entry)]
        if missing:
            names = ", ".join(
                repr(entry[0]) if len(entry) == 1 else "one of " + " / ".join(map(repr, entry)) for entry in missing
            )
            raise ValueError(
                f"reward {_reward_name(func)!r} applies to no row of {name}: it needs the column(s) {names}, which no "
                f"row fills (absent, null or empty in every row; columns: {_columns(dataset)}). Every row would score "
                "None, so the reward would contribute nothing (alone, it trains on zero advantages). "
                + (fix or "Add the column(s) to the dataset, or remove the reward from reward_funcs.")
            )


def _module_matches(name: str, target: str) -> bool:
    # PEFT's rule for a plain (non-regex) target name: the full name or its dotted suffix.
    return name == target or name.endswith("." + target)


def check_lora_targets(model: nn.Module, target_modules) -> None:
    """Raise a `ValueError` naming the missing LoRA target modules and the linear layers that do exist.

    Only list/set targets are checked here; a string is a regex or `"all-linear"`, which PEFT validates itself.

    Args:
        model (`nn.Module`):
            The model about to be wrapped.
        target_modules (`list[str] | set[str] | str | None`):
            `LoraConfig.target_modules`.
    """
    if target_modules is None or isinstance(target_modules, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = sorted(t for t in target_modules if not any(_module_matches(n, t) for n in names))
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"LoRA target modules {missing} were not found in {type(model).__name__}. Linear layers in this model: "
            f"{linear}. Fix `peft_config.target_modules` (LLaDA in Llama naming uses q_proj, k_proj, v_proj, o_proj)."
        )


def check_reward_funcs(reward_funcs, reward_weights: list[float] | None) -> tuple[list, list[float]]:
    """The reward functions as a non-empty list of callables and their weights (all `1.0` when `None`).

    Args:
        reward_funcs (`Callable` or `list[Callable]`):
            One reward function or several.
        reward_weights (`list[float]`, *optional*):
            `DiffusionReinforceConfig.reward_weights`: one weight per function.
    """
    reward_funcs = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
    if not reward_funcs:
        raise ValueError("reward_funcs is empty: pass at least one reward function.")
    for func in reward_funcs:
        if not callable(func):
            raise TypeError(f"Every reward function must be callable; got {type(func).__name__}.")
    weights = list(reward_weights) if reward_weights is not None else [1.0] * len(reward_funcs)
    if len(weights) != len(reward_funcs):
        raise ValueError(
            f"reward_weights has {len(weights)} entries but there are {len(reward_funcs)} reward functions."
        )
    check_reward_names(reward_funcs)
    return reward_funcs, weights


def check_reward_names(reward_funcs) -> None:
    """Raise a `ValueError` if two reward functions have the same logged name (see `reward_name`).

    Every per-reward metric and completions-table column is keyed by the name (`rewards/<name>/mean`), so two
    rewards sharing one were merged into a single series without a word.
    """
    names = [_reward_name(func) for func in reward_funcs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        shared = ", ".join(
            f"{name!r} (reward_funcs[{'], reward_funcs['.join(str(i) for i, n in enumerate(names) if n == name)}])"
            for name in repeated
        )
        raise ValueError(
            f"several reward functions have the same name: {shared}; their metrics (rewards/{repeated[0]}/mean, ...) "
            "would be merged into one. Pass a function once and set its weight in reward_weights, or give each "
            "callable a distinct name: set its `name` or `__name__` attribute (e.g. `strict = functools.partial(f, "
            "strict=True); strict.__name__ = 'f_strict'`)."
        )


def model_vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's input embedding (what an id must index), else `config.vocab_size`; `None` if unknown."""
    while isinstance(getattr(model, "module", None), nn.Module):  # DDP / DataParallel forward neither attribute
        model = model.module
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if callable(get_embeddings):
        try:
            size = getattr(get_embeddings(), "num_embeddings", None)
        except (AttributeError, NotImplementedError):  # a model class without an embedding accessor
            size = None
        if isinstance(size, int):
            return size
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def check_token_ids(vocab_size: int | None, **tensors: torch.Tensor) -> None:
    """Raise a `ValueError` naming the tensor, its smallest or largest id and the vocabulary size unless every id of
    every tensor is in `[0, vocab_size)` (the embedding raised a bare `IndexError` otherwise). One device sync."""
    if vocab_size is None:
        return
    tensors = {name: t for name, t in tensors.items() if t.numel()}
    if not tensors:
        return
    bounds = torch.stack([torch.stack(torch.aminmax(t.long())) for t in tensors.values()]).tolist()
    for (name, _), (low, high) in zip(tensors.items(), bounds):
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"{name} holds token ids outside the model's vocabulary of {vocab_size} tokens (0-{vocab_size - 1}): "
                f"largest {high}, smallest {low}. Tokenize with the model's own tokenizer; padding belongs in the "
                "attention mask with a real pad token id, not a negative id such as -100."
            )


def check_whole_groups(args, has_eval_dataset: bool) -> None:
    """Raise a `ValueError` unless every per-device batch size is a multiple of its group size (`num_generations`
    in training, `num_generations_eval` in evaluation).

    Each per-device batch must hold whole groups of generations of the same prompt: the group baselines are computed
    on each process's micro-batch, with no collective.
    """
    groups = [("per_device_train_batch_size", "num_generations", args.num_generations)]
    if has_eval_dataset:
        eval_group = getattr(args, "num_generations_eval", None) or args.num_generations
        name = "num_generations_eval" if getattr(args, "num_generations_eval", None) else "num_generations"
        groups.append(("per_device_eval_batch_size", name, eval_group))
    for field, name, group in groups:
        if getattr(args, field) % group:
            raise ValueError(
                f"{field}={getattr(args, field)} is not a multiple of {name}={group}: "
                "each per-device batch must hold whole groups of generations of the same prompt."
            )


def load_masked_diffusion_model(model: str | nn.Module) -> nn.Module:
    """The trainers' model: loaded with `AutoModelForCausalLM` (LLaDA registered with it, Hub kernels off) when given
    by name or path, as is otherwise; either way its config must define a mask token (see [`check_mask_token`])."""
    if isinstance(model, str):
        from transformers import AutoModelForCausalLM

        from . import models  # noqa: F401  (registers LLaDA with the Auto classes)

        # Hub kernels off for every architecture (LLaDA's own from_pretrained does it too): on a GPU, transformers
        # would download replacement layers at the first `model.train()` (an error offline).
        model = AutoModelForCausalLM.from_pretrained(model, use_kernels=False)
    check_mask_token(model)
    return model


def check_mask_token(model: nn.Module) -> None:
    """Raise a `ValueError` unless `model.config.mask_token_id` is set (a masked diffusion model needs one)."""
    mask_token_id = getattr(model.config, "mask_token_id", None)
    if mask_token_id is None:
        raise ValueError(
            f"{type(model).__name__}.config has no mask_token_id; a masked diffusion model needs one (set "
            "model.config.mask_token_id to the id of the [MASK] token, 126336 for LLaDA)."
        )
    vocab_size = getattr(model.config, "vocab_size", None)
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int):
        raise ValueError(f"model.config.mask_token_id must be an integer token id, got {mask_token_id!r}.")
    if mask_token_id < 0 or (isinstance(vocab_size, int) and mask_token_id >= vocab_size):
        raise ValueError(
            f"model.config.mask_token_id={mask_token_id} is not a token of the model's vocabulary (vocab_size "
            f"{vocab_size}); set it to the id of the [MASK] token (126336 for LLaDA)."
        )


def check_not_already_peft(model, peft_config) -> None:
    """Refuse a `PeftModel` together with a `peft_config`: `get_peft_model` would stack a second adapter, whose keys
    no longer load on the base model (and the RL trainer's KL reference, the outer adapter disabled, would still
    hold the inner one)."""
    from peft import PeftModel

    if peft_config is not None and isinstance(model, PeftModel):
        raise ValueError(
            "model is already a PeftModel and peft_config was given; pass peft_config=None to train its adapter, "
            "or pass the base model to add a new one."
        )


def check_trainable(model: nn.Module) -> None:
    """Refuse a model with no parameter to train (the first step would fail, after its rollouts or its batch)."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "the model has no parameter with requires_grad=True: nothing would be trained. Pass a peft_config "
            "(or a PeftModel), or unfreeze the parameters to train."
        )


def check_tokenizer_mask(tokenizer, mask_token_id: int) -> None:
    """Refuse a tokenizer whose own mask token is not the model's (a word would silently serve as the mask)."""
    tokenizer_mask = getattr(tokenizer, "mask_token_id", None)
    if tokenizer_mask is not None and tokenizer_mask != mask_token_id:
        raise ValueError(
            f"tokenizer.mask_token_id={tokenizer_mask} but model.config.mask_token_id={mask_token_id}; they must be "
            "the same token (is this the model's tokenizer?)."
        )
