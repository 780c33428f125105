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
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli_args import EVAL_SEQUENCE_KL_HELP

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

# The headline metrics of the before/after table (per-setting means from `diffusion_rl.bias.evaluation.summarize`).
TABLE_METRICS = {
    "correct_disambiguated": "accuracy, context settles the answer",
    "stereotyped_ambiguous": "stereotyped choice, context leaves gender open",
    "neutral_ambiguous": "neutral/unknown choice, context leaves gender open",
    "restates_option": "restates the chosen option",
    "mentions_role": "explanation names the role",
    "explanation_gendered_pronoun_rate": "gendered-pronoun rate of the explanation",
    "disfluency_rate": "non-word + repeated-word rate",
    "empty": "empty answers",
    "ended": "answer ended (EOT) inside the canvas",
    "gendered_pronoun_rate": "gendered-pronoun rate",
    "pronoun_rate": "pronoun rate (all)",
    "gendered_word_rate": "gendered-word rate",
    "genbit_bias": "GenBit |bias| per text",
    "genbit_corpus": "GenBit |bias| corpus",
    "kl": "KL(adapter || base), completion masked, per position",
    "kl_disambiguated": "KL per position, context settles the answer",
    "kl_ambiguous": "KL per position, context leaves gender open",
    "kl_sequence": "KL(adapter || base) of the answers, per token",
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
            "help": "Training prompts, as in TRL's scripts: a .jsonl/.json/.csv/.parquet file, a `save_to_disk` "
            "folder, a folder of data files or a Hub dataset id, with a `prompt` column (string or chat messages) or "
            "edsl-style `question_text` + `question_options`. Default: the built-in synthetic multiple-choice data "
            "(`diffusion_rl.bias.data`)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    dataset_train_split: str = field(
        default="train",
        metadata={"help": "Split of `dataset_name` to train on, where it has several (a lone file is one split)."},
    )
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
            "be satisfied by mixing he and she), `gendered_language_per_answer` / `gendered_pronouns_per_answer` "
            "(-1 per answer with a gendered word / pronoun: unlike a rate, longer answers cannot dilute it), "
            "`neutral_choice` (rewards unknown/neutral options in ambiguous contexts, the gold one otherwise), "
            "`neutral_choice_restated` (the same, counting a choice only when the text after its letter restates it)."
        },
    )
    lexical_rewards_where_gender_is_open: bool = field(
        default=False,
        metadata={
            "help": "Apply the `gendered_language` / `gendered_pronouns` terms only to rows whose context leaves the "
            "gender open (`context_condition` not 'disambiguated'): where the text states it, a gendered answer "
            "can be the right one."
        },
    )
    eval_size: int = field(
        default=128,
        metadata={
            "help": "Held-out multiple-choice prompts of the before/after table: unseen sentence frames about the "
            "training roles (`split='test_seen_roles'`; never a training prompt)."
        },
    )
    eval_free_text_size: int = field(
        default=32, metadata={"help": "Held-out free-text prompts (same split) added to the before/after table."}
    )
    eval_unseen_roles_size: int = field(
        default=64,
        metadata={
            "help": "Multiple-choice prompts of the second, reported evaluation on unseen sentence frames *and* "
            "unseen roles (`split='test'`, written to `<output_dir>/unseen_roles/`); 0 skips it."
        },
    )
    eval_temperatures: list[float] = field(
        default_factory=lambda: [0.0], metadata={"help": "Sampling temperatures of the before/after evaluation."}
    )
    eval_unseen_roles_temperatures: list[float] = field(
        default_factory=lambda: [0.0],
        metadata={"help": "Sampling temperatures of the second evaluation, on unseen roles (eval_unseen_roles_size)."},
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Prompts per sampler call during evaluation."})
    eval_sequence_kl: bool = field(
        default=True, metadata={"help": EVAL_SEQUENCE_KL_HELP + " The main evaluation only, not the unseen roles."}
    )
    skip_eval: bool = field(default=False, metadata={"help": "Train and save only (no before/after report)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace a finished run of this job in `output_dir` (its adapter, train_log.jsonl and reports); "
            "without it such a folder is refused (`--resume_from_checkpoint` continues a run instead)."
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache root of the embedded default model (defaults to $HF_HOME)."}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads per process. Default: on a CPU, the available cores divided among the local "
            "processes where `accelerate launch` left its OMP_NUM_THREADS=1 (it does unless told a number); any "
            "other OMP_NUM_THREADS is kept. 1 shares the machine with other jobs."
        },
    )

    def __post_init__(self):
        from ..validation import check_int, check_temperatures

        # Checked when parsed, before anything loads: a negative size used to evaluate nothing without a word.
        for name in SCALED_EVAL_FIELDS:
            check_int(name, getattr(self, name), minimum=0, hint="Use 0 to leave that evaluation out.")
        check_int("eval_batch_size", self.eval_batch_size, minimum=1, hint="Prompts per sampler call.")
        check_int("train_size", self.train_size, minimum=1, hint="Synthetic training prompts (the seed: 1000-4000).")
        check_int("cpu_threads", self.cpu_threads, minimum=1, allow_none=True, hint="Unset: the available cores.")
        if isinstance(self.rewards, str):  # `rewards: genbit` in a recipe: a scalar, not a list
            raise ValueError(f"rewards must be a list of reward names, e.g. [{self.rewards}], got {self.rewards!r}.")
        if isinstance(self.rewards, dict):  # `rewards: {genbit: 1.0}`: names mapped to weights (an AttributeError)
            names, weights = ", ".join(map(str, self.rewards)), ", ".join(map(str, self.rewards.values()))
            raise ValueError(
                f"rewards must be a list of reward names, got a mapping {self.rewards!r}; weights have their own key: "
                f"write `rewards: [{names}]` and `reward_weights: [{weights}]` (one weight per reward, in order)."
            )
        if self.question_type not in QUESTION_TYPE_CHOICES:
            raise ValueError(
                f"question_type must be one of {', '.join(QUESTION_TYPE_CHOICES)}, got {self.question_type!r}."
            )
        for name in ("eval_temperatures", "eval_unseen_roles_temperatures"):
            check_temperatures(name, getattr(self, name))
        if self.dataset_name is not None:
            ignored = [
                f"--{n}" for n in SYNTHETIC_ONLY_FIELDS if getattr(self, n) != self.__dataclass_fields__[n].default
            ]
            if ignored:
                warnings.warn(
                    f"{', '.join(ignored)} shape the synthetic data only; with --dataset_name they are ignored (the "
                    "whole file is the training set).",
                    UserWarning,
                    stacklevel=2,
                )
        if not self.skip_eval and not any(getattr(self, name) for name in SCALED_EVAL_FIELDS):
            warnings.warn(
                "every evaluation size is 0: there will be no before/after report (the same as --skip_eval).",
                UserWarning,
                stacklevel=2,
            )


# The flags most runs touch, listed first in `--help` (the full list follows: every TrainingArguments field works).
COMMON_FLAGS = (
    "--config RECIPE.yaml, --model_name_or_path, --output_dir, --max_steps, --dataset_name, --rewards, "
    "--learning_rate, --per_device_train_batch_size, --num_generations, --max_completion_length, --steps, "
    "--block_length, --temperature, --eval_size, --skip_eval, --push_to_hub"
)
# Console summary line of each log (the raw dicts go to output_dir/train_log.jsonl).
CONSOLE_METRICS = {
    "loss": "loss",
    "reward": "reward",
    "kl": "kl",
    "bias/genbit": "genbit",
    "completions/gendered_pronoun_rate": "gendered pronouns",
    "choice/correct_rate": "correct",
    "completions/mean_length": "length",
}
# How the model card's usage snippet loads the embedded default model (instead of a path of this machine).
DEFAULT_MODEL_CODE = "from diffusion_rl.bias import load_default_model\n\nbase, tokenizer = load_default_model()"
# `--question_type`: the synthetic generator's kinds, or both.
QUESTION_TYPE_CHOICES = ("multiple_choice", "free_text", "all")
# Smallest scaled-down evaluation: a quick try still gets a readable before/after table.
MIN_SCALED_EVAL_SIZE = 8
# Fields that shape the synthetic training data, and mean nothing with --dataset_name.
SYNTHETIC_ONLY_FIELDS = ("train_size", "question_type", "data_seed_subset")
# The before/after evaluation sizes a quick try (`--max_steps` below the recipe's) scales down.
SCALED_EVAL_FIELDS = ("eval_size", "eval_free_text_size", "eval_unseen_roles_size")
# How to give a reward of --rewards the columns it needs (`check_reward_columns`), for a user's data and the synthetic.
REWARD_COLUMNS_FIX = (
    "Add the column(s) to the --dataset_name data (the built-in synthetic multiple-choice data has them: drop "
    "--dataset_name to train on it), or remove the reward from --rewards."
)
SYNTHETIC_REWARD_COLUMNS_FIX = (
    "Free-text questions have no options: pass --question_type multiple_choice (or all), or remove the reward from "
    "--rewards."
)


def _dataclass_types() -> tuple:
    from trl import ModelConfig

    from ..config import DiffusionReinforceConfig

    return BiasScriptArguments, DiffusionReinforceConfig, ModelConfig


def make_parser(prog: str | None = None):
    """`TrlParser` over (script args, `DiffusionReinforceConfig`, `trl.ModelConfig`); `--config recipe.yaml` works."""
    from trl import TrlParser

    description = f"{__doc__.splitlines()[0]}\n\nMost used: {COMMON_FLAGS}."
    return TrlParser(_dataclass_types(), prog=prog, description=description)


def check_recipe_keys(path: str) -> None:
    """Refuse a recipe key that is no flag of the job, naming the closest flag.

    TrlParser reports such a key only after every other check of the recipe, as "Unknown arguments from config file:
    ['--max_step', '1']. Please remove them, add them to the dataclass, or set `fail_with_unknown_args=False`": fixes
    for a developer, and no hint that `max_steps` was meant.

    Args:
        path (`str`): The recipe YAML given to `--config`.

    Raises:
        `ValueError`: a key is no field of the job's dataclasses (nor TRL's `env`); the message names the closest
            flag of each, or says that the file is an accelerate config.
    """
    import difflib
    from dataclasses import fields

    recipe = _read_yaml(path)
    if not isinstance(recipe, dict):  # TrlParser's own message names the file ("must contain a YAML mapping")
        return
    known = {f.name for dataclass_type in _dataclass_types() for f in fields(dataclass_type)} | {"env"}  # TRL's env
    unknown = [key for key in recipe if key not in known]
    if {"distributed_type", "compute_environment"} & set(unknown):
        raise ValueError(
            f"recipe {path} is an accelerate config (it sets {', '.join(map(repr, unknown[:3]))}, ...), not a recipe "
            "of the job: pass it to accelerate, `accelerate launch --config_file "
            f"{path} examples/train_llada_bias.py --config RECIPE.yaml`."
        )
    if unknown:
        named = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise ValueError(
            f"recipe {path}: unknown key(s) {', '.join(named)}. Every key must be a flag of the job (`--help` lists "
            "them): fix its spelling or remove it."
        )


def default_recipe(argv: list[str]) -> Path | None:
    """The recipe used when the command line names none: the paper's for a real model, the tiny one otherwise."""
    if "--config" in argv:
        return None
    real_model = any(a == "--model_name_or_path" or a.startswith("--model_name_or_path=") for a in argv)
    return RECIPES_DIR / ("paper.yaml" if real_model else "tiny_cpu.yaml")


def parse_args(argv: list[str] | None = None, prog: str | None = None):
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
        check_recipe_keys(argv[index + 1])
    else:
        argv = ["--config", str(default_recipe(argv)), *argv]
    model_path = _flag_value(argv, "--model_name_or_path")
    if model_path is not None:  # a mistyped local path, reported as such before the recipe's other checks
        from ..models.llada import check_local_checkpoint

        check_local_checkpoint(model_path)
    try:
        script_args, training_args, model_args = make_parser(prog).parse_args_and_config(argv)
    except ValueError as error:
        if "bf16/gpu" not in str(error):
            raise
        # transformers' own message ("Your setup doesn't support bf16/gpu") names neither the recipe nor the way out.
        raise ValueError(
            "bf16 is on (the recipe sets it: paper.yaml, the default recipe with --model_name_or_path, does) but no "
            "GPU is visible here. On a CPU pass --bf16 false (float32: LLaDA-8B then needs about 32 GB of RAM and "
            "trains very slowly), or drop --model_name_or_path to train the embedded default model (tiny_cpu.yaml)."
        ) from error
    # The job trains a LoRA adapter: `trl.ModelConfig.use_peft` defaults to False, so a user's recipe that does not
    # mention it would otherwise be refused; only an explicit `use_peft: false` / `--use_peft false` is an error.
    config_file = argv[argv.index("--config") + 1]
    explicit = any(a.startswith("--use_peft") for a in argv) or "use_peft" in (_read_yaml(config_file) or {})
    if not explicit:
        model_args.use_peft = True
    if str(training_args.resume_from_checkpoint).lower() == "true":  # Trainer's "latest checkpoint in output_dir"
        training_args.resume_from_checkpoint = True
    elif str(training_args.resume_from_checkpoint).lower() == "false":
        # Not a folder named "false": the trainer tried to resume from it and failed once the model had loaded.
        training_args.resume_from_checkpoint = None
    scale_evaluation(argv, script_args, training_args, _read_yaml(config_file) or {})
    return script_args, training_args, model_args


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of the last `flag VALUE` / `flag=VALUE` in `argv` (argparse keeps the last), or `None`."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def scale_evaluation(argv: list[str], script_args, training_args, recipe: dict) -> None:
    """A quick try gets a proportionally smaller before/after evaluation: with `--max_steps` below the recipe's,
    each evaluation size not given on the command line is scaled by `max_steps / recipe max_steps` (at least
    `MIN_SCALED_EVAL_SIZE`), so `--max_steps 2` on a 60-step recipe does not spend minutes evaluating."""
    recipe_steps, steps = recipe.get("max_steps"), training_args.max_steps
    if not _given(argv, "--max_steps") or not isinstance(recipe_steps, int) or not 0 < steps < recipe_steps:
        return
    for name in SCALED_EVAL_FIELDS:
        size = getattr(script_args, name, None)
        if isinstance(size, int) and size > 0 and not _given(argv, f"--{name}"):
            setattr(script_args, name, min(size, max(MIN_SCALED_EVAL_SIZE, math.ceil(size * steps / recipe_steps))))


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


# What a finished run of this job leaves in its output_dir: a new run would replace its adapter and append to its log.
PREVIOUS_RUN_FILES = ("adapter_model.safetensors", "train_log.jsonl", "report.json", "report.md", "records.jsonl")
# Removed by --overwrite_output_dir, so that no report of the old run is listed as the new one's.
STALE_RUN_FILES = ("train_log.jsonl", "report.json", "report.md", "records.jsonl", "metrics.csv", "comparison.csv")


def check_previous_run(output_dir: Path, *, overwrite: bool, resuming: bool) -> list[Path]:
    """Refuse an `output_dir` that holds a finished run of this job unless told to replace it or to resume it.

    Returns the old run's log and reports that a replacing run removes (`clear_previous_run`) once its own inputs
    have passed their checks, so that a run refused for a bad file leaves the old one as it was.
    """
    found = [name for name in PREVIOUS_RUN_FILES if (output_dir / name).exists()]
    if not found or resuming:
        return []
    if not overwrite:
        raise FileExistsError(
            f"output_dir {str(output_dir)!r} already holds a run of this job ({', '.join(found)}): a new run would "
            "replace its adapter and mix its training log with this one. Pass a new --output_dir, "
            "--resume_from_checkpoint to continue that run, or --overwrite_output_dir true to replace it."
        )
    return [output_dir / name for name in STALE_RUN_FILES if (output_dir / name).exists()]


def clear_previous_run(stale: list[Path]) -> None:
    """Remove what `check_previous_run` returned (the adapter is then overwritten by the new run's save)."""
    for path in stale:
        path.unlink(missing_ok=True)


def check_model_args(model_args) -> None:
    """Refuse the `trl.ModelConfig` options this job cannot honour, before anything loads (a listed flag must work
    or be refused, never be silently ignored)."""
    if model_args.load_in_4bit or model_args.load_in_8bit:
        flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
        raise ValueError(
            f"{flag} is not supported: 4/8-bit (bitsandbytes) loading is not wired into this job (the KL term runs "
            "the same weights with the adapter disabled). Drop the flag; --dtype bfloat16 halves the memory."
        )
    if not model_args.use_peft:
        raise ValueError("the main job trains a LoRA adapter: keep use_peft true (the KL term needs the base model).")
    targets = model_args.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear":
        # trl.ModelConfig turns a one-item --lora_target_modules into a string, which PEFT reads as a regex over
        # the full module name: `q_proj` alone would match nothing.
        model_args.lora_target_modules = [targets]
    from ..validation import check_float, check_int

    # PEFT would refuse some of these only after the model has loaded (minutes for LLaDA-8B), with a message that
    # names no flag, and accepts `lora_alpha` 0 (scaling 0: an adapter that never changes the model) without a word.
    check_int("lora_r", model_args.lora_r, minimum=1, hint="The LoRA rank (tiny_cpu.yaml: 16).")
    check_float(
        "lora_alpha",
        model_args.lora_alpha,
        minimum=0.0,
        min_inclusive=False,
        hint="The adapter's update is scaled by lora_alpha / lora_r; at 0 it never changes the model (usual: 2 x r).",
    )
    check_float(
        "lora_dropout",
        model_args.lora_dropout,
        minimum=0.0,
        maximum=1.0,
        max_inclusive=False,
        hint="A probability (tiny_cpu.yaml: 0.0, paper.yaml: 0.05).",
    )


def load_model_and_tokenizer(model_args, script_args) -> tuple[Any, Any]:
    """The embedded default (built on first use, then cached) or a LLaDA checkpoint through `load_llada`, with the
    requested `dtype` and `attn_implementation`."""
    import torch
    from transformers import AutoTokenizer

    from ..models.llada import CheckpointNotFoundError, load_llada

    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    if model_args.model_name_or_path is None:
        from .default_model import load_default_model

        model, tokenizer = load_default_model(script_args.cache_dir)
        if dtype not in (None, "auto"):
            model = model.to(dtype)
        if model_args.attn_implementation is not None:
            model.set_attn_implementation(model_args.attn_implementation)
        return model, tokenizer
    name = model_args.model_name_or_path
    kwargs = {"dtype": dtype, "revision": model_args.model_revision}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = load_llada(name, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    except OSError as error:
        raise CheckpointNotFoundError(f"cannot load the tokenizer of {name!r}: {error}; pass a local path.") from error
    return model, tokenizer


def load_datasets(script_args, eval_seed: int):
    """(train, eval) datasets: the user's prompts or the synthetic subset; eval is the held-out synthetic split."""
    from ..data import load_prompt_dataset
    from .data import load_synthetic_subset

    qtype = None if script_args.question_type == "all" else script_args.question_type
    if script_args.dataset_name is None:
        train = load_synthetic_subset(script_args.train_size, seed=script_args.data_seed_subset, question_type=qtype)
    else:
        train = load_prompt_dataset(
            script_args.dataset_name, split=script_args.dataset_train_split, config_name=script_args.dataset_config
        )
    return train, evaluation_sets(script_args, eval_seed)


def evaluation_sets(script_args, eval_seed: int) -> dict[str, Any]:
    """The held-out sets: `main` (multiple choice + free text, unseen frames about the training roles) and
    `unseen_roles` (multiple choice, unseen frames and roles); a set of size 0 is left out."""
    from datasets import concatenate_datasets

    from .data import generate_mcq_dataset

    parts = [
        generate_mcq_dataset(n, seed=eval_seed, split="test_seen_roles", question_type=qtype)
        for n, qtype in ((script_args.eval_size, "multiple_choice"), (script_args.eval_free_text_size, "free_text"))
        if n > 0
    ]
    sets = {"main": concatenate_datasets(parts)} if parts else {}
    if script_args.eval_unseen_roles_size > 0:
        sets["unseen_roles"] = generate_mcq_dataset(
            script_args.eval_unseen_roles_size, seed=eval_seed, split="test", question_type="multiple_choice"
        )
    return sets


def make_rewards(names: list[str], *, where_gender_is_open: bool = False) -> list:
    from .rewards.choice import NeutralChoiceReward
    from .rewards.genbit import GenBitReward
    from .rewards.lexicon import GenderedLanguageReward

    known = {
        "genbit": GenBitReward,
        "neutral_choice": NeutralChoiceReward,
        "neutral_choice_restated": lambda: NeutralChoiceReward(require_restated_option=True),
        "gendered_language": lambda: GenderedLanguageReward(only_where_gender_is_open=where_gender_is_open),
        "gendered_pronouns": lambda: GenderedLanguageReward(
            pronouns_only=True, only_where_gender_is_open=where_gender_is_open
        ),
        "gendered_language_per_answer": lambda: GenderedLanguageReward(
            only_where_gender_is_open=where_gender_is_open, per="answer"
        ),
        "gendered_pronouns_per_answer": lambda: GenderedLanguageReward(
            pronouns_only=True, only_where_gender_is_open=where_gender_is_open, per="answer"
        ),
    }
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # each would count again under one logged name
        raise ValueError(
            f"reward(s) {repeated} listed more than once in --rewards; list each once and weight it with "
            "--reward_weights instead."
        )
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
            if math.isnan(before) and math.isnan(after):  # does not apply to this question type
                continue
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


# What each evaluation split is called in its console table, report and figures (two tables are printed in a row).
SPLIT_TITLES = {"main": "Held-out prompts", "unseen_roles": "Unseen roles (second split)"}


def print_table(rows: list[dict[str, Any]], split: str = "main") -> None:
    from rich.console import Console
    from rich.table import Table

    name = SPLIT_TITLES.get(split, split)
    table = Table(title=f"{name}: base model (before) vs base + adapter (after), same seeds")
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


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, Any]:
    """Run the job; returns the report dict also written to `output_dir/report.json`.

    The console gets one short line per log and, at the end, where every output went; the raw log dicts go to
    `output_dir/train_log.jsonl`.
    """
    started = time.perf_counter()
    script_args, training_args, model_args = parse_args(argv, prog)
    check_model_args(model_args)
    created = [p for p in (Path(training_args.output_dir), *Path(training_args.output_dir).parents) if not p.exists()]
    output_dir = check_output_dir(training_args.output_dir)
    # One run per folder, taken before any model is loaded (the trainer takes the same lock again: a no-op).
    from ..output_lock import acquire_output_dir_lock

    lock = acquire_output_dir_lock(training_args)
    try:
        return _run(script_args, training_args, model_args, output_dir, started)
    except BaseException:
        # A run refused for a bad input (a data file, a checkpoint, the model) leaves no empty folder behind.
        if lock is not None:
            lock.release()
        for folder in created:  # the innermost first; a folder that holds anything is kept
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _run(script_args, training_args, model_args, output_dir: Path, started: float) -> dict[str, Any]:
    """The job once its output_dir is checked and locked (`main` removes the folder again if this fails in it)."""
    resuming = training_args.resume_from_checkpoint not in (None, False)
    stale = check_previous_run(output_dir, overwrite=script_args.overwrite_output_dir, resuming=resuming)
    if resuming:
        from ..resume import resolve_resume_checkpoint

        # The folder (or, for `true`, output_dir's newest complete checkpoint-N) is checked now: the trainer checks
        # it again, but only once the model has loaded (minutes for LLaDA-8B). Each process checks its own files.
        resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args)
    from ..cpu_threads import set_cpu_threads

    set_cpu_threads(script_args.cpu_threads, on_cpu=training_args.device.type == "cpu")
    if training_args.device.type == "cpu":
        # Pinned memory serves copies to an accelerator; on a CPU torch ignores it with a UserWarning at step 0.
        training_args.dataloader_pin_memory = False
    if not script_args.skip_eval:
        from ..evaluation.plots import PLOTS_HINT, plots_available

        if not plots_available():  # said now, not after the training: the report is written without plots
            warnings.warn(
                f"matplotlib is not installed: the report will have no plots ({PLOTS_HINT} to get them, or "
                "`diffusion-rl report --eval_dir DIR` afterwards).",
                UserWarning,
                stacklevel=2,
            )
    rewards = make_rewards(script_args.rewards, where_gender_is_open=script_args.lexical_rewards_where_gender_is_open)

    from trl import get_peft_config

    from ..log_callbacks import use_compact_logging
    from ..trainer import DiffusionReinforceTrainer

    if not model_args.lora_target_modules:
        model_args.lora_target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the seed's (o_proj = attn_out)
    peft_config = get_peft_config(model_args)

    # The data and the rewards are read and checked before the model loads (minutes for LLaDA-8B): a bad file or
    # column fails first. The trainer checks them again, with the tokenizer.
    from ..checks import check_one_process_per_gpu, check_reward_columns, check_reward_funcs

    train_dataset, eval_sets = load_datasets(script_args, eval_seed=training_args.seed)
    in_training_eval = eval_sets.get("main") if training_args.eval_strategy != "no" else None
    check_one_process_per_gpu(training_args)
    check_reward_funcs(rewards, training_args.reward_weights)
    DiffusionReinforceTrainer._check_datasets(training_args, train_dataset, in_training_eval)
    # Said with the job's flags (the trainer would say it again in the Python API's words).
    if script_args.dataset_name is None:
        where = f"the synthetic training data (--question_type {script_args.question_type})"
        fix = SYNTHETIC_REWARD_COLUMNS_FIX
    else:
        where, fix = f"the --dataset_name data ({script_args.dataset_name})", REWARD_COLUMNS_FIX
    check_reward_columns(rewards, train_dataset, where, fix=fix)
    model, tokenizer = load_model_and_tokenizer(model_args, script_args)
    trainer = DiffusionReinforceTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train_dataset,
        # In-training evaluation (--eval_strategy steps --eval_steps N [--num_generations_eval G]) on the main
        # held-out set, on the evaluation's own RNG streams (the training run is the same with or without it).
        eval_dataset=in_training_eval,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if model_args.model_name_or_path is None:  # the card's usage snippet loads the embedded model, not a local path
        trainer.model_card_kwargs = {"base_model_code": DEFAULT_MODEL_CODE}
    if trainer.accelerator.is_main_process:
        clear_previous_run(stale)
    log = use_compact_logging(trainer, CONSOLE_METRICS, output_dir / "train_log.jsonl")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)

    report: dict[str, Any] = {
        "model": model_args.model_name_or_path or "embedded default (diffusion_rl.bias.default_model)",
        "train_size": len(train_dataset),
        "train_metrics": trainer.state.log_history[-1] if trainer.state.log_history else {},
    }
    if not script_args.skip_eval:
        for name, eval_dataset in eval_sets.items():
            # the main set's report sits in output_dir itself; the second one in a sub-folder of that name
            out = training_args.output_dir if name == "main" else str(Path(training_args.output_dir) / name)
            result = evaluate_before_after(trainer, tokenizer, eval_dataset, script_args, training_args, out, name)
            report.update(result) if name == "main" else report.update({name: result})
    if trainer.accelerator.is_main_process:
        (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name or "diffusion_rl synthetic MCQ")
    if trainer.accelerator.is_main_process:
        print_outputs(output_dir, log.entries, time.perf_counter() - started, training_args)
    return report


def print_outputs(output_dir: Path, log_entries: int, seconds: float, training_args) -> None:
    """Where everything went, with the run time: the last thing the job prints."""
    minutes, rest = divmod(round(seconds), 60)
    lines = [f"\nDone in {minutes} min {rest} s. Outputs in {output_dir}/:"]
    candidates = [
        ("adapter_model.safetensors", "the LoRA adapter (+ adapter_config.json)"),
        ("README.md", "model card"),
        ("train_log.jsonl", f"every logged metric dict ({log_entries} {'entry' if log_entries == 1 else 'entries'})"),
        ("report.md", "before/after report (+ report.json, comparison.csv, plots/)"),
        ("records.jsonl", "every evaluation completion, base and adapter"),
        ("unseen_roles/report.md", "second report: unseen roles"),
        ("completions", "completions tables (log_completions)"),
    ]
    width = max(len(name) for name, _ in candidates)
    lines += [f"  {name:<{width}}  {text}" for name, text in candidates if (output_dir / name).exists()]
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    if checkpoints:
        lines.append(f"  {'checkpoint-*':<{width}}  {len(checkpoints)} checkpoint(s), last {checkpoints[-1].name}")
    if training_args.push_to_hub and training_args.hub_model_id:
        lines.append(f"  pushed to https://huggingface.co/{training_args.hub_model_id}")
    print("\n".join(lines))


def evaluate_before_after(
    trainer,
    tokenizer,
    eval_dataset,
    script_args,
    training_args,
    output_dir: str | None = None,
    split: str = "main",
) -> dict[str, Any]:
    """Generate on the held-out split with the adapter off (before) and on (after), same seeds; write the report.

    Every process generates (under DeepSpeed ZeRO-3 all ranks must run the same forwards); the main one writes.
    """
    from .evaluation import evaluate_model, report_evaluation

    # The second split (`unseen_roles`) has its own temperatures and reports the per-position `kl` only: its sequence
    # KL took ~40 s of the main job's 10 minutes (2 batches of ~19 s on 2 cores).
    main = split == "main"
    temperatures = script_args.eval_temperatures if main else script_args.eval_unseen_roles_temperatures

    model = trainer.accelerator.unwrap_model(trainer.model)
    # the training rollouts' settings; the temperature is the evaluation's own (`eval_temperatures`)
    # (exact decoding unless eval_fast_sampler asks for the rollouts' sampler_cache / sampler_threshold)
    sampler_kwargs = {k: v for k, v in training_args.sampler_kwargs(for_eval=True).items() if k != "temperature"}
    result = evaluate_model(
        model,
        tokenizer,
        eval_dataset,
        temperatures=temperatures,
        sampler_kwargs=sampler_kwargs,
        seed=training_args.seed,
        batch_size=script_args.eval_batch_size,
        compare_base=True,
        sequence_kl_paths=script_args.eval_sequence_kl and main,
    )
    rows = before_after_table(result.metrics)
    if trainer.accelerator.is_main_process:
        print_table(rows, split)
        title = "diffusion_rl: REINFORCE debiasing"
        report_evaluation(
            result,
            output_dir or training_args.output_dir,
            log_history=trainer.state.log_history,
            title=title if main else f"{title}, {SPLIT_TITLES.get(split, split).lower()}",
        )
    return {"eval_size": len(eval_dataset), "before_after": rows, "notes": result.notes}
