"""Argument dataclasses of `diffusion-rl generate` / `evaluate` / `report`, parsed with `HfArgumentParser`.

One vocabulary with the training job and TRL: `--model_name_or_path`, `--model_revision`, `--dtype`,
`--attn_implementation` (as `trl.ModelConfig`), `--max_completion_length`, `--steps`, ... (as
`DiffusionReinforceConfig`; tests/test_cli.py checks that every sampler flag is a config field with the same type),
`--dataset_name` / `--dataset_test_split` (as `trl.ScriptArguments`), `--eval_size`, `--eval_temperatures`,
`--eval_batch_size` (as the training job's `BiasScriptArguments`).

This module imports neither torch nor transformers, so that building a parser (and `--help`) stays fast.
Sampler flags default to `None`, meaning "the settings stored with the model" (`stored_sampler_settings`), then the
config defaults (`SAMPLER_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Shared with the training job's `BiasScriptArguments.eval_sequence_kl`.
EVAL_SEQUENCE_KL_HELP = (
    "Also report kl_sequence, the KL between the adapter's and the base model's answer distributions per token (one "
    "random-order path per prompt: 2 x gen_length forwards per batch)."
)

# DiffusionReinforceConfig's defaults, used when neither the command line nor the model says otherwise.
SAMPLER_DEFAULTS: dict[str, Any] = {
    "steps": 128,
    "max_completion_length": 128,
    "block_length": 32,
    "temperature": 1.0,
    "cfg_scale": 0.0,
    "remasking": "low_confidence",
}
_FROM_MODEL = "Default: the value stored with the model (build_info.json / generation_config.json), else {}."
# Refused ModelConfig options (a listed flag must work or be refused).
QUANTIZATION_FLAGS = ("load_in_4bit", "load_in_8bit")


@dataclass
class ModelArguments:
    """Which model to load and how (a subset of `trl.ModelConfig`, plus the adapter and the device)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "LLaDA checkpoint (local folder or Hub id). Default: the embedded default model."},
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub checkpoint."})
    adapter_name_or_path: str | None = field(
        default=None, metadata={"help": "PEFT adapter folder (a training output_dir) to load on top of the model."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype.", "choices": ["float32", "bfloat16", "float16", "auto"]},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel (`eager`, `sdpa`, `flash_attention_2`); default: transformers' choice."},
    )
    device: str | None = field(default=None, metadata={"help": "Device. Default: cuda when available, else cpu."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler's torch.Generator."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache root of the embedded default model (defaults to $HF_HOME)."}
    )


@dataclass
class SamplerArguments:
    """`MaskedDiffusionSampler` settings; names, types and meaning are `DiffusionReinforceConfig`'s fields."""

    steps: int | None = field(
        default=None,
        metadata={"help": "Sampler denoising steps (a multiple of the number of blocks). " + _FROM_MODEL.format(128)},
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={"help": "Completion length (the sampler's canvas, gen_length). " + _FROM_MODEL.format(128)},
    )
    block_length: int | None = field(
        default=None, metadata={"help": "Semi-autoregressive block length. " + _FROM_MODEL.format(32)}
    )
    temperature: float | None = field(
        default=None, metadata={"help": "Sampling temperature (0 = greedy). " + _FROM_MODEL.format(1.0)}
    )
    cfg_scale: float | None = field(
        default=None, metadata={"help": "Classifier-free guidance scale (0 disables it). " + _FROM_MODEL.format(0.0)}
    )
    remasking: str | None = field(
        default=None,
        metadata={
            "help": "Which positions to commit first. " + _FROM_MODEL.format("low_confidence"),
            "choices": ["low_confidence", "random"],
        },
    )


@dataclass
class GenerateArguments:
    """What `diffusion-rl generate` samples."""

    prompt: list[str] = field(
        default_factory=list, metadata={"help": "User message(s) to answer (one or more, space separated, quoted)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per sampler call."})


@dataclass
class EvaluateArguments:
    """What `diffusion-rl evaluate` generates on and where it writes (names as the training job's)."""

    dataset_name: str = field(
        default="test",
        metadata={
            "help": "`test` (the synthetic held-out split), `bbq` (BBQ gender identity), or any `--dataset_name` of "
            "the training job: a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a Hub dataset id."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    dataset_test_split: str = field(
        default="test", metadata={"help": "Split of `dataset_name` to evaluate on, where it has several."}
    )
    eval_size: int = field(default=128, metadata={"help": "Number of evaluation prompts."})
    eval_temperatures: list[float] = field(
        default_factory=lambda: [0.0], metadata={"help": "Sampling temperatures of the evaluation."}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Prompts per sampler call."})
    eval_sequence_kl: bool = field(default=True, metadata={"help": EVAL_SEQUENCE_KL_HELP})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where the report is written."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the report already in `output_dir` (without it such a folder is refused)."},
    )
    with_training: bool = field(
        default=False, metadata={"help": "Also plot the training curves logged in the adapter's folder."}
    )

    def __post_init__(self):
        from ..validation import check_int, check_temperatures

        check_int("eval_size", self.eval_size, minimum=1, hint="Prompts to evaluate on.")
        check_temperatures("eval_temperatures", self.eval_temperatures)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1, hint="Prompts per sampler call.")


@dataclass
class ReportArguments:
    """Which evaluation `diffusion-rl report` re-renders."""

    eval_dir: str = field(metadata={"help": "Folder written by `diffusion-rl evaluate`."})
    train_dir: str | None = field(default=None, metadata={"help": "Training output_dir, for the training curves."})


def resolve_sampler_settings(args: SamplerArguments, stored: dict[str, Any]) -> dict[str, Any]:
    """Config-named sampler settings: the command line, else `stored` (the model's), else `SAMPLER_DEFAULTS`."""
    resolved = {**SAMPLER_DEFAULTS, **{k: v for k, v in stored.items() if k in SAMPLER_DEFAULTS}}
    resolved.update({f.name: getattr(args, f.name) for f in fields(args) if getattr(args, f.name) is not None})
    return resolved


def to_sampler_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Config names -> `MaskedDiffusionSampler` keyword arguments (`max_completion_length` is its `gen_length`)."""
    out = dict(settings)
    out["gen_length"] = out.pop("max_completion_length")
    return out
