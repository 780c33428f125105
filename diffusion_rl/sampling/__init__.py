"""Masked-diffusion sampling: the exact LLaDA sampler and its opt-in approximate fast modes."""

from .sampler import MaskedDiffusionSampler, SamplerOutput
from .schedule import block_layout, num_transfer_tokens

__all__ = ["MaskedDiffusionSampler", "SamplerOutput", "block_layout", "num_transfer_tokens"]
