"""Checks of the trainer's inputs that need no compute: a clear error naming the problem and the fix, raised before a
model is loaded or a step is run.
"""

from __future__ import annotations

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


def check_prompt_column(dataset, name: str) -> None:
    """Raise a `ValueError` unless `dataset` (or each dataset of a dict) has a `prompt` column with no empty prompt."""
    if dataset is None:
        return
    if isinstance(dataset, dict):  # eval_dataset may be a dict of datasets
        for key, value in dataset.items():
            check_prompt_column(value, f"{name}[{key!r}]")
        return
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        columns = list(dataset[0].keys()) if len(dataset) else []
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
    return reward_funcs, weights


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
