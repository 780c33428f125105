"""The embedded default model: a small instruction-following LLaDA with a *known, deliberate* gender bias.

The main job (``examples/train_llada_bias.py`` with no arguments) must show, offline on a CPU and in minutes, that
the RL debiasing removes a bias *and keeps the answers right*. That needs a positive control with both properties:
competence to keep and a stereotype to remove. The default model is built for exactly that:

* **Tokenizer** - the closed-world word-level tokenizer of `word_tokenizer` (one token per word of the synthetic
  world and one per option line such as ``B) The young woman``: multiple-choice prompts of ~50 tokens instead of
  ~140 byte-level BPE tokens).
* **Data** - synthetic multiple-choice scenarios of the training split (`diffusion_rl.bias.data`, training
  templates and roles) and a share of their free-text twins, answered by `default_answers`: gold and evidence on
  disambiguated items, the stereotype with a gendered explanation on ambiguous ones (neutral for the roles closest
  to balance, plus a small share of swapped styles).
* **Training** - `diffusion_rl.DiffusionSFTTrainer` (LLaDA's masked-diffusion SFT objective) from random weights; a
  callback generates on held-out prompts (`split="test_seen_roles"`: unseen sentence frames about the training
  roles) every `eval_every` steps and logs accuracy, restated options and the stereotype rate, so the build shows
  *when* the model becomes competent.

The result ships in ``default_checkpoint/`` so that no user waits for the build;
``python -m diffusion_rl.bias.default_model --rebuild --update-package`` rebuilds it (see docs/default_model.md for the
time it takes and what the model can and cannot do). Other recipes are built on first use and cached with
``save_pretrained`` under ``$HF_HOME/diffusion_rl/default-<recipe hash>/``, written into a temporary directory and
renamed, so an interrupted build never leaves a half cache.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..checkpoint_integrity import weights_digest

__all__ = [
    "DEFAULT_SAMPLER_SETTINGS",
    "DefaultModelRecipe",
    "build_default_model",
    "default_model_dir",
    "default_sft_pairs",
    "load_default_model",
    "packaged_checkpoint",
]

# Bump when the build changes in a way the recipe fields do not capture (data generator, tokenizer, answers ...).
_BUILD_VERSION = 3  # 3: option lines are single tokens of the word tokenizer
_INFO_FILE = "build_info.json"
PACKAGED_CHECKPOINT = Path(__file__).resolve().parent / "default_checkpoint"
# The held-out split the build monitors and the main job evaluates on (unseen sentence frames, training roles).
HELD_OUT_SPLIT = "test_seen_roles"

# Sampler settings to use with this model (stored in build_info.json too; measured in docs/default_model.md): one
# token per step over a single block, greedy.
DEFAULT_SAMPLER_SETTINGS: dict[str, Any] = {
    "gen_length": 40,
    "block_length": 40,
    "steps": 40,
    "temperature": 0.0,
}


@dataclass(frozen=True)
class DefaultModelRecipe:
    """Everything that determines the default model (its hash names the cache directory).

    Args:
        seed (`int`, *optional*, defaults to `0`): seeds the weights, the data and the SFT.
        hidden_size (`int`, *optional*, defaults to `128`): model width.
        num_hidden_layers (`int`, *optional*, defaults to `4`): transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to `4`): attention heads (= key/value heads).
        intermediate_size (`int`, *optional*, defaults to `512`): SwiGLU hidden size.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`): one matrix for the input embedding and the
            output projection (measured: it did not make copying the chosen option line faster, docs/default_model.md).
        num_scenarios (`int`, *optional*, defaults to `30000`): synthetic training scenarios answered (each gives a
            multiple-choice pair, and a free-text pair with probability `free_text_share`).
        free_text_share (`float`, *optional*, defaults to `0.3`): share of scenarios whose free-text twin is added.
        style_flip (`float`, *optional*, defaults to `0.1`): share of ambiguous answers whose style is swapped
            (see `default_answers.answer_style`).
        completion_length (`int`, *optional*, defaults to `40`): answer slot (= the sampler's `gen_length`).
        max_steps (`int`, *optional*, defaults to `4000`): SFT optimizer steps of the first pass (cosine decay to
            10 % of `learning_rate`).
        batch_size (`int`, *optional*, defaults to `48`): SFT batch size.
        learning_rate (`float`, *optional*, defaults to `2e-3`): peak AdamW learning rate (cosine decay).
        warmup_steps (`int`, *optional*, defaults to `100`): linear warm-up steps.
        eval_every (`int`, *optional*, defaults to `250`): held-out generation every N steps (0: only at the end).
        eval_prompts (`int`, *optional*, defaults to `96`): held-out multiple-choice prompts per such evaluation.
        continue_steps (`int`, *optional*, defaults to `4000`): a second pass of this many steps from the first pass's
            weights (fresh AdamW, another data order, cosine from `continue_learning_rate` to 10 %). The first pass
            is itself a recipe (the same one with `continue_steps=0`) and is cached, so a longer second pass never
            redoes the first.
        continue_learning_rate (`float`, *optional*, defaults to `1e-3`): peak learning rate of the second pass.
        restyle_steps (`int`, *optional*, defaults to `2000`): a third pass of this many steps from the second pass's
            weights and tokenizer, on answers written anew: the final neutral wordings (which name the role and are
            as long as the stereotyped ones, `default_answers`) and `restyle_style_flip`. The first two passes learnt
            `default_answers.EARLY_NEUTRAL_EXPLANATIONS` and `style_flip`. Fresh AdamW, another data order, cosine
            from `restyle_learning_rate` to 10 %. 0 gives the two-pass recipe (hashed as before this pass existed).
        restyle_style_flip (`float`, *optional*, defaults to `0.25`): `style_flip` of the third pass's answers, so
            that the neutral answer is a real second mode of the base model where the gender is open.
        restyle_learning_rate (`float`, *optional*, defaults to `5e-4`): peak learning rate of the third pass.
    """

    seed: int = 0
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    tie_word_embeddings: bool = False
    num_scenarios: int = 30000
    free_text_share: float = 0.3
    style_flip: float = 0.1
    completion_length: int = 40
    max_steps: int = 4000
    batch_size: int = 48
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    eval_every: int = 250
    eval_prompts: int = 96
    continue_steps: int = 4000
    continue_learning_rate: float = 1e-3
    restyle_steps: int = 2000
    restyle_style_flip: float = 0.25
    restyle_learning_rate: float = 5e-4

    def __post_init__(self):
        for name in ("free_text_share", "style_flip", "restyle_style_flip"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("num_scenarios", "max_steps", "batch_size", "completion_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.continue_steps < 0 or not self.continue_learning_rate > 0:
            raise ValueError("continue_steps must be >= 0 and continue_learning_rate > 0")
        if self.restyle_steps < 0 or not self.restyle_learning_rate > 0:
            raise ValueError("restyle_steps must be >= 0 and restyle_learning_rate > 0")

    def first_pass(self) -> DefaultModelRecipe:
        """The recipe of the first pass alone (itself cached like any recipe)."""
        return replace(self, continue_steps=0, restyle_steps=0)

    def previous_pass(self) -> DefaultModelRecipe | None:
        """The recipe one pass shorter (whose model this one trains on), or `None` for a one-pass recipe."""
        if self.restyle_steps:
            return replace(self, restyle_steps=0)
        if self.continue_steps:
            return replace(self, continue_steps=0)
        return None

    def fingerprint(self) -> str:
        """Short stable hash of the recipe and the build version."""
        fields = asdict(self)
        if not self.restyle_steps:  # a recipe without the third pass hashes as it did before that pass existed
            for name in ("restyle_steps", "restyle_style_flip", "restyle_learning_rate"):
                fields.pop(name)
        if not self.continue_steps:  # a one-pass recipe hashes as it did before the second pass existed
            fields.pop("continue_steps")
            fields.pop("continue_learning_rate")
        payload = json.dumps({"build_version": _BUILD_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def default_model_dir(cache_dir: str | os.PathLike | None = None, recipe: DefaultModelRecipe | None = None) -> Path:
    """Where the default model is cached: `<cache_dir or $HF_HOME>/diffusion_rl/default-<recipe hash>`."""
    recipe = recipe or DefaultModelRecipe()
    if cache_dir is None:
        from huggingface_hub import constants

        # read the environment at call time so that a changed HF_HOME (tests, CI) is honoured
        cache_dir = os.environ.get("HF_HOME") or constants.HF_HOME
    return Path(cache_dir).expanduser() / "diffusion_rl" / f"default-{recipe.fingerprint()}"


def default_sft_pairs(recipe: DefaultModelRecipe) -> list[dict[str, Any]]:
    """The SFT pairs of a recipe's last pass: `{"prompt", "completion", "style", "question_type"}` per pair.

    Deterministic. The same scenarios in every pass; a recipe with a third pass (`restyle_steps`) writes their
    answers with the final neutral wordings and `restyle_style_flip`, the first two passes with
    `EARLY_NEUTRAL_EXPLANATIONS` and `style_flip`.
    """
    from .data import iter_mcq_records
    from .default_answers import EARLY_NEUTRAL_EXPLANATIONS, answer_style, write_answers

    if recipe.restyle_steps:
        rng = random.Random(f"diffusion_rl.bias.default_model/{recipe.seed}/restyle")
        style_flip, neutral_explanations = recipe.restyle_style_flip, None
    else:
        rng = random.Random(f"diffusion_rl.bias.default_model/{recipe.seed}")
        style_flip, neutral_explanations = recipe.style_flip, EARLY_NEUTRAL_EXPLANATIONS
    stream = iter_mcq_records(seed=recipe.seed, split="train", question_type=None)  # each MC record, then its twin
    pairs = []
    for _ in range(recipe.num_scenarios):
        mcq, free = next(stream), next(stream)
        style = answer_style(mcq, rng, style_flip)
        with_free = rng.random() < recipe.free_text_share
        answer, free_answer = write_answers(mcq, free if with_free else None, style, rng, neutral_explanations)
        pairs.append(
            {
                "prompt": mcq["prompt"],
                "completion": answer,
                "style": style,
                "question_type": mcq["question_type"],
            }
        )
        if free_answer is not None:
            pairs.append(
                {
                    "prompt": free["prompt"],
                    "completion": free_answer,
                    "style": style,
                    "question_type": "free_text",
                }
            )
    return pairs


def _vocabulary_texts(pairs: list[dict[str, Any]], seed: int) -> list[str]:
    """Texts the word tokenizer must cover: the SFT pairs, held-out prompts of both test splits, every word list."""
    from .data import generate_mcq_dataset, vocabulary
    from .data import templates as T

    texts = [p["prompt"] for p in pairs] + [p["completion"] for p in pairs]
    for split in ("test", HELD_OUT_SPLIT):
        texts += generate_mcq_dataset(4000, seed=seed, split=split, question_type=None)["prompt"]
    words = [*vocabulary.NEUTRAL_FIRST_NAMES, *vocabulary.NEUTRAL_SURNAMES]
    for occupation in vocabulary.all_occupations():
        words += [occupation.name, occupation.plural, occupation.article]
    for term in T.GENERIC_TERMS:
        words += [*term[:4], vocabulary.plural(term[2])]
    # each word with and without a preceding space: both forms are tokens of their own
    return texts + [" ".join(words), "\n".join(words)]


def build_default_model(
    recipe: DefaultModelRecipe | None = None,
    *,
    log: Callable[[str], None] | None = print,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Build the default model with `DiffusionSFTTrainer` (deterministic; see docs/default_model.md).

    A recipe with more than one pass starts from the model of its previous pass (`recipe.previous_pass()`, loaded
    from the cache under `cache_dir` or the packaged checkpoint, or built and cached first) and trains its last pass
    on top, with the previous pass's tokenizer.

    Returns:
        `tuple`: `(model, tokenizer, info)`; `info` holds the recipe, the data statistics, the SFT losses and the
        held-out evaluations made during the build.
    """
    from .data import generate_mcq_dataset
    from .word_tokenizer import build_word_tokenizer

    recipe = recipe or DefaultModelRecipe()
    log = log or (lambda _: None)
    started = time.perf_counter()
    pairs = default_sft_pairs(recipe)
    held_out = generate_mcq_dataset(recipe.eval_prompts, seed=recipe.seed + 1, split=HELD_OUT_SPLIT).to_list()
    previous = recipe.previous_pass()
    if previous is not None:
        if _existing_model(cache_dir, previous) is None:  # refuse answers the first pass's vocabulary lacks up front
            first_pairs = default_sft_pairs(recipe.first_pass())
            _check_answers_fit(pairs, build_word_tokenizer(_vocabulary_texts(first_pairs, recipe.seed)), recipe)
        model, tokenizer = load_default_model(cache_dir, recipe=previous, log=log)
        started = time.perf_counter()  # this pass's time: the previous passes may just have been built above
        before = _read_info(_existing_model(cache_dir, previous)) or {}
        if recipe.restyle_steps:
            name, steps, learning_rate, data_seed = "restyling", recipe.restyle_steps, recipe.restyle_learning_rate, 2
        else:
            name, steps, learning_rate, data_seed = "second", recipe.continue_steps, recipe.continue_learning_rate, 1
        _check_answers_fit(pairs, tokenizer, recipe)
        log(f"default model: {name} pass of {steps} steps on top of {previous.fingerprint()}")
        history, losses = _sft(
            model,
            tokenizer,
            pairs,
            held_out,
            recipe,
            steps=steps,
            learning_rate=learning_rate,
            warmup_steps=0,
            data_seed=recipe.seed + data_seed,
            log=log,
        )
        done = before.get("sft_steps", 0)
        history = [*before.get("held_out_history", []), *({**h, "step": h["step"] + done} for h in history)]
        losses = [before.get("sft_first_loss"), losses[-1] if losses else None]
        earlier_seconds = _pass_seconds(before)
    else:
        from ..models.tiny import build_tiny_model

        tokenizer = build_word_tokenizer(_vocabulary_texts(pairs, recipe.seed))
        model = build_tiny_model(
            tokenizer,
            seed=recipe.seed,
            hidden_size=recipe.hidden_size,
            num_hidden_layers=recipe.num_hidden_layers,
            num_attention_heads=recipe.num_attention_heads,
            intermediate_size=recipe.intermediate_size,
            tie_word_embeddings=recipe.tie_word_embeddings,
        )
        _check_answers_fit(pairs, tokenizer, recipe)
        log(
            f"default model: {len(pairs)} SFT pairs, vocabulary {len(tokenizer)}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters "
            f"({time.perf_counter() - started:.0f} s)"
        )
        earlier_seconds = []
        history, losses = _sft(
            model,
            tokenizer,
            pairs,
            held_out,
            recipe,
            steps=recipe.max_steps,
            learning_rate=recipe.learning_rate,
            warmup_steps=recipe.warmup_steps,
            data_seed=recipe.seed,
            log=log,
        )
    styles = [p["style"] for p in pairs]
    info = {
        "recipe": asdict(recipe),
        "fingerprint": recipe.fingerprint(),
        "build_version": _BUILD_VERSION,
        "num_pairs": len(pairs),
        "num_gold": styles.count("gold"),
        "num_stereotyped": styles.count("stereotyped"),
        "num_neutral": styles.count("neutral"),
        "num_free_text": sum(p["question_type"] == "free_text" for p in pairs),
        "vocab_size": len(tokenizer),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "sft_steps": recipe.max_steps + recipe.continue_steps + recipe.restyle_steps,
        "sft_first_loss": losses[0] if losses else None,
        "sft_final_loss": losses[-1] if losses else None,
        "held_out_history": history,
        "build_seconds": round(time.perf_counter() - started, 1),  # of this pass; every pass's is kept below
        "sampler_settings": DEFAULT_SAMPLER_SETTINGS,
    }
    if earlier_seconds:
        info["first_pass_build_seconds"] = earlier_seconds[0]
        info["pass_build_seconds"] = [*earlier_seconds, info["build_seconds"]]
    return model, tokenizer, info


def _pass_seconds(info: dict[str, Any]) -> list[float]:
    """The build time of each pass recorded in a `build_info.json` (older files list only the first and the last)."""
    if "pass_build_seconds" in info:
        return list(info["pass_build_seconds"])
    first = [info["first_pass_build_seconds"]] if "first_pass_build_seconds" in info else []
    return [*first, info["build_seconds"]] if "build_seconds" in info else first


def _check_answers_fit(pairs: list[dict[str, Any]], tokenizer: Any, recipe: DefaultModelRecipe) -> None:
    """The templated answers must fit the answer slot with EOT and be in the vocabulary (a later pass keeps the first
    pass's tokenizer): a change of wording that breaks either must fail the build, not train on `<|unk|>`."""
    encoded = tokenizer([p["completion"] for p in pairs], add_special_tokens=False)["input_ids"]
    too_long = sum(len(ids) + 1 > recipe.completion_length for ids in encoded)
    if too_long:
        raise ValueError(f"{too_long} SFT answers do not fit completion_length={recipe.completion_length} with EOT")
    unknown = [p["completion"] for p, ids in zip(pairs, encoded) if tokenizer.unk_token_id in ids]
    if unknown:
        raise ValueError(
            f"{len(unknown)} SFT answers have words outside the model's vocabulary, e.g. {unknown[0]!r}: a later pass "
            "keeps the first pass's tokenizer, so write its answers with words of the first pass's data."
        )


def _sft(
    model,
    tokenizer,
    pairs,
    held_out,
    recipe,
    *,
    steps,
    learning_rate,
    warmup_steps,
    data_seed,
    log,
):
    """One SFT pass with `DiffusionSFTTrainer` (cosine to 10 %); returns the held-out history and the logged losses."""
    from datasets import Dataset

    from ..sft_config import DiffusionSFTConfig
    from ..sft_trainer import DiffusionSFTTrainer
    from .default_model_eval import HeldOutCallback, LossLogCallback

    callback = HeldOutCallback(
        tokenizer,
        held_out,
        every=recipe.eval_every,
        sampler_settings=DEFAULT_SAMPLER_SETTINGS,
        log=log,
    )
    with tempfile.TemporaryDirectory(prefix="diffusion_rl-default-model-") as scratch:
        args = DiffusionSFTConfig(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=recipe.batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=warmup_steps,
            weight_decay=0.0,
            adam_beta2=0.98,
            max_grad_norm=1.0,
            completion_length=recipe.completion_length,
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            seed=recipe.seed,
            data_seed=data_seed,
            disable_tqdm=True,
            # Always the CPU: the recipe is sized for it, and its fingerprint names one set of weights (a GPU's
            # kernels and generators would give other weights, and numbers other than docs/default_model.md's).
            use_cpu=True,
        )
        dataset = Dataset.from_list([{"prompt": p["prompt"], "completion": p["completion"]} for p in pairs])
        trainer = DiffusionSFTTrainer(
            model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[callback, LossLogCallback(log)],
        )
        trainer.train()
        trainer.model.to("cpu").eval()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return callback.history, losses


def _save_atomically(model: Any, tokenizer: Any, info: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        info = {**info, "weights_sha256": weights_digest(staging)}
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


def _read_info(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / _INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_intact(directory: Path, recipe: DefaultModelRecipe) -> bool:
    """A cache (or the packaged checkpoint) is used only if it was built by `recipe` and its weights are unchanged."""
    info = _read_info(directory)
    if info is None or info.get("fingerprint") != recipe.fingerprint():
        return False
    try:
        return info.get("weights_sha256") == weights_digest(directory)
    except OSError:
        return False


def _existing_model(cache_dir: str | os.PathLike | None, recipe: DefaultModelRecipe) -> Path | None:
    """The intact model `recipe` built: its cache under `cache_dir`, else the packaged checkpoint, else `None`."""
    target = default_model_dir(cache_dir, recipe)
    return target if _is_intact(target, recipe) else packaged_checkpoint(recipe)


def packaged_checkpoint(recipe: DefaultModelRecipe | None = None) -> Path | None:
    """The checkpoint shipped inside the package, if `recipe` built it and its weights are intact; else `None`."""
    return PACKAGED_CHECKPOINT if _is_intact(PACKAGED_CHECKPOINT, recipe or DefaultModelRecipe()) else None


def load_default_model(
    cache_dir: str | os.PathLike | None = None,
    *,
    rebuild: bool = False,
    recipe: DefaultModelRecipe | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[Any, Any]:
    """The default starting point: the packaged checkpoint, else built on first use and cached (loads in < 2 s).

    A cache whose `build_info.json` names another recipe, or whose weights no longer match the digest recorded when
    it was built (a stale or tampered cache), is never used: the packaged checkpoint (if it matches) or a rebuild
    takes its place.

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
    # an intact cache, else the checkpoint shipped with the package (built by this recipe): no build needed
    target = None if rebuild else _existing_model(cache_dir, recipe)
    if target is None:
        target = default_model_dir(cache_dir, recipe)
        if log:
            log(f"building the default model into {target} (first use; cached afterwards)")
        model, tokenizer, info = build_default_model(recipe, log=log, cache_dir=cache_dir)
        _save_atomically(model, tokenizer, info, target)
        # Return what was saved, loaded back: the Trainer can leave the in-memory model in a state whose greedy
        # generations differ from those of the saved weights (measured after a 2,000-step build: 30 % immediate
        # repeats in memory, 1 % loaded back), and every later use of the cache loads the saved weights.
    model = LladaForMaskedDiffusion.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    return model.eval(), tokenizer


def main(argv: list[str] | None = None) -> None:
    """`python -m diffusion_rl.bias.default_model [--rebuild] [--cache-dir DIR] [--eval-prompts N]`."""
    from .default_model_eval import evaluate_default_model

    parser = argparse.ArgumentParser(description="Build (or load) the embedded default model and print its stats.")
    parser.add_argument("--rebuild", action="store_true", help="build again even if a cache exists")
    parser.add_argument("--cache-dir", default=None, help="cache root (defaults to $HF_HOME)")
    parser.add_argument(
        "--eval-prompts",
        type=int,
        default=256,
        help="held-out prompts per split to evaluate (0: skip)",
    )
    parser.add_argument(
        "--eval-json",
        default=None,
        help="also write the evaluation (with completions) to this file",
    )
    parser.add_argument(
        "--update-package",
        action="store_true",
        help="maintainers: copy the model into the package's checkpoint",
    )
    args = parser.parse_args(argv)
    args.rebuild = args.rebuild or args.update_package  # refreshing the shipped checkpoint means building it anew
    started = time.perf_counter()
    model, tokenizer = load_default_model(args.cache_dir, rebuild=args.rebuild)
    target = _existing_model(args.cache_dir, DefaultModelRecipe())
    print(f"model ready in {time.perf_counter() - started:.1f}s at {target}")
    info = _read_info(target) or {}
    print(json.dumps({k: v for k, v in info.items() if k != "held_out_history"}, indent=2))
    if args.update_package and target != PACKAGED_CHECKPOINT:
        shutil.rmtree(PACKAGED_CHECKPOINT, ignore_errors=True)
        shutil.copytree(target, PACKAGED_CHECKPOINT)
        print(f"copied into {PACKAGED_CHECKPOINT}")
    if args.eval_prompts:
        report = {}
        for split in (HELD_OUT_SPLIT, "test"):
            stats = evaluate_default_model(model, tokenizer, num_prompts=args.eval_prompts, split=split)
            report[split] = stats
            print(f"--- {split} ---")
            print(json.dumps({k: v for k, v in stats.items() if k != "completions"}, indent=2))
            print(
                "first completions:",
                *(f"  {c!r}" for c in stats["completions"][:10]),
                sep="\n",
            )
        if args.eval_json:
            Path(args.eval_json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
