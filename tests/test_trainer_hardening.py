"""The trainer's side of issue 15, on the tiny LLaDA: one run per output folder, vanishing learning signals, NaN
losses, evaluation on its own RNG streams, the estimator-std metric once per optimizer step, TRL's left truncation.

Each training here is 1-3 optimizer steps of the 2-layer tiny model on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers.utils import logging as hf_logging

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.output_lock import LOCK_NAME, OutputDirLockedError
from diffusion_rl.signal_monitor import NonFiniteLossError, VanishingSignalWarning
from diffusion_rl.trainer import DiffusionReinforceTrainer

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [f"Describe person {i} at work." for i in range(4)]


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def none_reward(prompts, completions, **kwargs):
    return [None] * len(completions)


def constant_reward(prompts, completions, **kwargs):
    return [1.0] * len(completions)


def huge_reward(prompts, completions, **kwargs):
    return [1e38] * len(completions)


def _trainer(output_dir, tokenizer, reward=length_reward, cls=DiffusionReinforceTrainer, dataset=None, **overrides):
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        num_generations=2,
        max_steps=2,
        learning_rate=1e-2,
        max_completion_length=8,
        block_length=8,
        steps=2,
        temperature=1.0,
        baseline="none",
        kl_coef=0.0,
        estimator_variance_every=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return cls(
        build_tiny_model(tokenizer, seed=0),
        reward,
        args=DiffusionReinforceConfig(**values),
        train_dataset=dataset if dataset is not None else Dataset.from_dict({"prompt": PROMPTS}),
        eval_dataset=Dataset.from_dict({"prompt": PROMPTS[:2]}) if values.get("eval_strategy", "no") != "no" else None,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )


def _lora(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


# ------------------------------------------------------------------ one run per output_dir (15.5)

HOLDER = """
import sys, time
from diffusion_rl.output_lock import OutputDirLock
OutputDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_fails_before_loading_its_model(tmp_path, tiny_tokenizer):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = DiffusionReinforceConfig(
            output_dir=str(out), per_device_train_batch_size=2, num_generations=2, max_completion_length=8,
            block_length=8, steps=2, report_to=[],
        )  # fmt: skip
        # The model is a path that does not exist: the lock is checked before anything is loaded.
        with pytest.raises(OutputDirLockedError, match=rf"in use by another run \(pid {holder.pid} "):
            DiffusionReinforceTrainer(
                str(tmp_path / "no-model"), length_reward, args=args,
                train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tiny_tokenizer,
            )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()


def test_the_trainer_holds_the_lock_and_the_same_process_may_rebuild_it(tmp_path, tiny_tokenizer):
    out = tmp_path / "out"
    first = _trainer(out, tiny_tokenizer, max_steps=1)
    assert (out / LOCK_NAME).is_file() and first._output_lock.held
    second = _trainer(out, tiny_tokenizer, max_steps=1)  # a notebook cell run twice: same process, allowed
    second.train()
    assert (out / LOCK_NAME).is_file()  # still held: the process may write the report next


# ------------------------------------------------------------------ vanishing signals (15.2), NaN loss (15.1)


def test_a_reward_that_is_always_none_is_reported_each_window(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path / "out", tiny_tokenizer, reward=none_reward)
    with pytest.warns(VanishingSignalWarning, match=r"Every reward function returned None .* steps 1-1") as record:
        trainer.train()
    messages = [str(w.message) for w in record if issubclass(w.category, VanishingSignalWarning)]
    assert len(messages) == 2 and "steps 2-2" in messages[1]  # once per logging window
    assert all(float(t.abs().max()) == 0 for n, t in _lora(trainer).items() if "lora_B" in n)  # nothing learned


def test_one_reward_always_none_among_others(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path / "out", tiny_tokenizer, reward=[length_reward, none_reward], max_steps=1)
    with pytest.warns(VanishingSignalWarning, match=r"Reward 'none_reward' returned None for every sample"):
        trainer.train()


def test_identically_zero_advantages_are_reported(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path / "out", tiny_tokenizer, reward=constant_reward, baseline="rloo", max_steps=1)
    with pytest.warns(VanishingSignalWarning, match=r"Every advantage was exactly 0 in steps 1-1"):
        trainer.train()


def test_a_useful_signal_is_not_reported(tmp_path, tiny_tokenizer, recwarn):
    _trainer(tmp_path / "out", tiny_tokenizer, max_steps=1).train()
    assert not [w for w in recwarn if issubclass(w.category, VanishingSignalWarning)]


def test_a_non_finite_loss_stops_before_the_update(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path / "out", tiny_tokenizer, reward=huge_reward, max_steps=1, max_grad_norm=None)
    before = _lora(trainer)
    with pytest.raises(NonFiniteLossError, match=r"the loss is NaN or inf at step 1"):
        trainer.train()
    after = _lora(trainer)
    assert all(torch.equal(before[n], after[n]) for n in before)  # no NaN reached the weights


# ------------------------------------------------------------------ 15.9 and 15.8


def test_evaluation_does_not_change_the_training_run(tmp_path, tiny_tokenizer):
    plain = _trainer(tmp_path / "plain", tiny_tokenizer, prompt_mask_prob=0.3)
    plain.train()
    with_eval = _trainer(
        tmp_path / "eval", tiny_tokenizer, prompt_mask_prob=0.3, eval_strategy="steps", eval_steps=1,
        per_device_eval_batch_size=2,
    )  # fmt: skip
    with_eval.train()
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (plain, with_eval)]
    assert losses[0] == losses[1]
    assert all(torch.equal(a, b) for a, b in zip(_lora(plain).values(), _lora(with_eval).values()))
    # Every evaluation of a run draws the same noise.
    evals = [e["eval_loss"] for e in with_eval.state.log_history if "eval_loss" in e]
    assert len(evals) == 2 and math.isfinite(evals[0])


class CountingTrainer(DiffusionReinforceTrainer):
    std_calls = 0

    def _estimator_std(self, model, batch):
        type(self).std_calls += 1
        return super()._estimator_std(model, batch)


def test_estimator_std_is_measured_once_per_optimizer_step(tmp_path, tiny_tokenizer):
    CountingTrainer.std_calls = 0
    trainer = _trainer(
        tmp_path / "out", tiny_tokenizer, cls=CountingTrainer, gradient_accumulation_steps=2,
        estimator_variance_every=1, max_steps=2,
    )  # fmt: skip
    trainer.train()
    assert CountingTrainer.std_calls == 2  # 2 steps x 2 micro-batches: measured on the first micro-batch of each
    assert sum("logprob/estimator_std" in e for e in trainer.state.log_history) == 2


def test_max_prompt_length_left_truncates_with_one_warning(tmp_path, tiny_tokenizer, caplog):
    sentence = "Describe, in a long and winding sentence, person number {} at work."
    long = Dataset.from_dict({"prompt": [sentence.format(i) for i in range(4)]})
    # 37 tokens each, cut to 24: above the template's own 14 tokens (a limit below them is refused).
    trainer = _trainer(tmp_path / "out", tiny_tokenizer, dataset=long, max_prompt_length=24, max_steps=1)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            trainer.train()
    finally:
        hf_logging.disable_propagation()
    assert trainer.state.global_step == 1
    assert caplog.text.count("longer than max_prompt_length=24 tokens") == 1
    assert "left-truncated" in caplog.text


def test_a_reward_editing_the_kl_in_place_changes_neither_the_next_reward_nor_the_logged_kl(tmp_path, tiny_tokenizer):
    seen = {}

    def scaling_reward(prompts, completions, kl=None, **kwargs):
        kl.mul_(-100.0)  # in place: it used to reach every later reward and the `kl` metric
        return [0.0] * len(completions)

    def recording_reward(prompts, completions, kl=None, **kwargs):
        seen["kl"] = kl.detach().clone()
        return [len(c) / 10.0 for c in completions]

    trainer = DiffusionReinforceTrainer(
        build_tiny_model(tiny_tokenizer, seed=0),
        [scaling_reward, recording_reward],
        args=DiffusionReinforceConfig(
            output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2, max_steps=1,
            max_completion_length=8, block_length=8, steps=2, kl_coef=0.1, estimator_variance_every=0,
            logging_steps=1, report_to=[], disable_tqdm=True, seed=0,
        ),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tiny_tokenizer,
        # A random (non-zero) LoRA B: the KL is not trivially 0 at the first step.
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )  # fmt: skip
    trainer.train()
    assert (seen["kl"] > 0).all()  # the KL itself, not the first reward's scaled copy
    logged = next(entry["kl"] for entry in trainer.state.log_history if "kl" in entry)
    assert logged == pytest.approx(seen["kl"].mean().item(), rel=1e-5)


def test_the_reward_kl_does_not_depend_on_the_estimator(tmp_path, tiny_tokenizer):
    # The seed's KL-in-reward used to be read off the estimator's masked inputs: it changed with the estimator and,
    # under prompt masking, with every draw. Now it is one deterministic pair on the clean prompt (issue 15.9).
    seen = {}

    def recording_reward(prompts, completions, kl=None, **kwargs):
        seen.setdefault(name, kl.detach().clone())
        return [len(c) / 10.0 for c in completions]

    for name, estimator in (("one_step", dict(prompt_mask_prob=0.5)), ("mc_elbo", dict(logprob_estimator="mc_elbo"))):
        trainer = DiffusionReinforceTrainer(
            build_tiny_model(tiny_tokenizer, seed=0),
            recording_reward,
            args=DiffusionReinforceConfig(
                output_dir=str(tmp_path / name), per_device_train_batch_size=2, num_generations=2, max_steps=1,
                max_completion_length=8, block_length=8, steps=2, kl_coef=0.1, estimator_variance_every=0,
                report_to=[], disable_tqdm=True, seed=0, **estimator,
            ),
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
            processing_class=tiny_tokenizer,
            # A random (non-zero) LoRA B: the KL is not trivially 0 at the first step.
            peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )  # fmt: skip
        trainer.train()
    assert (seen["one_step"] > 0).all()
    torch.testing.assert_close(seen["one_step"], seen["mc_elbo"], rtol=0, atol=0)
