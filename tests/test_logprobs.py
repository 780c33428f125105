"""Log-prob estimators against exact enumeration on a tiny vocabulary (8 tokens, completions of 2-4 tokens)."""

import contextlib
import itertools
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.logprobs import (
    ESTIMATORS,
    EstimatorOptions,
    RolloutBatch,
    estimate_logprobs,
    get_estimator,
    logprob_estimator_std,
)
from diffusion_rl.models.llada import LladaConfig, LladaForMaskedDiffusion

VOCAB, MASK, PAD = 8, 7, 6


def make_model(seed: int = 0) -> LladaForMaskedDiffusion:
    """A 1-layer LLaDA over 8 tokens with random weights chosen so that context visibly changes predictions."""
    config = LladaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        mask_token_id=MASK,
        eos_token_id=5,
        eot_token_id=4,
        pad_token_id=PAD,
        bos_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
    )
    model = LladaForMaskedDiffusion(config)
    generator = torch.Generator().manual_seed(seed)
    # Sharp attention, mild embeddings / MLP / head: order-dependent likelihoods (the ELBO gap is ~0.1 nat).
    stds = {"embed": 0.5, "mlp": 0.3, "lm_head": 0.3, "self_attn": 0.5}
    with torch.no_grad():
        for name, param in model.named_parameters():
            std = next((value for key, value in stds.items() if key in name), None)
            if std is not None:
                param.normal_(0.0, std, generator=generator)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def single_logprobs(model, prompt: list[int], canvas: list[int]) -> torch.Tensor:
    """(G, V) log-softmax at the completion positions of one unpadded sequence: an independent full forward."""
    ids = torch.tensor([prompt + canvas])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) :]
    return logits.float().log_softmax(-1)


# Rows of (prompt, completion canvas, number of valid completion tokens); prompts are left padded in the batch.
ROWS = [([1, 2, 3], [2, 5, 1], 2), ([3, 1], [4, 4, 0], 3), ([2], [0, 1, 5], 3)]


def make_batch(rows=ROWS, commit_step=None) -> RolloutBatch:
    width = max(len(p) for p, _, _ in rows)
    prompt_ids = torch.tensor([[PAD] * (width - len(p)) + p for p, _, _ in rows])
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _, _ in rows])
    completion_ids = torch.tensor([c for _, c, _ in rows])
    completion_mask = torch.tensor([[i < n for i in range(len(c))] for _, c, n in rows])
    return RolloutBatch(prompt_ids, prompt_mask, completion_ids, completion_mask, commit_step)


def masked_canvas(completion, hidden, num_valid):
    """Canvas with `hidden` positions and everything after the valid part replaced by the mask token."""
    return [MASK if (i in hidden or i >= num_valid) else tok for i, tok in enumerate(completion)]


def exact_elbo(model, prompt, completion, num_valid) -> float:
    """sum_l (1/l) E_{|M|=l} sum_{i in M} log p(x_i | x_{not M}), by enumerating every mask M."""
    total = 0.0
    for count in range(1, num_valid + 1):
        subsets = list(itertools.combinations(range(num_valid), count))
        for hidden in subsets:
            logp = single_logprobs(model, prompt, masked_canvas(completion, hidden, num_valid))
            total += sum(logp[i, completion[i]].item() for i in hidden) / count / len(subsets)
    return total


def order_logprobs(model, prompt, completion, num_valid) -> list[float]:
    """log prod_k p(x_{o_k} | x_{o_<k}) for every order o of the valid positions (the any-order process)."""
    values = []
    for order in itertools.permutations(range(num_valid)):
        total = 0.0
        for k, position in enumerate(order):
            logp = single_logprobs(model, prompt, masked_canvas(completion, set(order[k:]), num_valid))
            total += logp[position, completion[position]].item()
        values.append(total)
    return values


def test_one_step_equals_hand_sum_of_fully_masked_log_softmax(model):
    out = estimate_logprobs(
        model, make_batch(), estimator="one_step", mask_token_id=MASK, generator=gen(), num_samples=3
    )
    for row, (prompt, completion, num_valid) in enumerate(ROWS):
        logp = single_logprobs(model, prompt, [MASK] * len(completion))
        expected = sum(logp[i, completion[i]].item() for i in range(num_valid))
        assert out.logps[row].item() == pytest.approx(expected, abs=1e-5)
        probs = logp[:num_valid].exp()
        entropy = -(probs * logp[:num_valid]).sum(-1).mean().item()
        assert out.entropy[row].item() == pytest.approx(entropy, abs=1e-5)
    assert out.draws.shape == (3, 3)
    torch.testing.assert_close(out.draws, out.logps[:, None].expand(-1, 3).detach())
    assert out.kl is None


def test_one_step_prompt_masking_hides_real_prompt_tokens_only(model):
    out = estimate_logprobs(
        model,
        make_batch(),
        estimator="one_step",
        mask_token_id=MASK,
        generator=gen(1),
        num_samples=2,
        prompt_mask_prob=0.99999,
    )
    for row, (prompt, completion, num_valid) in enumerate(ROWS):
        # Every real prompt token masked; the left padding stays padding (it is not attended either way).
        logp = single_logprobs(model, [MASK] * len(prompt), [MASK] * len(completion))
        expected = sum(logp[i, completion[i]].item() for i in range(num_valid))
        torch.testing.assert_close(out.draws[row], torch.full((2,), expected), atol=1e-5, rtol=0)


@pytest.mark.parametrize("antithetic", [False, True])
def test_mc_elbo_is_unbiased_for_the_exact_elbo_which_bounds_the_any_order_likelihood(model, antithetic):
    prompt, completion, num_valid = [3, 1], [4, 2, 0, 5], 3  # one position after the valid part
    elbo = exact_elbo(model, prompt, completion, num_valid)
    per_order = order_logprobs(model, prompt, completion, num_valid)
    # Independent check of the l-weighting identity: the ELBO is the mean over orders of the order log-likelihood.
    assert elbo == pytest.approx(sum(per_order) / len(per_order), abs=1e-5)
    any_order = math.log(sum(math.exp(v) for v in per_order) / len(per_order))
    assert elbo < any_order - 0.05  # Jensen, strict for a context-dependent model

    copies = 3000
    batch = make_batch([(prompt, completion, num_valid)] * copies)
    with torch.no_grad():
        out = estimate_logprobs(
            model, batch, estimator="mc_elbo", mask_token_id=MASK, generator=gen(2), num_samples=2,
            antithetic=antithetic,
        )  # fmt: skip
    torch.testing.assert_close(out.logps, out.draws.mean(-1))
    stderr = out.logps.std().item() / math.sqrt(copies)
    assert abs(out.logps.mean().item() - elbo) < 5 * stderr
    for s in range(2):
        draw_mean, draw_stderr = out.draws[:, s].mean().item(), out.draws[:, s].std().item() / math.sqrt(copies)
        if antithetic:  # one pair, one stratum: each half alone keeps the exact marginal, so it is unbiased too
            assert abs(draw_mean - elbo) < 5 * draw_stderr
        else:  # stratum 0 draws small l only, stratum 1 large l: only their mean is unbiased
            assert abs(draw_mean - elbo) > 5 * draw_stderr


def test_mc_elbo_single_valid_token_is_exact(model):
    prompt, completion = [1, 2], [3, 5]
    batch = make_batch([(prompt, completion, 1)])
    out = estimate_logprobs(model, batch, estimator="mc_elbo", mask_token_id=MASK, generator=gen(), num_samples=4)
    logp = single_logprobs(model, prompt, [MASK, MASK])
    torch.testing.assert_close(out.draws[0], torch.full((4,), logp[0, 3].item()), atol=1e-5, rtol=0)


def test_mc_elbo_antithetic_pairs_cover_every_token(model):
    """Record the LM-head inputs: each pair of draws scores L + 1 positions (one shared), the first l of an order."""
    prompt, completion, num_valid = [1], [2, 3, 4, 0], 4
    batch = make_batch([(prompt, completion, num_valid)])
    sizes = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
    try:
        estimate_logprobs(
            model, batch, estimator="mc_elbo", mask_token_id=MASK, generator=gen(3), num_samples=6, antithetic=True
        )
    finally:
        handle.remove()
    assert len(sizes) == 6
    assert all(a + b == num_valid + 1 for a, b in zip(sizes[::2], sizes[1::2]))


def trajectory_reference(model, prompt, completion, num_valid, commit_step) -> float:
    total = 0.0
    for step in sorted(set(commit_step[:num_valid])):
        canvas = [tok if commit_step[i] < step else MASK for i, tok in enumerate(completion)]
        logp = single_logprobs(model, prompt, canvas)
        total += sum(logp[i, completion[i]].item() for i in range(num_valid) if commit_step[i] == step)
    return total


# Commit orders over 4 steps: the tail (position after the valid part) is committed early in row 0, so the replay
# must show it; row 1 commits two tokens at once.
TRAJECTORY_ROWS = [([1, 2, 3], [2, 0, 5, 3], 3), ([3, 1], [4, 4, 0, 1], 4)]
TRAJECTORY_STEPS = torch.tensor([[3, 1, 2, 0], [2, 0, 0, 3]])


def test_trajectory_exact_equals_hand_replay(model):
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    out = estimate_logprobs(
        model, batch, estimator="trajectory", mask_token_id=MASK, generator=gen(), num_samples=4, steps=4
    )
    for row, (prompt, completion, num_valid) in enumerate(TRAJECTORY_ROWS):
        expected = trajectory_reference(model, prompt, completion, num_valid, TRAJECTORY_STEPS[row].tolist())
        assert out.logps[row].item() == pytest.approx(expected, abs=1e-5)
        assert torch.allclose(out.draws[row], out.logps[row].detach())


def test_trajectory_sampled_steps_are_unbiased(model):
    copies = 400
    rows = TRAJECTORY_ROWS * copies
    batch = make_batch(rows, commit_step=TRAJECTORY_STEPS.repeat(copies, 1))
    with torch.no_grad():
        out = estimate_logprobs(
            model, batch, estimator="trajectory", mask_token_id=MASK, generator=gen(4), num_samples=2
        )
    for row, (prompt, completion, num_valid) in enumerate(TRAJECTORY_ROWS):
        expected = trajectory_reference(model, prompt, completion, num_valid, TRAJECTORY_STEPS[row].tolist())
        values = out.logps[row::2]
        assert values.std() > 0  # really sampled (3 steps, 2 taken)
        assert abs(values.mean().item() - expected) < 5 * values.std().item() / math.sqrt(copies)


def test_trajectory_matches_the_sampler_when_available(model):
    """With the real sampler's commit steps the replay shows exactly the canvases the sampler saw."""
    sampler_module = pytest.importorskip("diffusion_rl.sampling.sampler")
    sampler = sampler_module.MaskedDiffusionSampler(
        model, mask_token_id=MASK, steps=4, gen_length=4, block_length=2, temperature=1.0, eos_token_id=5,
        eot_token_id=4, pad_token_id=PAD,
    )  # fmt: skip
    prompts = [[1, 2, 3], [3, 0, 2]]
    prompt_ids = torch.tensor(prompts)
    result = sampler.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), generator=gen(5))
    batch = RolloutBatch(
        prompt_ids, torch.ones_like(prompt_ids), result.completion_ids, result.completion_mask, result.commit_step
    )
    out = estimate_logprobs(
        model, batch, estimator="trajectory", mask_token_id=MASK, generator=gen(), num_samples=4, steps=4,
        block_length=2,
    )  # fmt: skip
    for row, prompt in enumerate(prompts):
        completion, steps = result.completion_ids[row].tolist(), result.commit_step[row].tolist()
        expected = trajectory_reference(model, prompt, completion, int(result.completion_mask[row].sum()), steps)
        assert out.logps[row].item() == pytest.approx(expected, abs=1e-5)


def lora_model(init_b: float = 0.0):
    peft_model = get_peft_model(
        make_model(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    )
    if init_b:
        generator = gen(6)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, init_b, generator=generator)
    return peft_model


KWARGS = {
    "one_step": {"num_samples": 2, "prompt_mask_prob": 0.3},
    "mc_elbo": {"num_samples": 2},
    "trajectory": {"num_samples": 2},
}


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_zero_init_lora_gives_exactly_zero_kl_and_gradients_only_in_lora(estimator):
    peft_model = lora_model()
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    out = estimate_logprobs(
        peft_model, batch, estimator=estimator, mask_token_id=MASK, generator=gen(),
        reference=peft_model.disable_adapter, **KWARGS[estimator],
    )  # fmt: skip
    assert torch.equal(out.kl, torch.zeros(2))
    out.logps.sum().backward()
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad
            if "lora_B" in name:  # B = 0 makes A's gradient exactly 0; B's is not
                assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_same_generator_state_same_masks_and_global_rng_untouched(model, estimator):
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    first_gen = gen(7)
    second_gen = torch.Generator().set_state(first_gen.get_state())
    global_state = torch.get_rng_state()
    first = estimate_logprobs(
        model, batch, estimator=estimator, mask_token_id=MASK, generator=first_gen, reference=contextlib.nullcontext,
        **KWARGS[estimator],
    )  # fmt: skip
    second = estimate_logprobs(
        model, batch, estimator=estimator, mask_token_id=MASK, generator=second_gen, **KWARGS[estimator]
    )
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(first.draws, second.draws)
    # The reference pass sees the very same masked inputs: policy == reference gives KL exactly 0.
    assert torch.equal(first.kl, torch.zeros(2))


def test_kl_against_hand_computation_with_adapter_on_and_off():
    peft_model = lora_model(init_b=0.5).eval()
    batch = make_batch()
    outputs = {
        name: estimate_logprobs(
            peft_model,
            batch,
            estimator="one_step",
            mask_token_id=MASK,
            generator=gen(),
            reference=peft_model.disable_adapter,
            kl_estimator=name,
        )  # fmt: skip
        for name in ("full", "k1", "k3")
    }
    for row, (prompt, completion, num_valid) in enumerate(ROWS):
        canvas = [MASK] * len(completion)
        logp = single_logprobs(peft_model, prompt, canvas)[:num_valid]
        with peft_model.disable_adapter():
            ref = single_logprobs(peft_model, prompt, canvas)[:num_valid]
        full = (logp.exp() * (logp - ref)).sum(-1).mean().item()
        tokens = torch.tensor(completion[:num_valid])
        log_ratio = ref.gather(-1, tokens[:, None]) - logp.gather(-1, tokens[:, None])  # log q/p
        assert full > 1e-3
        assert outputs["full"].kl[row].item() == pytest.approx(full, abs=1e-5)
        assert outputs["k1"].kl[row].item() == pytest.approx(-log_ratio.mean().item(), abs=1e-5)
        k3 = (log_ratio.exp() - 1 - log_ratio).mean().item()
        assert outputs["k3"].kl[row].item() == pytest.approx(k3, abs=1e-5)
    # KL in the loss: its gradient reaches the adapter only when asked to.
    outputs["full"].kl.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_" in n)
    no_grad_kl = estimate_logprobs(
        peft_model, batch, estimator="one_step", mask_token_id=MASK, generator=gen(),
        reference=peft_model.disable_adapter, kl_requires_grad=False,
    ).kl  # fmt: skip
    assert not no_grad_kl.requires_grad
    torch.testing.assert_close(no_grad_kl, outputs["full"].kl.detach())


def test_only_scored_positions_go_through_the_lm_head(model):
    batch = make_batch()
    sizes = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: sizes.append(tuple(args[0].shape)))
    try:
        estimate_logprobs(model, batch, estimator="one_step", mask_token_id=MASK, generator=gen())
    finally:
        handle.remove()
    assert sizes == [(int(batch.completion_mask.sum()), 16)]


@pytest.mark.parametrize(
    ("estimator", "kwargs", "forwards"),
    [
        ("one_step", {"num_samples": 3}, 1),
        ("one_step", {"num_samples": 3, "prompt_mask_prob": 0.5}, 3),
        ("mc_elbo", {"num_samples": 3}, 3),
        ("trajectory", {"num_samples": 3}, 3),
        ("trajectory", {"num_samples": 8, "steps": 5}, 5),
    ],
)
@pytest.mark.parametrize("valid_tokens", [0, 1, 4])
def test_number_of_forwards_does_not_depend_on_the_data(model, estimator, kwargs, forwards, valid_tokens):
    """ZeRO-3 gathers parameters collectively in every forward: ranks with different data must run as many."""
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    batch.completion_mask[:] = torch.arange(4) < valid_tokens
    calls = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        out = estimate_logprobs(
            model, batch, estimator=estimator, mask_token_id=MASK, generator=gen(), reference=contextlib.nullcontext,
            **kwargs,
        )  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == 2 * forwards
    if valid_tokens == 0:
        assert torch.equal(out.logps, torch.zeros(2)) and torch.equal(out.kl, torch.zeros(2))


def test_estimator_std(model):
    batch = make_batch()
    deterministic = logprob_estimator_std(
        model, batch, estimator="one_step", mask_token_id=MASK, generator=gen(), num_samples=1
    )
    assert deterministic.item() == 0.0
    noisy = logprob_estimator_std(
        model, batch, estimator="mc_elbo", mask_token_id=MASK, generator=gen(), num_samples=1
    )
    more_draws = logprob_estimator_std(
        model, make_batch(ROWS * 50), estimator="mc_elbo", mask_token_id=MASK, generator=gen(), num_samples=8
    )
    assert noisy.item() > 0 and 0 < more_draws.item() < noisy.item()


def test_rollout_batch_rows_and_validation():
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    row = batch[1]
    assert len(row) == 1 and torch.equal(row.commit_step, TRAJECTORY_STEPS[1:])
    with pytest.raises(ValueError, match="prompt_mask"):
        RolloutBatch(batch.prompt_ids, batch.prompt_mask[:, 1:], batch.completion_ids, batch.completion_mask)
    with pytest.raises(ValueError, match="rows"):
        RolloutBatch(batch.prompt_ids[:1], batch.prompt_mask[:1], batch.completion_ids, batch.completion_mask)
    with pytest.raises(ValueError, match="commit_step"):
        RolloutBatch(batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask, torch.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"estimator": "exact"}, ValueError, "Unknown log-prob estimator"),
        ({"generator": 0}, TypeError, "torch.Generator"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"prompt_mask_prob": 1.0}, ValueError, "prompt_mask_prob"),
        ({"kl_estimator": "k2"}, ValueError, "kl_estimator"),
        ({"antithetic": True, "num_samples": 3, "estimator": "mc_elbo"}, ValueError, "even"),
        ({"antithetic": True}, ValueError, "mc_elbo"),
        ({"estimator": "trajectory", "prompt_mask_prob": 0.1}, ValueError, "prompt_mask_prob=0"),
        ({"estimator": "trajectory", "steps": 2}, ValueError, "steps=2"),
        ({"estimator": "trajectory", "steps": 4, "block_length": 2}, ValueError, "inconsistent"),
    ],
)
def test_bad_arguments_raise_early(model, kwargs, error, match):
    arguments = {"estimator": "one_step", "mask_token_id": MASK, "generator": gen()} | kwargs
    with pytest.raises(error, match=match):
        estimate_logprobs(model, make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS), **arguments)


def test_trajectory_without_commit_steps_raises(model):
    with pytest.raises(ValueError, match="commit_step"):
        get_estimator("trajectory")(model, make_batch(), EstimatorOptions(mask_token_id=MASK, generator=gen()))


PER_TOKEN_CASES = [
    ("one_step", {}),
    ("one_step", {"num_samples": 3, "prompt_mask_prob": 0.3}),
    ("mc_elbo", {"num_samples": 3}),
    ("mc_elbo", {"num_samples": 4, "antithetic": True}),
    ("trajectory", {"num_samples": 4, "steps": 4}),  # exact
    ("trajectory", {"num_samples": 2}),  # sampled steps, rescaled by D / k
]


@pytest.mark.parametrize(("estimator", "kwargs"), PER_TOKEN_CASES)
def test_per_token_values_sum_to_the_sequence_logps_with_the_same_gradient(estimator, kwargs):
    """`token_logps` (what the clipped ratios and token-normalised losses use) decomposes `logps` exactly."""
    peft_model = lora_model(init_b=0.5)
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    out = estimate_logprobs(peft_model, batch, estimator=estimator, mask_token_id=MASK, generator=gen(3), **kwargs)
    assert out.token_logps.shape == batch.completion_ids.shape and out.token_logps.requires_grad
    torch.testing.assert_close(out.token_logps.sum(-1), out.logps, rtol=0, atol=1e-5)
    assert torch.equal(out.token_logps[~batch.completion_mask], torch.zeros(int((~batch.completion_mask).sum())))
    params = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    from_sum = torch.autograd.grad(out.token_logps.sum(), params, retain_graph=True)
    from_logps = torch.autograd.grad(out.logps.sum(), params)
    for a, b in zip(from_sum, from_logps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The same generator state gives the same masks, hence the same per-token values (old vs new log-probs).
    again = estimate_logprobs(peft_model, batch, estimator=estimator, mask_token_id=MASK, generator=gen(3), **kwargs)
    torch.testing.assert_close(again.token_logps, out.token_logps, rtol=0, atol=0)


def test_one_step_per_token_values_are_the_fully_masked_log_softmax(model):
    batch = make_batch()
    out = estimate_logprobs(model, batch, estimator="one_step", mask_token_id=MASK, generator=gen())
    for row, (prompt, completion, num_valid) in enumerate(ROWS):
        logp = single_logprobs(model, prompt, [MASK] * len(completion))
        expected = [logp[i, completion[i]].item() if i < num_valid else 0.0 for i in range(len(completion))]
        assert out.token_logps[row].tolist() == pytest.approx(expected, abs=1e-5)


def test_trajectory_exact_per_token_values_are_the_committing_step_log_probs(model):
    batch = make_batch(TRAJECTORY_ROWS, commit_step=TRAJECTORY_STEPS)
    out = estimate_logprobs(
        model, batch, estimator="trajectory", mask_token_id=MASK, generator=gen(), num_samples=4, steps=4
    )
    for row, (prompt, completion, num_valid) in enumerate(TRAJECTORY_ROWS):
        steps = TRAJECTORY_STEPS[row].tolist()
        for i in range(len(completion)):
            canvas = [tok if steps[j] < steps[i] else MASK for j, tok in enumerate(completion)]
            expected = single_logprobs(model, prompt, canvas)[i, completion[i]].item() if i < num_valid else 0.0
            assert out.token_logps[row, i].item() == pytest.approx(expected, abs=1e-5)
