"""The KL on the masked canvas (reward and evaluation) in chunks: same values as the full-logit computation, and
the LM head never holds more than `max_positions` positions, whatever the batch (issue 14: GPU-scale memory)."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.data.chat import tokenize_prompts
from diffusion_rl.evaluation.generate import completion_kl
from diffusion_rl.rewards.kl import clean_prompt_kl, token_kl

PROMPTS = ["Who is the nurse?", "Describe the engineer.", "Tell me about the pilot today.", "A teacher?", "Hi"]


@pytest.fixture(scope="module")
def setup(tiny_model, tiny_tokenizer):
    model = get_peft_model(
        copy.deepcopy(tiny_model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"])
    )
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    encoded = tokenize_prompts(tiny_tokenizer, PROMPTS)
    completion_mask = torch.ones(len(PROMPTS), 8, dtype=torch.bool)
    completion_mask[1, 3:] = False
    completion_mask[3, 1:] = False
    return model.eval(), encoded["input_ids"], encoded["attention_mask"], completion_mask, tiny_tokenizer.mask_token_id


def _full_logits_kl(model, prompt_ids, prompt_mask, completion_mask, mask_id):
    """The computation before chunking: (B, G, V) logits of both arms, float32 log-softmax of all of them."""
    canvas = torch.full(completion_mask.shape, mask_id, dtype=prompt_ids.dtype)
    ids, attn = torch.cat([prompt_ids, canvas], 1), torch.cat([prompt_mask, torch.ones_like(canvas)], 1)
    with torch.no_grad():
        policy = model(input_ids=ids, attention_mask=attn, logits_to_keep=canvas.shape[1]).logits
        with model.disable_adapter():
            base = model(input_ids=ids, attention_mask=attn, logits_to_keep=canvas.shape[1]).logits
    return token_kl(policy, base, completion_mask)


@pytest.mark.parametrize("max_positions", [1, 8, 17, 10_000])
def test_chunked_kl_equals_the_full_logit_kl_and_bounds_the_lm_head(setup, max_positions):
    model, prompt_ids, prompt_mask, completion_mask, mask_id = setup
    expected = _full_logits_kl(model, prompt_ids, prompt_mask, completion_mask, mask_id)
    assert (expected > 0).all()
    rows = []
    handle = model.base_model.model.lm_head.register_forward_hook(lambda m, a, out: rows.append(out.shape[0]))
    try:
        kl = clean_prompt_kl(
            model, model.disable_adapter, prompt_ids, prompt_mask, completion_mask, mask_token_id=mask_id,
            max_positions=max_positions,
        )  # fmt: skip
    finally:
        handle.remove()
    torch.testing.assert_close(kl, expected, rtol=1e-5, atol=1e-6)
    rows_per_chunk = max(1, max_positions // 8)
    assert len(rows) == 2 * -(-len(PROMPTS) // rows_per_chunk)  # a data-independent number of forward pairs
    assert max(rows) <= max(max_positions, 8)  # positions through the LM head: bounded, only the valid ones
    assert sum(rows) == 2 * int(completion_mask.sum())


def test_evaluation_kl_is_the_chunked_core_function(setup):
    model, prompt_ids, prompt_mask, completion_mask, mask_id = setup
    kl = completion_kl(model, prompt_ids, prompt_mask, completion_mask, mask_token_id=mask_id)
    expected = _full_logits_kl(model, prompt_ids, prompt_mask, completion_mask, mask_id)
    torch.testing.assert_close(kl, expected, rtol=1e-5, atol=1e-6)
