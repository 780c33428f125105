"""Resuming a seeded run from a checkpoint reproduces the uninterrupted run's adapter exactly (CPU)."""

import os

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.resume import IncompleteCheckpointError
from diffusion_rl.trainer import DiffusionReinforceTrainer


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def _trainer(output_dir, tokenizer) -> DiffusionReinforceTrainer:
    # 4 prompts x 2 generations, 2 micro-batches of 4 per step: 1 step per epoch, so 4 steps cross epochs (the
    # prompt order must also be reproduced) and randomness is everywhere (temperature, prompt masks, LoRA dropout).
    args = DiffusionReinforceConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_generations=2,
        baseline="rloo",
        max_steps=4,
        learning_rate=1e-2,
        max_completion_length=8,
        block_length=8,
        steps=4,
        temperature=1.0,
        prompt_mask_prob=0.3,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": [f"Describe person {i} at work." for i in range(4)]})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.1)
    return DiffusionReinforceTrainer(
        build_tiny_model(tokenizer, seed=0),
        length_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )


def _lora(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_tokenizer):
    straight = _trainer(tmp_path / "straight", tiny_tokenizer)
    straight.train()
    expected = _lora(straight)
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert (checkpoint / "diffusion_rng_state_0.pth").is_file()

    # Consume the global RNG differently from the straight run: the checkpoint must restore everything it needs.
    torch.rand(1000)
    resumed = _trainer(tmp_path / "resumed", tiny_tokenizer)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    got = _lora(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    straight_logs = [e for e in straight.state.log_history if "loss" in e and e["step"] > 2]
    resumed_logs = [e for e in resumed.state.log_history if "loss" in e and e["step"] > 2]
    assert [e["loss"] for e in straight_logs] == [e["loss"] for e in resumed_logs]

    # Without the sampler / estimator RNG state the resumed run would silently diverge (measured: max |delta| 2e-3):
    # it is refused, naming the file, before any step.
    os.remove(checkpoint / "diffusion_rng_state_0.pth")
    refused = _trainer(tmp_path / "refused", tiny_tokenizer)
    with pytest.raises(IncompleteCheckpointError, match=r"diffusion_rng_state_0\.pth is missing"):
        refused.train(resume_from_checkpoint=str(checkpoint))
    assert refused.state.global_step == 0
