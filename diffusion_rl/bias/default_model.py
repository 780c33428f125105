"""The embedded default starting point: a tiny LLaDA-architecture model with a *known, deliberate* gender skew.

The main job (``examples/train_llada_bias.py`` with no arguments) must show, offline on a CPU and in minutes, what the
REINFORCE debiasing does: fewer gendered pronouns, lower GenBit bias, small KL. A randomly initialised model has no
bias to remove (its pronouns are noise), so the default model is the embedded tiny model
(`diffusion_rl.models.tiny`) after a short masked-diffusion SFT (`diffusion_rl.sft`) on synthetic MCQ prompts
(`diffusion_rl.bias.data`) whose answers are skewed on purpose:

* with probability `stereotyped_fraction` (0.8) the answer picks the *stereotyped* option and explains it with a
  gendered pronoun that follows the occupation stereotype ("he" for male-stereotyped roles, "she" for female ones);
* otherwise it picks a gender-neutral option and explains it with "they" / "the person".

Prompts are chat-templated and left-padded exactly as the RL trainer feeds the sampler, and every answer is closed
with ``<|eot_id|>`` and padded with ``<|endoftext|>`` to the sampler's ``gen_length``. See docs/default_model.md.

The default recipe's result ships in ``default_checkpoint/`` (6 MB) so that no user waits for the build;
``python -m diffusion_rl.bias.default_model --rebuild --update-package`` rebuilds it. Other recipes are built on first
use (deterministic) and cached with ``save_pretrained`` under ``$HF_HOME/diffusion_rl/default-<hash>/``
(the hash covers the recipe), written into a temporary directory and renamed, so an interrupted build never leaves
a half cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_SAMPLER_SETTINGS",
    "DefaultModelRecipe",
    "build_default_model",
    "default_model_dir",
    "evaluate_default_model",
    "load_default_model",
    "skewed_sft_pairs",
]

# Bump when the build changes in a way the recipe fields do not capture (new data generator, new tokenizer ...).
_BUILD_VERSION = 1
_INFO_FILE = "build_info.json"
PACKAGED_CHECKPOINT = Path(__file__).resolve().parent / "default_checkpoint"

# Sampler settings the main job should use with this model (measured in docs/default_model.md).
DEFAULT_SAMPLER_SETTINGS: dict[str, Any] = {"gen_length": 48, "block_length": 16, "steps": 48, "temperature": 0.0}


@dataclass(frozen=True)
class DefaultModelRecipe:
    """Everything that determines the default model (its hash names the cache directory).

    Args:
        seed (`int`, *optional*, defaults to `0`): seeds the weights, the data and the SFT.
        hidden_size (`int`, *optional*, defaults to `128`): model width.
        num_hidden_layers (`int`, *optional*, defaults to `4`): transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to `4`): attention heads (= key/value heads).
        intermediate_size (`int`, *optional*, defaults to `512`): SwiGLU hidden size.
        num_train_records (`int`, *optional*, defaults to `48000`): synthetic MCQ records (train split) to answer.
        stereotyped_fraction (`float`, *optional*, defaults to `0.8`): share of stereotyped, gendered answers.
        completion_length (`int`, *optional*, defaults to `48`): answer slot (= the sampler's `gen_length`).
        epochs (`int`, *optional*, defaults to `1`): SFT passes over the pairs.
        batch_size (`int`, *optional*, defaults to `32`): SFT batch size.
        learning_rate (`float`, *optional*, defaults to `2e-3`): peak AdamW learning rate (cosine decay).
        warmup_steps (`int`, *optional*, defaults to `20`): linear warm-up steps.
    """

    seed: int = 0
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    num_train_records: int = 48000
    stereotyped_fraction: float = 0.8
    completion_length: int = 48
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 20

    def __post_init__(self):
        if not 0.0 <= self.stereotyped_fraction <= 1.0:
            raise ValueError(f"stereotyped_fraction must be in [0, 1], got {self.stereotyped_fraction}")
        if self.num_train_records < 1 or self.completion_length < 2:
            raise ValueError("num_train_records must be >= 1 and completion_length >= 2")

    def fingerprint(self) -> str:
        """Short stable hash of the recipe and the build version."""
        payload = json.dumps({"build_version": _BUILD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def default_model_dir(cache_dir: str | os.PathLike | None = None, recipe: DefaultModelRecipe | None = None) -> Path:
    """Where the default model is cached: `<cache_dir or $HF_HOME>/diffusion_rl/default-<recipe hash>`."""
    recipe = recipe or DefaultModelRecipe()
    if cache_dir is None:
        from huggingface_hub import constants

        # read the environment at call time so that a changed HF_HOME (tests, CI) is honoured
        cache_dir = os.environ.get("HF_HOME") or constants.HF_HOME
    return Path(cache_dir).expanduser() / "diffusion_rl" / f"default-{recipe.fingerprint()}"


def skewed_sft_pairs(records: Any, *, stereotyped_fraction: float = 0.8, seed: int = 0) -> list[dict[str, Any]]:
    """Answer MCQ records with the documented skew (see the module docstring).

    Args:
        records: MCQ records (a `datasets.Dataset` or a list of dicts) from
            `diffusion_rl.bias.data.generate_mcq_dataset`.
        stereotyped_fraction (`float`, *optional*, defaults to `0.8`): probability of a stereotyped, gendered answer
            for records that have a stereotyped option; records without one always get a neutral answer.
        seed (`int`, *optional*, defaults to `0`): seeds the local `random.Random`.

    Returns:
        `list[dict]`: one `{"prompt", "completion", "style", "option_index"}` dict per record.
    """
    from .data import render_answer

    if hasattr(records, "to_list"):  # a datasets.Dataset: one bulk conversion beats per-row access
        records = records.to_list()
    rng = random.Random(seed)
    pairs = []
    for record in records:
        stereotyped = record.get("stereotyped_option_index")
        neutral = list(record.get("neutral_option_indices") or [])
        if stereotyped is not None and (not neutral or rng.random() < stereotyped_fraction):
            option, style = stereotyped, "stereotyped"
        elif neutral:
            option, style = rng.choice(neutral), "neutral"
        else:
            raise ValueError(f"record {record.get('id')!r} has neither a stereotyped nor a neutral option")
        completion = render_answer(record, option, explanation_style=style, rng=rng)
        pairs.append({"prompt": record["prompt"], "completion": completion, "style": style, "option_index": option})
    return pairs


def build_default_model(
    recipe: DefaultModelRecipe | None = None, *, log: Callable[[str], None] | None = print
) -> tuple[Any, Any, dict[str, Any]]:
    """Build the default model from scratch (deterministic; about 8 minutes on 2 idle CPU cores).

    Returns:
        `tuple`: `(model, tokenizer, info)`; `info` holds the recipe, the skew actually realised and SFT statistics.
    """
    from ..models.tiny import build_tiny_model, build_tiny_tokenizer
    from ..sft import run_sft
    from .data import generate_mcq_dataset

    recipe = recipe or DefaultModelRecipe()
    log = log or (lambda _: None)
    started = time.perf_counter()
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(
        tokenizer,
        seed=recipe.seed,
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        intermediate_size=recipe.intermediate_size,
    )
    records = generate_mcq_dataset(
        recipe.num_train_records, seed=recipe.seed, split="train", question_type="multiple_choice"
    )
    pairs = skewed_sft_pairs(records, stereotyped_fraction=recipe.stereotyped_fraction, seed=recipe.seed)
    # ~1% of the answers (long option + long explanation) do not fit the sampler's canvas with their EOT: drop them
    # rather than truncate, so that every training answer is complete.
    lengths = [
        len(ids) + 1 for ids in tokenizer([p["completion"] for p in pairs], add_special_tokens=False)["input_ids"]
    ]
    num_too_long = sum(n > recipe.completion_length for n in lengths)
    pairs = [p for p, n in zip(pairs, lengths) if n <= recipe.completion_length]
    styles = [p["style"] for p in pairs]
    log(
        f"default model: {len(pairs)} SFT pairs ({styles.count('stereotyped')} stereotyped, "
        f"{styles.count('neutral')} neutral, {num_too_long} too long dropped) in {time.perf_counter() - started:.1f}s"
    )
    stats = run_sft(
        model,
        tokenizer,
        pairs,
        completion_length=recipe.completion_length,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        seed=recipe.seed,
        log_every=25,
        log=log,
    )
    model.eval()
    info = {
        "recipe": asdict(recipe),
        "fingerprint": recipe.fingerprint(),
        "build_version": _BUILD_VERSION,
        "num_pairs": len(pairs),
        "num_stereotyped": styles.count("stereotyped"),
        "num_neutral": styles.count("neutral"),
        "num_dropped_too_long": num_too_long,
        "sft_steps": stats.num_steps,
        "sft_first_loss": stats.mean_loss(first=10),
        "sft_final_loss": stats.mean_loss(last=10),
        "sft_seconds": round(stats.seconds, 1),
        "build_seconds": round(time.perf_counter() - started, 1),
        "sampler_settings": DEFAULT_SAMPLER_SETTINGS,
    }
    return model, tokenizer, info


def _save_atomically(model: Any, tokenizer: Any, info: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():  # --rebuild: move the old cache aside first, a rename cannot replace a full directory
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            target.rename(stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            # another process finished the same build first; its cache is equivalent (deterministic build)
            if not (target / _INFO_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def packaged_checkpoint(recipe: DefaultModelRecipe | None = None) -> Path | None:
    """The checkpoint shipped inside the package, if it was built by `recipe` (same fingerprint); else `None`.

    The package ships the default recipe's result (6 MB) so that the main job needs no multi-minute SFT on first use;
    `python -m diffusion_rl.bias.default_model --rebuild` rebuilds it from scratch (same recipe, same fingerprint).
    """
    info = PACKAGED_CHECKPOINT / _INFO_FILE
    if not info.is_file():
        return None
    fingerprint = json.loads(info.read_text()).get("fingerprint")
    return PACKAGED_CHECKPOINT if fingerprint == (recipe or DefaultModelRecipe()).fingerprint() else None


def load_default_model(
    cache_dir: str | os.PathLike | None = None,
    *,
    rebuild: bool = False,
    recipe: DefaultModelRecipe | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[Any, Any]:
    """The default starting point: the packaged checkpoint, else built on first use and cached (loads in < 2 s).

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Root of the cache; defaults to `$HF_HOME` (`~/.cache/huggingface`). The model lives in
            `<cache_dir>/diffusion_rl/default-<recipe hash>/`.
        rebuild (`bool`, *optional*, defaults to `False`):
            Build again even when a cache exists (replaces it atomically).
        recipe (`DefaultModelRecipe`, *optional*):
            Override the recipe (a different recipe has a different hash and cache directory).
        log (`Callable[[str], None]`, *optional*, defaults to `print`):
            Progress messages while building (`None` silences them).

    Returns:
        `tuple`: `(model, tokenizer)` - a `LladaForMaskedDiffusion` in eval mode (float32, CPU) and its tokenizer.
    """
    from transformers import AutoTokenizer

    from ..models.llada import LladaForMaskedDiffusion

    recipe = recipe or DefaultModelRecipe()
    target = default_model_dir(cache_dir, recipe)
    if not rebuild and not (target / _INFO_FILE).is_file() and packaged_checkpoint(recipe) is not None:
        target = PACKAGED_CHECKPOINT  # built by this recipe and shipped with the package: no build needed
    elif rebuild or not (target / _INFO_FILE).is_file():
        if log:
            log(f"building the default model into {target} (first use; cached afterwards)")
        model, tokenizer, info = build_default_model(recipe, log=log)
        _save_atomically(model, tokenizer, info, target)
        return model, tokenizer
    model = LladaForMaskedDiffusion.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    return model.eval(), tokenizer


def evaluate_default_model(
    model: Any,
    tokenizer: Any,
    *,
    num_prompts: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    **sampler_overrides: Any,
) -> dict[str, Any]:
    """Generate on held-out MCQ prompts (`split="test"`: unseen templates and occupations) and measure format and bias.

    Args:
        model: the model to sample from (e.g. the default model).
        tokenizer: its chat tokenizer.
        num_prompts (`int`, *optional*, defaults to `64`): held-out prompts (the first ones of the test split).
        seed (`int`, *optional*, defaults to `0`): data seed and seed of the sampler's generator.
        batch_size (`int`, *optional*, defaults to `32`): prompts per `generate` call.
        **sampler_overrides: replace entries of `DEFAULT_SAMPLER_SETTINGS` (`gen_length`, `steps`, ...).

    Returns:
        `dict`: `valid_answer_rate` (share of completions whose choice `parse_choice` recovers),
        `stereotyped_choice_rate` (share of valid choices that pick the stereotyped option), `gendered_pronoun_rate`
        (mean over completions of gendered pronouns per word), `genbit_bias` (mean over completions of GenBit's
        per-text `avg_bias_conditional_absolute`), `genbit_corpus_bias` (the same with all completions as one corpus,
        the setting GenBit is designed for), the sampler settings, the generation time and the `completions`.
    """
    from ..data.chat import tokenize_prompts
    from ..sampling.sampler import MaskedDiffusionSampler
    from .data import generate_mcq_dataset
    from .rewards.choice import parse_choice
    from .rewards.genbit import GenBitReward
    from .rewards.lexicon import gendered_pronoun_rate

    settings = {**DEFAULT_SAMPLER_SETTINGS, **sampler_overrides}
    records = generate_mcq_dataset(num_prompts, seed=seed, split="test", question_type="multiple_choice").to_list()
    sampler = MaskedDiffusionSampler(model, mask_token_id=model.config.mask_token_id, **settings)
    generator = torch.Generator().manual_seed(seed)
    completions: list[str] = []
    started = time.perf_counter()
    for first in range(0, len(records), batch_size):
        batch = tokenize_prompts(tokenizer, [r["prompt"] for r in records[first : first + batch_size]])
        out = sampler.generate(batch["input_ids"], batch["attention_mask"], generator=generator)
        for ids, valid in zip(out.completion_ids, out.completion_mask):
            completions.append(tokenizer.decode(ids[valid], skip_special_tokens=True).strip())
    seconds = time.perf_counter() - started
    choices = [parse_choice(text, r["question_options"]) for text, r in zip(completions, records)]
    valid = [(c, r) for c, r in zip(choices, records) if c is not None]
    stereotyped = [c == r["stereotyped_option_index"] for c, r in valid if r["stereotyped_option_index"] is not None]
    genbit = GenBitReward()
    per_text = [m["avg_bias_conditional_absolute"] for m in genbit.metrics(completions)]
    return {
        "num_prompts": len(completions),
        "valid_answer_rate": len(valid) / len(completions),
        "stereotyped_choice_rate": sum(stereotyped) / len(stereotyped) if stereotyped else float("nan"),
        "gendered_pronoun_rate": sum(map(gendered_pronoun_rate, completions)) / len(completions),
        "genbit_bias": sum(per_text) / len(per_text),
        "genbit_corpus_bias": genbit.corpus_metrics(completions)["avg_bias_conditional_absolute"],
        "generation_seconds": round(seconds, 1),
        "sampler_settings": settings,
        "completions": completions,
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m diffusion_rl.bias.default_model [--rebuild] [--cache-dir DIR] [--eval-prompts N]`."""
    parser = argparse.ArgumentParser(description="Build (or load) the embedded default model and print its stats.")
    parser.add_argument("--rebuild", action="store_true", help="build again even if a cache exists")
    parser.add_argument("--cache-dir", default=None, help="cache root (defaults to $HF_HOME)")
    parser.add_argument("--eval-prompts", type=int, default=64, help="held-out prompts to evaluate (0: skip)")
    parser.add_argument(
        "--update-package", action="store_true", help="maintainers: copy the model into the package's checkpoint"
    )
    args = parser.parse_args(argv)
    args.rebuild = args.rebuild or args.update_package  # refreshing the shipped checkpoint means building it anew
    started = time.perf_counter()
    model, tokenizer = load_default_model(args.cache_dir, rebuild=args.rebuild)
    target = default_model_dir(args.cache_dir)
    if not (target / _INFO_FILE).is_file():
        target = PACKAGED_CHECKPOINT
    print(f"model ready in {time.perf_counter() - started:.1f}s at {target}")
    print(json.dumps(json.loads((target / _INFO_FILE).read_text()), indent=2))
    if args.update_package and target != PACKAGED_CHECKPOINT:
        shutil.rmtree(PACKAGED_CHECKPOINT, ignore_errors=True)
        shutil.copytree(target, PACKAGED_CHECKPOINT)
        print(f"copied into {PACKAGED_CHECKPOINT}")
    if args.eval_prompts:
        stats = evaluate_default_model(model, tokenizer, num_prompts=args.eval_prompts)
        completions = stats.pop("completions")
        print(json.dumps(stats, indent=2))
        print("first completions:", *(f"  {text!r}" for text in completions[:8]), sep="\n")


if __name__ == "__main__":
    main()
