"""Reward functions with TRL's signature ``reward(prompts, completions, **kwargs) -> list[float | None]``.

Importing this package is cheap: GenBit itself is imported when the first :class:`GenBitReward` is built.
"""

from .base import RewardError, RewardOutput, compute_rewards, reward_name
from .choice import NeutralChoiceReward, parse_choice
from .genbit import GenBitReward
from .kl import KLReward, token_kl
from .lexicon import (
    GenderedLanguageReward,
    gender_counts,
    gendered_pronoun_rate,
    gendered_word_rate,
    lexical_metrics,
    pronoun_rate,
)

__all__ = [
    "GenBitReward",
    "GenderedLanguageReward",
    "KLReward",
    "NeutralChoiceReward",
    "RewardError",
    "RewardOutput",
    "compute_rewards",
    "gender_counts",
    "gendered_pronoun_rate",
    "gendered_word_rate",
    "lexical_metrics",
    "parse_choice",
    "pronoun_rate",
    "reward_name",
    "token_kl",
]
