"""Policy-gradient objectives for masked diffusion LMs: rewards -> advantages -> loss.

Pure functions on tensors (no model, no trainer), each checked in ``tests/test_objectives.py`` against a hand
computation of the loss and of its gradient.

**Advantages** (:func:`compute_advantages`) are the reward minus a baseline that does not depend on the sample's own
action, optionally divided by a standard deviation:

- ``baseline``: ``"none"`` (the seed, ``A = R``), ``"mean"`` (the batch mean, which includes the sample itself: biased
  by ``1/N``, TRL-style simplicity), ``"rloo"`` (the mean of the *other* generations of the same prompt, REINFORCE
  leave-one-out, unbiased) or ``"group"`` (the mean of the prompt's generations, GRPO);
- ``scale_rewards`` (TRL's name and semantics): ``"group"`` divides by the standard deviation of the prompt's rewards,
  ``"batch"`` by that of the whole batch's rewards (both with Bessel's correction, as ``torch.std`` and TRL, plus
  ``eps``), ``"none"`` does not scale (Dr. GRPO: the std introduces a question-difficulty bias; d1 and DiffuCoder do
  not scale either). ``None`` follows the baseline: ``"group"`` for ``baseline="group"`` (GRPO's
  ``(R - mean_g) / (std_g + eps)``), ``"none"`` otherwise, so the two knobs never say the same thing twice.

Generations of one prompt are consecutive rows: rows ``g*k .. g*k + g - 1`` belong to prompt ``k`` for
``g = num_generations``.

**Losses** (:func:`policy_loss`) take *per-token* log-probability contributions ``(N, G)`` whose sum over a row is the
estimator's sequence log-likelihood (see :class:`~diffusion_rl.logprobs.LogProbOutput`), the mask of the tokens that
count, and the advantages ``(N,)``:

- ``loss_type="reinforce"`` (the seed): ``-(1/M) sum_i logp_i A_i`` with ``logp_i`` the *sum* over the completion.
  With old log-probabilities (``num_iterations > 1``) it becomes the clipped *sequence*-level surrogate
  ``-(1/M) sum_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps_high) A_i)``, ``rho_i = exp(logp_i - logp_old_i)``;
  sequence ratios of summed log-probs move fast, so the clip engages early (prefer a token-level type for PPO-style
  reuse).
- ``"grpo"``, ``"dr_grpo"``, ``"dapo"`` (TRL's, with d1's diffu-GRPO per-token ratio): per token
  ``l_t = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps_high) A) + kl_coef * k_t`` with ``rho_t = exp(logp_t -
  logp_old_t)`` (``logp_old = logp.detach()`` on-policy, so ``rho = 1`` and the gradient is REINFORCE's), aggregated
  as: ``grpo`` the mean over each sequence's tokens, then over sequences; ``dr_grpo`` the sum over tokens divided by
  ``M * max_completion_length``; ``dapo`` the sum divided by the number of tokens.

The KL term enters every aggregation through the per-sequence mean token KL ``kl_i`` (what the estimators return):
each aggregation weighs all tokens of a sequence alike, so ``sum_t w_i k_t = w_i L_i kl_i`` exactly, whatever the
per-token split. TRL's ``beta`` (the k3 estimator ``exp(d) - d - 1``, ``d = logp_ref - logp``, in the loss) is
``kl_coef=beta, kl_in="loss", kl_estimator="k3"`` in :class:`~diffusion_rl.DiffusionReinforceConfig`.

A row whose mask is empty (``mask_truncated_completions``: a completion without EOS/EOT inside ``gen_length``) gets no
loss and no KL, but still counts in ``M`` (TRL's semantics).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "BASELINES",
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "clip_fraction",
    "compute_advantages",
    "policy_loss",
    "reinforce_loss",
    "resolve_scale_rewards",
    "truncated_completions",
]

BASELINES = ("none", "mean", "rloo", "group")
SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("reinforce", "grpo", "dr_grpo", "dapo")


def resolve_scale_rewards(baseline: str, scale_rewards: str | None) -> str:
    """The scaling that `scale_rewards=None` stands for: `"group"` with `baseline="group"` (GRPO), else `"none"`."""
    if scale_rewards is None:
        return "group" if baseline == "group" else "none"
    return scale_rewards


def compute_advantages(
    rewards: torch.Tensor,
    *,
    num_generations: int,
    baseline: str,
    scale_rewards: str | None = None,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantages `(N,)` from rewards `(N,)`: reward minus `baseline`, divided by a std if `scale_rewards` asks.

    Args:
        rewards (`torch.Tensor` of shape `(N,)`):
            Total reward of each sample; must be finite.
        num_generations (`int`):
            Generations per prompt (consecutive rows); `N` must be a multiple of it.
        baseline (`str`):
            `"none"`, `"mean"`, `"rloo"` or `"group"` (module docstring). `"rloo"` and `"group"` need
            `num_generations >= 2`.
        scale_rewards (`str`, *optional*):
            `"group"`, `"batch"` or `"none"` (TRL's semantics); `None` follows the baseline (module docstring).
            Scaling needs a baseline (it divides a centred quantity) and `"group"` needs `num_generations >= 2`.
        eps (`float`, *optional*, defaults to `1e-4`):
            Added to the standard deviation, so that a group of equal rewards gets zero advantages.

    Returns:
        `torch.Tensor` of shape `(N,)`: detached advantages, in the dtype of `rewards`.
    """
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose one of {list(BASELINES)}.")
    if scale_rewards is not None and scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"Unknown scale_rewards {scale_rewards!r}; choose one of {list(SCALE_REWARDS)} or None.")
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
    scale = resolve_scale_rewards(baseline, scale_rewards)
    if (baseline in ("rloo", "group") or scale == "group") and num_generations < 2:
        name = f"baseline={baseline!r}" if baseline in ("rloo", "group") else "scale_rewards='group'"
        raise ValueError(f"{name} compares generations of one prompt: set num_generations >= 2.")
    if baseline == "none" and scale != "none":
        raise ValueError(
            f"scale_rewards={scale!r} divides centred rewards by their std, but baseline='none' does not centre "
            "them; pick a baseline ('mean', 'rloo', 'group') or scale_rewards='none'."
        )
    rewards = rewards.detach()
    groups = rewards.view(-1, num_generations)  # (N / g, g)
    if baseline == "none":
        return rewards.clone()
    if baseline == "mean":
        advantages = rewards - rewards.mean()
    elif baseline == "rloo":
        others_mean = (groups.sum(-1, keepdim=True) - groups) / (num_generations - 1)
        advantages = (groups - others_mean).view(-1)
    else:
        advantages = (groups - groups.mean(-1, keepdim=True)).view(-1)
    if scale == "group":
        return advantages / (groups.std(-1, keepdim=True).expand_as(groups).reshape(-1) + eps)
    if scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        return advantages / (std + eps)
    return advantages


def truncated_completions(completion_ids: torch.Tensor, stop_token_ids: Sequence[int]) -> torch.Tensor:
    """`(N,)` True for the completions that contain none of `stop_token_ids` (EOS/EOT) inside the canvas `(N, G)`.

    These are the rows `mask_truncated_completions` removes from the loss: the sampler ran out of `gen_length` before
    the model chose to stop, so the reward judged a cut-off text.
    """
    if not stop_token_ids:
        raise ValueError("stop_token_ids is empty: give the EOS (and EOT) ids that end a completion.")
    stops = torch.tensor(list(stop_token_ids), device=completion_ids.device)
    return ~torch.isin(completion_ids, stops).any(-1)


def reinforce_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    *,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    num_items: int | None = None,
) -> torch.Tensor:
    """The seed's REINFORCE loss of a batch of `M` samples from sequence log-likelihoods.

    `-(1/M) sum_i logp_i A_i (+ kl_coef * sum_i kl_i / M)`; the same as `policy_loss(loss_type="reinforce")` on the
    per-token values, for callers that only have sequence log-probabilities.

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
    _check_kl(kl, kl_coef, logps.shape)
    num_items = len(logps) if num_items is None else num_items
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}.")
    loss = -(logps * advantages.detach().to(logps.dtype)).sum() / num_items
    if kl_coef > 0:
        loss = loss + kl_coef * kl.sum() / num_items
    return loss


def _check_kl(kl: torch.Tensor | None, kl_coef: float, shape: torch.Size) -> None:
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}.")
    if kl_coef > 0 and kl is None:
        raise ValueError("kl_coef > 0 needs the per-sample kl (LogProbOutput.kl, computed with a reference).")
    if kl is not None and kl.shape != shape:
        raise ValueError(f"kl must have shape {tuple(shape)}, got {tuple(kl.shape)}.")


def _clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """`-min(rho A, clip(rho, 1 - low, 1 + high) A)` elementwise, `rho = exp(log_ratio)` (PPO's pessimistic bound)."""
    ratio = log_ratio.exp()
    return -torch.minimum(ratio * advantages, ratio.clamp(1.0 - low, 1.0 + high) * advantages)


def policy_loss(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    loss_type: str = "reinforce",
    old_token_logps: torch.Tensor | None = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    max_completion_length: int | None = None,
    num_items: float | None = None,
) -> torch.Tensor:
    """Policy-gradient loss of `N` completions from per-token log-probabilities (module docstring for the maths).

    Args:
        token_logps (`torch.Tensor` of shape `(N, G)`):
            Per-token log-probability contributions (`LogProbOutput.token_logps`), differentiable; their masked row
            sums are the sequence log-likelihoods.
        mask (`torch.Tensor` of shape `(N, G)`):
            The tokens that count (the completion mask; rows zeroed by `mask_truncated_completions`).
        advantages (`torch.Tensor` of shape `(N,)`):
            Advantages; detached here, so they act as constants.
        loss_type (`str`, *optional*, defaults to `"reinforce"`):
            `"reinforce"` (the seed), `"grpo"`, `"dr_grpo"` or `"dapo"`.
        old_token_logps (`torch.Tensor` of shape `(N, G)`, *optional*):
            Per-token log-probabilities of the policy that sampled the rollout, computed on the *same* random masks
            (d1); `None` is on-policy (`token_logps.detach()`, ratio 1; `"reinforce"` then is the seed's plain loss).
        epsilon (`float`, *optional*, defaults to `0.2`):
            Lower clipping range: the ratio is clipped below at `1 - epsilon`.
        epsilon_high (`float`, *optional*):
            Upper clipping range (`1 + epsilon_high`; DAPO's clip-higher); defaults to `epsilon`.
        kl (`torch.Tensor` of shape `(N,)`, *optional*):
            Per-sequence mean token KL(policy || reference) (`LogProbOutput.kl`), differentiable for a loss term.
        kl_coef (`float`, *optional*, defaults to `0.0`):
            Weight of the KL term (TRL's `beta` with the k3 estimator); `0` when the KL is in the reward.
        max_completion_length (`int`, *optional*):
            `dr_grpo`'s constant token normaliser; defaults to `G`.
        num_items (`float`, *optional*):
            The normaliser of the whole optimizer step when this is one of several micro-batches: the number of
            sequences `M` (`reinforce`, `grpo`, `dr_grpo`; defaults to `N`) or of tokens (`dapo`; defaults to the
            mask's count).

    Returns:
        `torch.Tensor`: the scalar loss.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; choose one of {list(LOSS_TYPES)}.")
    if token_logps.ndim != 2 or mask.shape != token_logps.shape:
        raise ValueError(
            f"token_logps and mask must be 2-D (N, G) of the same shape, got {tuple(token_logps.shape)} and "
            f"{tuple(mask.shape)}."
        )
    if advantages.shape != token_logps.shape[:1]:
        raise ValueError(f"advantages must have shape ({token_logps.shape[0]},), got {tuple(advantages.shape)}.")
    if old_token_logps is not None and old_token_logps.shape != token_logps.shape:
        raise ValueError(
            f"old_token_logps must have the shape of token_logps {tuple(token_logps.shape)}, got "
            f"{tuple(old_token_logps.shape)}."
        )
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    if not 0 <= epsilon < 1 or epsilon_high < 0:
        raise ValueError(f"need 0 <= epsilon < 1 and epsilon_high >= 0, got {epsilon} and {epsilon_high}.")
    _check_kl(kl, kl_coef, advantages.shape)
    if num_items is not None and num_items <= 0:
        raise ValueError(f"num_items must be > 0, got {num_items}.")

    dtype = token_logps.dtype
    weights = mask.to(dtype)  # (N, G)
    lengths = weights.sum(-1)  # (N,) L_i
    has_tokens = (lengths > 0).to(dtype)  # (N,) empty rows get no loss and no KL
    adv = advantages.detach().to(dtype)  # (N,)

    if loss_type == "reinforce":
        logp = (token_logps * weights).sum(-1)  # (N,)
        if old_token_logps is None:
            per_seq = -logp * adv
        else:
            old = (old_token_logps.detach().to(dtype) * weights).sum(-1)
            per_seq = _clipped_surrogate(logp - old, adv, epsilon, epsilon_high) * has_tokens
        if kl_coef > 0:
            per_seq = per_seq + kl_coef * kl * has_tokens
        return per_seq.sum() / (len(adv) if num_items is None else num_items)

    old = token_logps.detach() if old_token_logps is None else old_token_logps.detach().to(dtype)
    per_token = _clipped_surrogate(token_logps - old, adv[:, None], epsilon, epsilon_high)  # (N, G)
    per_seq = (per_token * weights).sum(-1)  # (N,)
    if kl_coef > 0:
        per_seq = per_seq + kl_coef * kl * lengths  # the sum over the row's tokens of kl_coef * k_t
    if loss_type == "grpo":
        return (per_seq / lengths.clamp(min=1)).sum() / (len(adv) if num_items is None else num_items)
    if loss_type == "dr_grpo":
        max_len = token_logps.shape[1] if max_completion_length is None else max_completion_length
        return per_seq.sum() / ((len(adv) if num_items is None else num_items) * max_len)
    return per_seq.sum() / (lengths.sum().clamp(min=1) if num_items is None else num_items)


def clip_fraction(
    token_logps: torch.Tensor,
    old_token_logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    loss_type: str,
    epsilon: float,
    epsilon_high: float | None = None,
) -> torch.Tensor:
    """Fraction of the counted tokens (sequences for `"reinforce"`) whose gradient the clip removes (TRL's
    `clip_ratio/region_mean`): ratio below `1 - epsilon` with `A < 0`, or above `1 + epsilon_high` with `A > 0`."""
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    weights = mask.to(token_logps.dtype)
    log_ratio = (token_logps - old_token_logps).detach() * weights  # (N, G)
    adv = advantages.detach().to(token_logps.dtype)
    if loss_type == "reinforce":
        log_ratio, adv, weights = log_ratio.sum(-1), adv, (weights.sum(-1) > 0).to(weights.dtype)
    else:
        adv = adv[:, None].expand_as(log_ratio)
    ratio = log_ratio.exp()
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    return (clipped.to(weights.dtype) * weights).sum() / weights.sum().clamp(min=1)
