"""The seed's REINFORCE objective: ``loss = -(1/M) sum_i log p_i * A_i`` (+ ``kl_coef * mean(KL)`` in the loss).

The advantages are constants (detached): with the seed's ``A = R = -(bias + 0.1 KL)`` the KL only shapes the reward
(``kl_in="reward"``). With ``kl_in="loss"`` the KL is instead a differentiable penalty added to the loss, as in GRPO.
``log p_i`` is whatever the chosen estimator returns (see :mod:`diffusion_rl.logprobs`).
"""

import torch

__all__ = ["reinforce_loss"]


def reinforce_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    *,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    num_items: int | None = None,
) -> torch.Tensor:
    """REINFORCE loss of a batch of `M` samples.

    Args:
        logps (`torch.Tensor` of shape `(M,)`):
            Estimated log-likelihood of each completion, differentiable through the policy.
        advantages (`torch.Tensor` of shape `(M,)`):
            Advantages (or raw rewards); detached here, so they act as constants.
        kl (`torch.Tensor` of shape `(M,)`, *optional*):
            Per-sample KL(policy || reference), added as `kl_coef * kl.sum() / M` when `kl_coef > 0`.
        kl_coef (`float`, *optional*, defaults to `0.0`):
            Weight of the KL term in the loss; leave `0` when the KL is already in the reward.
        num_items (`int`, *optional*):
            The `M` to divide by (defaults to `len(logps)`); pass the number of samples of the whole optimizer step
            when the batch is one of several gradient-accumulation micro-batches, so the sum of the micro-batch losses
            is the loss of the step.

    Returns:
        `torch.Tensor`: the scalar loss.
    """
    if logps.ndim != 1 or advantages.shape != logps.shape:
        raise ValueError(
            f"logps and advantages must be 1-D of the same length, got shapes {tuple(logps.shape)} and "
            f"{tuple(advantages.shape)}."
        )
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}.")
    if kl_coef > 0 and kl is None:
        raise ValueError("kl_coef > 0 needs the per-sample kl (LogProbOutput.kl, computed with a reference).")
    if kl is not None and kl.shape != logps.shape:
        raise ValueError(f"kl must have shape {tuple(logps.shape)}, got {tuple(kl.shape)}.")
    num_items = len(logps) if num_items is None else num_items
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}.")
    loss = -(logps * advantages.detach().to(logps.dtype)).sum() / num_items
    if kl_coef > 0:
        loss = loss + kl_coef * kl.sum() / num_items
    return loss
