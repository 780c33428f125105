"""MaskedDiffusionSampler (exact mode) against the literal upstream re-implementation and hand computations."""

import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutput
from upstream_llada_generate import generate as upstream_generate

from diffusion_rl.sampling import MaskedDiffusionSampler, SamplerOutput, block_layout, num_transfer_tokens

VOCAB, MASK, PAD, EOS, EOT = 48, 47, 0, 1, 2


def tiny_llama(seed: int = 0, std: float = 0.5) -> LlamaForCausalLM:
    """A random bidirectional Llama (2 layers, width 32), initialised from a local generator only."""
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        is_causal=False,
        mask_token_id=MASK,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=3,
    )
    with torch.random.fork_rng(devices=[]):  # the constructor's own init must not advance the global RNG
        model = LlamaForCausalLM(config)
    for layer in model.model.layers:  # SDPA would fall back to causal attention whenever the mask is skipped
        layer.self_attn.is_causal = False
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:  # large weights give peaked, well-separated predictions
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


class BiasedLogits(nn.Module):
    """Any model with ``.logits``: adds a fixed bias to the logits of another model (no ``logits_to_keep``)."""

    def __init__(self, model: nn.Module, bias: torch.Tensor):
        super().__init__()
        self.model = model
        self.config = model.config
        self.register_buffer("bias", bias)

    def forward(self, input_ids, attention_mask=None):
        return CausalLMOutput(logits=self.model(input_ids, attention_mask=attention_mask).logits + self.bias)


def left_padded_batch(seed: int = 1, batch: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, MASK, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, pad in enumerate([3, 1, 0][:batch]):
        input_ids[row, :pad] = PAD
        attention_mask[row, :pad] = 0
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def test_schedule_hand_values():
    counts = num_transfer_tokens(torch.tensor([5, 8, 0, 3]), 3)
    assert counts.tolist() == [[2, 2, 1], [3, 3, 2], [0, 0, 0], [1, 1, 1]]
    assert block_layout(gen_length=32, block_length=8, steps=16) == (4, 4)


@pytest.mark.parametrize(
    "steps, gen_length, block_length, cfg_scale",
    [(16, 16, 4, 0.0), (8, 16, 8, 0.0), (6, 12, 12, 0.0), (32, 32, 8, 0.0), (16, 16, 16, 1.5), (8, 16, 4, 0.5)],
)
def test_greedy_matches_upstream_batched_left_padding(model, steps, gen_length, block_length, cfg_scale):
    input_ids, attention_mask = left_padded_batch()
    sampler = MaskedDiffusionSampler(
        model, steps=steps, gen_length=gen_length, block_length=block_length, cfg_scale=cfg_scale
    )
    out = sampler.generate(input_ids, attention_mask)
    reference = upstream_generate(
        model, input_ids, attention_mask, steps, gen_length, block_length, cfg_scale=cfg_scale, mask_id=MASK
    )
    assert torch.equal(out.sequences, reference)
    assert out.nfe == steps


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_greedy_matches_upstream_without_attention_mask(model, cfg_scale):
    input_ids, _ = left_padded_batch(seed=4)
    input_ids[input_ids == PAD] = 5  # no padding at all
    out = MaskedDiffusionSampler(model, steps=8, gen_length=16, block_length=8, cfg_scale=cfg_scale).generate(
        input_ids
    )
    reference = upstream_generate(model, input_ids, None, 8, 16, 8, cfg_scale=cfg_scale, mask_id=MASK)
    assert torch.equal(out.sequences, reference)


@pytest.mark.parametrize("option", ["logits_eos_inf", "confidence_eos_eot_inf"])
def test_eos_options_match_upstream_at_zero_temperature(model, option):
    # Boost EOS and EOT so they are predicted often; the wrapper also exercises the no-`logits_to_keep` path.
    bias = torch.zeros(VOCAB)
    bias[[EOS, EOT]] = 4.0
    biased = BiasedLogits(model, bias)
    input_ids, attention_mask = left_padded_batch(seed=2)
    kwargs = {option: True}
    sampler = MaskedDiffusionSampler(biased, steps=16, gen_length=16, block_length=8, eot_token_id=EOT, **kwargs)
    assert not sampler._keeps_logits
    out = sampler.generate(input_ids, attention_mask)
    reference = upstream_generate(
        biased, input_ids, attention_mask, 16, 16, 8, mask_id=MASK, eos_id=EOS, eot_id=EOT, **kwargs
    )
    assert torch.equal(out.sequences, reference)
    plain = MaskedDiffusionSampler(biased, steps=16, gen_length=16, block_length=8).generate(input_ids, attention_mask)
    assert not torch.equal(plain.sequences, out.sequences)  # the option changed something
    if option == "logits_eos_inf":
        assert (plain.completion_ids == EOS).any() and not (out.completion_ids == EOS).any()


def test_confidence_eos_eot_inf_is_symmetric_at_positive_temperature(model):
    # Upstream clears EOS on the noisy logits at T > 0, so EOS and EOT differ there; here swapping the two ids
    # must give the same samples from the same noise.
    bias = torch.zeros(VOCAB)
    bias[[EOS, EOT]] = 4.0
    biased = BiasedLogits(model, bias)
    input_ids, attention_mask = left_padded_batch(seed=3)
    outs = []
    for eos, eot in [(EOS, EOT), (EOT, EOS)]:
        sampler = MaskedDiffusionSampler(
            biased, steps=16, gen_length=16, block_length=16, temperature=1.0, eos_token_id=eos, eot_token_id=eot,
            confidence_eos_eot_inf=True,
        )  # fmt: skip
        outs.append(sampler.generate(input_ids, attention_mask, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    # and EOS/EOT predictions get zero confidence at T > 0 as at T = 0
    for temperature in (0.0, 1.0):
        sampler = MaskedDiffusionSampler(
            biased, temperature=temperature, gen_length=4, block_length=4, steps=4, eot_token_id=EOT,
            confidence_eos_eot_inf=True,
        )  # fmt: skip
        logits = torch.full((1, 4, VOCAB), -5.0, dtype=torch.float64)
        logits[0, 0, EOS] = logits[0, 1, EOT] = logits[0, 2, 7] = logits[0, 3, 8] = 5.0
        x0, conf = sampler._predict(logits, torch.ones(1, 4, dtype=torch.bool), torch.Generator().manual_seed(1))
        assert x0.tolist() == [EOS, EOT, 7, 8]
        assert conf[:2].tolist() == [0.0, 0.0] and (conf[2:] > 0.9).all()


def test_commit_steps_follow_schedule_and_tokens_never_change(model):
    """Record every canvas the model sees: it must be the final canvas with exactly the not-yet-committed tokens
    masked, and each step must commit the scheduled number of tokens."""
    input_ids, attention_mask = left_padded_batch(seed=5)
    steps, gen_length, block_length = 12, 18, 6
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"].clone()),
                                             with_kwargs=True)  # fmt: skip
    try:
        out = MaskedDiffusionSampler(model, steps=steps, gen_length=gen_length, block_length=block_length).generate(
            input_ids, attention_mask
        )
    finally:
        handle.remove()
    assert len(seen) == out.nfe == steps
    prompt_length = out.prompt_length
    assert torch.equal(out.completion_ids, out.sequences[:, prompt_length:])
    assert ((out.commit_step >= 0) & (out.commit_step < steps)).all()
    for t, canvas in enumerate(seen):
        expected = out.sequences.clone()
        expected[:, prompt_length:][out.commit_step >= t] = MASK
        assert torch.equal(canvas, expected), f"step {t}"
    # per-block schedule: 6 masked positions over 4 steps -> 2, 2, 1, 1
    counts = torch.stack([(out.commit_step == t).sum(dim=1) for t in range(steps)], dim=1)
    assert counts.tolist() == [[2, 2, 1, 1] * 3] * input_ids.shape[0]
    # blocks are decoded left to right: block b is committed during steps [4b, 4b + 4)
    block_of_position = torch.arange(gen_length) // block_length
    assert torch.equal(out.commit_step // 4, block_of_position.expand_as(out.commit_step))


def test_output_fields_and_completion_mask(model):
    input_ids, attention_mask = left_padded_batch(seed=6)
    sampler = MaskedDiffusionSampler(model, steps=16, gen_length=16, block_length=8, eot_token_id=EOT)
    out = sampler.generate(input_ids, attention_mask)
    assert isinstance(out, SamplerOutput)
    assert out.sequences.shape == (3, 23) and out.completion_mask.dtype == torch.bool
    assert out.commit_step.dtype == torch.long and out.prompt_length == 7
    assert torch.equal(out.attention_mask[:, :7], attention_mask) and out.attention_mask[:, 7:].all()
    assert not (out.sequences == MASK).any()
    # completion_mask against an independent loop, on hand-made completions too
    completions = torch.cat([out.completion_ids, torch.tensor([[5, EOT, EOS, 6] + [7] * 12, [EOS] + [5] * 15])])
    stop = torch.isin(completions, torch.tensor([EOS, EOT]))
    expected = torch.zeros_like(stop)
    for row in range(completions.shape[0]):
        hits = stop[row].nonzero()
        last = int(hits[0]) if len(hits) else completions.shape[1] - 1
        expected[row, : last + 1] = True
    sampler_out_mask = (stop.long().cumsum(1) - stop.long()) == 0
    assert torch.equal(sampler_out_mask[:3], out.completion_mask)
    assert torch.equal(sampler_out_mask, expected)
    assert expected[3].tolist()[:3] == [True, True, False] and expected[4].sum() == 1


def test_pad_token_infers_left_padding(model):
    input_ids, attention_mask = left_padded_batch(seed=7)
    sampler = MaskedDiffusionSampler(model, steps=8, gen_length=8, block_length=8)
    assert sampler.pad_token_id == PAD
    assert torch.equal(sampler.generate(input_ids).sequences, sampler.generate(input_ids, attention_mask).sequences)


@pytest.mark.parametrize("remasking, temperature", [("low_confidence", 0.8), ("random", 0.0), ("random", 1.0)])
def test_randomness_comes_only_from_the_generator(model, remasking, temperature):
    input_ids, attention_mask = left_padded_batch(seed=8)
    sampler = MaskedDiffusionSampler(
        model, steps=8, gen_length=16, block_length=8, temperature=temperature, remasking=remasking
    )
    global_state = torch.get_rng_state()
    a = sampler.generate(input_ids, attention_mask, generator=torch.Generator().manual_seed(11))
    b = sampler.generate(input_ids, attention_mask, generator=torch.Generator().manual_seed(11))
    c = sampler.generate(input_ids, attention_mask, generator=torch.Generator().manual_seed(12))
    sampler.generate(input_ids, attention_mask)  # no generator: seeded from the OS, still not the global RNG
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)
    assert not torch.equal(a.commit_step, c.commit_step)


def test_sampled_tokens_follow_tempered_softmax(model):
    """gen_length=1: one Gumbel-max draw per row must be distributed as softmax(logits / T) (chi-square test)."""
    temperature, n = 0.7, 20000
    prompt = torch.tensor([[3, 9, 17, 25, 33]])
    with torch.no_grad():
        logits = model(torch.cat([prompt, torch.tensor([[MASK]])], dim=1)).logits[0, -1].double()
    probs = torch.softmax(logits / temperature, dim=-1)
    sampler = MaskedDiffusionSampler(model, steps=1, gen_length=1, block_length=1, temperature=temperature)
    tokens = sampler.generate(prompt.expand(n, -1), generator=torch.Generator().manual_seed(0)).completion_ids[:, 0]
    observed = torch.bincount(tokens, minlength=VOCAB).double()
    expected = probs * n
    keep = expected >= 5  # pool the rare tokens into one cell
    chi2 = (((observed[keep] - expected[keep]) ** 2) / expected[keep]).sum()
    pooled = observed[~keep].sum(), expected[~keep].sum()
    if pooled[1] > 0:
        chi2 += (pooled[0] - pooled[1]) ** 2 / pooled[1]
    dof = int(keep.sum()) - (0 if pooled[1] > 0 else 1)
    # Wilson-Hilferty 99.99% quantile of chi-square(dof); a wrong temperature or noise fails by orders of magnitude
    z = 3.719
    bound = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    assert dof > 10 and chi2 < bound, (float(chi2), bound)


def test_random_remasking_order_is_uniform(model):
    # two masked positions, one per step: each is committed first with probability 1/2
    n = 4000
    sampler = MaskedDiffusionSampler(model, steps=2, gen_length=2, block_length=2, remasking="random")
    out = sampler.generate(torch.tensor([[4, 5, 6]]).expand(n, -1), generator=torch.Generator().manual_seed(3))
    first = (out.commit_step[:, 0] == 0).double().mean()
    assert abs(float(first) - 0.5) < 4 * math.sqrt(0.25 / n)
    assert torch.equal(out.commit_step.sort(dim=1).values, torch.tensor([[0, 1]]).expand(n, -1))


def test_peft_wrapped_model(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    sampler = MaskedDiffusionSampler(peft_model, steps=8, gen_length=8, block_length=4)
    assert sampler._keeps_logits  # detected through the wrapper
    input_ids, attention_mask = left_padded_batch(seed=9)
    expected = MaskedDiffusionSampler(model, steps=8, gen_length=8, block_length=4).generate(input_ids, attention_mask)
    # LoRA starts at zero: same tokens as the base model
    assert torch.equal(sampler.generate(input_ids, attention_mask).sequences, expected.sequences)


def _sampler(model, **kwargs):
    return MaskedDiffusionSampler(model, **{"steps": 8, "gen_length": 8, "block_length": 4, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gen_length": 10, "block_length": 4}, "multiple of `block_length`"),
        ({"steps": 3, "gen_length": 8, "block_length": 4}, "multiple of the number of blocks"),
        ({"steps": 0}, "positive int"),
        ({"pad_token_id": MASK}, "pad token id equals the mask"),
        ({"remasking": "entropy"}, "Unknown `remasking`"),
        ({"temperature": -0.1}, "temperature"),
        ({"cfg_scale": -1.0}, "cfg_scale"),
        ({"cache": "full"}, "Unknown `cache`"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0.9, "remasking": "random"}, "requires remasking='low_confidence'"),
        ({"eos_token_id": MASK}, "cannot also be an EOS/EOT"),
    ],
)
def test_invalid_settings_raise(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _sampler(model, **kwargs)


def test_missing_ids_raise():
    bare = BiasedLogits(tiny_llama(), torch.zeros(VOCAB))
    bare.config = None
    with pytest.raises(ValueError, match="mask_token_id"):
        MaskedDiffusionSampler(bare)
    with pytest.raises(ValueError, match="needs an `eos_token_id`"):
        MaskedDiffusionSampler(bare, mask_token_id=MASK, logits_eos_inf=True)
    with pytest.raises(ValueError, match="cache='prefix' needs"):
        MaskedDiffusionSampler(bare, mask_token_id=MASK, cache="prefix")


def test_invalid_inputs_raise(model):
    sampler = _sampler(model)
    input_ids, attention_mask = left_padded_batch()
    with pytest.raises(ValueError, match="empty batch"):
        sampler.generate(input_ids[:0])
    with_mask = input_ids.clone()
    with_mask[0, -1] = MASK
    with pytest.raises(ValueError, match="contains the mask token"):
        sampler.generate(with_mask)
    with pytest.raises(ValueError, match="not left-padded"):
        sampler.generate(input_ids, attention_mask.flip(1))
    with pytest.raises(ValueError, match="shape"):
        sampler.generate(input_ids, attention_mask[:, 1:])
    with pytest.raises(TypeError, match="2D"):
        sampler.generate(input_ids[0])
