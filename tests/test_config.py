"""DiffusionReinforceConfig: CPU-friendly defaults, the paper recipe, and validation errors."""

from pathlib import Path

import pytest
import trl
from transformers import HfArgumentParser

from diffusion_rl.config import DiffusionReinforceConfig

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "paper.yaml"


def make(**kwargs) -> DiffusionReinforceConfig:
    return DiffusionReinforceConfig(output_dir="unused", report_to="none", **kwargs)


def test_defaults_follow_the_seed_and_run_on_cpu():
    config = make()
    assert (config.steps, config.max_completion_length, config.block_length) == (128, 128, 32)
    assert config.cfg_scale == 0.0 and config.remasking == "low_confidence"
    assert config.learning_rate == 2e-5 and config.kl_coef == 0.1 and config.kl_in == "reward"
    assert config.baseline == "none" and config.num_generations == 1
    assert config.logprob_estimator == "one_step" and config.prompt_mask_prob == 0.15
    assert config.remove_unused_columns is False and config.bf16 is False


@pytest.mark.parametrize(("estimator", "expected"), [("one_step", 0.15), ("mc_elbo", 0.0), ("trajectory", 0.0)])
def test_prompt_mask_prob_default_depends_on_the_estimator(estimator, expected):
    assert make(logprob_estimator=estimator).prompt_mask_prob == expected
    assert make(logprob_estimator=estimator, prompt_mask_prob=0.0).prompt_mask_prob == 0.0


def test_valid_non_default_settings():
    config = make(
        baseline="group", num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        logprob_estimator="mc_elbo", logprob_samples=4, antithetic=True, kl_in="loss", kl_estimator="k3",
        max_completion_length=64, block_length=16, steps=8,
    )  # fmt: skip
    assert config.antithetic and config.baseline == "group"


def test_command_line_parsing():
    (config,) = HfArgumentParser(DiffusionReinforceConfig).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--reward_weights", "1", "0.5", "--baseline", "mean", "--steps", "64"]
    )
    assert config.reward_weights == [1.0, 0.5] and config.baseline == "mean" and config.steps == 64
    with pytest.raises(SystemExit):  # argparse rejects a name outside `choices`
        HfArgumentParser(DiffusionReinforceConfig).parse_args_into_dataclasses(
            ["--output_dir", "unused", "--baseline", "median"]
        )


def test_paper_recipe_parses_with_trl_parser():
    parser = trl.TrlParser((DiffusionReinforceConfig, trl.ModelConfig))
    config, model_config = parser.parse_args_and_config(["--config", str(RECIPE), "--bf16", "false"])
    assert (config.steps, config.block_length, config.max_completion_length) == (128, 32, 128)
    assert config.learning_rate == 2e-5 and config.cfg_scale == 0.0 and config.kl_coef == 0.1
    assert config.kl_in == "reward" and config.baseline == "none" and config.activation_checkpointing
    assert model_config.use_peft and model_config.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (model_config.lora_r, model_config.lora_alpha, model_config.lora_dropout) == (16, 32, 0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"baseline": "rloo"}, "num_generations >= 2"),
        ({"baseline": "group", "num_generations": 1}, "num_generations >= 2"),
        ({"num_generations_eval": 0}, "num_generations_eval must be"),
        ({"baseline": "rloo", "num_generations": 2, "num_generations_eval": 1}, "num_generations_eval >= 2"),
        ({"num_generations": 3, "per_device_train_batch_size": 4}, "multiple of num_generations=3"),
        ({"max_completion_length": 100, "block_length": 32}, "multiple of block_length"),
        ({"steps": 10}, "multiple of the number of blocks"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"baseline": "median"}, "Unknown baseline"),
        ({"logprob_estimator": "exact"}, "Unknown logprob_estimator"),
        ({"kl_in": "both"}, "Unknown kl_in"),
        ({"kl_estimator": "k2"}, "Unknown kl_estimator"),
        ({"remasking": "entropy"}, "Unknown remasking"),
        ({"antithetic": True}, "only applies to logprob_estimator='mc_elbo'"),
        ({"antithetic": True, "logprob_estimator": "mc_elbo", "logprob_samples": 3}, "must be even"),
        ({"logprob_estimator": "trajectory", "prompt_mask_prob": 0.1}, "cannot mask the prompt"),
        ({"prompt_mask_prob": 1.0}, r"\[0, 1\)"),
        ({"logprob_samples": 0}, "logprob_samples"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"temperature": -0.5}, "temperature"),
        ({"cfg_scale": -1.0}, "cfg_scale"),
        ({"max_prompt_length": 0}, "max_prompt_length"),
        ({"estimator_variance_every": -1}, "estimator_variance_every"),
        ({"num_completions_to_print": -1}, "num_completions_to_print"),
        ({"reward_weights": ["a"]}, "reward_weights"),
    ],
)
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
