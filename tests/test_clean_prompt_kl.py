"""The seed's reward KL is one deterministic forward pair: clean prompt, completion fully masked (issue 15.9).

Reading the KL off the log-prob estimator's masked inputs made it depend on the estimator's random masks (noisy under
prompt masking, different per estimator). `clean_prompt_kl` depends only on the prompt, the completion's length mask
and the weights: not on any RNG, not on dropout.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.data.chat import tokenize_prompts
from diffusion_rl.evaluation.generate import completion_kl
from diffusion_rl.rewards import KLReward, clean_prompt_kl

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def _trained(tiny_model, dropout: float = 0.0):
    model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(lora_dropout=dropout, **LORA))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return model


@pytest.fixture(scope="module")
def batch(tiny_tokenizer):
    encoded = tokenize_prompts(tiny_tokenizer, ["Who is the nurse?", "Describe the engineer at work today."])
    completion_mask = torch.ones(2, 8, dtype=torch.bool)
    completion_mask[1, 5:] = False  # the second completion ended early
    return encoded["input_ids"], encoded["attention_mask"], completion_mask


def test_deterministic_and_independent_of_rng_and_dropout(tiny_model, tiny_model_mask_id, batch):
    model = _trained(tiny_model, dropout=0.5).train()  # training mode: LoRA dropout would be random
    kls = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        kls.append(clean_prompt_kl(model, model.disable_adapter, *batch, mask_token_id=tiny_model_mask_id))
    torch.testing.assert_close(kls[0], kls[1], rtol=0, atol=0)
    assert (kls[0] > 0).all() and model.training  # the mode is restored


def test_equals_the_evaluation_kl_and_the_reward(tiny_model, tiny_model_mask_id, batch):
    model = _trained(tiny_model).eval()
    kl = clean_prompt_kl(model, model.disable_adapter, *batch, mask_token_id=tiny_model_mask_id)
    prompt_ids, prompt_mask, completion_mask = batch
    reference = completion_kl(model, prompt_ids, prompt_mask, completion_mask, mask_token_id=tiny_model_mask_id)
    torch.testing.assert_close(kl, reference)
    reward = KLReward(coef=0.1, model=model)
    values = reward(["a", "b"], ["c", "d"], prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                    completion_ids=torch.zeros(2, 8, dtype=torch.long), completion_mask=completion_mask)  # fmt: skip
    torch.testing.assert_close(torch.tensor(values), -0.1 * kl)


def test_a_fresh_adapter_gives_exactly_zero(tiny_model, tiny_model_mask_id, batch):
    model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(**LORA))
    kl = clean_prompt_kl(model, model.disable_adapter, *batch, mask_token_id=tiny_model_mask_id)
    assert torch.equal(kl, torch.zeros(2))


@pytest.fixture(scope="module")
def tiny_model_mask_id(tiny_model):
    return tiny_model.config.mask_token_id
