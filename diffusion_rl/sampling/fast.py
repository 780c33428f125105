"""Approximate, faster decoding for masked diffusion models (Fast-dLLM style). Opt-in only.

Two independent levers, both exposed through :class:`~diffusion_rl.sampling.sampler.MaskedDiffusionSampler`:

* **Block-wise KV cache** (``cache="prefix"`` or ``cache="dual"``). LLaDA attends bidirectionally, so the keys and
  values of *every* position change whenever any token is committed and an exact cache does not exist. Fast-dLLM
  (Wu et al., 2025) observes that they change little within one block: at the first step of each block we run the
  full canvas once and keep the keys/values of the positions before the block (``prefix``) or of everything outside
  the block (``dual``, which also freezes the still-masked suffix). The remaining steps of the block feed only the
  block and suffix (``prefix``) or only the block (``dual``). The cache is refreshed at every block start.
* **Confidence-threshold parallel decoding** (``threshold=tau``). Besides the scheduled top-k, every masked position
  of the current block whose confidence is ``>= tau`` is committed in the same step, and a block ends as soon as it
  has no masks left. Unlike Fast-dLLM (which commits "all above tau, at least one"), the scheduled count remains a
  floor, so the number of forwards never exceeds the exact sampler's and ``commit_step`` keeps its meaning (the
  scheduled step index, in ``0..steps-1``).

Consequences for RL. Both levers change the distribution the completions are sampled from, so the completions are
no longer draws from the exact LLaDA reverse process. Estimators that score a completion *by itself* under the
policy being trained (one-step mean-field, Monte-Carlo ELBO) stay as consistent as they are with the exact sampler,
because they never look at how the sample was produced; they now estimate the likelihood of slightly off-policy
samples, which REINFORCE tolerates for small drift. The trajectory estimator, which re-scores the exact decoding path
(``commit_step``), assumes the exact per-step conditionals: with a cache the logits it recomputes differ from those
the sampler used, and with a threshold several tokens share a step whose commit rule is not top-k. Use the exact
sampler (``cache="none"``, ``threshold=None``) when the trajectory estimator is the objective.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

CACHE_MODES = ("none", "prefix", "dual")


class BlockKVCache:
    """Keys and values of the positions outside the current block, refreshed at each block start.

    Args:
        mode (`str`):
            ``"prefix"`` keeps the positions before the block; ``"dual"`` keeps every position outside the block.
    """

    def __init__(self, mode: str):
        if mode not in ("prefix", "dual"):
            raise ValueError(f"`mode` must be 'prefix' or 'dual', got {mode!r}.")
        self.mode = mode
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._start = 0
        self._end = 0

    def refresh(self, cache, start: int, end: int) -> None:
        """Keep the frozen part of a full-canvas cache for the block `[start, end)`.

        Args:
            cache (`transformers.Cache`):
                Cache returned by a forward over the whole canvas (keys have RoPE applied, so they carry their
                positions and can be attended in any order).
            start (`int`), end (`int`):
                Canvas positions of the current block.
        """
        self._start, self._end = start, end
        self._layers = []
        for layer in cache.layers:
            keys, values = layer.keys, layer.values  # (B, H_kv, L, D)
            if self.mode == "prefix":
                self._layers.append((keys[:, :, :start], values[:, :, :start]))
            else:
                keep_k = torch.cat([keys[:, :, :start], keys[:, :, end:]], dim=2)
                keep_v = torch.cat([values[:, :, :start], values[:, :, end:]], dim=2)
                self._layers.append((keep_k, keep_v))

    def query_span(self, length: int) -> tuple[int, int]:
        """Canvas positions fed to the model at a cached step (the block, plus the suffix for ``prefix``)."""
        return self._start, (length if self.mode == "prefix" else self._end)

    def attention_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """2D padding mask in the key order the model sees: cached positions first, then the fed positions."""
        if attention_mask is None:
            return None
        if self.mode == "prefix":
            return attention_mask
        s, e = self._start, self._end
        return torch.cat([attention_mask[:, :s], attention_mask[:, e:], attention_mask[:, s:e]], dim=1)

    def build(self) -> DynamicCache:
        """A fresh cache holding the frozen keys/values; the model appends the fed positions to it (and we drop it)."""
        cache = DynamicCache()
        for layer_idx, (keys, values) in enumerate(self._layers):
            cache.update(keys, values, layer_idx)
        return cache


def threshold_selection(
    confidence: torch.Tensor, masked: torch.Tensor, scheduled: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Positions to commit in threshold mode: the scheduled top-k plus every masked position with confidence >= tau.

    Args:
        confidence (`torch.Tensor` of shape `(batch_size, block_length)`):
            Confidence of each block position (``-inf`` where not masked).
        masked (`torch.BoolTensor` of shape `(batch_size, block_length)`):
            Still-masked positions of the block.
        scheduled (`torch.BoolTensor` of shape `(batch_size, block_length)`):
            The exact sampler's top-k selection for this step.
        threshold (`float`):
            Confidence threshold ``tau`` in ``(0, 1]``.
    """
    return scheduled | (masked & (confidence >= threshold))
