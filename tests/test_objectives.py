"""Every objective option against a hand computation of the loss and its gradient (plain Python floats).

The tiny case: 3 completions x 4 token positions, hand-picked log-probabilities, old log-probabilities chosen so that
some tokens fall outside the clip range on the side where PPO's pessimistic bound cuts the gradient (and some on the
side where it does not), a completion mask with padding, and per-sequence KLs.
"""

import math

import pytest
import torch

from diffusion_rl.objectives import (
    compute_advantages,
    policy_loss,
    reinforce_loss,
    resolve_scale_rewards,
    truncated_completions,
)

LOGPS = [[-1.0, -0.5, -2.0, -0.3], [-0.7, -1.2, -0.4, -0.9], [-0.2, -1.5, -0.6, -1.1]]
MASK = [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
ADVANTAGES = [0.5, -1.0, 2.0]
# new - old, per token. Row 0 (A > 0): 0.4 is above 1 + eps_high (clipped, no gradient), -0.5 below 1 - eps (the
# unclipped term is the smaller one: gradient kept). Row 1 (A < 0): -0.4 below 1 - eps (clipped), 0.5 above
# (kept). Row 2: 0.3 above (clipped); its two masked positions have large ratios that must not matter.
LOG_RATIOS = [[0.4, 0.1, -0.5, 3.0], [-0.4, 0.5, 0.0, -0.1], [0.2, 0.3, 2.0, -3.0]]
OLD = [[lp - d for lp, d in zip(row, deltas)] for row, deltas in zip(LOGPS, LOG_RATIOS)]
KL = [0.1, 0.3, 0.05]
EPS, EPS_HIGH = 0.2, 0.28


def _tensors(with_old: bool = True, with_kl: bool = False):
    token_logps = torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True)
    kl = torch.tensor(KL, dtype=torch.float64, requires_grad=True) if with_kl else None
    old = torch.tensor(OLD, dtype=torch.float64) if with_old else None
    return token_logps, torch.tensor(MASK, dtype=torch.bool), torch.tensor(ADVANTAGES, dtype=torch.float64), old, kl


def _hand_token(log_ratio: float, advantage: float) -> tuple[float, float]:
    """PPO's per-token loss -min(r A, clip(r) A) and its derivative with respect to log p."""
    ratio = math.exp(log_ratio)
    clipped = min(max(ratio, 1 - EPS), 1 + EPS_HIGH)
    if ratio * advantage <= clipped * advantage:
        return -ratio * advantage, -ratio * advantage  # d(-r A)/d log p = -r A
    return -clipped * advantage, 0.0


def _hand_token_loss(loss_type: str, log_ratios, kl_coef: float = 0.0, max_len: int = 4):
    """Loss, d loss / d token_logps and d loss / d kl, computed by hand for the token-level loss types."""
    num_rows = len(LOGPS)
    lengths = [sum(row) for row in MASK]
    total_tokens = sum(lengths)
    loss, grad, kl_grad = 0.0, [[0.0] * 4 for _ in range(num_rows)], [0.0] * num_rows
    for i in range(num_rows):
        if loss_type == "grpo":
            weight = 1 / (lengths[i] * num_rows)
        elif loss_type == "dr_grpo":
            weight = 1 / (num_rows * max_len)
        else:  # dapo
            weight = 1 / total_tokens
        for t in range(4):
            if MASK[i][t]:
                value, derivative = _hand_token(log_ratios[i][t], ADVANTAGES[i])
                loss += weight * value
                grad[i][t] = weight * derivative
        loss += weight * kl_coef * KL[i] * lengths[i]
        kl_grad[i] = weight * kl_coef * lengths[i]
    return loss, grad, kl_grad


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("kl_coef", [0.0, 0.04])
def test_token_level_clipped_loss_and_gradient(loss_type, kl_coef):
    token_logps, mask, advantages, old, kl = _tensors(with_kl=kl_coef > 0)
    loss = policy_loss(
        token_logps, mask, advantages, loss_type=loss_type, old_token_logps=old, epsilon=EPS, epsilon_high=EPS_HIGH,
        kl=kl, kl_coef=kl_coef,
    )
    expected, grad, kl_grad = _hand_token_loss(loss_type, LOG_RATIOS, kl_coef)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(token_logps.grad, torch.tensor(grad, dtype=torch.float64), rtol=0, atol=1e-12)
    # The clipped tokens (row 0 token 0, row 1 token 0, row 2 token 1) and the masked ones get no gradient.
    assert token_logps.grad[0, 0] == token_logps.grad[1, 0] == token_logps.grad[2, 1] == 0
    assert token_logps.grad[0, 3] == token_logps.grad[2, 2] == token_logps.grad[2, 3] == 0
    if kl_coef:
        torch.testing.assert_close(kl.grad, torch.tensor(kl_grad, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_on_policy_token_losses_are_reinforce_gradients_with_token_normalisation(loss_type):
    """Without old log-probs the ratio is 1: the loss value is -sum(A) (normalised) and the gradient -A per token."""
    token_logps, mask, advantages, _, _ = _tensors(with_old=False)
    loss = policy_loss(token_logps, mask, advantages, loss_type=loss_type, max_completion_length=5)
    expected, grad, _ = _hand_token_loss(loss_type, [[0.0] * 4 for _ in LOGPS], max_len=5)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(token_logps.grad, torch.tensor(grad, dtype=torch.float64), rtol=0, atol=1e-12)
    # grpo: -A_i / (L_i M) for every valid token, e.g. row 1: 1 / (4 * 3).
    if loss_type == "grpo":
        assert token_logps.grad[1, 0].item() == pytest.approx(1 / 12, abs=1e-12)


def test_reinforce_is_the_seed_loss_on_the_token_sums():
    token_logps, mask, advantages, _, kl = _tensors(with_old=False, with_kl=True)
    loss = policy_loss(token_logps, mask, advantages, kl=kl, kl_coef=0.1)
    sums = [sum(lp * m for lp, m in zip(row, mrow)) for row, mrow in zip(LOGPS, MASK)]
    expected = -sum(s * a for s, a in zip(sums, ADVANTAGES)) / 3 + 0.1 * sum(KL) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    seq = torch.tensor(sums, dtype=torch.float64)
    assert loss.item() == pytest.approx(reinforce_loss(seq, advantages, kl=kl.detach(), kl_coef=0.1).item(), abs=1e-12)
    loss.backward()
    grad = [[-a / 3 * m for m in mrow] for a, mrow in zip(ADVANTAGES, MASK)]
    torch.testing.assert_close(token_logps.grad, torch.tensor(grad, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(kl.grad, torch.full((3,), 0.1 / 3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_reinforce_with_old_logps_clips_the_sequence_ratio():
    token_logps, mask, advantages, old, _ = _tensors()
    loss = policy_loss(
        token_logps, mask, advantages, loss_type="reinforce", old_token_logps=old, epsilon=EPS, epsilon_high=EPS_HIGH
    )
    # Sequence log-ratios: 0.4 + 0.1 - 0.5 = 0 (ratio 1), -0.4 + 0.5 + 0 - 0.1 = 0 (1), 0.2 + 0.3 = 0.5 (clipped).
    values = [_hand_token(sum(d * m for d, m in zip(dr, mr)), a) for dr, mr, a in zip(LOG_RATIOS, MASK, ADVANTAGES)]
    assert loss.item() == pytest.approx(sum(v for v, _ in values) / 3, abs=1e-12)
    loss.backward()
    grad = [[d / 3 * m for m in mrow] for (_, d), mrow in zip(values, MASK)]
    torch.testing.assert_close(token_logps.grad, torch.tensor(grad, dtype=torch.float64), rtol=0, atol=1e-12)
    assert values[2][1] == 0.0 and token_logps.grad[2].abs().sum() == 0  # the clipped sequence gets no gradient


@pytest.mark.parametrize("loss_type", ["reinforce", "grpo", "dr_grpo", "dapo"])
def test_masked_rows_get_no_loss_or_kl_but_count_in_the_batch(loss_type):
    """mask_truncated_completions: a row whose mask is empty contributes nothing; grpo/dr_grpo still divide by 3."""
    token_logps, mask, advantages, old, kl = _tensors(with_kl=True)
    mask[1] = False
    loss = policy_loss(token_logps, mask, advantages, loss_type=loss_type, old_token_logps=old, kl=kl, kl_coef=0.5)
    loss.backward()
    assert token_logps.grad[1].abs().sum() == 0 and kl.grad[1] == 0
    kept = policy_loss(
        token_logps.detach()[[0, 2]], mask[[0, 2]], advantages[[0, 2]], loss_type=loss_type,
        old_token_logps=old[[0, 2]], kl=kl.detach()[[0, 2]], kl_coef=0.5, num_items=3 if loss_type != "dapo" else None,
    )
    assert loss.item() == pytest.approx(kept.item(), abs=1e-12)


@pytest.mark.parametrize("loss_type", ["reinforce", "grpo", "dr_grpo", "dapo"])
def test_micro_batches_with_the_step_normaliser_add_up_to_the_step_loss(loss_type):
    token_logps, mask, advantages, old, kl = _tensors(with_kl=True)
    kwargs = {"loss_type": loss_type, "kl_coef": 0.2, "epsilon": EPS, "epsilon_high": EPS_HIGH}
    whole = policy_loss(token_logps, mask, advantages, old_token_logps=old, kl=kl, **kwargs)
    num_items = float(mask.sum()) if loss_type == "dapo" else 3
    parts = sum(
        policy_loss(token_logps[rows], mask[rows], advantages[rows], old_token_logps=old[rows], kl=kl[rows],
                    num_items=num_items, **kwargs)
        for rows in ([0], [1, 2])
    )
    assert parts.item() == pytest.approx(whole.item(), abs=1e-12)


def test_epsilon_high_defaults_to_epsilon():
    token_logps, mask, advantages, old, _ = _tensors()
    symmetric = policy_loss(token_logps, mask, advantages, loss_type="grpo", old_token_logps=old, epsilon=0.2)
    explicit = policy_loss(
        token_logps, mask, advantages, loss_type="grpo", old_token_logps=old, epsilon=0.2, epsilon_high=0.2
    )
    assert symmetric.item() == explicit.item()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_type": "ppo"}, "Unknown loss_type"),
        ({"mask": torch.ones(3, 3, dtype=torch.bool)}, "same shape"),
        ({"advantages": torch.zeros(2)}, "advantages must have shape"),
        ({"old_token_logps": torch.zeros(3, 5)}, "old_token_logps"),
        ({"epsilon": 1.0}, "epsilon"),
        ({"epsilon_high": -0.1}, "epsilon"),
        ({"kl_coef": 0.1}, "needs the per-sample kl"),
        ({"kl_coef": 0.1, "kl": torch.zeros(4)}, "kl must have shape"),
        ({"num_items": 0}, "num_items"),
    ],
)
def test_policy_loss_bad_input(kwargs, match):
    arguments = {"token_logps": torch.zeros(3, 4), "mask": torch.ones(3, 4, dtype=torch.bool),
                 "advantages": torch.zeros(3)} | kwargs
    with pytest.raises(ValueError, match=match):
        policy_loss(**arguments)


# ---- advantages with scale_rewards

REWARDS = [1.0, 3.0, 2.0, -2.0, 0.0, 4.0]  # two prompts x three generations


def _std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _hand_advantages(baseline: str, scale: str, eps: float = 1e-4) -> list[float]:
    groups = [REWARDS[:3], REWARDS[3:]]
    out = []
    for group in groups:
        for r in group:
            if baseline == "mean":
                centred = r - sum(REWARDS) / len(REWARDS)
            elif baseline == "rloo":
                centred = r - (sum(group) - r) / (len(group) - 1)
            else:
                centred = r - sum(group) / len(group)
            std = {"group": _std(group), "batch": _std(REWARDS), "none": None}[scale]
            out.append(centred if std is None else centred / (std + eps))
    return out


@pytest.mark.parametrize("baseline", ["mean", "rloo", "group"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_scale_rewards_against_hand_values(baseline, scale):
    rewards = torch.tensor(REWARDS, dtype=torch.float64)
    advantages = compute_advantages(rewards, num_generations=3, baseline=baseline, scale_rewards=scale)
    torch.testing.assert_close(advantages, torch.tensor(_hand_advantages(baseline, scale), dtype=torch.float64))


def test_scale_rewards_none_follows_the_baseline():
    """`None` keeps every existing baseline's meaning: GRPO's group std for 'group', no scaling otherwise."""
    assert [resolve_scale_rewards(b, None) for b in ("none", "mean", "rloo", "group")] == ["none"] * 3 + ["group"]
    rewards = torch.tensor(REWARDS)
    for baseline in ("none", "mean", "rloo", "group"):
        implied = compute_advantages(rewards, num_generations=3, baseline=baseline)
        explicit = compute_advantages(
            rewards, num_generations=3, baseline=baseline, scale_rewards=resolve_scale_rewards(baseline, None)
        )
        assert implied.tolist() == explicit.tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"baseline": "none", "scale_rewards": "batch"}, "does not centre"),
        ({"baseline": "mean", "scale_rewards": "group", "num_generations": 1}, "scale_rewards='group'"),
        ({"baseline": "mean", "scale_rewards": "std"}, "Unknown scale_rewards"),
    ],
)
def test_scale_rewards_bad_input(kwargs, match):
    arguments = {"rewards": torch.tensor(REWARDS), "num_generations": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        compute_advantages(**arguments)


def test_truncated_completions_are_those_without_a_stop_token():
    eos, eot = 7, 8
    canvas = torch.tensor([[1, 2, eos, eos], [1, 2, 3, 4], [eot, 5, 5, 5]])
    assert truncated_completions(canvas, [eos, eot]).tolist() == [False, True, False]
    assert truncated_completions(canvas, [eos]).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="stop_token_ids"):
        truncated_completions(canvas, [])


def test_clip_fraction_counts_the_tokens_whose_gradient_the_clip_removes():
    from diffusion_rl.objectives import clip_fraction

    token_logps, mask, advantages, old, _ = _tensors()
    fraction = clip_fraction(token_logps, old, mask, advantages, loss_type="grpo", epsilon=EPS, epsilon_high=EPS_HIGH)
    # Row 0 token 0, row 1 token 0, row 2 token 1: 3 of the 9 counted tokens (the zero-gradient ones above).
    assert fraction.item() == pytest.approx(3 / 9)
    sequence = clip_fraction(
        token_logps, old, mask, advantages, loss_type="reinforce", epsilon=EPS, epsilon_high=EPS_HIGH
    )
    assert sequence.item() == pytest.approx(1 / 3)  # only row 2's sequence ratio e^0.5 is clipped
