"""The KL budget (`kl_target`): the dual-ascent multiplier by hand, in the trainer's loss, and across a resume."""

import math

import pandas as pd
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.kl_controller import KLController
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.trainer import DiffusionReinforceTrainer


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def test_multiplier_is_projected_dual_ascent_on_the_step_mean():
    controller = KLController(kl_coef=0.02, kl_target=0.4, kl_target_lr=0.5)
    assert controller.coef == 0.02
    # Step 1: micro-batch KLs 0.1 and 0.3 (mean 0.2 < 0.4): the multiplier would go negative and stays at 0.
    controller.observe(0.1)
    controller.observe(0.3)
    controller.update()
    assert controller.multiplier == 0.0
    # Step 2: mean (1.0 + 1.4) / 2 = 1.2 -> 0 + 0.5 * (1.2 - 0.4) = 0.4; a NaN micro-batch says nothing.
    for kl in (1.0, float("nan"), 1.4):
        controller.observe(kl)
    controller.update()
    assert controller.multiplier == pytest.approx(0.4)
    assert controller.coef == pytest.approx(0.42)
    # Step 3: KL 0.2 -> 0.4 + 0.5 * (0.2 - 0.4) = 0.3: it falls back, never below kl_coef.
    controller.observe(0.2)
    controller.update()
    assert controller.multiplier == pytest.approx(0.3)
    # A step that observed nothing (no KL in the loss) leaves it alone.
    controller.update()
    assert controller.multiplier == pytest.approx(0.3)
    # The checkpointed state rebuilds the same controller (what Trainer does with ExportableState callbacks).
    state = controller.state()
    rebuilt = KLController(**state["args"])
    rebuilt.multiplier = state["attributes"]["multiplier"]
    assert rebuilt.coef == pytest.approx(controller.coef)


@pytest.mark.parametrize("bad", [dict(kl_target=-0.1), dict(kl_target_lr=float("inf")), dict(kl_coef=float("nan"))])
def test_controller_refuses_bad_numbers(bad):
    values = dict(kl_coef=0.0, kl_target=0.5, kl_target_lr=0.1) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        KLController(**values)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(kl_target=0.5), "kl_in='loss'"),  # the default kl_in is the seed's "reward"
        (dict(kl_in="loss", kl_target=-1.0), "kl_target"),
        (dict(kl_in="loss", kl_target=0.5, kl_target_lr=0.0), "kl_target_lr"),
        (dict(kl_in="loss", kl_target=float("nan")), "kl_target"),
    ],
)
def test_config_checks_the_budget(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        DiffusionReinforceConfig(output_dir=str(tmp_path), **overrides)


def _trainer(output_dir, tokenizer, **overrides) -> DiffusionReinforceTrainer:
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_generations=2,
        baseline="rloo",
        max_steps=4,
        learning_rate=5e-2,  # large, so that the KL leaves 0 within a step or two
        max_completion_length=8,
        block_length=8,
        steps=4,
        temperature=1.0,
        kl_in="loss",
        kl_coef=0.01,
        kl_target=0.0,  # every positive KL is over budget: the multiplier moves every step
        kl_target_lr=2.0,
        log_completions=True,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        estimator_variance_every=0,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    dataset = Dataset.from_dict({"prompt": [f"Describe person {i} at work." for i in range(4)]})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    return DiffusionReinforceTrainer(
        build_tiny_model(tokenizer, seed=0),
        length_reward,
        args=DiffusionReinforceConfig(**values),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )


def _logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def test_trainer_loss_uses_the_adapted_coefficient(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path / "out", tiny_tokenizer, save_strategy="no")
    trainer.train()
    logs = _logs(trainer)
    assert len(logs) == 4
    # The multiplier by hand from the logged KLs (each the mean of the step's two micro-batches).
    multiplier = 0.0
    for entry in logs:
        assert entry["kl_coef"] == pytest.approx(0.01 + multiplier, rel=1e-6, abs=1e-9)
        multiplier = max(0.0, multiplier + 2.0 * (entry["kl"] - 0.0))
    assert logs[-1]["kl_coef"] > 0.01  # the KL left 0 and the budget acted
    # Each micro-batch's loss is the seed's REINFORCE plus that step's coefficient times its mean KL.
    for entry in logs:
        table = pd.read_parquet(f"{trainer.args.output_dir}/completions/train_step_{entry['step']:07d}.parquet")
        halves = [table.iloc[:4], table.iloc[4:]]
        expected = sum(-(h["logp"] * h["advantage"]).mean() + entry["kl_coef"] * h["kl"].mean() for h in halves) / 2
        assert entry["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert trainer._kl_controller.multiplier == pytest.approx(multiplier)  # the update after the last step


def _lora_weights(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("restore_callbacks", [False, True])
def test_resume_restores_the_multiplier(tmp_path, tiny_tokenizer, restore_callbacks):
    straight = _trainer(tmp_path / "straight", tiny_tokenizer)
    straight.train()
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    resumed = _trainer(
        tmp_path / "resumed", tiny_tokenizer, restore_callback_states_from_checkpoint=restore_callbacks
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    coefs = lambda trainer: [e["kl_coef"] for e in _logs(trainer) if e["step"] > 2]  # noqa: E731
    assert coefs(resumed) == coefs(straight)
    assert not math.isclose(coefs(straight)[0], 0.01)  # step 3 used a multiplier the checkpoint had to carry
    expected, got = _lora_weights(straight), _lora_weights(resumed)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
