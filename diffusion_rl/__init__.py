"""diffusion_rl: reinforcement-learning fine-tuning of masked diffusion language models on the Hugging Face stack.

Every public name is imported on first attribute access, so ``import diffusion_rl`` imports neither torch nor
transformers and the ``diffusion-rl`` command line answers ``--help`` at once. The native LLaDA model registers with
the transformers ``Auto*`` classes when `diffusion_rl.models` is imported: by ``import diffusion_rl.models``, by the
first use of ``diffusion_rl.LladaForMaskedDiffusion`` / ``load_llada``, and by everything that loads a model (the
trainers, the sampler, the default model). The gender-bias application's public names (`GenBitReward`,
`generate_mcq_dataset`, `evaluate_model`, ...) are re-exported here lazily from `diffusion_rl.bias`.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "LladaConfig": ".models.llada",
    "LladaForMaskedDiffusion": ".models.llada",
    "convert_to_official": ".models.llada",
    "load_llada": ".models.llada",
    "MaskedDiffusionSampler": ".sampling.sampler",
    "SamplerOutput": ".sampling.sampler",
    "build_tiny_model": ".models.tiny",
    "build_tiny_tokenizer": ".models.tiny",
    "load_default_model": ".bias.default_model",
    "GenBitReward": ".bias.rewards.genbit",
    "KLReward": ".rewards.kl",
    "NeutralChoiceReward": ".bias.rewards.choice",
    "RewardError": ".rewards.base",
    "DiffusionReinforceConfig": ".config",
    "DiffusionReinforceTrainer": ".trainer",
    "DiffusionSFTConfig": ".sft_config",
    "DiffusionSFTTrainer": ".sft_trainer",
    "HubPushError": ".trainer",
    "RolloutBatch": ".logprobs",
    "estimate_logprobs": ".logprobs",
    "compute_advantages": ".objectives",
    "policy_loss": ".objectives",
    "reinforce_loss": ".objectives",
    "generate_mcq_dataset": ".bias.data",
    "load_synthetic_subset": ".bias.data",
    "load_prompt_dataset": ".data",
    "load_bbq_gender": ".bias.data",
    "tokenize_prompts": ".data",
    "evaluate_model": ".bias.evaluation",
}

__all__ = [
    "DiffusionReinforceConfig",
    "DiffusionReinforceTrainer",
    "DiffusionSFTConfig",
    "DiffusionSFTTrainer",
    "GenBitReward",
    "HubPushError",
    "KLReward",
    "LladaConfig",
    "LladaForMaskedDiffusion",
    "MaskedDiffusionSampler",
    "NeutralChoiceReward",
    "RewardError",
    "RolloutBatch",
    "SamplerOutput",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "compute_advantages",
    "convert_to_official",
    "estimate_logprobs",
    "evaluate_model",
    "generate_mcq_dataset",
    "load_bbq_gender",
    "load_default_model",
    "load_llada",
    "load_prompt_dataset",
    "load_synthetic_subset",
    "policy_loss",
    "reinforce_loss",
    "tokenize_prompts",
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if TYPE_CHECKING:  # for IDEs and type checkers
    from .bias.data import generate_mcq_dataset, load_bbq_gender, load_synthetic_subset
    from .bias.default_model import load_default_model
    from .bias.evaluation import evaluate_model
    from .bias.rewards.choice import NeutralChoiceReward
    from .bias.rewards.genbit import GenBitReward
    from .config import DiffusionReinforceConfig
    from .data import load_prompt_dataset, tokenize_prompts
    from .logprobs import RolloutBatch, estimate_logprobs
    from .models.llada import LladaConfig, LladaForMaskedDiffusion, convert_to_official, load_llada
    from .models.tiny import build_tiny_model, build_tiny_tokenizer
    from .objectives import compute_advantages, policy_loss, reinforce_loss
    from .rewards.base import RewardError
    from .rewards.kl import KLReward
    from .sampling.sampler import MaskedDiffusionSampler, SamplerOutput
    from .sft_config import DiffusionSFTConfig
    from .sft_trainer import DiffusionSFTTrainer
    from .trainer import DiffusionReinforceTrainer, HubPushError
