"""Customising DiffusionReinforceTrainer: a custom reward and an overridden hook.

- `neutral_pronoun_reward` is a plain function with TRL's reward signature; the dataset's other columns (here
  `occupation`) arrive as keyword arguments.
- `ClippedAdvantageTrainer` overrides the `_compute_advantages` hook to clip advantages to [-1, 1] (a cheap guard
  against one outlier reward dominating a small batch); every other stage is the library's.

Run on the embedded tiny model (a few seconds on CPU):

    python examples/custom_trainer.py
"""

import re

import torch
from datasets import Dataset
from peft import LoraConfig

from diffusion_rl import DiffusionReinforceConfig, DiffusionReinforceTrainer, build_tiny_model, build_tiny_tokenizer

_GENDERED = re.compile(r"\b(he|she|him|her|his|hers)\b", re.IGNORECASE)
_NEUTRAL = re.compile(r"\b(they|them|their|theirs)\b", re.IGNORECASE)


def neutral_pronoun_reward(prompts, completions, occupation=None, **kwargs) -> list[float]:
    """+1 per neutral pronoun, -1 per gendered one, per completion (string completions)."""
    return [float(len(_NEUTRAL.findall(c)) - len(_GENDERED.findall(c))) for c in completions]


class ClippedAdvantageTrainer(DiffusionReinforceTrainer):
    """REINFORCE with advantages clipped to [-1, 1]."""

    def _compute_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return super()._compute_advantages(rewards).clamp(-1.0, 1.0)


def build_trainer(model, tokenizer, args: DiffusionReinforceConfig) -> ClippedAdvantageTrainer:
    occupations = ["nurse", "engineer", "teacher", "pilot"]
    dataset = Dataset.from_dict(
        {
            "prompt": [f"Write one sentence about a {o} and their day." for o in occupations],
            "occupation": occupations,
        }
    )
    return ClippedAdvantageTrainer(
        model,
        neutral_pronoun_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )


def main() -> None:
    tokenizer = build_tiny_tokenizer()
    args = DiffusionReinforceConfig(
        output_dir="outputs/custom_trainer",
        per_device_train_batch_size=4,
        num_generations=2,
        baseline="group",
        max_steps=4,
        max_completion_length=16,
        block_length=8,
        steps=4,
        temperature=1.0,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
    )
    trainer = build_trainer(build_tiny_model(tokenizer), tokenizer, args)
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-2].items() if k in ("reward", "kl", "loss")})


if __name__ == "__main__":
    main()
