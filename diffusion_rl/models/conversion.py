"""Name and config mapping between the official LLaDA checkpoints and the native transformers Llama layout.

The official LLaDA release (GSAI-ML/LLaDA-8B-*) ships OLMo-style remote code (``LLaDAModelLM``) whose weights live
under ``model.transformer.*``. Architecturally it is a Llama decoder without the causal mask, so we load it into
``LlamaForCausalLM`` with ``is_causal=False`` and only rename tensors. Every mapping below is a regular expression with
at most one group (``\\1``) that matches exactly one tensor family, so the same tables serve three consumers:

- ``from_pretrained(key_mapping=...)`` in transformers 5 (one ``WeightRenaming`` per entry),
- plain state dicts (``convert_state_dict``),
- PEFT adapter state dicts, whose keys carry a ``base_model.model.`` prefix and a ``.lora_A.weight`` suffix; the
  patterns are not anchored, only guarded against matching inside a longer word, so prefixes and suffixes survive.
"""

import re
from typing import Any

import torch

# (?<![\w]) keeps "model\." from matching inside "base_model." while still matching after "base_model.model.".
_B = r"(?<![\w])"

# Upstream per-block module name -> native path inside ``model.layers.<i>``.
_BLOCK_NAMES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ff_norm": "post_attention_layernorm",
}
# Upstream top-level module -> native module (the top-level ``ff_out`` is the output projection, i.e. the LM head).
_TOP_NAMES = {
    "model.transformer.wte": "model.embed_tokens",
    "model.transformer.ln_f": "model.norm",
    "model.transformer.ff_out": "lm_head",
}

OFFICIAL_TO_NATIVE: dict[str, str] = {
    **{_B + re.escape(src) + r"\.": dst + "." for src, dst in _TOP_NAMES.items()},
    **{
        _B + r"model\.transformer\.blocks\.(\d+)\." + re.escape(src) + r"\.": rf"model.layers.\1.{dst}."
        for src, dst in _BLOCK_NAMES.items()
    },
}
"""Regex -> replacement renaming official (``model.transformer.*``) tensor names to the native Llama names."""

NATIVE_TO_OFFICIAL: dict[str, str] = {
    **{_B + re.escape(dst) + r"\.": src + "." for src, dst in _TOP_NAMES.items()},
    **{
        _B + r"model\.layers\.(\d+)\." + re.escape(dst) + r"\.": rf"model.transformer.blocks.\1.{src}."
        for src, dst in _BLOCK_NAMES.items()
    },
}
"""Regex -> replacement renaming native Llama tensor names to the official LLaDA names."""

# PEFT ``target_modules`` use the leaf module name. Upstream ``ff_out`` names both the MLP down projection and the LM
# head, so targeting it upstream adapts both.
_NATIVE_LEAF_TO_OFFICIAL = {dst.rsplit(".", 1)[-1]: src for src, dst in _BLOCK_NAMES.items()} | {
    "embed_tokens": "wte",
    "norm": "ln_f",
    "lm_head": "ff_out",
}
_OFFICIAL_LEAF_TO_NATIVE = {
    "q_proj": ["q_proj"],
    "k_proj": ["k_proj"],
    "v_proj": ["v_proj"],
    "attn_out": ["o_proj"],
    "ff_proj": ["gate_proj"],
    "up_proj": ["up_proj"],
    "ff_out": ["down_proj", "lm_head"],
    "attn_norm": ["input_layernorm"],
    "ff_norm": ["post_attention_layernorm"],
    "wte": ["embed_tokens"],
    "ln_f": ["norm"],
}


def rename_key(key: str, mapping: dict[str, str]) -> str:
    """Rename one tensor name with the first pattern of ``mapping`` that matches (names that match none are kept)."""
    for pattern, replacement in mapping.items():
        new_key, n = re.subn(pattern, replacement, key, count=1)
        if n:
            return new_key
    return key


def convert_state_dict(state_dict: dict[str, torch.Tensor], to: str) -> dict[str, torch.Tensor]:
    """Rename the tensors of a model or PEFT adapter state dict between the official and native layouts.

    Args:
        state_dict (`dict[str, torch.Tensor]`):
            Full model weights or adapter weights (e.g.
            ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``). Tensors are not copied.
        to (`str`):
            ``"official"`` (upstream ``model.transformer.*`` names, ``attn_out`` ...) or ``"native"`` (Llama names).

    Returns:
        `dict[str, torch.Tensor]`: a new dict with renamed keys, in the input order.
    """
    if to not in ("official", "native"):
        raise ValueError(f"`to` must be 'official' or 'native', got {to!r}.")
    mapping = NATIVE_TO_OFFICIAL if to == "official" else OFFICIAL_TO_NATIVE
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new_key = rename_key(key, mapping)
        if new_key in out:
            raise ValueError(f"Two tensors map to {new_key!r}: the state dict mixes official and native names.")
        out[new_key] = tensor
    return out


def convert_target_modules(target_modules: list[str] | str, to: str) -> list[str] | str:
    """Translate PEFT ``target_modules`` leaf names (e.g. ``o_proj`` <-> ``attn_out``) between layouts.

    A regex string (PEFT's other form of ``target_modules``) is renamed with the same leaf table, word by word.
    Upstream ``ff_out`` maps to both ``down_proj`` and ``lm_head`` because upstream uses that name for both.
    """
    if to not in ("official", "native"):
        raise ValueError(f"`to` must be 'official' or 'native', got {to!r}.")
    if isinstance(target_modules, str):
        table = (
            _NATIVE_LEAF_TO_OFFICIAL if to == "official" else {k: v[0] for k, v in _OFFICIAL_LEAF_TO_NATIVE.items()}
        )
        return re.sub(r"\w+", lambda m: table.get(m.group(0), m.group(0)), target_modules)
    out: list[str] = []
    for name in target_modules:
        mapped = (
            [_NATIVE_LEAF_TO_OFFICIAL.get(name, name)]
            if to == "official"
            else _OFFICIAL_LEAF_TO_NATIVE.get(name, [name])
        )
        out.extend(m for m in mapped if m not in out)
    return out


# config.json ---------------------------------------------------------------------------------------------------------

# Upstream keys whose only supported value is the one given; anything else is a different architecture.
_REQUIRED_UPSTREAM_VALUES: dict[str, tuple[Any, str]] = {
    "alibi": (False, "ALiBi position biases"),
    "rope": (True, "models without rotary embeddings"),
    "block_type": ("llama", "block types other than 'llama' (sequential / parallel OLMo blocks)"),
    "layer_norm_type": ("rms", "layer norms other than RMSNorm"),
    "layer_norm_with_affine": (True, "norms without a learnable scale"),
    "bias_for_layer_norm": (False, "layer norm biases"),
    "include_bias": (False, "linear layer biases"),
    "include_qkv_bias": (False, "q/k/v biases"),
    "attention_layer_norm": (False, "QK layer norm"),
    "input_emb_norm": (False, "embedding normalisation"),
    "scale_logits": (False, "logit scaling"),
    "block_group_size": (1, "block groups (block_group_size > 1)"),
    "clip_qkv": (None, "q/k/v clipping"),
    "embedding_dropout": (0.0, "embedding dropout"),
    "residual_dropout": (0.0, "residual dropout"),
}
# Upstream keys without a native counterpart that do not change the forward pass.
_IGNORED_UPSTREAM_KEYS = (
    "alibi_bias_max",
    "attention_layer_norm_with_affine",
    "auto_map",
    "flash_attention",
    "init_cutoff_factor",
    "init_device",
    "init_fn",
    "emb_init_std",
    "precision",
    "rope_full_precision",
    "mlp_ratio",
    "multi_query_attention",
    "attention_type",
    "layer_norm_eps",
    "weight_tying",
    "embedding_size",
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "mlp_hidden_size",
    "max_sequence_length",
    "init_std",
    "activation_type",
)

UPSTREAM_AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    "AutoModel": "modeling_llada.LLaDAModelLM",
}


def is_official_config(config_dict: dict[str, Any]) -> bool:
    """Whether a config dict uses the upstream (OLMo-style) keys rather than Llama keys."""
    return "d_model" in config_dict or "n_layers" in config_dict


def official_config_to_native(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Translate upstream LLaDA config keys into ``LlamaConfig`` keys.

    Keys that are not upstream-specific (``eos_token_id``, ``rms_norm_eps``, ``rope_theta``, ``mask_token_id`` ...)
    pass through unchanged; upstream keys without effect on the forward pass are dropped.

    Raises:
        ValueError: if the upstream config asks for a feature the Llama layout cannot express (ALiBi, biases,
            non-llama block types, non-SiLU activations, dropout ...).
    """
    cfg = dict(config_dict)
    for key, (expected, feature) in _REQUIRED_UPSTREAM_VALUES.items():
        # None / 0 / False all mean "off" upstream
        if key in cfg and cfg[key] != expected and (cfg[key] or expected):
            raise ValueError(
                f"Unsupported LLaDA config: {key}={cfg[key]!r} ({feature}) cannot be loaded as a native Llama model; "
                f"only {key}={expected!r} is supported."
            )
        cfg.pop(key, None)
    activation = cfg.get("activation_type", "silu")
    if activation != "silu":
        raise ValueError(
            f"Unsupported LLaDA config: activation_type={activation!r}; the Llama block only supports 'silu' "
            "(SwiGLU with SiLU gate)."
        )
    d_model = cfg["d_model"]
    n_heads = cfg["n_heads"]
    if cfg.get("multi_query_attention"):
        n_kv_heads = 1
    else:
        n_kv_heads = cfg.get("n_kv_heads") or n_heads
    mlp_hidden = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * d_model)
    # ``embedding_size`` is the real matrix size (vocab_size may be smaller and is padded upstream).
    vocab = cfg.get("embedding_size") or cfg.get("vocab_size")
    native = {
        "hidden_size": d_model,
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "intermediate_size": mlp_hidden,
        "max_position_embeddings": cfg.get("max_sequence_length", 4096),
        "tie_word_embeddings": bool(cfg.get("weight_tying", False)),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }
    if vocab is not None:
        native["vocab_size"] = vocab
    if "init_std" in cfg:
        native["initializer_range"] = cfg["init_std"]
    for key in _IGNORED_UPSTREAM_KEYS:
        cfg.pop(key, None)
    cfg.pop("vocab_size", None)
    cfg.pop("model_type", None)
    cfg.pop("architectures", None)  # "LLaDAModelLM" is the remote-code class; ours is written on save
    return {**cfg, **native}


def native_config_to_official(config: Any) -> dict[str, Any]:
    """Upstream-style ``config.json`` content (as in GSAI-ML/LLaDA-8B-Instruct) for a native ``LladaConfig``."""
    rope_theta = (config.rope_parameters or {}).get("rope_theta", 500000.0)
    if (config.rope_parameters or {}).get("rope_type", "default") != "default":
        raise ValueError("Only default RoPE can be written in the upstream config format (no rope scaling).")
    if config.attention_bias or config.mlp_bias:
        raise ValueError("The upstream LLaDA format has no biases; this model uses attention_bias/mlp_bias.")
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": float(config.attention_dropout or 0.0),
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": dict(UPSTREAM_AUTO_MAP),
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": config.hidden_size,
        "embedding_dropout": 0.0,
        "embedding_size": config.vocab_size,
        "eos_token_id": config.eos_token_id,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": config.initializer_range,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": config.mask_token_id,
        "max_sequence_length": config.max_position_embeddings,
        "mlp_hidden_size": config.intermediate_size,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads,
        "n_layers": config.num_hidden_layers,
        "pad_token_id": config.pad_token_id,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": config.rms_norm_eps,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": float(rope_theta),
        "scale_logits": False,
        "use_cache": False,
        "vocab_size": config.vocab_size,
        "weight_tying": bool(config.tie_word_embeddings),
    }
