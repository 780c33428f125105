"""diffusion_rl: reinforcement-learning fine-tuning of masked diffusion language models on the Hugging Face stack.

Importing the package registers the native LLaDA model with the transformers ``Auto*`` classes (cheap), while the
heavier parts (trainer, rewards with GenBit, data generator) are imported lazily on first attribute access so that
``import diffusion_rl`` stays fast.
"""

import importlib
from typing import TYPE_CHECKING

from .models.llada import LladaConfig, LladaForMaskedDiffusion, convert_to_official, load_llada

__version__ = "0.1.0.dev0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "MaskedDiffusionSampler": ".sampling.sampler",
    "SamplerOutput": ".sampling.sampler",
    "build_tiny_model": ".models.tiny",
    "build_tiny_tokenizer": ".models.tiny",
    "GenBitReward": ".rewards.genbit",
    "KLReward": ".rewards.kl",
    "NeutralChoiceReward": ".rewards.choice",
    "DiffusionReinforceConfig": ".config",
    "DiffusionReinforceTrainer": ".trainer",
}

__all__ = [
    "LladaConfig",
    "LladaForMaskedDiffusion",
    "convert_to_official",
    "load_llada",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # for IDEs and type checkers
    from .config import DiffusionReinforceConfig
    from .models.tiny import build_tiny_model, build_tiny_tokenizer
    from .rewards.choice import NeutralChoiceReward
    from .rewards.genbit import GenBitReward
    from .rewards.kl import KLReward
    from .sampling.sampler import MaskedDiffusionSampler, SamplerOutput
    from .trainer import DiffusionReinforceTrainer
