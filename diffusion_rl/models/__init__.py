"""LLaDA in the native transformers layout, conversion to/from official checkpoints, and the embedded tiny model."""

from .llada import CheckpointNotFoundError, LladaConfig, LladaForMaskedDiffusion, convert_to_official, load_llada

__all__ = ["CheckpointNotFoundError", "LladaConfig", "LladaForMaskedDiffusion", "convert_to_official", "load_llada"]
