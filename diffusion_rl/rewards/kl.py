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

# Completion positions whose `(positions, V)` logits one forward pair of `clean_prompt_kl` may hold, and positions per
# float32 sub-chunk of the KL itself: the transient memory is bounded by these times V instead of growing with
# batch x gen_length x V (LLaDA-8B, V = 126,464: 32 x 256 positions cost ~20 GB of logits and float32 copies).
KL_CHUNK_POSITIONS = 2048
_KL_SUBCHUNK = 256


def _kl_of_logits(policy: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """`KL(softmax(policy) || softmax(base))` per row of `(K, V)` logits, float32, in sub-chunks of positions so that
    the float32 copies are `(_KL_SUBCHUNK, V)` whatever `K` is (no graph: this is a metric / reward)."""
    out = []
    for start in range(0, policy.shape[0], _KL_SUBCHUNK):
        log_p = torch.log_softmax(policy[start : start + _KL_SUBCHUNK], dim=-1, dtype=torch.float32)
        log_q = torch.log_softmax(base[start : start + _KL_SUBCHUNK], dim=-1, dtype=torch.float32)
        out.append((log_p.exp() * (log_p - log_q)).sum(-1))
    return torch.cat(out) if out else policy.new_zeros(0, dtype=torch.float32)


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
    max_positions: int = KL_CHUNK_POSITIONS,
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
        max_positions (`int`, *optional*, defaults to `KL_CHUNK_POSITIONS`):
            Bound on the completion positions whose logits one forward pair keeps: rows go through the model in
            chunks of `max(1, max_positions // G)` (a number that depends on the shapes only, so every process of a
            ZeRO-3 run does the same forwards), only the valid positions go through the LM head, and the KL is taken
            in float32 sub-chunks. The result does not depend on it.

    Returns:
        `torch.Tensor` of shape `(N,)`, float32: [`token_kl`] averaged over `completion_mask`.
    """
    num_rows, gen_length = completion_mask.shape
    valid = completion_mask.to(prompt_ids.device).bool()  # (N, G)
    canvas = torch.full((num_rows, gen_length), mask_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    input_ids = torch.cat([prompt_ids, canvas], dim=1)  # (N, P + G)
    attention_mask = torch.cat([prompt_mask.to(torch.long), torch.ones_like(canvas)], dim=1)  # (N, P + G)
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    keep[:, -gen_length:] = valid  # only the valid completion positions go through the LM head
    rows_per_chunk = max(1, max_positions // max(gen_length, 1))
    sums = torch.zeros(num_rows, dtype=torch.float32, device=prompt_ids.device)

    def logits(rows: slice) -> torch.Tensor:
        out = model(input_ids=input_ids[rows], attention_mask=attention_mask[rows], logits_to_keep=keep[rows]).logits
        return out[keep[rows]] if out.ndim == 3 else out  # (K, V); a model ignoring a boolean mask returns (n, L, V)

    was_training = model.training
    model.eval()
    try:
        for start in range(0, num_rows, rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            policy = logits(rows)
            with reference():
                base = logits(rows)
            row_of = valid[rows].nonzero()[:, 0] + start  # (K,) row-major, the order of hidden_states[keep]
            sums = sums.index_add(0, row_of, _kl_of_logits(policy, base).to(sums.device))
    finally:
        model.train(was_training)
    return sums / valid.sum(-1).clamp(min=1).to(sums.dtype)  # (N,)


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
