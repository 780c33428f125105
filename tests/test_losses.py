"""The REINFORCE loss against an independent computation, and its gradient."""

import pytest
import torch

from diffusion_rl.objectives import reinforce_loss


def test_loss_equals_minus_mean_of_logp_times_reward():
    logps = torch.tensor([-3.0, -1.5, -2.0, -0.5], requires_grad=True)
    rewards = torch.tensor([-0.2, -0.7, 0.1, -1.0])
    expected = -sum(lp * r for lp, r in zip(logps.tolist(), rewards.tolist())) / 4
    loss = reinforce_loss(logps, rewards)
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    loss.backward()
    # d loss / d log p_i = -R_i / M: rewards act as constants.
    torch.testing.assert_close(logps.grad, -rewards / 4)


def test_advantages_are_detached():
    logps = torch.tensor([-1.0, -2.0], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0], requires_grad=True)
    reinforce_loss(logps, advantages).backward()
    assert advantages.grad is None


def test_kl_term_and_micro_batch_normaliser():
    logps = torch.tensor([-1.0, -2.0], requires_grad=True)
    advantages = torch.tensor([0.5, -1.0])
    kl = torch.tensor([0.2, 0.4], requires_grad=True)
    loss = reinforce_loss(logps, advantages, kl=kl, kl_coef=0.1)
    assert loss.item() == pytest.approx(-(-1.0 * 0.5 + -2.0 * -1.0) / 2 + 0.1 * 0.3, abs=1e-7)
    loss.backward()
    torch.testing.assert_close(kl.grad, torch.tensor([0.05, 0.05]))
    # A KL given with kl_coef = 0 (it is in the reward) does not enter the loss.
    assert reinforce_loss(logps, advantages, kl=kl).item() == pytest.approx(-0.75, abs=1e-7)
    # Two micro-batches normalised by the step's M add up to the loss of the whole step.
    whole = reinforce_loss(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1.0, 2.0, 3.0]))
    parts = reinforce_loss(torch.tensor([-1.0]), torch.tensor([1.0]), num_items=3) + reinforce_loss(
        torch.tensor([-2.0, -3.0]), torch.tensor([2.0, 3.0]), num_items=3
    )
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"advantages": torch.zeros(3)}, "same length"),
        ({"kl_coef": 0.1}, "needs the per-sample kl"),
        ({"kl_coef": -0.1, "kl": torch.zeros(2)}, "kl_coef"),
        ({"kl_coef": 0.1, "kl": torch.zeros(3)}, "kl must have shape"),
        ({"num_items": 0}, "num_items"),
    ],
)
def test_bad_input(kwargs, match):
    arguments = {"logps": torch.zeros(2), "advantages": torch.zeros(2)} | kwargs
    with pytest.raises(ValueError, match=match):
        reinforce_loss(**arguments)
