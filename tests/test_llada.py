"""Native LLaDA: loading official checkpoints, parity with an independent forward, conversion both ways, errors."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from diffusion_rl import LladaConfig, LladaForMaskedDiffusion, convert_to_official, load_llada
from diffusion_rl.models.conversion import convert_state_dict, convert_target_modules
from diffusion_rl.models.llada import CheckpointNotFoundError

D_MODEL, N_LAYERS, N_HEADS, MLP, VOCAB, EMB = 32, 2, 4, 48, 60, 64
ROPE_THETA, EPS = 500000.0, 1e-5

# Upstream config keys, as in GSAI-ML/LLaDA-8B-Instruct's config.json (sizes shrunk).
OFFICIAL_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": D_MODEL,
    "embedding_dropout": 0.0,
    "embedding_size": EMB,
    "eos_token_id": 61,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 63,
    "max_sequence_length": 128,
    "mlp_hidden_size": MLP,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": N_HEADS,
    "n_kv_heads": N_HEADS,
    "n_layers": N_LAYERS,
    "pad_token_id": 61,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": EPS,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": ROPE_THETA,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": VOCAB,
    "weight_tying": False,
}

BLOCK_SHAPES = {
    "q_proj": (D_MODEL, D_MODEL),
    "k_proj": (D_MODEL, D_MODEL),
    "v_proj": (D_MODEL, D_MODEL),
    "attn_out": (D_MODEL, D_MODEL),
    "ff_proj": (MLP, D_MODEL),
    "up_proj": (MLP, D_MODEL),
    "ff_out": (D_MODEL, MLP),
    "attn_norm": (D_MODEL,),
    "ff_norm": (D_MODEL,),
}


def official_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def draw(shape, norm=False):
        x = torch.randn(shape, generator=g)
        return 1.0 + 0.1 * x if norm else 0.2 * x

    w = {
        "model.transformer.wte.weight": draw((EMB, D_MODEL)) * 5,
        "model.transformer.ln_f.weight": draw((D_MODEL,), norm=True),
        "model.transformer.ff_out.weight": draw((EMB, D_MODEL)),
    }
    for i in range(N_LAYERS):
        for name, shape in BLOCK_SHAPES.items():
            w[f"model.transformer.blocks.{i}.{name}.weight"] = draw(shape, norm=name.endswith("norm"))
    return w


def reference_forward(w: dict[str, torch.Tensor], input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """LLaDA forward in plain torch from the upstream tensors: RMSNorm, RoPE, bidirectional attention, SwiGLU."""
    x = w["model.transformer.wte.weight"][input_ids]  # (B, L, D)
    B, L, D = x.shape
    hd = D // N_HEADS
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.arange(L, dtype=torch.float64)[:, None] * inv_freq[None]  # (L, hd/2)
    cos, sin = angles.cos().float(), angles.sin().float()

    def rope(t):  # (B, H, L, hd), rotating the two halves of each head
        t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
        return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)

    def rms(t, g):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + EPS) * g

    def heads(t):
        return t.view(B, L, N_HEADS, hd).transpose(1, 2)

    for i in range(N_LAYERS):
        p = f"model.transformer.blocks.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q, k, v = (heads(h @ w[p + n + ".weight"].T) for n in ("q_proj", "k_proj", "v_proj"))
        q, k = rope(q), rope(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B, H, L, L), no causal mask
        if attention_mask is not None:
            scores = scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, D)
        x = x + attn @ w[p + "attn_out.weight"].T
        h = rms(x, w[p + "ff_norm.weight"])
        x = x + (F.silu(h @ w[p + "ff_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)) @ w[p + "ff_out.weight"].T
    return rms(x, w["model.transformer.ln_f.weight"]) @ w["model.transformer.ff_out.weight"].T  # (B, L, EMB)


def write_official_checkpoint(path, weights, sharded=True):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    if not sharded:
        save_file(weights, path / "model.safetensors")
        return path
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, shard_keys in shards.items():
        save_file({k: weights[k] for k in shard_keys}, path / name)
    index = {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return path


@pytest.fixture(scope="module")
def weights():
    return official_weights()


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory, weights):
    return write_official_checkpoint(tmp_path_factory.mktemp("official") / "llada", weights)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (3, 9), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # left padding
    attention_mask[2, :7] = 0
    return input_ids, attention_mask


LOADERS = {
    "load_llada": lambda p, **kw: load_llada(p, **kw),
    "AutoModelForCausalLM": lambda p, **kw: AutoModelForCausalLM.from_pretrained(p, **kw),
    "AutoModel": lambda p, **kw: AutoModel.from_pretrained(p, **kw),
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "single_file"])
def test_official_checkpoint_matches_reference_forward(tmp_path, weights, batch, loader, sharded):
    path = write_official_checkpoint(tmp_path / "ckpt", weights, sharded=sharded)
    model = LOADERS[loader](path).eval()
    assert type(model) is LladaForMaskedDiffusion
    input_ids, attention_mask = batch
    with torch.no_grad():
        no_mask = model(input_ids).logits
        masked = model(input_ids, attention_mask=attention_mask).logits
    assert no_mask.shape == (3, 9, EMB)
    assert (no_mask - reference_forward(weights, input_ids)).abs().max() <= 1e-5
    keep = attention_mask.bool()
    ref_masked = reference_forward(weights, input_ids, attention_mask)
    assert (masked[keep] - ref_masked[keep]).abs().max() <= 1e-5


def test_config_from_official_keys(official_dir):
    config = AutoConfig.from_pretrained(official_dir)
    assert isinstance(config, LladaConfig)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (D_MODEL, N_LAYERS, N_HEADS)
    assert (config.num_key_value_heads, config.intermediate_size, config.vocab_size) == (N_HEADS, MLP, EMB)
    assert config.rope_parameters["rope_theta"] == ROPE_THETA
    assert (config.max_position_embeddings, config.rms_norm_eps, config.initializer_range) == (128, EPS, 0.02)
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id) == (63, 61, 61)
    assert config.is_causal is False and config.tie_word_embeddings is False
    assert not hasattr(config, "auto_map") and not hasattr(config, "d_model")


def test_config_defaults_are_llada_8b():
    config = LladaConfig(**{k: v for k, v in OFFICIAL_CONFIG.items() if "token_id" not in k})
    assert (config.mask_token_id, config.eos_token_id, config.pad_token_id) == (126336, 126081, 126081)
    assert config.eot_token_id == 126348
    default = LladaConfig()
    assert (default.hidden_size, default.num_hidden_layers, default.intermediate_size) == (4096, 32, 12288)
    assert (default.vocab_size, default.rope_parameters["rope_theta"], default.rms_norm_eps) == (
        126464,
        500000.0,
        1e-5,
    )
    assert default.tie_word_embeddings is False and default.is_causal is False


def test_native_keys_are_accepted():
    config = LladaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=10, mask_token_id=9)
    assert (config.hidden_size, config.num_key_value_heads, config.mask_token_id) == (16, 2, 9)


@pytest.mark.parametrize(
    "key, value",
    [
        ("alibi", True),
        ("include_bias", True),
        ("include_qkv_bias", True),
        ("block_type", "sequential"),
        ("activation_type", "gelu"),
        ("layer_norm_type", "default"),
        ("block_group_size", 2),
        ("attention_layer_norm", True),
        ("residual_dropout", 0.1),
    ],
)
def test_unsupported_upstream_features_raise(key, value):
    with pytest.raises(ValueError, match=key):
        LladaConfig(**{**OFFICIAL_CONFIG, key: value})


def test_causal_attention_is_rejected():
    with pytest.raises(ValueError, match="is_causal"):
        LladaConfig(is_causal=True)


def test_attention_is_bidirectional_without_mask(official_dir):
    model = load_llada(official_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, -1] = 10
    with torch.no_grad():
        before, after = model(ids).logits, model(changed).logits
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-4  # the first position sees the last token


def test_attention_layer_called_directly_is_bidirectional(official_dir):
    model = load_llada(official_dir).eval()
    attn = model.model.layers[0].self_attn
    hidden = torch.randn(1, 5, D_MODEL, generator=torch.Generator().manual_seed(0))
    changed = hidden.clone()
    changed[0, -1] += 1.0
    position_ids = torch.arange(5)[None]
    rotary = model.model.rotary_emb(hidden, position_ids)
    with torch.no_grad():
        before, _ = attn(hidden, position_embeddings=rotary, attention_mask=None)
        after, _ = attn(changed, position_embeddings=rotary, attention_mask=None)
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-4


def test_left_padding_does_not_change_logits(official_dir):
    model = load_llada(official_dir).eval()
    ids = torch.tensor([[3, 14, 15, 9, 26, 5]])
    padded = torch.cat([torch.full((1, 4), 61), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones_like(ids)], dim=1)
    with torch.no_grad():
        plain = model(ids).logits
        left = model(padded, attention_mask=mask).logits[:, 4:]
    assert (plain - left).abs().max() <= 1e-5  # RoPE is relative and pads are masked as keys


def test_logits_to_keep(official_dir, batch):
    model = load_llada(official_dir).eval()
    input_ids, _ = batch
    with torch.no_grad():
        full = model(input_ids).logits
        last = model(input_ids, logits_to_keep=3).logits
    assert last.shape == (3, 3, EMB)
    torch.testing.assert_close(last, full[:, -3:], rtol=0, atol=1e-6)


def test_bfloat16_load(official_dir, weights, batch):
    model = load_llada(official_dir, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    input_ids, _ = batch
    with torch.no_grad():
        logits = model(input_ids).logits.float()
    ref = reference_forward(weights, input_ids)
    assert (logits - ref).abs().max() < 0.1 * ref.abs().max()


def test_native_official_native_roundtrip_is_bit_exact(tmp_path, official_dir, weights):
    model = load_llada(official_dir)
    state = convert_to_official(model, tmp_path / "official")
    assert set(state) == set(weights)
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    written = json.loads((tmp_path / "official" / "config.json").read_text())
    for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "embedding_size", "mask_token_id"):
        assert written[key] == OFFICIAL_CONFIG[key]
    assert written["architectures"] == ["LLaDAModelLM"] and written["auto_map"] == OFFICIAL_CONFIG["auto_map"]
    reloaded = load_llada(tmp_path / "official")
    a, b = model.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_pretrained_writes_native_layout(tmp_path, official_dir):
    model = load_llada(official_dir)
    model.save_pretrained(tmp_path / "native")
    with safe_open(tmp_path / "native" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert keys == set(model.state_dict())
    assert "model.layers.0.self_attn.o_proj.weight" in keys and not any("transformer" in k for k in keys)
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert config["model_type"] == "llada" and "auto_map" not in config and config["is_causal"] is False
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "native")
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in model.state_dict().items())


ADAPTER_KEYS = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": (
        "base_model.model.model.transformer.blocks.0.q_proj.lora_A.weight"
    ),
    "base_model.model.model.layers.11.self_attn.o_proj.lora_B.weight": (
        "base_model.model.model.transformer.blocks.11.attn_out.lora_B.weight"
    ),
    "base_model.model.model.layers.3.mlp.gate_proj.lora_A.default.weight": (
        "base_model.model.model.transformer.blocks.3.ff_proj.lora_A.default.weight"
    ),
    "base_model.model.model.layers.3.mlp.down_proj.lora_A.weight": (
        "base_model.model.model.transformer.blocks.3.ff_out.lora_A.weight"
    ),
    "base_model.model.model.layers.2.post_attention_layernorm.weight": (
        "base_model.model.model.transformer.blocks.2.ff_norm.weight"
    ),
    "base_model.model.lm_head.lora_A.weight": "base_model.model.model.transformer.ff_out.lora_A.weight",
    "base_model.model.model.embed_tokens.lora_embedding_A": "base_model.model.model.transformer.wte.lora_embedding_A",
    "base_model.model.model.norm.weight": "base_model.model.model.transformer.ln_f.weight",
}


def test_adapter_key_conversion_both_ways():
    native = {k: torch.tensor(float(i)) for i, k in enumerate(ADAPTER_KEYS)}
    official = convert_state_dict(native, to="official")
    assert list(official) == list(ADAPTER_KEYS.values())
    assert convert_state_dict(official, to="native") == native


def test_peft_adapter_export(tmp_path, official_dir):
    model = load_llada(official_dir)
    lora = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, lora)
    native = get_peft_model_state_dict(peft_model)
    official = convert_to_official(peft_model, tmp_path / "adapter")
    assert len(official) == len(native) == 4 * 2 * N_LAYERS
    assert "base_model.model.model.transformer.blocks.1.attn_out.lora_B.weight" in official
    assert convert_state_dict(official, to="native").keys() == native.keys()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["attn_out", "k_proj", "q_proj", "v_proj"]
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as f:
        assert set(f.keys()) == set(official)
        assert torch.equal(f.get_tensor(next(iter(official))), next(iter(official.values())))


def test_target_module_names():
    assert convert_target_modules(["q_proj", "o_proj", "gate_proj", "down_proj"], to="official") == [
        "q_proj",
        "attn_out",
        "ff_proj",
        "ff_out",
    ]
    assert convert_target_modules(["attn_out", "ff_out"], to="native") == ["o_proj", "down_proj", "lm_head"]
    assert convert_target_modules(r".*\.(q_proj|o_proj)$", to="official") == r".*\.(q_proj|attn_out)$"


def test_mixed_layouts_are_rejected():
    with pytest.raises(ValueError, match="mixes"):
        convert_state_dict(
            {"model.norm.weight": torch.ones(1), "model.transformer.ln_f.weight": torch.ones(1)}, "native"
        )
    with pytest.raises(ValueError, match="official"):
        convert_state_dict({}, to="upstream")


def test_missing_local_checkpoint(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="No checkpoint directory"):
        load_llada(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_llada(tmp_path)


def test_unreachable_hub_id_has_clear_error():
    with pytest.raises(
        CheckpointNotFoundError, match="(?s)cannot download 'no-such-org/no-such-llada'.*pass a local path"
    ):
        load_llada("no-such-org/no-such-llada")


def test_bad_arguments():
    with pytest.raises(ValueError, match="remote code"):
        load_llada("GSAI-ML/LLaDA-8B-Instruct", trust_remote_code=True)
    with pytest.raises(TypeError, match="state dict"):
        convert_to_official(42)


def test_sharded_official_export_and_tied_embeddings(tmp_path):
    config = LladaConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        vocab_size=40,
        mask_token_id=39,
        eos_token_id=38,
        pad_token_id=38,
        bos_token_id=37,
        eot_token_id=36,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LladaForMaskedDiffusion(config).eval()
    state = convert_to_official(model, tmp_path, max_shard_size=2_000)
    assert "model.transformer.ff_out.weight" not in state  # upstream weight_tying reuses wte
    assert json.loads((tmp_path / "config.json").read_text())["weight_tying"] is True
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(state)
    reloaded = load_llada(tmp_path).eval()
    assert reloaded.config.tie_word_embeddings is True
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_hub_kernels_stay_off_unless_asked(official_dir):
    # transformers enables Hub kernels by default when `kernels` is installed; on a GPU, train() then downloads
    # kernels-community/rotary (fails offline). Our loader keeps the verified PyTorch modules unless asked.
    pytest.importorskip("kernels")
    model = load_llada(official_dir)
    assert model.use_kernels is False
    model.train()
    assert model.use_kernels is False


def test_the_trainers_load_any_architecture_without_hub_kernels(tmp_path):
    pytest.importorskip("kernels")
    from transformers import LlamaConfig, LlamaForCausalLM

    from diffusion_rl.checks import load_masked_diffusion_model

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    config.mask_token_id = 63  # a masked-diffusion Llama of the user's own, not LLaDA's class
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    model = load_masked_diffusion_model(str(tmp_path))  # what both trainers load a model name with
    assert type(model).__name__ == "LlamaForCausalLM" and model.use_kernels is False
