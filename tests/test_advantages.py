"""Baselines against hand-computed values."""

import pytest
import torch

from diffusion_rl.objectives import compute_advantages

REWARDS = torch.tensor([1.0, 3.0, 2.0, -2.0, 0.0, 4.0])  # two prompts x three generations


@pytest.mark.parametrize(
    ("baseline", "num_generations", "expected"),
    [
        ("none", 1, [1.0, 3.0, 2.0, -2.0, 0.0, 4.0]),
        # batch mean = 8 / 6 = 4/3
        ("mean", 1, [-1 / 3, 5 / 3, 2 / 3, -10 / 3, -4 / 3, 8 / 3]),
        ("mean", 3, [-1 / 3, 5 / 3, 2 / 3, -10 / 3, -4 / 3, 8 / 3]),
        # leave-one-out: 1 - (3+2)/2, 3 - (1+2)/2, 2 - (1+3)/2 ; -2 - (0+4)/2, 0 - (-2+4)/2, 4 - (-2+0)/2
        ("rloo", 3, [-1.5, 1.5, 0.0, -4.0, -1.0, 5.0]),
        # group means 2 and 2/3; sample stds 1 and sqrt(((-8/3)^2 + (-2/3)^2 + (10/3)^2) / 2) = sqrt(28/3)
        ("group", 3, [-1.0, 1.0, 0.0, *[(r - 2 / 3) / (28 / 3) ** 0.5 for r in (-2.0, 0.0, 4.0)]]),
    ],
)
def test_baselines_against_hand_values(baseline, num_generations, expected):
    advantages = compute_advantages(REWARDS, num_generations=num_generations, baseline=baseline, eps=0.0)
    torch.testing.assert_close(advantages, torch.tensor(expected), rtol=0, atol=1e-6)


def test_group_eps_and_constant_group_and_detach():
    rewards = torch.tensor([2.0, 2.0, 1.0, 3.0], requires_grad=True)
    advantages = compute_advantages(rewards, num_generations=2, baseline="group")
    torch.testing.assert_close(advantages, torch.tensor([0.0, 0.0, -1 / (2**0.5 + 1e-4), 1 / (2**0.5 + 1e-4)]))
    assert not advantages.requires_grad


def test_rloo_two_generations_is_half_the_difference_times_two():
    advantages = compute_advantages(torch.tensor([1.0, 4.0]), num_generations=2, baseline="rloo")
    torch.testing.assert_close(advantages, torch.tensor([-3.0, 3.0]))


def test_none_returns_a_copy():
    rewards = torch.tensor([1.0, 2.0])
    advantages = compute_advantages(rewards, num_generations=1, baseline="none")
    advantages += 1
    assert rewards.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("rewards", "kwargs", "match"),
    [
        (REWARDS, {"num_generations": 3, "baseline": "median"}, "Unknown baseline"),
        (REWARDS, {"num_generations": 4, "baseline": "none"}, "groups of num_generations=4"),
        (REWARDS, {"num_generations": 1, "baseline": "rloo"}, "num_generations >= 2"),
        (REWARDS, {"num_generations": 1, "baseline": "group"}, "num_generations >= 2"),
        (REWARDS, {"num_generations": 0, "baseline": "none"}, "positive integer"),
        (REWARDS.view(2, 3), {"num_generations": 3, "baseline": "none"}, "1-D"),
        (torch.tensor([1.0, float("nan")]), {"num_generations": 1, "baseline": "none"}, "NaN"),
    ],
)
def test_bad_input(rewards, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_advantages(rewards, **kwargs)
