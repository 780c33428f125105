"""The sampler settings a checkpoint was trained or measured with, read from the checkpoint folder.

A masked diffusion model is only as good as the settings it is sampled with: a model trained on 40-token answers
in one 40-token block, sampled with another canvas or block length, produces garbage. So a checkpoint may carry its
settings, and `diffusion-rl generate` / `evaluate` default to them. Looked up in this order:

1. `build_info.json["sampler_settings"]` (what `diffusion_rl.bias.default_model` writes next to its weights);
2. `generation_config.json`, only when it holds diffusion keys (`steps`, `gen_length`, `block_length`, ...): an
   autoregressive generation config's `temperature` says nothing about a diffusion sampler;
3. nothing (the caller falls back to the `DiffusionReinforceConfig` defaults).

Keys come back in the config's vocabulary (`max_completion_length`, not the sampler's `gen_length`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["SAMPLER_SETTING_NAMES", "stored_sampler_settings"]

# DiffusionReinforceConfig field names of the sampler settings a checkpoint may store.
SAMPLER_SETTING_NAMES = ("steps", "max_completion_length", "block_length", "temperature", "cfg_scale", "remasking")
# Sampler / other spellings -> config field name.
_ALIASES = {"gen_length": "max_completion_length"}
# At least one of these marks a generation config as a diffusion sampler's.
_DIFFUSION_KEYS = {"steps", "gen_length", "max_completion_length", "block_length", "remasking", "cfg_scale"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _normalise(settings: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in settings.items():
        name = _ALIASES.get(key, key)
        if name in SAMPLER_SETTING_NAMES and value is not None:
            out[name] = value
    return out


def stored_sampler_settings(model_or_path: Any) -> dict[str, Any]:
    """The sampler settings stored with a checkpoint (empty when it stores none).

    Args:
        model_or_path (`str`, `os.PathLike` or `PreTrainedModel`):
            A local checkpoint folder, or a model loaded with `from_pretrained` (its `name_or_path` is used; a Hub id
            that is not a local folder yields its in-memory `generation_config` only).

    Returns:
        `dict[str, Any]`: a subset of `SAMPLER_SETTING_NAMES` with its values.
    """
    if isinstance(model_or_path, str | os.PathLike):
        folder, generation_config = Path(model_or_path), None
    else:
        folder = Path(str(getattr(model_or_path, "name_or_path", "") or ""))
        generation_config = getattr(model_or_path, "generation_config", None)
    if str(folder) and folder.is_dir():
        built = _read_json(folder / "build_info.json").get("sampler_settings")
        if isinstance(built, dict) and _normalise(built):
            return _normalise(built)
        stored = _read_json(folder / "generation_config.json")
        if _DIFFUSION_KEYS & set(stored):
            return _normalise(stored)
    if generation_config is not None:
        stored = generation_config.to_dict()
        if _DIFFUSION_KEYS & set(stored):
            return _normalise(stored)
    return {}
