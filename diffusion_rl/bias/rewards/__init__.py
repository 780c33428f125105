"""Rewards of the gender-bias application: GenBit, the gendered-language lexicon and the neutral-choice reward.

All follow TRL's signature ``reward(prompts, completions, **kwargs) -> list[float | None]``. Importing this package is
cheap: GenBit itself is imported when the first :class:`GenBitReward` is built.
"""

from .choice import NeutralChoiceReward, parse_choice
from .genbit import GenBitReward
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
    "NeutralChoiceReward",
    "gender_counts",
    "gendered_pronoun_rate",
    "gendered_word_rate",
    "lexical_metrics",
    "parse_choice",
    "pronoun_rate",
]
