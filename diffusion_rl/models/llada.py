"""LLaDA as a native transformers model: ``LlamaForCausalLM`` with bidirectional attention.

LLaDA (Nie et al., 2025, arXiv 2502.09992) is a Llama-3-style decoder trained as a masked diffusion model: the only
architectural difference is that attention is not causal. The official checkpoints ship remote code that does not run
on transformers 5; instead we reuse the maintained Llama implementation (SDPA / flash attention, PEFT, DeepSpeed,
``device_map``, quantisation all work) and rename the official tensors on load.

What differs from a causal LM:

- ``config.is_causal`` is always ``False``: transformers then builds a bidirectional (key-padding only) mask, and we
  also clear the per-module ``is_causal`` flag so SDPA never falls back to its causal kernel when no mask is given.
- logits at position ``i`` predict the token *at* ``i`` (the masked position), not ``i + 1``: there is no shift
  anywhere, so do not use the inherited ``labels=`` loss (it shifts) nor ``generate`` (it is autoregressive); use
  ``diffusion_rl.MaskedDiffusionSampler``.
"""

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import save_torch_state_dict
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from .conversion import (
    OFFICIAL_TO_NATIVE,
    convert_state_dict,
    convert_target_modules,
    is_official_config,
    native_config_to_official,
    official_config_to_native,
)

# LLaDA-8B special token ids (GSAI-ML/LLaDA-8B-Instruct tokenizer).
LLADA_MASK_TOKEN_ID = 126336
LLADA_EOS_TOKEN_ID = 126081  # <|endoftext|>, also the padding token
LLADA_EOT_TOKEN_ID = 126348  # <|eot_id|>, ends an assistant turn
LLADA_BOS_TOKEN_ID = 126080  # <|startoftext|>


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint could not be found locally nor downloaded."""


class LladaConfig(LlamaConfig):
    r"""
    Configuration of a LLaDA masked diffusion model in the native Llama layout. Defaults reproduce LLaDA-8B.

    Accepts either native ``LlamaConfig`` keys or the upstream LLaDA (OLMo-style) keys (``d_model``, ``n_layers``,
    ``n_heads``, ``n_kv_heads``, ``mlp_hidden_size``, ``embedding_size``, ``max_sequence_length``, ``weight_tying``
    ...), so an official ``config.json`` loads directly; upstream keys win over native ones when both are given.
    Upstream features the Llama block cannot express (ALiBi, biases, non-llama blocks, non-SiLU activations) raise
    a ``ValueError``.

    Args:
        mask_token_id (`int`, *optional*, defaults to `126336`):
            Id of the mask token (``<|mdm_mask|>``) that marks positions to denoise.
        eot_token_id (`int`, *optional*, defaults to `126348`):
            Id of the end-of-turn token (``<|eot_id|>``); samplers treat it like EOS when trimming completions.
        is_causal (`bool`, *optional*, defaults to `False`):
            Must stay ``False``: LLaDA attends bidirectionally.
    """

    model_type = "llada"
    default_theta = 500000.0

    vocab_size: int = 126464
    hidden_size: int = 4096
    intermediate_size: int = 12288
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    use_cache: bool = False
    pad_token_id: int | None = LLADA_EOS_TOKEN_ID
    bos_token_id: int | None = LLADA_BOS_TOKEN_ID
    eos_token_id: int | list[int] | None = LLADA_EOS_TOKEN_ID
    mask_token_id: int = LLADA_MASK_TOKEN_ID
    eot_token_id: int | None = LLADA_EOT_TOKEN_ID
    is_causal: bool = False

    def __post_init__(self, **kwargs):
        # Keys that are dataclass fields are already assigned; upstream-only keys (d_model, n_layers ...) arrive here.
        if is_official_config(kwargs):
            translated, kwargs = official_config_to_native(kwargs), {}
            for key, value in translated.items():
                if key in self.__dataclass_fields__:
                    setattr(self, key, value)
                else:
                    kwargs[key] = value
        kwargs.pop("auto_map", None)  # never point back to the (transformers-4-only) remote code
        if self.is_causal:
            raise ValueError("LladaConfig(is_causal=True) is not supported: LLaDA uses bidirectional attention.")
        super().__post_init__(**kwargs)


class LladaForMaskedDiffusion(LlamaForCausalLM):
    """LLaDA masked diffusion model: a Llama decoder with bidirectional attention and an unshifted LM head.

    ``forward(input_ids, attention_mask=None).logits`` has shape ``(B, L, V)``; ``logits[:, i]`` is the distribution of
    the token at position ``i``. ``attention_mask`` is a key-padding mask (left padding is harmless: RoPE is relative).
    ``from_pretrained`` accepts native checkpoints and the official ``model.transformer.*`` layout (single file or
    sharded); ``save_pretrained`` always writes the native layout, ``convert_to_official`` the upstream one.
    """

    config_class = LladaConfig

    def __init__(self, config: LladaConfig):
        super().__init__(config)
        # The model forward passes config.is_causal down as a kwarg, but LlamaAttention hard-codes is_causal=True and
        # SDPA / flash attention fall back to that flag when a layer is called directly (e.g. by cached fast paths)
        # with no mask: clear it so every entry point is bidirectional.
        for layer in self.model.layers:
            layer.self_attn.is_causal = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        # Official tensor names are renamed on load; the patterns never match native names, so passing them always is
        # harmless. User key_mapping entries are applied too.
        kwargs["key_mapping"] = {**OFFICIAL_TO_NATIVE, **(kwargs.get("key_mapping") or {})}
        # transformers 5 turns Hub kernels on by default when the `kernels` package is installed; on a GPU,
        # `model.train()` then re-kernelizes and downloads `kernels-community/rotary`, which fails offline (seen on an
        # H200) and swaps in modules whose bidirectional parity nobody here verified. Opt in with use_kernels=True.
        kwargs.setdefault("use_kernels", False)
        result = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = result[0] if isinstance(result, tuple) else result
        # transformers would revert the renaming on save_pretrained; we want the native layout on disk.
        model._weight_conversions = []
        return result


def check_local_checkpoint(name_or_path: str | os.PathLike) -> Path | None:
    """The checkpoint directory that `name_or_path` names, or `None` for a Hub id (nothing is loaded).

    A path is local when it is absolute, starts with `.` or `~`, or exists. Callers that parse a command line run
    this before anything else, so that a mistyped path is reported as such (and not as a later, unrelated error).

    Raises:
        CheckpointNotFoundError: the local path is not a directory, or has no `config.json`.
    """
    path = Path(name_or_path).expanduser()
    if not (path.is_absolute() or str(name_or_path).startswith((".", "~")) or path.exists()):
        return None
    if not path.is_dir():
        raise CheckpointNotFoundError(
            f"No checkpoint directory at {str(path)!r}; pass the folder of a downloaded LLaDA checkpoint (e.g. "
            "`hf download GSAI-ML/LLaDA-8B-Instruct --local-dir ./llada`)."
        )
    if not (path / "config.json").is_file():
        raise CheckpointNotFoundError(f"{str(path)!r} has no config.json; is it a LLaDA checkpoint directory?")
    return path


def load_llada(name_or_path: str | os.PathLike, **from_pretrained_kwargs: Any) -> LladaForMaskedDiffusion:
    """Load a LLaDA checkpoint (official or native layout, local directory or Hub id) without remote code.

    Args:
        name_or_path (`str` or `os.PathLike`):
            Local directory, or Hub id such as ``"GSAI-ML/LLaDA-8B-Instruct"``.
        **from_pretrained_kwargs:
            Forwarded to ``from_pretrained`` (``dtype``, ``device_map``, ``attn_implementation``, ``revision`` ...).

    Returns:
        `LladaForMaskedDiffusion`

    Raises:
        CheckpointNotFoundError: (a ``FileNotFoundError``) when a local path does not exist or a Hub id cannot be
            downloaded (offline, unknown id, no access).
    """
    if from_pretrained_kwargs.pop("trust_remote_code", False):
        raise ValueError("load_llada never runs remote code; drop trust_remote_code (the native model is used).")
    path = check_local_checkpoint(name_or_path)
    if path is not None:
        return LladaForMaskedDiffusion.from_pretrained(path, **from_pretrained_kwargs)
    try:
        return LladaForMaskedDiffusion.from_pretrained(str(name_or_path), **from_pretrained_kwargs)
    except OSError as err:  # transformers raises OSError subclasses for offline / unknown / gated repositories
        raise CheckpointNotFoundError(
            f"cannot download {str(name_or_path)!r}: {err}; pass a local path to a downloaded checkpoint instead "
            "(e.g. `hf download GSAI-ML/LLaDA-8B-Instruct --local-dir ./llada`)."
        ) from err


def _is_peft_model(obj: Any) -> bool:
    return hasattr(obj, "peft_config") and hasattr(obj, "get_base_model")


def convert_to_official(
    model_or_state_dict: "LladaForMaskedDiffusion | torch.nn.Module | dict[str, torch.Tensor]",
    save_directory: str | os.PathLike | None = None,
    *,
    max_shard_size: int | str = "5GB",
) -> dict[str, torch.Tensor]:
    """Convert a native model, a PEFT LoRA model or a state dict to the upstream LLaDA layout.

    - ``LladaForMaskedDiffusion``: returns the full state dict with upstream names (``model.transformer.blocks.0.
      attn_out.weight`` ...). With ``save_directory``, writes an upstream-style ``config.json`` (``d_model``,
      ``n_layers``, ``auto_map`` to ``LLaDAModelLM`` ...) and (sharded) ``model.safetensors``.
    - ``PeftModel`` wrapping one: returns the adapter state dict with upstream names (``o_proj`` -> ``attn_out``). With
      ``save_directory``, writes ``adapter_model.safetensors`` and ``adapter_config.json`` with upstream
      ``target_modules``.
    - ``dict``: renames keys of full or adapter state dicts (``base_model.model.`` prefixes are kept); with
      ``save_directory``, writes the tensors only (``adapter_model.safetensors`` when LoRA keys are present,
      ``model.safetensors`` otherwise).

    The reverse direction is ``conversion.convert_state_dict(state_dict, to="native")``; official model directories
    load directly with ``load_llada`` / ``from_pretrained``.

    Args:
        model_or_state_dict (`LladaForMaskedDiffusion`, `PeftModel` or `dict[str, torch.Tensor]`):
            What to convert.
        save_directory (`str` or `os.PathLike`, *optional*):
            Where to write the converted files.
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`):
            Shard size of the written full-model safetensors.

    Returns:
        `dict[str, torch.Tensor]`: the state dict with upstream names (tensors are shared, not copied).
    """
    if _is_peft_model(model_or_state_dict):
        from peft import get_peft_model_state_dict

        peft_model = model_or_state_dict
        state_dict = convert_state_dict(get_peft_model_state_dict(peft_model), to="official")
        if save_directory is not None:
            from safetensors.torch import save_file

            out = Path(save_directory)
            out.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, out / "adapter_model.safetensors")
            peft_config = copy.deepcopy(peft_model.peft_config[peft_model.active_adapter])
            if peft_config.target_modules is not None:
                targets = peft_config.target_modules
                targets = sorted(targets) if isinstance(targets, set) else targets
                peft_config.target_modules = convert_target_modules(targets, to="official")
            peft_config.save_pretrained(out)
        return state_dict

    if isinstance(model_or_state_dict, LladaForMaskedDiffusion):
        model = model_or_state_dict
        state_dict = dict(model.state_dict())
        if model.config.tie_word_embeddings:
            state_dict.pop("lm_head.weight", None)  # upstream ``weight_tying`` reuses wte
        state_dict = convert_state_dict(state_dict, to="official")
        if save_directory is not None:
            out = Path(save_directory)
            out.mkdir(parents=True, exist_ok=True)
            config = native_config_to_official(model.config)
            config["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
            (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            save_torch_state_dict({k: v.detach() for k, v in state_dict.items()}, out, max_shard_size=max_shard_size)
        return state_dict

    if isinstance(model_or_state_dict, dict):
        state_dict = convert_state_dict(model_or_state_dict, to="official")
        if save_directory is not None:
            out = Path(save_directory)
            out.mkdir(parents=True, exist_ok=True)
            tensors = {k: v.detach() for k, v in state_dict.items()}
            if any(".lora_" in k for k in state_dict):
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in tensors.items()}, out / "adapter_model.safetensors")
            else:
                save_torch_state_dict(tensors, out, max_shard_size=max_shard_size)
        return state_dict

    raise TypeError(
        "convert_to_official expects a LladaForMaskedDiffusion, a PeftModel wrapping one, or a state dict; got "
        f"{type(model_or_state_dict).__name__}."
    )


AutoConfig.register(LladaConfig.model_type, LladaConfig, exist_ok=True)
AutoModelForCausalLM.register(LladaConfig, LladaForMaskedDiffusion, exist_ok=True)
# Upstream maps AutoModel to the LM class too (LLaDA's README loads it with AutoModel), so mirror that.
AutoModel.register(LladaConfig, LladaForMaskedDiffusion, exist_ok=True)
