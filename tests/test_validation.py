"""Every numeric field of every config is checked for type, finiteness and range, naming the field (issue 15.1).

The fields are enumerated from the dataclasses, so a new numeric field that `__post_init__` forgets to check makes
these tests fail: feeding it NaN, inf, a string or a `bool` must raise a `ValueError` that names it.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.sft_config import DiffusionSFTConfig
from diffusion_rl.validation import check_float, check_float_list, check_int, check_training_arguments

CONFIGS = {"reinforce": DiffusionReinforceConfig, "sft": DiffusionSFTConfig}
# Small valid settings, so that one bad field is the only problem.
BASE = {
    "reinforce": dict(max_completion_length=8, block_length=8, steps=2, per_device_train_batch_size=2),
    "sft": {},
}


def _numeric_fields(config_class) -> list[tuple[str, bool]]:
    """(name, is_float) for every int/float field (lists of floats too)."""
    out = []
    for f in dataclasses.fields(config_class):
        kind = str(f.type)
        if "bool" in kind or not ("int" in kind or "float" in kind):
            continue
        out.append((f.name, "float" in kind))
    return out


def _cases():
    for key, config_class in CONFIGS.items():
        for name, is_float in _numeric_fields(config_class):
            bad = ["3", True] + ([math.nan, math.inf, -math.inf] if is_float else [2.5])
            for value in bad:
                if name == "reward_weights":
                    value = [value] if not isinstance(value, str) else value
                yield pytest.param(key, name, value, id=f"{key}-{name}-{value!r}")


def make(key: str, tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), report_to=[], **BASE[key])
    values.update(overrides)
    return CONFIGS[key](**values)


@pytest.mark.parametrize(("key", "name", "value"), list(_cases()))
def test_every_numeric_field_rejects_non_finite_and_mistyped_values(key, name, value, tmp_path):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        make(key, tmp_path, **{name: value})


def test_the_enumeration_sees_the_fields_of_both_configs():
    names = {key: {n for n, _ in _numeric_fields(c)} for key, c in CONFIGS.items()}
    assert {"learning_rate", "max_grad_norm", "temperature", "kl_coef", "reward_weights"} <= names["reinforce"]
    assert {"learning_rate", "mask_eps", "completion_length"} <= names["sft"]


@pytest.mark.parametrize("key", list(CONFIGS))
@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("learning_rate", 0.0, r"learning_rate must be > 0"),
        ("learning_rate", -1e-5, r"learning_rate must be > 0"),
        ("max_steps", 0, r"max_steps=0 is ambiguous"),
        ("max_steps", -2, r"max_steps must be an integer >= -1"),
        ("num_train_epochs", 0, r"num_train_epochs=0 with max_steps=-1 trains no step"),
        ("adam_beta2", 1.0, r"adam_beta2 must be in \[0, 1\)"),
        ("per_device_train_batch_size", 0, r"per_device_train_batch_size must be a positive integer"),
        ("gradient_accumulation_steps", 0, r"gradient_accumulation_steps must be a positive integer"),
        ("warmup_steps", -1, r"warmup_steps must be >= 0"),
        ("seed", -1, r"seed must be an integer >= 0"),
    ],
)
def test_training_arguments_ranges(key, field, value, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        make(key, tmp_path, **{field: value})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"reward_weights": [math.nan]}, r"reward_weights\[0\] must be a finite number, got nan"),
        ({"reward_weights": [1.0, math.inf]}, r"reward_weights\[1\] must be a finite number"),
        ({"reward_weights": "1.0"}, r"reward_weights must be a list of numbers"),
        ({"reward_weights": [0.0, 0]}, r"every reward weight is 0"),
        ({"antithetic": "false"}, r"antithetic must be True or False, got str 'false'"),
        ({"log_completions": 1}, r"log_completions must be True or False"),
        ({"logprob_recompute": "yes"}, r"logprob_recompute must be True or False or None"),
        ({"steps": True}, r"steps must be an integer, got bool True"),
        ({"temperature": "0.7"}, r"temperature must be a number, got str '0.7'"),
        ({"sampler_seed": -3}, r"sampler_seed must be an integer >= 0"),
        ({"max_grad_norm": math.nan}, r"max_grad_norm must be a finite number"),
        ({"kl_coef": math.inf}, r"kl_coef must be a finite number"),
    ],
)
def test_reinforce_config_values(overrides, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        make("reinforce", tmp_path, **overrides)


def test_mean_baseline_with_a_batch_of_one_is_refused(tmp_path):
    # The mean is taken over each per-device batch: a batch of one is its own baseline and every advantage is 0.
    with pytest.raises(ValueError, match=r"baseline='mean' .* every advantage is exactly 0"):
        make("reinforce", tmp_path, baseline="mean", per_device_train_batch_size=1)
    assert make("reinforce", tmp_path, baseline="mean", per_device_train_batch_size=2).baseline == "mean"


def test_valid_values_pass(tmp_path):
    config = make("reinforce", tmp_path, reward_weights=[1, -0.5], max_grad_norm=None, learning_rate=1e-4)
    assert config.reward_weights == [1, -0.5]
    make("sft", tmp_path, max_grad_norm=0.0, eval_steps=None, save_total_limit=0)


def test_checkers_directly():
    check_int("n", 3, minimum=1)
    check_float("x", 0.5, minimum=0.0, maximum=1.0, max_inclusive=False)
    check_float_list("w", (1, 2.5))
    check_int("n", None, allow_none=True)
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\), got 1"):
        check_float("x", 1, minimum=0.0, maximum=1.0, max_inclusive=False)
    with pytest.raises(ValueError, match=r"n must be an integer, got float 2.0"):
        check_int("n", 2.0)

    class Args:  # any object with TrainingArguments-like fields; unknown fields are skipped
        learning_rate = float("nan")

    with pytest.raises(ValueError, match=r"learning_rate must be a finite number, got nan"):
        check_training_arguments(Args())
