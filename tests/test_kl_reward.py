import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from diffusion_rl.rewards import KLReward, token_kl

MASK_ID = 31


def reference_kl(policy_logits, base_logits, mask):
    """Independent float64 computation: sum_v p log(p / q), averaged over the masked positions, row by row."""
    out = []
    for p_row, q_row, m_row in zip(policy_logits.double(), base_logits.double(), mask):
        p, q = torch.softmax(p_row, -1), torch.softmax(q_row, -1)
        per_position = (p * torch.log(p / q)).sum(-1)
        valid = [float(per_position[t]) for t in range(len(m_row)) if m_row[t]]
        out.append(sum(valid) / len(valid) if valid else 0.0)
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture()
def peft_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        is_causal=False,
    )
    config.mask_token_id = MASK_ID
    model = LlamaForCausalLM(config).eval()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    return get_peft_model(model, lora)


def batch():
    g = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(0, 30, (3, 5), generator=g)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    completion_ids = torch.randint(0, 30, (3, 4), generator=g)
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


def test_token_kl_matches_reference_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    policy = torch.randn(3, 6, 11, generator=g, requires_grad=True)
    base = torch.randn(3, 6, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    kl = token_kl(policy, base, mask)
    assert kl.shape == (3,) and kl.dtype == torch.float32
    torch.testing.assert_close(kl.double(), reference_kl(policy.detach(), base, mask), rtol=1e-5, atol=1e-6)
    assert kl[2] == 0  # no valid position
    kl.sum().backward()
    assert policy.grad is not None and policy.grad[0, :3].abs().sum() > 0 and policy.grad[0, 3:].abs().sum() == 0
    unmasked = token_kl(policy.detach(), base)
    expected = reference_kl(policy.detach(), base, torch.ones(3, 6))
    torch.testing.assert_close(unmasked.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(token_kl(base, base) == 0)


def test_token_kl_bad_shapes():
    with pytest.raises(ValueError, match="must both be"):
        token_kl(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="mask must have shape"):
        token_kl(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 4))


def test_kl_is_exactly_zero_for_fresh_lora(peft_model):
    reward = KLReward(model=peft_model)
    assert reward.mask_token_id == MASK_ID
    values = reward(["p"] * 3, ["c"] * 3, **batch())
    assert values == [0.0, 0.0, 0.0]


def test_kl_matches_hand_computation_after_perturbing_lora(peft_model):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=g))
    data = batch()
    reward = KLReward(coef=0.25, model=peft_model)
    values = reward(["p"] * 3, ["c"] * 3, **data)

    # Hand computation: same masked canvas, adapter on and off, independent KL in float64.
    input_ids = torch.cat([data["prompt_ids"], torch.full((3, 4), MASK_ID)], dim=1)
    attention = torch.cat([data["prompt_mask"], torch.ones(3, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        on = peft_model(input_ids=input_ids, attention_mask=attention).logits[:, 5:]
        with peft_model.disable_adapter():
            off = peft_model(input_ids=input_ids, attention_mask=attention).logits[:, 5:]
    expected = -0.25 * reference_kl(on, off, data["completion_mask"])
    assert expected.abs().min() > 1e-4  # the perturbation really moved the model
    torch.testing.assert_close(torch.tensor(values, dtype=torch.float64), expected, rtol=1e-4, atol=1e-7)
    # Base weights are untouched and the adapter is enabled again afterwards.
    with torch.no_grad():
        again = peft_model(input_ids=input_ids, attention_mask=attention).logits[:, 5:]
    torch.testing.assert_close(again, on)


def test_precomputed_kl_is_used_without_a_model():
    reward = KLReward(coef=0.1)
    assert reward(["a", "b"], ["x", "y"], kl=torch.tensor([0.5, 2.0])) == pytest.approx([-0.05, -0.2])
    assert reward(["a", "b"], ["x", "y"], kl=[0.0, 1.0]) == pytest.approx([0.0, -0.1])
    with pytest.raises(ValueError, match="kl has 3 values for 2"):
        reward(["a", "b"], ["x", "y"], kl=[0.0, 1.0, 2.0])


def test_missing_inputs_raise_clear_errors(peft_model):
    with pytest.raises(ValueError, match="needs either kl="):
        KLReward()(["a"], ["b"])
    with pytest.raises(ValueError, match="missing: \\['completion_mask'\\]"):
        data = batch()
        del data["completion_mask"]
        KLReward(model=peft_model)(["p"] * 3, ["c"] * 3, **data)
    with pytest.raises(TypeError, match="PEFT model"):
        KLReward(model=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="coef must be >= 0"):
        KLReward(coef=-1.0)
