"""The gender-bias application of the diffusion-RL core: the recipe of the seed paper, built on the public core API.

It uses the core the way a user's own task would: data (`bias.data`: the synthetic MCQ generator and BBQ), reward
functions with TRL's signature (`bias.rewards`: GenBit, the gendered-language lexicon, the neutral choice), the
evaluation metrics and report (`bias.evaluation`), the embedded default model (`bias.default_model`), the training
job (`bias.train`, recipes in `bias/recipes/`) and the `diffusion-rl` command line (`bias.cli`). Nothing in the core
imports this package (tests/test_architecture.py). Submodules are imported on first attribute access.
"""

import importlib
from typing import TYPE_CHECKING

# public name -> module that defines it (imported on first access, so `import diffusion_rl.bias` stays cheap)
_LAZY = {
    "BBQ_FEATURES": ".data",
    "FAMILIES": ".data",
    "generate_mcq_dataset": ".data",
    "load_bbq_gender": ".data",
    "load_synthetic_subset": ".data",
    "GenBitReward": ".rewards",
    "GenderedLanguageReward": ".rewards",
    "NeutralChoiceReward": ".rewards",
    "lexical_metrics": ".rewards",
    "parse_choice": ".rewards",
    "evaluate_model": ".evaluation",
    "report_evaluation": ".evaluation",
    "DEFAULT_SAMPLER_SETTINGS": ".default_model",
    "DefaultModelRecipe": ".default_model",
    "load_default_model": ".default_model",
}

__all__ = [
    "BBQ_FEATURES",
    "DEFAULT_SAMPLER_SETTINGS",
    "FAMILIES",
    "DefaultModelRecipe",
    "GenBitReward",
    "GenderedLanguageReward",
    "NeutralChoiceReward",
    "evaluate_model",
    "generate_mcq_dataset",
    "lexical_metrics",
    "load_bbq_gender",
    "load_default_model",
    "load_synthetic_subset",
    "parse_choice",
    "report_evaluation",
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:  # for IDEs and type checkers
    from .data import BBQ_FEATURES, FAMILIES, generate_mcq_dataset, load_bbq_gender, load_synthetic_subset
    from .default_model import DEFAULT_SAMPLER_SETTINGS, DefaultModelRecipe, load_default_model
    from .evaluation import evaluate_model, report_evaluation
    from .rewards import GenBitReward, GenderedLanguageReward, NeutralChoiceReward, lexical_metrics, parse_choice
