"""The embedded tiny model and tokenizer: determinism, LLaDA-shaped special tokens and template, save/load."""

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from diffusion_rl import LladaForMaskedDiffusion, build_tiny_model, build_tiny_tokenizer
from diffusion_rl.models.tiny import CHAT_TEMPLATE, TINY_VOCAB_SIZE, _trained_tokenizer_json, tiny_corpus


def test_model_is_deterministic_and_leaves_global_rng_alone(tiny_tokenizer):
    rng_before = torch.get_rng_state()
    a = build_tiny_model(tiny_tokenizer, seed=0)
    b = build_tiny_model(tiny_tokenizer, seed=0)
    c = build_tiny_model(tiny_tokenizer, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"])


def test_model_shape_and_config(tiny_model, tiny_tokenizer):
    assert isinstance(tiny_model, LladaForMaskedDiffusion) and not tiny_model.training
    cfg = tiny_model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (64, 2, 4, 128)
    assert cfg.vocab_size == len(tiny_tokenizer) == TINY_VOCAB_SIZE
    assert cfg.mask_token_id == tiny_tokenizer.mask_token_id
    assert cfg.eos_token_id == cfg.pad_token_id == tiny_tokenizer.eos_token_id == tiny_tokenizer.pad_token_id
    assert cfg.bos_token_id == tiny_tokenizer.bos_token_id
    assert cfg.eot_token_id == tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert cfg.is_causal is False
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}
    ids = tiny_tokenizer(["The answer is", "he"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert tiny_model(**ids).logits.shape == (2, ids["input_ids"].shape[1], TINY_VOCAB_SIZE)


def test_model_options():
    model = build_tiny_model(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, dtype=torch.bfloat16)
    assert model.config.hidden_size == 32 and len(model.model.layers) == 1
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tokenizer_is_deterministic(tiny_tokenizer):
    # Train twice from scratch (bypassing the in-process cache): the BPE result must be identical.
    assert _trained_tokenizer_json.__wrapped__(TINY_VOCAB_SIZE) == _trained_tokenizer_json.__wrapped__(TINY_VOCAB_SIZE)
    other = build_tiny_tokenizer()
    assert other is not tiny_tokenizer
    assert other.get_vocab() == tiny_tokenizer.get_vocab()


def test_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.mask_token) == (
        "<|startoftext|>",
        "<|endoftext|>",
        "<|endoftext|>",
        "<|mdm_mask|>",
    )
    special = ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    ids = tok.convert_tokens_to_ids(special)
    assert len(set(ids) | {tok.bos_token_id, tok.eos_token_id, tok.mask_token_id}) == 6
    assert tok.mask_token_id != tok.pad_token_id
    for token in special + [tok.mask_token]:  # each special token is one id and is never split
        assert tok(f"a{token}b")["input_ids"][1:-1] == [tok.convert_tokens_to_ids(token)]
    assert tok.padding_side == "left"


def test_vocabulary_covers_the_domain(tiny_tokenizer):
    words = "he she they his her their him them hers theirs man woman waiter waitress chairman nurse engineer because"
    for word in words.split():
        assert len(tiny_tokenizer.tokenize(" " + word)) == 1, word
    assert tiny_tokenizer.tokenize(" A) B) C) D)") == ["ĠA", ")", "ĠB", ")", "ĠC", ")", "ĠD", ")"]


def test_chat_template(tiny_tokenizer):
    messages = [{"role": "system", "content": "Be fair."}, {"role": "user", "content": " Who is the nurse? "}]
    text = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe fair.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWho is the nurse?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    user_only = tiny_tokenizer.apply_chat_template(messages[1:], add_generation_prompt=False, tokenize=False)
    assert user_only == "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWho is the nurse?<|eot_id|>"
    ids = tiny_tokenizer(text)["input_ids"]
    assert ids[0] == tiny_tokenizer.bos_token_id and ids.count(tiny_tokenizer.bos_token_id) == 1
    assert tiny_tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    [
        "The nurse said that she would help them.",
        "  leading spaces, trailing tabs\t\nand new lines\n\n",
        "Ünïcödé, 日本語, emoji 🙂 and symbols <>{}[]|\\",
        "A) the man B) the woman C) Cannot be determined D) the nurse. The answer is C.",
        "",
    ],
)
def test_encode_decode_roundtrip(tiny_tokenizer, text):
    ids = tiny_tokenizer(text)["input_ids"]
    assert tiny_tokenizer.unk_token_id is None or tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids) == text


def test_left_padding(tiny_tokenizer):
    batch = tiny_tokenizer(["he", "The answer is C because"], padding=True, return_tensors="pt")
    short = tiny_tokenizer("he")["input_ids"]
    n_pad = batch["input_ids"].shape[1] - len(short)
    assert batch["input_ids"][0].tolist() == [tiny_tokenizer.pad_token_id] * n_pad + short
    assert batch["attention_mask"][0].tolist() == [0] * n_pad + [1] * len(short)


def test_save_load_roundtrip(tiny_model_dir, tiny_model, tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert type(model) is LladaForMaskedDiffusion
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in tiny_model.state_dict().items())
    text = "The chairperson thanked them. <|mdm_mask|><|mdm_mask|>"
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert (tok.mask_token, tok.mask_token_id, tok.padding_side) == (
        "<|mdm_mask|>",
        tiny_tokenizer.mask_token_id,
        "left",
    )
    assert tok.chat_template == CHAT_TEMPLATE
    ids = tok(["he said", "she"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, tiny_model(**ids).logits, rtol=0, atol=0)


def test_builds_fast(tiny_tokenizer):
    start = time.perf_counter()
    build_tiny_tokenizer()
    build_tiny_model(tiny_tokenizer, seed=3)
    assert time.perf_counter() - start < 2.0


def test_corpus():
    lines = tiny_corpus()
    assert len(lines) > 3000 and not any(line.startswith("#") or not line.strip() for line in lines)
    text = " ".join(lines)
    for phrase in ("The answer is", " because ", "A) ", "D) ", " hers", " theirs", "waitress", "chairperson"):
        assert phrase in text, phrase
