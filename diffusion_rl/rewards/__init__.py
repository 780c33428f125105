"""Reward functions with TRL's signature ``reward(prompts, completions, **kwargs) -> list[float | None]``.

The generic pieces live here (the protocol helpers and the KL reward); the gender-bias rewards (GenBit, lexicon,
neutral choice) are in `diffusion_rl.bias.rewards`.
"""

from .base import RewardError, RewardOutput, compute_rewards, reward_name
from .kl import KLReward, clean_prompt_kl, token_kl

__all__ = [
    "KLReward",
    "RewardError",
    "RewardOutput",
    "clean_prompt_kl",
    "compute_rewards",
    "reward_name",
    "token_kl",
]
