"""Advantages for REINFORCE: the reward minus a baseline that does not depend on the sample's own action.

The seed uses the raw reward (``baseline="none"``, ``A = R``). A baseline lowers the gradient's variance without
biasing it when it does not depend on the sample it is subtracted from:

- ``"mean"``: the batch mean (slightly biased by ``1/N`` because it includes the sample itself; TRL-style simplicity),
- ``"rloo"``: the mean of the *other* generations of the same prompt (REINFORCE leave-one-out; unbiased),
- ``"group"``: GRPO's group normalisation ``(R - group mean) / (group std + eps)`` (std with Bessel's correction, as
  ``torch.std`` and TRL compute it).

Generations of one prompt are consecutive rows: rows ``g*k .. g*k + g - 1`` belong to prompt ``k`` for
``g = num_generations`` (the trainer repeats each prompt ``g`` times in a row).
"""

import torch

__all__ = ["BASELINES", "compute_advantages"]

BASELINES = ("none", "mean", "rloo", "group")


def compute_advantages(
    rewards: torch.Tensor, *, num_generations: int, baseline: str, eps: float = 1e-4
) -> torch.Tensor:
    """Advantages `(N,)` from rewards `(N,)`.

    Args:
        rewards (`torch.Tensor` of shape `(N,)`):
            Total reward of each sample; must be finite.
        num_generations (`int`):
            Generations per prompt (consecutive rows); `N` must be a multiple of it.
        baseline (`str`):
            `"none"`, `"mean"`, `"rloo"` or `"group"` (module docstring). `"rloo"` and `"group"` need
            `num_generations >= 2`.
        eps (`float`, *optional*, defaults to `1e-4`):
            Added to the group standard deviation (`"group"`), so that a group of equal rewards gets zero advantages.

    Returns:
        `torch.Tensor` of shape `(N,)`: detached advantages, in the dtype of `rewards`.
    """
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose one of {list(BASELINES)}.")
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}.")
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive integer, got {num_generations!r}.")
    if rewards.numel() % num_generations:
        raise ValueError(
            f"{rewards.numel()} rewards cannot be split into groups of num_generations={num_generations}; the batch "
            "must hold whole groups of generations."
        )
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; fix the reward function (a NaN would reach the optimizer).")
    if baseline in ("rloo", "group") and num_generations < 2:
        raise ValueError(f"baseline={baseline!r} compares generations of one prompt: set num_generations >= 2.")
    rewards = rewards.detach()
    if baseline == "none":
        return rewards.clone()
    if baseline == "mean":
        return rewards - rewards.mean()
    groups = rewards.view(-1, num_generations)  # (N / g, g)
    if baseline == "rloo":
        others_mean = (groups.sum(-1, keepdim=True) - groups) / (num_generations - 1)
        return (groups - others_mean).view(-1)
    return ((groups - groups.mean(-1, keepdim=True)) / (groups.std(-1, keepdim=True) + eps)).view(-1)
