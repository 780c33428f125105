"""The README.md (Hub model card) written next to a trained adapter.

The metadata follows the Hub's conventions for adapters: `library_name: peft` (so the Hub shows "use with PEFT"),
`base_model` (only when it is a Hub id: a local path is invalid metadata and goes into the text instead) and tags.
The body records what a reader needs to reproduce or judge the run: the reward functions with their weights (RL), the
training recipe (log-probability estimator and KL settings for RL, the answer layout for SFT) and the final logged
metrics; then a usage snippet that loads the base model and the adapter and samples with `MaskedDiffusionSampler` (at
the run's sampler settings), the license, the framework versions and the citations. Both trainers write it:
`DiffusionReinforceTrainer` with the defaults, `DiffusionSFTTrainer` with its own method, tags and recipe.

A card is published: it never carries a path of the machine it was written on. A local base model is named by its
folder name, and the snippet loads it from a placeholder path (or with the caller's `base_model_code`).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import math
import os
from collections.abc import Mapping
from pathlib import Path
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


# Versions listed under "Framework versions" (the packages a reader needs to load and sample the adapter).
FRAMEWORKS = ("diffusion_rl", "torch", "transformers", "peft", "trl", "accelerate", "datasets")
LLADA_CITATION = """@article{nie2025llada,
  title   = {Large Language Diffusion Models},
  author  = {Nie, Shen and Zhu, Fengqi and You, Zebin and Zhang, Xiaolu and Ou, Jingyang and Hu, Jun and Zhou, Jun
             and Lin, Yankai and Wen, Ji-Rong and Li, Chongxuan},
  journal = {arXiv preprint arXiv:2502.09992},
  year    = {2025}
}"""
# A neutral prompt for the usage snippet (the card is the core's: it knows nothing of the task).
EXAMPLE_PROMPT = "Describe a good teacher in one sentence."
# Sampler settings of the snippet when the config has none (DiffusionReinforceConfig's defaults).
_SNIPPET_SAMPLER = {"steps": 128, "gen_length": 128, "block_length": 32}


def _is_local(name: str | None) -> bool:
    return bool(name) and (os.path.isabs(name) or os.path.isdir(name) or str(name).startswith((".", "~")))


def _display(name: str | None) -> str:
    """How a model is named in a published card: a Hub id as is, a local folder by its name only."""
    if not name:
        return "an unnamed base model"
    return f"a local checkpoint (`{Path(name).name}`)" if _is_local(name) else f"`{name}`"


def framework_versions() -> dict[str, str]:
    """Installed versions of `FRAMEWORKS` ("not installed" for a missing one)."""
    versions = {}
    for package in FRAMEWORKS:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def snippet_sampler_settings(args) -> dict[str, Any]:
    """`MaskedDiffusionSampler` settings of the usage snippet: the run's (greedy), without approximate levers."""
    settings = dict(_SNIPPET_SAMPLER)
    sampler_kwargs = getattr(args, "sampler_kwargs", None)
    if callable(sampler_kwargs):
        exact = "for_eval" in inspect.signature(sampler_kwargs).parameters  # the exact sampler, not the fast modes
        run = sampler_kwargs(for_eval=True) if exact else sampler_kwargs()
        settings.update({k: run[k] for k in ("steps", "gen_length", "block_length", "remasking") if k in run})
    settings["temperature"] = 0.0
    return settings


def usage_snippet(
    base_model: str | None,
    adapter: str,
    sampler_settings: Mapping[str, Any],
    base_model_code: str | None = None,
    prompt: str = EXAMPLE_PROMPT,
) -> str:
    """Python that loads the base model and the adapter and samples one answer with `MaskedDiffusionSampler`.

    Args:
        base_model (`str`, *optional*): Hub id (loaded as is) or local path (a placeholder path is written).
        adapter (`str`): Hub id or folder of the adapter.
        sampler_settings (`Mapping[str, Any]`): `MaskedDiffusionSampler` keyword arguments.
        base_model_code (`str`, *optional*): lines that define `base` and `tokenizer` instead (e.g. an embedded model).
        prompt (`str`, *optional*): the example prompt.
    """
    imports = (
        "MaskedDiffusionSampler, tokenize_prompts"
        if base_model_code
        else "MaskedDiffusionSampler, load_llada, tokenize_prompts"
    )
    if base_model_code is None:
        if _is_local(base_model):
            name = f"path/to/{Path(base_model).name}"
            comment = "  # the local checkpoint the adapter was trained on"
        else:
            name, comment = base_model or "GSAI-ML/LLaDA-8B-Instruct", ""
        base_model_code = f'base = load_llada("{name}"){comment}\ntokenizer = AutoTokenizer.from_pretrained("{name}")'
    settings = ", ".join(f"{k}={v!r}" for k, v in sampler_settings.items())
    return "\n".join(
        [
            "import torch",
            "from peft import PeftModel",
            "from transformers import AutoTokenizer",
            "",
            f"from diffusion_rl import {imports}",
            "",
            base_model_code,
            f'model = PeftModel.from_pretrained(base, "{adapter}").eval()',
            f"sampler = MaskedDiffusionSampler(model, {settings})",
            f"batch = tokenize_prompts(tokenizer, [{prompt!r}])",
            "generator = torch.Generator().manual_seed(0)",
            'out = sampler.generate(batch["input_ids"], attention_mask=batch["attention_mask"], generator=generator)',
            "for ids, keep in zip(out.completion_ids, out.completion_mask.bool()):",
            "    print(tokenizer.decode(ids[keep], skip_special_tokens=True))",
        ]
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
    base_model_code: str | None = None,
    license: str | None = None,
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
        base_model_code (`str`, *optional*):
            Lines of the usage snippet that define `base` and `tokenizer` (default: `load_llada` of the base model).
        license (`str`, *optional*):
            License id for the card metadata (e.g. `"apache-2.0"`); by default the text points to the base model's.
    """
    hub_base = base_model if base_model and not _is_local(base_model) else None
    all_tags = list(dict.fromkeys([*(TAGS if base_tags is None else base_tags), *(tags or [])]))
    if recipe is None:
        recipe = {f: getattr(args, f) for f in _RECIPE_FIELDS if hasattr(args, f)}
    data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        base_model=hub_base,
        tags=all_tags,
        datasets=[dataset_name] if dataset_name and not _is_local(dataset_name) else None,
        pipeline_tag="text-generation",
        license=license,
    )
    title = model_name or hub_model_id or "diffusion_rl adapter"
    repo = hub_model_id or "path/to/this/adapter"
    lines = [
        f"# {title}",
        "",
        f"A LoRA adapter for {_display(base_model)}, a masked diffusion language model, trained with {method} by "
        f"diffusion_rl (`{trainer_name}`)."
        if is_adapter
        else f"{_display(base_model)} fine-tuned with {method} by diffusion_rl (`{trainer_name}`).",
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
        *(f"| {name} | {_format(value)} |" for name, value in recipe.items() if not _is_local(str(value))),
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
        snippet = usage_snippet(base_model, repo, snippet_sampler_settings(args), base_model_code)
        lines += ["", "## Usage", "", "```python", snippet, "```"]
    license_text = f"`{license}`." if license else "the base model's (see its model card)."
    lines += [
        "",
        "## License",
        "",
        f"The weights' license: {license_text} diffusion_rl, the code that trained them, is Apache-2.0.",
        "",
        "## Framework versions",
        "",
        *(f"- {package}: {version}" for package, version in framework_versions().items()),
        "",
        "## Citations",
        "",
        "LLaDA, the masked diffusion model family this adapter is for:",
        "",
        "```bibtex",
        LLADA_CITATION,
        "```",
    ]
    if reward_names:
        lines += [
            "",
            "The RL recipe is the diffusion_rl seed recipe (REINFORCE fine-tuning of LLaDA with a LoRA adapter and "
            "a KL term to the base model); it has no citable reference yet.",
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
            Passed to [`build_model_card`] (`trainer_name`, `method`, `base_tags`, `recipe`, `base_model_code`,
            `license`); a trainer's `model_card_kwargs` attribute (a dict) is merged in first, so that a job can set
            them once for every card the trainer writes.
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
    card_kwargs = {**(getattr(trainer, "model_card_kwargs", None) or {}), **card_kwargs}
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
