"""Resuming with changed settings: one `ChangedSettingsWarning` lists each changed field, `old -> new`, and whether it
takes effect (the optimizer's do not: the checkpoint restores them). Nothing is refused."""

import json
import warnings

import pytest
from datasets import Dataset
from peft import LoraConfig

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.run_settings import (
    RUN_SETTINGS_NAME,
    ChangedSettingsWarning,
    load_run_settings,
    save_run_settings,
    warn_changed_settings,
)
from diffusion_rl.trainer import DiffusionReinforceTrainer


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def short_reward(prompts, completions, **kwargs):
    return [-len(c) / 10.0 for c in completions]


def _trainer(output_dir, tokenizer, reward=length_reward, **overrides) -> DiffusionReinforceTrainer:
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        num_generations=2,
        max_steps=2,
        learning_rate=1e-3,
        max_completion_length=8,
        block_length=8,
        steps=2,
        save_strategy="steps",
        save_steps=1,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return DiffusionReinforceTrainer(
        build_tiny_model(tokenizer, seed=0, hidden_size=16, intermediate_size=32, num_hidden_layers=1),
        reward,
        args=DiffusionReinforceConfig(**values),
        train_dataset=Dataset.from_dict({"prompt": ["Describe a nurse.", "Describe a pilot."]}),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_tokenizer):
    """A 2-step run with a checkpoint after each step; returns its checkpoint-1."""
    out = tmp_path_factory.mktemp("first") / "out"
    _trainer(out, tiny_tokenizer).train()
    return out / "checkpoint-1"


def _resume(tmp_path, tokenizer, checkpoint, **overrides):
    trainer = _trainer(tmp_path / "resumed", tokenizer, **overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer, [w for w in caught if issubclass(w.category, ChangedSettingsWarning)]


def test_every_checkpoint_records_its_settings(first_run):
    settings = load_run_settings(str(first_run))
    assert settings["learning_rate"] == 1e-3 and settings["kl_coef"] == 0.1 and settings["num_generations"] == 2
    assert settings["rewards"] == ["length_reward", "kl"] and settings["reward_weights"] == [1.0, 1.0]
    assert settings["lr_scheduler_type"] == "linear"  # the enum's value, not its repr
    assert (first_run.parent / "checkpoint-2" / RUN_SETTINGS_NAME).is_file()
    assert not (first_run.parent / RUN_SETTINGS_NAME).exists()  # checkpoints only, not the final adapter folder


def test_resume_with_changed_learning_rate_and_kl_coef_warns_once(first_run, tmp_path, tiny_tokenizer):
    trainer, caught = _resume(tmp_path, tiny_tokenizer, first_run, learning_rate=5e-2, kl_coef=0.5)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "learning_rate: 0.001 -> 0.05 (NO EFFECT" in message
    assert "kl_coef: 0.1 -> 0.5 (takes effect" in message
    assert message.count("\n  ") == 2  # exactly the two changed fields
    assert "start a new run" in message
    # What the warning says: the optimizer ran on the checkpoint's rate (linear decay over 2 steps from 1e-3).
    assert trainer.lr_scheduler.base_lrs == [1e-3] * len(trainer.lr_scheduler.base_lrs)
    assert trainer.state.global_step == 2  # warned, not refused


def test_resume_with_the_same_settings_says_nothing(first_run, tmp_path, tiny_tokenizer):
    _, caught = _resume(tmp_path, tiny_tokenizer, first_run)
    assert caught == []


def test_changed_rewards_and_sampler_are_listed(first_run, tmp_path, tiny_tokenizer):
    _, caught = _resume(tmp_path, tiny_tokenizer, first_run, reward=short_reward, temperature=0.5, warmup_steps=1)
    (warning,) = caught
    message = str(warning.message)
    assert "rewards: ['length_reward', 'kl'] -> ['short_reward', 'kl'] (takes effect" in message
    assert "temperature: 1.0 -> 0.5 (takes effect" in message
    assert "warmup_steps: 0 -> 1 (takes effect from the next step: the schedule is rebuilt" in message


def test_without_restored_optimizer_the_learning_rate_takes_effect(tmp_path):
    save_run_settings(str(tmp_path), {"learning_rate": 1e-3, "kl_coef": 0.1})
    with pytest.warns(ChangedSettingsWarning) as record:
        message = warn_changed_settings(
            str(tmp_path), {"learning_rate": 1e-2, "kl_coef": 0.1}, optimizer_restored=False
        )
    assert len(record) == 1 and message == str(record[0].message)
    assert "learning_rate: 0.001 -> 0.01 (takes effect" in message and "kl_coef" not in message


def test_old_or_unreadable_checkpoints_are_not_compared(tmp_path):
    assert warn_changed_settings(str(tmp_path), {"learning_rate": 1.0}, optimizer_restored=True) is None
    (tmp_path / RUN_SETTINGS_NAME).write_text(json.dumps(["not", "a", "dict"]))
    assert warn_changed_settings(str(tmp_path), {"learning_rate": 1.0}, optimizer_restored=True) is None
    # A field only one side records (a newer version's, say) is not a change.
    save_run_settings(str(tmp_path), {"learning_rate": 1.0})
    assert warn_changed_settings(str(tmp_path), {"learning_rate": 1.0, "new": 3}, optimizer_restored=True) is None


def test_sft_checkpoints_record_and_compare_their_settings(tmp_path, tiny_tokenizer):
    from diffusion_rl.sft_config import DiffusionSFTConfig
    from diffusion_rl.sft_trainer import DiffusionSFTTrainer

    data = Dataset.from_dict({"prompt": ["Who is the nurse?"] * 2, "completion": ["A person."] * 2})

    def sft(name, **overrides):
        values = dict(
            output_dir=str(tmp_path / name),
            per_device_train_batch_size=2,
            max_steps=1,
            save_strategy="steps",
            save_steps=1,
            report_to=[],
            disable_tqdm=True,
        )
        values.update(overrides)
        model = build_tiny_model(tiny_tokenizer, seed=0, hidden_size=16, intermediate_size=32, num_hidden_layers=1)
        return DiffusionSFTTrainer(
            model, args=DiffusionSFTConfig(**values), train_dataset=data, processing_class=tiny_tokenizer
        )

    sft("first").train()
    checkpoint = tmp_path / "first" / "checkpoint-1"
    assert load_run_settings(str(checkpoint))["learning_rate"] == 2e-5
    with pytest.warns(ChangedSettingsWarning, match=r"learning_rate: 2e-05 -> 0\.001 \(NO EFFECT"):
        sft("resumed", learning_rate=1e-3, max_steps=2).train(resume_from_checkpoint=str(checkpoint))
