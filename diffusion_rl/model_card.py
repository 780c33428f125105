"""The README.md (Hub model card) written next to a trained adapter.

The metadata follows the Hub's conventions for adapters: `library_name: peft` (so the Hub shows "use with PEFT"),
`base_model` (only when it is a Hub id: a local path is invalid metadata and goes into the text instead) and tags.
The body records what a reader needs to reproduce or judge the run: the reward functions with their weights (RL), the
training recipe (log-probability estimator and KL settings for RL, the answer layout for SFT) and the final logged
metrics. Both trainers write it: `DiffusionReinforceTrainer` with the defaults, `DiffusionSFTTrainer` with its own
method, tags and recipe.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

TAGS = ["diffusion-rl", "llada", "reinforce", "lora"]

# Config fields that define the RL recipe; shown in the card so a run can be reproduced.
_RECIPE_FIELDS = (
    "learning_rate",
    "num_generations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "steps",
    "max_completion_length",
    "block_length",
    "temperature",
    "remasking",
    "cfg_scale",
    "logprob_estimator",
    "logprob_samples",
    "antithetic",
    "prompt_mask_prob",
    "baseline",
    "kl_coef",
    "kl_in",
    "kl_estimator",
    "seed",
)


def _format(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def build_model_card(
    *,
    base_model: str | None,
    model_name: str | None,
    reward_names: list[str],
    reward_weights: list[float],
    args,
    final_metrics: dict[str, float],
    hub_model_id: str | None = None,
    dataset_name: str | None = None,
    tags: list[str] | None = None,
    is_adapter: bool = True,
    trainer_name: str = "DiffusionReinforceTrainer",
    method: str = "REINFORCE",
    base_tags: list[str] | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Build the model card of a `DiffusionReinforceTrainer` (or, with the last four arguments, another) run.

    Args:
        base_model (`str`, *optional*):
            Hub id or local path of the model the adapter was trained on.
        model_name (`str`, *optional*):
            Title of the card.
        reward_names (`list[str]`):
            Names of the reward functions, in order.
        reward_weights (`list[float]`):
            Weight of each reward function.
        args (`DiffusionReinforceConfig`):
            The training configuration (the RL recipe fields are listed).
        final_metrics (`dict[str, float]`):
            The last logged training metrics.
        hub_model_id (`str`, *optional*):
            Repository id, used in the usage snippet.
        dataset_name (`str`, *optional*):
            Training dataset id.
        tags (`list[str]`, *optional*):
            Extra tags added to the default ones.
        is_adapter (`bool`, *optional*, defaults to `True`):
            Whether the saved weights are a PEFT adapter (`library_name: peft`) or a full model (`transformers`).
        trainer_name (`str`, *optional*, defaults to `"DiffusionReinforceTrainer"`):
            The trainer named in the text.
        method (`str`, *optional*, defaults to `"REINFORCE"`):
            The training method named in the text.
        base_tags (`list[str]`, *optional*):
            Default tags (`TAGS` when `None`); `tags` are added to them.
        recipe (`Mapping[str, Any]`, *optional*):
            The "Training configuration" table; `None` lists the RL recipe fields of `args`.
    """
    hub_base = base_model if base_model and not os.path.isdir(base_model) else None
    all_tags = list(dict.fromkeys([*(TAGS if base_tags is None else base_tags), *(tags or [])]))
    if recipe is None:
        recipe = {f: getattr(args, f) for f in _RECIPE_FIELDS if hasattr(args, f)}
    data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        base_model=hub_base,
        tags=all_tags,
        datasets=[dataset_name] if dataset_name else None,
        pipeline_tag="text-generation",
    )
    title = model_name or hub_model_id or "diffusion_rl adapter"
    repo = hub_model_id or "<this repository>"
    lines = [
        f"# {title}",
        "",
        f"A LoRA adapter for the masked diffusion language model `{base_model}`, trained with {method} by "
        f"diffusion_rl (`{trainer_name}`)."
        if is_adapter
        else f"`{base_model}` fine-tuned with {method} by diffusion_rl (`{trainer_name}`).",
        "",
    ]
    if reward_names:
        lines += [
            "## Reward configuration",
            "",
            "| reward function | weight |",
            "|---|---|",
            *(f"| {name} | {_format(float(weight))} |" for name, weight in zip(reward_names, reward_weights)),
            "",
        ]
    lines += [
        "## Training configuration",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| {name} | {_format(value)} |" for name, value in recipe.items()),
        "",
        "## Final metrics",
        "",
    ]
    if final_metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_format(v)} |" for k, v in sorted(final_metrics.items()) if isinstance(v, int | float)]
    else:
        lines.append("No metrics were logged.")
    if is_adapter:
        lines += [
            "",
            "## Usage",
            "",
            "```python",
            "import diffusion_rl  # registers LLaDA with the transformers Auto classes",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
            f'model = PeftModel.from_pretrained(base, "{repo}")',
            "```",
        ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_model_card(trainer, output_dir: str, model_name=None, dataset_name=None, tags=None, **card_kwargs) -> None:
    """Write `output_dir/README.md` for a trainer of this library (adapter or full model, metrics so far).

    Args:
        trainer (`DiffusionReinforceTrainer`):
            The trainer whose model, rewards, arguments and log history are described.
        output_dir (`str`):
            Where to write the card.
        model_name (`str`, *optional*):
            Title of the card.
        dataset_name (`str`, *optional*):
            Training dataset id.
        tags (`str` or `list[str]`, *optional*):
            Extra tags.
        **card_kwargs:
            Passed to [`build_model_card`] (`trainer_name`, `method`, `base_tags`, `recipe`).
    """
    from peft import PeftModel

    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    is_adapter = isinstance(unwrapped, PeftModel)
    if is_adapter:
        peft_config = unwrapped.peft_config[unwrapped.active_adapter]
        base_model = peft_config.base_model_name_or_path or unwrapped.base_model.config._name_or_path
    else:
        base_model = unwrapped.config._name_or_path
    final: dict[str, float] = {}
    for entry in trainer.state.log_history:  # the latest value of every logged metric
        final.update({k: v for k, v in entry.items() if k not in ("step", "epoch")})
    card = build_model_card(
        base_model=base_model,
        model_name=model_name,
        # A trainer without rewards (SFT) gets no reward table.
        reward_names=getattr(trainer, "reward_names", []),
        reward_weights=trainer.reward_weights.tolist() if hasattr(trainer, "reward_weights") else [],
        args=trainer.args,
        final_metrics=final,
        hub_model_id=trainer.hub_model_id or trainer.args.hub_model_id,
        dataset_name=dataset_name,
        tags=[tags] if isinstance(tags, str) else tags,
        is_adapter=is_adapter,
        **card_kwargs,
    )
    os.makedirs(output_dir, exist_ok=True)
    card.save(os.path.join(output_dir, "README.md"))
