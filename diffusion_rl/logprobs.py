"""Log-likelihood estimators for completions of a masked diffusion language model.

An autoregressive model scores a completion with one forward pass. A masked diffusion model (LLaDA) has no such
closed form: the sampler unmasks tokens in an order it chooses, so ``log p(completion | prompt)`` is a sum over
orders. REINFORCE only needs *some* differentiable score whose gradient points the right way, and the literature
uses three, all selectable here by name through one protocol (:func:`estimate_logprobs`):

``"one_step"`` (d1's mean-field estimator)
    Mask the whole completion, mask each real prompt token independently with probability ``prompt_mask_prob`` (the
    seed's "random token masking to simulate partial observability"), and sum the log-softmax of the valid
    completion tokens at their positions. One forward per draw; ``num_samples > 1`` averages independent prompt
    masks. Biased (it ignores the dependence between completion tokens), cheap, low variance.

``"mc_elbo"`` (LLaDA's ``get_log_likelihood``)
    Per draw: pick ``l`` uniformly in ``1..L`` (``L`` = number of valid completion tokens), mask ``l`` of the ``L``
    tokens uniformly at random and weight the masked tokens' log-probabilities by ``L / l``. The draw is an unbiased
    estimate of the ELBO ``E_order[sum_k log p(x_{order_k} | x_{order_<k})]``, a lower bound on the log-likelihood of
    the any-order (random unmasking order) process. ``l`` is stratified over draws (draw ``s`` of ``n`` uses
    ``u in [s/n, (s+1)/n)``, ``l = floor(u L) + 1``). With ``antithetic=True`` draws come in pairs sharing one random
    order: the first masks the first ``l`` tokens of the order, the second the last ``L - l + 1`` -- together they
    mask every token (one token twice) and each member alone keeps the exact marginal, so the pair stays unbiased
    while its two halves are negatively correlated (the coupled masks of DiffuCoder / LLaDA 1.5's VRPO).

``"trajectory"`` (TraceRL)
    Replays the sampler's own trajectory from ``commit_step``: at step ``t`` the input shows the prompt and the
    completion tokens committed before ``t`` (everything else masked, exactly the sampler's canvas), and
    ``log p = sum_t sum_{i committed at t} log p(x_i | canvas_t)``. This is the exact log-probability of the sampled
    tokens given the unmasking order when the sampler drew tokens from the unmodified softmax (temperature 1, no
    CFG); at other temperatures it scores the tokens under the untempered model. Only steps that committed at least
    one valid token contribute (``D`` of them). With ``num_samples < D`` the estimator picks ``num_samples`` of those
    steps uniformly without replacement and rescales by ``D / num_samples`` (unbiased); with ``num_samples >= D``
    it is the exact sum (set ``num_samples`` to the sampler's ``steps`` to always get it).

The number of forward passes depends on the arguments only (``one_step``: ``num_samples``, or 1 without prompt
masking; ``mc_elbo``: ``num_samples``; ``trajectory``: ``min(num_samples, steps)``, or ``num_samples`` without
``steps``), never on the data, so that all processes stay in step under DeepSpeed ZeRO-3 (each forward gathers
parameters collectively). Each is doubled when a ``reference`` is given.

Positions after the first EOS/EOT (``completion_mask`` False) are never scored. ``one_step`` and ``mc_elbo`` keep
them masked: the reward only saw the text up to the first EOS, so revealing the sampler's tail tokens would
condition the score on samples the reward never judged, and a masked tail is what the sampler's canvas looked like
when it started (LLaDA's SFT teaches that masks after an EOS resolve to EOS padding). ``trajectory`` shows tail
tokens exactly when the sampler had committed them, because an exact replay needs the sampler's canvas.

Every draw also gives, on the *same* masked input, the token KL(policy || reference) and the policy entropy at the
scored positions; the reference logits come from a second forward under ``reference()`` (e.g.
``peft_model.disable_adapter``) without gradients, so no second model copy is needed and the masks are shared by
construction. Only scored completion positions go through the LM head (a boolean ``logits_to_keep``), and the
``(K, V)`` log-probabilities of a draw are freed before the next draw, so ``(N, S, G, V)`` logits never exist. With
several draws, each draw's policy forward is checkpointed (``recompute``): only its inputs are kept until backward,
which re-runs it, so the memory held for backward does not grow with ``num_samples``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .checks import check_token_ids, model_vocab_size

__all__ = [
    "ESTIMATORS",
    "EstimatorOptions",
    "KL_ESTIMATORS",
    "LogProbEstimator",
    "LogProbOutput",
    "RolloutBatch",
    "estimate_logprobs",
    "get_estimator",
    "logprob_estimator_std",
]

KL_ESTIMATORS = ("full", "k1", "k3")

# Positions per chunk when the (no-grad) entropy / KL statistics are computed, to bound the (chunk, V) temporaries.
_STATS_CHUNK = 512


@dataclass
class RolloutBatch:
    """The completions to score, one row per sample (prompts repeated for several generations).

    Args:
        prompt_ids (`torch.LongTensor` of shape `(N, P)`):
            Left-padded prompt token ids.
        prompt_mask (`torch.Tensor` of shape `(N, P)`):
            Attention mask of the prompts (1 for real tokens, 0 for left padding).
        completion_ids (`torch.LongTensor` of shape `(N, G)`):
            The sampled completion canvas (all `G = gen_length` positions, including any tokens after the first EOS).
        completion_mask (`torch.BoolTensor` of shape `(N, G)`):
            True for the positions that count (up to and including the first EOS/EOT).
        commit_step (`torch.LongTensor` of shape `(N, G)`, *optional*):
            Global sampler step (`0..steps-1`) at which each position was committed. Required by `"trajectory"`.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    commit_step: torch.Tensor | None = None

    def __post_init__(self):
        if self.prompt_ids.ndim != 2 or self.completion_ids.ndim != 2:
            raise ValueError(
                f"prompt_ids and completion_ids must be 2-D (N, P) and (N, G), got shapes "
                f"{tuple(self.prompt_ids.shape)} and {tuple(self.completion_ids.shape)}."
            )
        if self.prompt_mask.shape != self.prompt_ids.shape:
            raise ValueError(
                f"prompt_mask has shape {tuple(self.prompt_mask.shape)} but prompt_ids has "
                f"{tuple(self.prompt_ids.shape)}; pass the attention mask returned with the prompt ids."
            )
        if self.completion_mask.shape != self.completion_ids.shape:
            raise ValueError(
                f"completion_mask has shape {tuple(self.completion_mask.shape)} but completion_ids has "
                f"{tuple(self.completion_ids.shape)}."
            )
        if self.prompt_ids.shape[0] != self.completion_ids.shape[0]:
            raise ValueError(
                f"prompt_ids has {self.prompt_ids.shape[0]} rows but completion_ids has {self.completion_ids.shape[0]}"
                "; repeat each prompt once per generation before building the batch."
            )
        if self.commit_step is not None and self.commit_step.shape != self.completion_ids.shape:
            raise ValueError(
                f"commit_step has shape {tuple(self.commit_step.shape)} but completion_ids has "
                f"{tuple(self.completion_ids.shape)}; pass SamplerOutput.commit_step unchanged."
            )
        self.completion_mask = self.completion_mask.bool()

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor) -> RolloutBatch:
        """Rows `index` of the batch (e.g. one micro-batch), as a new `RolloutBatch`."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return RolloutBatch(
            prompt_ids=self.prompt_ids[index],
            prompt_mask=self.prompt_mask[index],
            completion_ids=self.completion_ids[index],
            completion_mask=self.completion_mask[index],
            commit_step=None if self.commit_step is None else self.commit_step[index],
        )


@dataclass
class LogProbOutput:
    """What an estimator returns.

    Args:
        logps (`torch.Tensor` of shape `(N,)`):
            Estimated log-likelihood of each completion, differentiable through the model. Equals `draws.mean(-1)`.
        draws (`torch.Tensor` of shape `(N, S)`):
            The per-draw estimates (detached). They are not identically distributed (`mc_elbo` stratifies `l` over
            the draws), so measure the estimator's spread with [`logprob_estimator_std`], not `draws.std(-1)`.
        kl (`torch.Tensor` of shape `(N,)`, *optional*):
            Mean token KL(policy || reference) over the scored positions of all draws, on the very same masked
            inputs; `None` when no `reference` was given. Differentiable through the policy when
            `kl_requires_grad=True`.
        entropy (`torch.Tensor` of shape `(N,)`):
            Mean policy entropy (nats) over the scored positions (detached).
        token_logps (`torch.Tensor` of shape `(N, G)`):
            Per-token contributions to `logps`, differentiable: `token_logps.sum(-1) == logps`, zero at positions no
            draw scored. `one_step`: each token's log-probability (mean over draws); `mc_elbo`: the mean over draws
            of `L / l` times the token's log-probability where the draw masked it; `trajectory`: the token's
            log-probability at the step that committed it, times `D / num_samples` when steps are sampled. Two calls
            with generators in the same state give the same masks, hence comparable per-token values (the old and
            new log-probabilities of a clipped ratio).
    """

    logps: torch.Tensor
    draws: torch.Tensor
    kl: torch.Tensor | None
    entropy: torch.Tensor
    token_logps: torch.Tensor | None = None


@dataclass(frozen=True)
class EstimatorOptions:
    """The keyword arguments of [`estimate_logprobs`] (documented there), validated once for every estimator."""

    mask_token_id: int
    generator: torch.Generator
    num_samples: int = 1
    prompt_mask_prob: float = 0.0
    antithetic: bool = False
    reference: Callable[[], AbstractContextManager] | None = None
    kl_estimator: str = "full"
    kl_requires_grad: bool = True
    steps: int | None = None
    block_length: int | None = None
    recompute: bool = False

    def __post_init__(self):
        if not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(self.generator).__name__}.")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {self.num_samples!r}.")
        if not 0.0 <= self.prompt_mask_prob < 1.0:
            raise ValueError(f"prompt_mask_prob must be in [0, 1), got {self.prompt_mask_prob}.")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"Unknown kl_estimator {self.kl_estimator!r}; choose one of {list(KL_ESTIMATORS)}.")
        if self.reference is not None and not callable(self.reference):
            raise TypeError("reference must be a callable returning a context manager, e.g. model.disable_adapter.")


# What every entry of `ESTIMATORS` is: `(model, batch, options) -> LogProbOutput`.
LogProbEstimator = Callable[[torch.nn.Module, RolloutBatch, EstimatorOptions], LogProbOutput]


@dataclass
class _Stats:
    """Per-position results of one draw, scattered back to `(N, G)` (zeros where nothing was scored)."""

    logp: torch.Tensor  # (N, G), differentiable
    kl: torch.Tensor | None  # (N, G)
    entropy: torch.Tensor  # (N, G), detached


class _Accumulator:
    """Pools KL / entropy sums and counts of scored positions over draws."""

    def __init__(self, num_rows: int, device: torch.device, with_kl: bool):
        self.kl = torch.zeros(num_rows, device=device) if with_kl else None
        self.entropy = torch.zeros(num_rows, device=device)
        self.count = torch.zeros(num_rows, device=device)

    def add(self, stats: _Stats, score: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Adds a draw's sums; `rows` are the batch rows that `stats` and `score` cover (all rows when None)."""
        if rows is None:
            rows = torch.arange(len(self.count), device=self.count.device)
        if self.kl is not None:
            self.kl = self.kl.index_add(0, rows, stats.kl.sum(-1))
        self.entropy = self.entropy.index_add(0, rows, stats.entropy.sum(-1))
        self.count = self.count.index_add(0, rows, score.sum(-1).to(self.count.dtype))

    def result(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        denominator = self.count.clamp(min=1)
        kl = None if self.kl is None else self.kl / denominator
        return kl, self.entropy / denominator


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device so a CPU generator also drives a CUDA model (and vice versa).
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _mask_prompt(batch: RolloutBatch, prob: float, mask_token_id: int, generator: torch.Generator) -> torch.Tensor:
    """Prompt ids with each real (non-padding) token replaced by the mask token with probability `prob`."""
    if prob == 0.0:
        return batch.prompt_ids
    hide = (_rand(tuple(batch.prompt_ids.shape), generator, batch.prompt_ids.device) < prob) & batch.prompt_mask.bool()
    return batch.prompt_ids.masked_fill(hide, mask_token_id)


def _stats_no_grad(logp: torch.Tensor, ref_logp: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Entropy and full KL of `(K, V)` log-probs in chunks of positions, without building a graph."""
    entropy, kl = [], []
    with torch.no_grad():
        for start in range(0, logp.shape[0], _STATS_CHUNK):
            chunk = logp[start : start + _STATS_CHUNK].detach()
            probs = chunk.exp()
            entropy.append(-(probs * chunk).sum(-1))
            if ref_logp is not None:
                kl.append((probs * (chunk - ref_logp[start : start + _STATS_CHUNK])).sum(-1))
    entropy = torch.cat(entropy) if entropy else logp.new_zeros(0)
    if ref_logp is None:
        return None, entropy
    return (torch.cat(kl) if kl else logp.new_zeros(0)), entropy


def _token_kl(logp: torch.Tensor, ref_logp: torch.Tensor, targets: torch.Tensor, kl_estimator: str) -> torch.Tensor:
    """Per-position KL(policy || reference) of `(K, V)` log-probs, differentiable through `logp`.

    `"full"` is the exact sum over the vocabulary (the seed's definition); `"k1"` (`log p - log q`) and `"k3"`
    (`q/p - 1 - log(q/p)`) are Schulman's single-sample estimators evaluated at the completion token.
    """
    if kl_estimator == "full":
        return (logp.exp() * (logp - ref_logp)).sum(-1)
    log_ratio = (ref_logp.gather(-1, targets[:, None]) - logp.gather(-1, targets[:, None])).squeeze(-1)  # log q/p
    if kl_estimator == "k1":
        return -log_ratio
    return log_ratio.exp() - 1.0 - log_ratio


def _score(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_in: torch.Tensor,
    targets: torch.Tensor,
    score: torch.Tensor,
    options: EstimatorOptions,
) -> _Stats:
    """One policy forward (and one reference forward) on `prompt + completion_in`; statistics where `score`."""
    num_rows, gen_length = targets.shape
    input_ids = torch.cat([prompt_ids, completion_in], dim=1)  # (N, P+G)
    attention_mask = torch.cat([prompt_mask.to(torch.long), torch.ones_like(completion_in)], dim=1)
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    keep[:, -gen_length:] = score  # only these positions go through the LM head
    flat_targets = targets[score]  # (K,) row-major, the same order as hidden_states[keep]

    def logprobs() -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
        if logits.ndim == 3:  # a model that ignores `logits_to_keep` returns (N, P+G, V)
            logits = logits[keep]
        # Straight to float32 (no intermediate float32 copy of the model-dtype logits): one (K, V) copy per forward.
        return torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # (K, V)

    ref_logp = None
    if options.reference is not None:
        with torch.no_grad(), options.reference():
            ref_logp = logprobs()
    kl_grad = options.kl_requires_grad and torch.is_grad_enabled()

    def policy() -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(token log-probs (K,), KL (K,) or None, entropy (K,)) of the policy; differentiable where needed."""
        logp = logprobs()
        # The chunked no-grad path computes the full KL alongside the entropy unless the KL needs a graph (or k1/k3).
        kl_separately = ref_logp is not None and (kl_grad or options.kl_estimator != "full")
        kl_flat, entropy_flat = _stats_no_grad(logp, None if kl_separately else ref_logp)
        if kl_separately:
            with torch.set_grad_enabled(kl_grad):
                kl_flat = _token_kl(logp, ref_logp, flat_targets, options.kl_estimator)
        return logp.gather(-1, flat_targets[:, None]).squeeze(-1), kl_flat, entropy_flat

    if options.recompute and torch.is_grad_enabled():
        # Keep only this draw's inputs until backward, which re-runs its forward: the graph of one draw at a time
        # instead of all of them (non-reentrant checkpointing stops re-running once the saved tensors are rebuilt).
        token_logp, kl_flat, entropy_flat = checkpoint(policy, use_reentrant=False)
    else:
        token_logp, kl_flat, entropy_flat = policy()

    def scatter(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_rows, gen_length, device=values.device, dtype=values.dtype).masked_scatter(
            score, values
        )

    return _Stats(
        logp=scatter(token_logp),
        kl=None if kl_flat is None else scatter(kl_flat),
        entropy=scatter(entropy_flat),
    )


def _reject_antithetic(options: EstimatorOptions) -> None:
    if options.antithetic:
        raise ValueError("antithetic=True only applies to the 'mc_elbo' estimator; set antithetic=False.")


def one_step(model: torch.nn.Module, batch: RolloutBatch, options: EstimatorOptions) -> LogProbOutput:
    """d1's mean-field estimator: fully masked completion, randomly masked prompt (see the module docstring)."""
    _reject_antithetic(options)
    valid = batch.completion_mask
    masked_completion = torch.full_like(batch.completion_ids, options.mask_token_id)
    acc = _Accumulator(len(batch), valid.device, options.reference is not None)
    draws, tokens = [], []
    # Without prompt masking every draw sees the same input: one forward is the exact same estimate.
    for _ in range(options.num_samples if options.prompt_mask_prob > 0 else 1):
        prompt_ids = _mask_prompt(batch, options.prompt_mask_prob, options.mask_token_id, options.generator)
        stats = _score(model, prompt_ids, batch.prompt_mask, masked_completion, batch.completion_ids, valid, options)
        draws.append(stats.logp.sum(-1))
        tokens.append(stats.logp)
        acc.add(stats, valid)
    draws = torch.stack(draws, dim=-1)  # (N, S) or (N, 1)
    token_logps = torch.stack(tokens).mean(0)  # (N, G)
    kl, entropy = acc.result()
    expanded = draws.detach().expand(-1, options.num_samples)
    return LogProbOutput(logps=draws.mean(-1), draws=expanded, kl=kl, entropy=entropy, token_logps=token_logps)


def _random_ranks(valid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random order of each row's valid positions: valid positions get ranks `0..L-1` (N, G)."""
    keys = _rand(tuple(valid.shape), generator, valid.device).masked_fill(~valid, 2.0)  # invalid sort last
    return keys.argsort(dim=-1).argsort(dim=-1)


def mc_elbo(model: torch.nn.Module, batch: RolloutBatch, options: EstimatorOptions) -> LogProbOutput:
    """LLaDA's Monte-Carlo ELBO with stratified `l` and optional antithetic pairs (see the module docstring)."""
    if options.antithetic and options.num_samples % 2:
        raise ValueError(f"antithetic=True needs an even num_samples (pairs of draws), got {options.num_samples}.")
    valid, mask_id, generator = batch.completion_mask, options.mask_token_id, options.generator
    lengths = valid.sum(-1)  # (N,) L per row
    num_strata = options.num_samples // 2 if options.antithetic else options.num_samples
    strata = torch.arange(num_strata, device=valid.device)
    u = (strata + _rand((len(batch), num_strata), generator, valid.device)) / num_strata  # (N, n) in [0, 1)
    num_masked = (u * lengths[:, None]).floor().long() + 1  # (N, n) uniform on 1..L
    acc = _Accumulator(len(batch), valid.device, options.reference is not None)
    draws, tokens = [], []

    def draw(hidden: torch.Tensor, count: torch.Tensor) -> None:
        prompt_ids = _mask_prompt(batch, options.prompt_mask_prob, mask_id, generator)
        # Positions after the first EOS stay masked and unscored (module docstring).
        completion_in = batch.completion_ids.masked_fill(hidden | ~valid, mask_id)
        stats = _score(model, prompt_ids, batch.prompt_mask, completion_in, batch.completion_ids, hidden, options)
        weight = lengths / count.clamp(min=1)  # L / l; rows with L = 0 score nothing
        tokens.append(weight[:, None] * stats.logp)  # (N, G)
        draws.append(tokens[-1].sum(-1))
        acc.add(stats, hidden)

    for k in range(num_strata):
        ranks = _random_ranks(valid, generator)
        count = num_masked[:, k].clamp(max=lengths)  # (N,)
        draw(valid & (ranks < count[:, None]), count)
        if options.antithetic:
            # The complementary half of the same order, sharing the one token at rank l-1: size L-l+1 ~ U{1..L}.
            draw(valid & (ranks >= count[:, None] - 1), lengths - count + 1)
    draws = torch.stack(draws, dim=-1)  # (N, S)
    token_logps = torch.stack(tokens).mean(0)  # (N, G)
    kl, entropy = acc.result()
    return LogProbOutput(logps=draws.mean(-1), draws=draws.detach(), kl=kl, entropy=entropy, token_logps=token_logps)


def _check_commit_step(batch: RolloutBatch, steps: int | None, block_length: int | None) -> torch.Tensor:
    if batch.commit_step is None:
        raise ValueError(
            "The 'trajectory' estimator needs RolloutBatch.commit_step (SamplerOutput.commit_step); pass it or use "
            "estimator='one_step' / 'mc_elbo'."
        )
    commit_step = batch.commit_step.long()
    if (commit_step < 0).any():
        raise ValueError("commit_step has negative entries; every completion position must record its commit step.")
    if steps is not None and (commit_step >= steps).any():
        raise ValueError(f"commit_step has entries >= steps={steps}; pass the sampler's `steps`.")
    if steps is not None and block_length is not None:
        gen_length = commit_step.shape[1]
        if gen_length % block_length or steps % (gen_length // block_length):
            raise ValueError(
                f"gen_length={gen_length}, block_length={block_length}, steps={steps} do not match a sampler "
                "configuration (gen_length % block_length == 0 and steps % num_blocks == 0)."
            )
        steps_per_block = steps // (gen_length // block_length)
        block = torch.arange(gen_length, device=commit_step.device) // block_length
        if (commit_step // steps_per_block != block).any():
            raise ValueError(
                "commit_step is inconsistent with steps/block_length (a token was committed outside its block's "
                "steps); pass the same steps and block_length the sampler used."
            )
    return commit_step


def trajectory(model: torch.nn.Module, batch: RolloutBatch, options: EstimatorOptions) -> LogProbOutput:
    """TraceRL's replay of the sampler's trajectory, exact or with sampled steps (see the module docstring)."""
    if options.prompt_mask_prob > 0:
        raise ValueError(
            "The 'trajectory' estimator replays the sampler's exact inputs, so it cannot mask the prompt; "
            "set prompt_mask_prob=0."
        )
    _reject_antithetic(options)
    steps, num_samples = options.steps, options.num_samples
    commit_step = _check_commit_step(batch, steps, options.block_length)
    valid = batch.completion_mask
    num_rows = len(batch)
    if steps is not None:
        horizon = steps
    else:
        horizon = int(commit_step.max()) + 1 if commit_step.numel() else 1
    # present[r, t]: step t committed at least one valid token of row r.
    hits_per_step = torch.zeros(num_rows, horizon, dtype=torch.long, device=valid.device)
    present = hits_per_step.scatter_add_(1, commit_step, valid.long()) > 0
    num_steps = present.sum(-1)  # (N,) D per row
    taken = num_steps.clamp(max=num_samples)  # (N,) steps evaluated per row
    # A uniformly random order of the present steps; the first `taken` are evaluated (all of them when exact).
    keys = _rand((num_rows, horizon), options.generator, valid.device).masked_fill(~present, 2.0)
    order = keys.argsort(dim=-1)  # (N, horizon)
    contributions = torch.zeros(num_rows, num_samples, device=valid.device)
    tokens = torch.zeros(num_rows, valid.shape[1], device=valid.device)  # (N, G) each position scored at most once
    acc = _Accumulator(num_rows, valid.device, options.reference is not None)
    # The number of forwards depends on the configuration only, never on the data: under DeepSpeed ZeRO-3 every
    # forward gathers parameters collectively, so all processes must run the same count. A draw no row needs still
    # runs (on one row, scoring nothing).
    for j in range(min(num_samples, steps) if steps is not None else num_samples):
        rows = (taken > j).nonzero().squeeze(-1)
        needed = rows.numel() > 0
        if not needed:
            rows = torch.zeros(1, dtype=torch.long, device=valid.device)
        sub = batch[rows]
        step = order[rows, min(j, horizon - 1)][:, None]  # (n, 1)
        visible = commit_step[rows] < step  # the sampler's canvas at that step
        hit = sub.completion_mask & (commit_step[rows] == step) & needed
        completion_in = sub.completion_ids.masked_fill(~visible, options.mask_token_id)
        stats = _score(model, sub.prompt_ids, sub.prompt_mask, completion_in, sub.completion_ids, hit, options)
        contributions = contributions.index_put((rows, torch.full_like(rows, j)), stats.logp.sum(-1))
        tokens = tokens.index_add(0, rows, stats.logp.to(tokens.dtype))
        acc.add(stats, hit, rows)
    scale = num_steps / taken.clamp(min=1)  # D / k: 1 when exact
    logps = scale * contributions.sum(-1)
    token_logps = scale[:, None] * tokens
    exact = (taken == num_steps)[:, None]
    # Per-draw estimates: the exact value for exact rows, D * (one sampled step) otherwise; their mean is `logps`.
    draws = torch.where(exact, logps.detach()[:, None], num_steps[:, None] * contributions.detach())
    kl, entropy = acc.result()
    return LogProbOutput(logps=logps, draws=draws, kl=kl, entropy=entropy, token_logps=token_logps)


ESTIMATORS: dict[str, LogProbEstimator] = {"one_step": one_step, "mc_elbo": mc_elbo, "trajectory": trajectory}


def get_estimator(name: str) -> LogProbEstimator:
    """The estimator registered under `name` (one of `ESTIMATORS`), called as `estimator(model, batch, options)`."""
    if name not in ESTIMATORS:
        raise ValueError(f"Unknown log-prob estimator {name!r}; choose one of {sorted(ESTIMATORS)}.")
    return ESTIMATORS[name]


def estimate_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    estimator: str,
    mask_token_id: int,
    generator: torch.Generator,
    num_samples: int = 1,
    prompt_mask_prob: float = 0.0,
    antithetic: bool = False,
    reference: Callable[[], AbstractContextManager] | None = None,
    kl_estimator: str = "full",
    kl_requires_grad: bool = True,
    steps: int | None = None,
    block_length: int | None = None,
    recompute: bool | None = None,
) -> LogProbOutput:
    """Estimate `log p(completion | prompt)` for every row of `batch` with the estimator named `estimator`.

    Args:
        model (`torch.nn.Module`):
            A mask predictor called as `model(input_ids=, attention_mask=, logits_to_keep=)` returning `.logits`
            (any transformers causal-LM class with `is_causal=False`, e.g. `LladaForMaskedDiffusion`, or a PEFT
            wrapper of one). The caller chooses train/eval mode; gradients flow wherever `torch.is_grad_enabled()`.
        batch ([`RolloutBatch`]):
            Prompts and sampled completions.
        estimator (`str`):
            `"one_step"`, `"mc_elbo"` or `"trajectory"` (module docstring).
        mask_token_id (`int`):
            Id of the mask token.
        generator (`torch.Generator`):
            Source of every random mask; the global RNG is never touched. Two calls with generators in the same
            state build identical masks.
        num_samples (`int`, *optional*, defaults to `1`):
            Draws: prompt masks (`one_step`), masks (`mc_elbo`), or steps evaluated (`trajectory`).
        prompt_mask_prob (`float`, *optional*, defaults to `0.0`):
            Probability of masking each real prompt token (`one_step`, `mc_elbo`; must be 0 for `trajectory`).
        antithetic (`bool`, *optional*, defaults to `False`):
            Coupled complementary mask pairs (`mc_elbo` only; needs an even `num_samples`).
        reference (`Callable[[], ContextManager]`, *optional*):
            Context-manager factory under which `model` computes the reference (base) policy, e.g.
            `peft_model.disable_adapter`. When given, `kl` is returned.
        kl_estimator (`str`, *optional*, defaults to `"full"`):
            `"full"` (exact sum over the vocabulary), `"k1"` or `"k3"` (single-sample estimators at the token).
        kl_requires_grad (`bool`, *optional*, defaults to `True`):
            Keep the KL differentiable through the policy (needed when the KL is a loss term). Set `False` when the
            KL only enters the reward: it saves two `(K, V)` tensors per draw until backward.
        steps (`int`, *optional*):
            The sampler's number of steps (`trajectory`: bounds and checks `commit_step`).
        block_length (`int`, *optional*):
            The sampler's block length (`trajectory`: checks that `commit_step` respects the blocks).
        recompute (`bool`, *optional*):
            Activation checkpointing per draw: each draw keeps only its inputs until backward, which re-runs its
            policy forward, so the memory held for backward no longer grows with `num_samples` (one draw's graph
            at a time), for about one extra forward per draw. `None` (default) enables it when `num_samples > 1`.

    Returns:
        [`LogProbOutput`]: `logps` (N,), `draws` (N, S), `kl` (N,) or `None`, `entropy` (N,).
    """
    options = EstimatorOptions(
        mask_token_id=mask_token_id,
        generator=generator,
        num_samples=num_samples,
        prompt_mask_prob=prompt_mask_prob,
        antithetic=antithetic,
        reference=reference,
        kl_estimator=kl_estimator,
        kl_requires_grad=kl_requires_grad,
        steps=steps,
        block_length=block_length,
        recompute=num_samples > 1 if recompute is None else recompute,
    )
    estimate = get_estimator(estimator)
    # Before the first forward: an id outside the embedding would end in a bare IndexError inside the model.
    check_token_ids(model_vocab_size(model), prompt_ids=batch.prompt_ids, completion_ids=batch.completion_ids)
    return estimate(model, batch, options)


def logprob_estimator_std(
    model: torch.nn.Module, batch: RolloutBatch, *, generator: torch.Generator, **kwargs
) -> torch.Tensor:
    """Standard deviation of the log-prob estimator, from two independent runs (the `logprob/estimator_std` metric).

    Runs `estimate_logprobs(model, batch, generator=generator, **kwargs)` twice without gradients or reference and
    returns `sqrt(mean_i (a_i - b_i)^2 / 2)`: per row, `(a - b)^2 / 2` is an unbiased estimate of the variance of one
    run at the configured `num_samples`. Advances `generator`; pass a dedicated one to keep the training masks
    unchanged.
    """
    kwargs.pop("reference", None)
    with torch.no_grad():
        first = estimate_logprobs(model, batch, generator=generator, **kwargs).logps
        second = estimate_logprobs(model, batch, generator=generator, **kwargs).logps
    return ((first - second).pow(2) / 2).mean().sqrt()
