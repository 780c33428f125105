"""The main job: train a LoRA adapter with REINFORCE to reduce gender bias, and report before/after.

Reward (the seed's): R = -(|GenBit bias of the completion| + kl_coef * KL(lora || base)). With no arguments it runs
offline on the embedded default model (a tiny LLaDA-architecture model deliberately fine-tuned to answer with
stereotyped, gendered explanations, see docs/default_model.md) and the built-in synthetic multiple-choice data, on a
CPU, in minutes. With `--model_name_or_path GSAI-ML/LLaDA-8B-Instruct` it loads the real model through `load_llada`
and, unless `--config` says otherwise, uses the paper recipe (bf16, gradient checkpointing, 128 steps, block 32).

Steps: validate everything that needs no compute -> load model + data -> train -> save the adapter -> generate on
the held-out split with the adapter on and off (same seeds) -> print and write the before/after table
(`report.json`, `report.md`, plots) -> push to the Hub when asked.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

# The headline metrics of the before/after table (per-setting means from `diffusion_rl.bias.evaluation.summarize`).
TABLE_METRICS = {
    "gendered_pronoun_rate": "gendered-pronoun rate",
    "pronoun_rate": "pronoun rate (all)",
    "gendered_word_rate": "gendered-word rate",
    "genbit_bias": "GenBit |bias| per text",
    "genbit_corpus": "GenBit |bias| corpus",
    "kl": "KL(adapter || base)",
    "neutral": "neutral/unknown choice rate",
    "stereotyped": "stereotyped choice rate",
    "valid": "answer validity",
    "length": "mean length (tokens)",
}


@dataclass
class BiasScriptArguments:
    """Data, rewards and evaluation options of the main job (model/LoRA options come from `trl.ModelConfig`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training prompts: a JSON/JSONL/CSV/Parquet file or a `datasets` directory with a `prompt` column "
            "(string or chat messages) or edsl-style `question_text` + `question_options`. Default: the built-in "
            "synthetic multiple-choice data (`diffusion_rl.bias.data`)."
        },
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of `dataset_name` to train on."})
    train_size: int = field(
        default=1000,
        metadata={"help": "Size of the synthetic training subset (the seed used 1000, 2000, 3000 and 4000)."},
    )
    data_seed_subset: int = field(default=0, metadata={"help": "Seed of the synthetic subset (nested across sizes)."})
    question_type: str = field(
        default="multiple_choice",
        metadata={"help": "Synthetic question kind: `multiple_choice`, `free_text` or `all`."},
    )
    rewards: list[str] = field(
        default_factory=lambda: ["genbit"],
        metadata={
            "help": "Reward functions besides the KL term (added from `kl_coef`): `genbit` (the seed's), "
            "`gendered_language` / `gendered_pronouns` (-4 x the rate of gendered words / pronouns: GenBit alone can "
            "be satisfied by mixing he and she), `neutral_choice` (rewards unknown/neutral options in ambiguous "
            "contexts, the gold one otherwise)."
        },
    )
    eval_size: int = field(default=64, metadata={"help": "Held-out prompts (test split) for the before/after table."})
    eval_temperatures: list[float] = field(
        default_factory=lambda: [0.0], metadata={"help": "Sampling temperatures of the before/after evaluation."}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Prompts per sampler call during evaluation."})
    skip_eval: bool = field(default=False, metadata={"help": "Train and save only (no before/after report)."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache root of the embedded default model (defaults to $HF_HOME)."}
    )


def make_parser():
    """`TrlParser` over (script args, `DiffusionReinforceConfig`, `trl.ModelConfig`); `--config recipe.yaml` works."""
    from trl import ModelConfig, TrlParser

    from ..config import DiffusionReinforceConfig

    return TrlParser((BiasScriptArguments, DiffusionReinforceConfig, ModelConfig))


def default_recipe(argv: list[str]) -> Path | None:
    """The recipe used when the command line names none: the paper's for a real model, the tiny one otherwise."""
    if "--config" in argv:
        return None
    real_model = any(a == "--model_name_or_path" or a.startswith("--model_name_or_path=") for a in argv)
    return RECIPES_DIR / ("paper.yaml" if real_model else "tiny_cpu.yaml")


def parse_args(argv: list[str] | None = None):
    """Parse the command line; an unknown `--config` path is a clear `FileNotFoundError` before anything loads."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):  # `--config=path` -> `--config path` (TrlParser only knows the spaced form)
        if arg.startswith("--config="):
            argv[i : i + 1] = ["--config", arg.split("=", 1)[1]]
            break
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ValueError("--config needs a path to a recipe YAML, e.g. --config examples/recipes/tiny_cpu.yaml.")
        path = Path(argv[index + 1])
        if not path.is_file():
            packaged = RECIPES_DIR / path.name
            if not packaged.is_file():
                raise FileNotFoundError(
                    f"recipe {str(path)!r} not found; pass an existing YAML file or one of the packaged recipes: "
                    f"{', '.join(sorted(p.name for p in RECIPES_DIR.glob('*.yaml')))}."
                )
            argv[index + 1] = str(packaged)
    else:
        argv = ["--config", str(default_recipe(argv)), *argv]
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    # The job trains a LoRA adapter: `trl.ModelConfig.use_peft` defaults to False, so a user's recipe that does not
    # mention it would otherwise be refused; only an explicit `use_peft: false` / `--use_peft false` is an error.
    config_file = argv[argv.index("--config") + 1]
    explicit = any(a.startswith("--use_peft") for a in argv) or "use_peft" in (_read_yaml(config_file) or {})
    if not explicit:
        model_args.use_peft = True
    if str(training_args.resume_from_checkpoint).lower() == "true":  # Trainer's "latest checkpoint in output_dir"
        training_args.resume_from_checkpoint = True
    return script_args, training_args, model_args


def _read_yaml(path: str) -> dict | None:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def check_output_dir(output_dir: str) -> Path:
    """Fail before any compute when `output_dir` cannot be written (nothing in it is touched)."""
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PermissionError(
            f"output_dir {str(path)!r} is not writable ({error}); pass a writable --output_dir."
        ) from error
    return path


def load_model_and_tokenizer(model_args, script_args) -> tuple[Any, Any]:
    """The embedded default (built on first use, then cached) or a LLaDA checkpoint through `load_llada`."""
    import torch
    from transformers import AutoTokenizer

    from ..models.llada import CheckpointNotFoundError, load_llada

    if model_args.model_name_or_path is None:
        from .default_model import load_default_model

        return load_default_model(script_args.cache_dir)
    name = model_args.model_name_or_path
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = load_llada(name, dtype=dtype, revision=model_args.model_revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    except OSError as error:
        raise CheckpointNotFoundError(f"cannot load the tokenizer of {name!r}: {error}; pass a local path.") from error
    return model, tokenizer


def load_datasets(script_args, eval_seed: int):
    """(train, eval) datasets: the user's prompts or the synthetic subset; eval is the held-out synthetic split."""
    from ..data import load_prompt_dataset
    from .data import generate_mcq_dataset, load_synthetic_subset

    qtype = None if script_args.question_type == "all" else script_args.question_type
    if script_args.dataset_name is None:
        train = load_synthetic_subset(script_args.train_size, seed=script_args.data_seed_subset, question_type=qtype)
    else:
        train = load_prompt_dataset(script_args.dataset_name, split=script_args.dataset_train_split)
    eval_set = generate_mcq_dataset(script_args.eval_size, seed=eval_seed, split="test", question_type=qtype)
    return train, eval_set


def make_rewards(names: list[str]) -> list:
    from .rewards.choice import NeutralChoiceReward
    from .rewards.genbit import GenBitReward
    from .rewards.lexicon import GenderedLanguageReward

    known = {
        "genbit": GenBitReward,
        "neutral_choice": NeutralChoiceReward,
        "gendered_language": GenderedLanguageReward,
        "gendered_pronouns": lambda: GenderedLanguageReward(pronouns_only=True),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; choose from {sorted(known)} (the KL term comes from kl_coef).")
    return [known[n]() for n in names]


def before_after_table(metrics) -> list[dict[str, Any]]:
    """One row per (temperature, question type, metric) with the base and adapter means."""
    rows = []
    for (temperature, qtype), group in metrics.groupby(["temperature", "question_type"], sort=True):
        by_variant = {row["variant"]: row for _, row in group.iterrows()}
        if not {"base", "adapter"} <= set(by_variant):
            continue
        for key, label in TABLE_METRICS.items():
            if key not in group.columns:
                continue
            before, after = float(by_variant["base"][key]), float(by_variant["adapter"][key])
            rows.append(
                {
                    "temperature": float(temperature),
                    "question_type": qtype,
                    "metric": label,
                    "before": before,
                    "after": after,
                    "change": after - before,
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Held-out prompts: base model (before) vs base + adapter (after), same seeds")
    for column in ("T", "questions", "metric", "before", "after", "change"):
        table.add_column(column, justify="right" if column in ("before", "after", "change") else "left")
    for r in rows:
        table.add_row(
            f"{r['temperature']:g}",
            r["question_type"],
            r["metric"],
            f"{r['before']:.4f}",
            f"{r['after']:.4f}",
            f"{r['change']:+.4f}",
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the report dict also written to `output_dir/report.json`."""
    script_args, training_args, model_args = parse_args(argv)
    output_dir = check_output_dir(training_args.output_dir)
    rewards = make_rewards(script_args.rewards)

    from trl import get_peft_config

    from ..trainer import DiffusionReinforceTrainer

    if not model_args.use_peft:
        raise ValueError("the main job trains a LoRA adapter: keep use_peft true (the KL term needs the base model).")
    if not model_args.lora_target_modules:
        model_args.lora_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the seed's (o_proj = attn_out)
    peft_config = get_peft_config(model_args)

    model, tokenizer = load_model_and_tokenizer(model_args, script_args)
    train_dataset, eval_dataset = load_datasets(script_args, eval_seed=training_args.seed)
    trainer = DiffusionReinforceTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)

    report: dict[str, Any] = {
        "model": model_args.model_name_or_path or "embedded default (diffusion_rl.bias.default_model)",
        "train_size": len(train_dataset),
        "train_metrics": trainer.state.log_history[-1] if trainer.state.log_history else {},
    }
    if not script_args.skip_eval:
        report.update(evaluate_before_after(trainer, tokenizer, eval_dataset, script_args, training_args))
    if trainer.accelerator.is_main_process:
        (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name or "diffusion_rl synthetic MCQ")
    return report


def evaluate_before_after(trainer, tokenizer, eval_dataset, script_args, training_args) -> dict[str, Any]:
    """Generate on the held-out split with the adapter off (before) and on (after), same seeds; write the report.

    Every process generates (under DeepSpeed ZeRO-3 all ranks must run the same forwards); the main one writes.
    """
    from .evaluation import evaluate_model, report_evaluation

    model = trainer.accelerator.unwrap_model(trainer.model)
    # the training rollouts' settings; the temperature is the evaluation's own (`eval_temperatures`)
    sampler_kwargs = {k: v for k, v in training_args.sampler_kwargs().items() if k != "temperature"}
    result = evaluate_model(
        model,
        tokenizer,
        eval_dataset,
        temperatures=script_args.eval_temperatures,
        sampler_kwargs=sampler_kwargs,
        seed=training_args.seed,
        batch_size=script_args.eval_batch_size,
        compare_base=True,
    )
    rows = before_after_table(result.metrics)
    if trainer.accelerator.is_main_process:
        print_table(rows)
        report_evaluation(
            result,
            training_args.output_dir,
            log_history=trainer.state.log_history,
            title="diffusion_rl: REINFORCE debiasing, before vs after",
        )
    return {"eval_size": len(eval_dataset), "before_after": rows, "notes": result.notes}
