"""KL(policy ‖ base) between the LoRA-adapted model and its frozen base, as a penalty reward.

The seed objective is ``R = -(bias + 0.1 * KL)``, with the KL taken token-wise on the generated positions:
``KL_i = mean_t sum_v p_lora(v) * (log p_lora(v) - log p_base(v))``. For a masked diffusion model both
distributions come from one forward on the same input in which the completion is fully masked (the state the
sampler starts from), once with the adapter and once with it disabled: no copy of the model is kept, and a freshly
initialised LoRA (``B = 0``) gives exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F

from .base import check_batch


def token_kl(policy_logits: torch.Tensor, base_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean over valid positions of ``KL(softmax(policy) ‖ softmax(base))``.

    Computed from ``log_softmax`` in float32 and differentiable with respect to ``policy_logits``.

    Args:
        policy_logits (`torch.Tensor` of shape `(N, L, V)`):
            Logits of the adapted model.
        base_logits (`torch.Tensor` of shape `(N, L, V)`):
            Logits of the base model on the same input.
        mask (`torch.Tensor` of shape `(N, L)`, *optional*):
            1/True at the positions to average over (the generated tokens); all positions when omitted. A row
            without any valid position has KL 0.

    Returns:
        `torch.Tensor` of shape `(N,)`, float32.
    """
    if policy_logits.shape != base_logits.shape or policy_logits.dim() != 3:
        raise ValueError(
            f"policy_logits and base_logits must both be (N, L, V), got {tuple(policy_logits.shape)} and "
            f"{tuple(base_logits.shape)}."
        )
    log_p = F.log_softmax(policy_logits.float(), dim=-1)  # (N, L, V)
    log_q = F.log_softmax(base_logits.float(), dim=-1)  # (N, L, V)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)  # (N, L)
    if mask is None:
        return per_token.mean(-1)
    if mask.shape != per_token.shape:
        raise ValueError(f"mask must have shape (N, L) = {tuple(per_token.shape)}, got {tuple(mask.shape)}.")
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (N,)


@torch.no_grad()
def clean_prompt_kl(
    model: torch.nn.Module,
    reference: Callable[[], AbstractContextManager],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    mask_token_id: int,
) -> torch.Tensor:
    """The seed's reward KL: one deterministic forward pair on the clean prompt with the completion fully masked.

    Both distributions are read at the completion positions of `prompt + [mask] * G` (the state the sampler starts
    from), with the adapter (`model`) and under `reference()` (e.g. `peft_model.disable_adapter`), so the KL of a
    sample does not depend on any random mask (unlike a KL read off a log-prob estimator's masked inputs, which
    changes with the estimator and, under prompt masking, with every draw). A fresh LoRA (`B = 0`) gives exactly 0.
    Dropout is off during the pair (`model` is put in eval mode and restored).

    Args:
        model (`torch.nn.Module`):
            The policy, called as `model(input_ids=, attention_mask=, logits_to_keep=)` (a wrapped model is fine).
        reference (`Callable[[], ContextManager]`):
            Context-manager factory under which `model` is the base model.
        prompt_ids (`torch.Tensor` of shape `(N, P)`):
            Left-padded prompt ids.
        prompt_mask (`torch.Tensor` of shape `(N, P)`):
            Attention mask of the prompts.
        completion_mask (`torch.Tensor` of shape `(N, G)`):
            The completion positions that count (bool or 0/1); `G` is the canvas length.
        mask_token_id (`int`):
            Id of the mask token.

    Returns:
        `torch.Tensor` of shape `(N,)`, float32: [`token_kl`] averaged over `completion_mask`.
    """
    num_rows, gen_length = completion_mask.shape
    canvas = torch.full((num_rows, gen_length), mask_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    input_ids = torch.cat([prompt_ids, canvas], dim=1)  # (N, P + G)
    attention_mask = torch.cat([prompt_mask.to(torch.long), torch.ones_like(canvas)], dim=1)  # (N, P + G)
    was_training = model.training
    model.eval()
    try:
        # The completion is the tail of the canvas: keeping the last G logits is exactly the completion.
        policy = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=gen_length).logits
        with reference():
            base = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=gen_length).logits
    finally:
        model.train(was_training)
    return token_kl(policy, base, completion_mask.to(policy.device).bool())  # (N,)


class KLReward:
    """Penalty ``-coef * KL(policy ‖ base)`` per completion.

    Preferably the trainer passes the per-sample ``kl`` it already computed with :func:`token_kl` on the logits of
    its log-probability pass (no extra forward). Otherwise, given a PEFT ``model``, the reward computes it from the
    ``prompt_ids``/``prompt_mask``/``completion_ids``/``completion_mask`` tensors it receives as keyword arguments:
    two no-grad forwards on ``prompt + [mask] * len(completion)`` (attention on every canvas position, as during
    sampling), with the adapter and with ``model.disable_adapter()``; the KL is averaged over ``completion_mask``.

    Args:
        coef (`float`, *optional*, defaults to `0.1`):
            Weight of the KL (the seed uses 0.1).
        model (`peft.PeftModel`, *optional*):
            Adapter-wrapped model, for computing the KL when ``kl`` is not passed.
        mask_token_id (`int`, *optional*):
            Id of the mask token; defaults to ``model.config.mask_token_id``.
    """

    name = "kl"

    def __init__(self, coef: float = 0.1, model: torch.nn.Module | None = None, mask_token_id: int | None = None):
        if coef < 0:
            raise ValueError(f"coef must be >= 0 (it weights a penalty), got {coef}.")
        if model is not None and not hasattr(model, "disable_adapter"):
            raise TypeError(
                f"model must be a PEFT model (with disable_adapter()), got {type(model).__name__}; wrap it with "
                "peft.get_peft_model or pass the per-sample `kl` to the reward instead."
            )
        if model is not None and mask_token_id is None:
            mask_token_id = getattr(model.config, "mask_token_id", None)
            if mask_token_id is None:
                raise ValueError("model.config has no mask_token_id: pass mask_token_id= to KLReward.")
        self.coef = float(coef)
        self.model = model
        self.mask_token_id = mask_token_id

    @torch.no_grad()
    def compute_kl(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Per-sample KL with the completion fully masked; returns `(N,)` float32 (see the class docstring)."""
        if self.model is None:
            raise ValueError("KLReward.compute_kl needs the PEFT model: construct KLReward(model=peft_model).")
        device = next(self.model.parameters()).device
        return clean_prompt_kl(
            self.model,
            self.model.disable_adapter,
            prompt_ids.to(device),
            prompt_mask.to(device),
            completion_mask.to(device),
            mask_token_id=self.mask_token_id,
        )

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        kl: torch.Tensor | Sequence[float] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        check_batch(prompts, completions)
        if kl is None:
            needed = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
            missing = [k for k in needed if not isinstance(kwargs.get(k), torch.Tensor)]
            if self.model is None or missing:
                raise ValueError(
                    "KLReward needs either kl= (per-sample KL, e.g. from token_kl on the trainer's logits) or a PEFT "
                    f"model at construction plus the tensors {needed} as keyword arguments (missing: {missing})."
                )
            kl = self.compute_kl(*(kwargs[k] for k in needed))
        values = torch.as_tensor(kl, dtype=torch.float32).detach().cpu().flatten()
        if values.numel() != len(completions):
            raise ValueError(f"kl has {values.numel()} values for {len(completions)} completions; pass one each.")
        return [0.0 - self.coef * v for v in values.tolist()]
