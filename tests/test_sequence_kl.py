"""`sequence_kl` by exact enumeration on a toy mask predictor whose conditionals come from an explicit joint
distribution, and on the tiny LLaDA (a fresh LoRA is exactly the base)."""

import itertools
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.data.chat import tokenize_prompts
from diffusion_rl.evaluation.sequence_kl import sequence_kl
from diffusion_rl.models.tiny import build_tiny_model

VOCAB, MASK, STOP = 3, 3, 2  # tokens 0, 1, 2 (2 ends an answer) and the mask


class JointPredictor(torch.nn.Module):
    """A perfect mask predictor of a joint over `G` tokens: each masked position gets the exact conditional of the
    joint given the unmasked ones. `use_reference` switches to a second joint (the "base" arm)."""

    def __init__(self, joint: torch.Tensor, reference_joint: torch.Tensor):
        super().__init__()
        self.joints = {False: joint, True: reference_joint}
        self.use_reference = False
        self.gen_length = joint.dim()

    def reference(self):
        predictor = self

        class _Context:
            def __enter__(self):
                predictor.use_reference = True

            def __exit__(self, *exc):
                predictor.use_reference = False

        return _Context()

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        joint = self.joints[self.use_reference]
        canvas = input_ids[:, -self.gen_length :]
        logits = torch.full((*canvas.shape, VOCAB + 1), -1e4)  # finite, as a real model's: p(mask) = 0 exactly
        for row, tokens in enumerate(canvas.tolist()):
            # Condition on the unmasked positions, marginalise the others.
            index = tuple(slice(None) if t == MASK else t for t in tokens)
            conditional = joint[index]
            free = [k for k, t in enumerate(tokens) if t == MASK]
            for axis, k in enumerate(free):
                others = tuple(a for a in range(len(free)) if a != axis)
                marginal = conditional.sum(dim=others) if others else conditional
                logits[row, k, :VOCAB] = (marginal / marginal.sum()).log()
        return type("Out", (), {"logits": logits})()


def _exact_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum())


def _random_joint(generator: torch.Generator, length: int) -> torch.Tensor:
    joint = torch.rand((VOCAB,) * length, generator=generator) + 0.05
    return joint / joint.sum()


@pytest.mark.parametrize("length", [2, 3])
def test_path_estimate_matches_the_exact_sequence_kl(length):
    generator = torch.Generator().manual_seed(length)
    p, q = _random_joint(generator, length), _random_joint(generator, length)
    model = JointPredictor(p, q)
    rows = 3000
    prompt = torch.zeros(rows, 1, dtype=torch.long)
    out = sequence_kl(
        model, model.reference, prompt, torch.ones_like(prompt), gen_length=length, mask_token_id=MASK,
        stop_token_ids=[STOP], generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    exact = _exact_kl(p, q)
    # Unbiased for every order; 4 standard errors of the 3000-path mean.
    assert out.total.mean().item() == pytest.approx(exact, abs=4 * out.total.std().item() / math.sqrt(rows))
    # The sampled answers follow the adapter's joint (chi-square-free check: frequencies within 0.03).
    counts = torch.zeros((VOCAB,) * length)
    for tokens in out.completion_ids.tolist():
        counts[tuple(tokens)] += 1
    assert (counts / rows - p).abs().max() < 0.03
    # Lengths: up to and including the first stop token.
    for tokens, n in zip(out.completion_ids.tolist(), out.length.tolist()):
        assert n == (tokens.index(STOP) + 1 if STOP in tokens else length)


def test_a_mode_switch_costs_the_fully_masked_kl_at_every_position():
    # Base answers `00` w.p. 0.9 and `11` w.p. 0.1; the adapter the reverse. Sequence KL: 0.8 ln 9 per answer.
    p, q = torch.zeros(VOCAB, VOCAB), torch.zeros(VOCAB, VOCAB)
    p[0, 0], p[1, 1], q[0, 0], q[1, 1] = 0.1, 0.9, 0.9, 0.1
    p, q = p + 1e-9, q + 1e-9  # full support, so that every conditional is defined
    p, q = p / p.sum(), q / q.sum()
    model = JointPredictor(p, q)
    exact = _exact_kl(p, q)
    assert exact == pytest.approx(0.8 * math.log(9), rel=1e-6)
    # Fully masked: each position's marginal pays the whole switch, so the per-position mean is 2x the per token.
    canvas = torch.full((1, 2), MASK)
    policy = model(canvas).logits[0, :, :VOCAB].log_softmax(-1)
    with model.reference():
        base = model(canvas).logits[0, :, :VOCAB].log_softmax(-1)
    per_position = (policy.exp() * (policy - base)).sum(-1)
    torch.testing.assert_close(per_position, torch.full((2,), exact), rtol=1e-5, atol=1e-6)
    # Along a path the second position is then free: the sum over the path is the sequence KL, once.
    rows = 2000
    prompt = torch.zeros(rows, 1, dtype=torch.long)
    out = sequence_kl(
        model, model.reference, prompt, torch.ones_like(prompt), gen_length=2, mask_token_id=MASK,
        stop_token_ids=[STOP], generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert out.total.mean().item() == pytest.approx(exact, rel=0.02)
    assert out.per_token.mean().item() == pytest.approx(exact / 2, rel=0.02)


def test_fresh_lora_is_exactly_the_base(tiny_tokenizer):
    model = get_peft_model(
        build_tiny_model(tiny_tokenizer, seed=0),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    prompts = tokenize_prompts(tiny_tokenizer, ["Who is the nurse?", "Describe the engineer at work."])
    out = sequence_kl(
        model, model.disable_adapter, prompts["input_ids"], prompts["attention_mask"], gen_length=6,
        mask_token_id=model.config.mask_token_id, stop_token_ids=[tiny_tokenizer.eos_token_id],
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert out.total.tolist() == [0.0, 0.0]
    assert ((out.length >= 1) & (out.length <= 6)).all()
    assert not (out.completion_ids == model.config.mask_token_id).any()  # every position was unmasked once
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5, generator=torch.Generator().manual_seed(0))
    moved = sequence_kl(
        model, model.disable_adapter, prompts["input_ids"], prompts["attention_mask"], gen_length=6,
        mask_token_id=model.config.mask_token_id, stop_token_ids=[tiny_tokenizer.eos_token_id],
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert (moved.total > 0).all()


def test_orders_are_uniform_permutations():
    # Every order of 3 positions appears (the estimate is over random orders, none favoured).
    p = _random_joint(torch.Generator().manual_seed(5), 3)
    model = JointPredictor(p, p)
    seen = set()
    original = model.forward

    def recording(input_ids, attention_mask=None, logits_to_keep=0):
        if not model.use_reference:
            seen.add(tuple(int(t == MASK) for t in input_ids[0, -3:].tolist()))
        return original(input_ids, attention_mask, logits_to_keep)

    model.forward = recording
    for seed in range(40):
        prompt = torch.zeros(1, 1, dtype=torch.long)
        out = sequence_kl(
            model, model.reference, prompt, torch.ones_like(prompt), gen_length=3, mask_token_id=MASK,
            stop_token_ids=[STOP], generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        assert out.total.item() == pytest.approx(0.0, abs=1e-6)  # identical joints
    # All 8 mask patterns except "none masked" occur along the 40 paths: all 3! orders were drawn.
    assert seen == {m for m in itertools.product((0, 1), repeat=3) if any(m)}
