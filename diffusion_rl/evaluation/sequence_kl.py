"""KL(adapter || base) between the two models' *answer distributions*, per answer token, by Monte Carlo.

The KL the trainer and `completion_kl` use is read at one state of the canvas: the completion fully masked. There it
compares, position by position, the two models' marginal distributions, and averages over positions. That is not the
KL between the answers the models give. When an adapter moves probability from one way of answering to another (a
stereotyped explanation to a neutral one), every position where the two answers differ pays the whole switch, so the
per-position KL is about the number of differing positions times the sequence-level KL per token. Two models that
agree except that one answers `aa` with probability 0.9 and the other `bb` with probability 0.9 differ by
0.8 ln 9 = 1.76 nats per answer (0.88 per token) and by 1.76 nats at *each* position of the fully masked canvas.

A masked diffusion model defines the answer distribution through its sampler. With a random unmasking order (LLaDA's
`remasking="random"`) the order does not depend on the model, so for an order `sigma` the model's answer distribution
is `p(x) = prod_i p(x_sigma(i) | x_sigma(<i))`, and by the chain rule

    KL(p_adapter || p_base) = E_{x ~ p_adapter} sum_i KL(p_adapter(. | x_sigma(<i)) || p_base(. | x_sigma(<i)))

at the position unmasked at step `i`. [`sequence_kl`] estimates it with one path per prompt: a random order, one
position a step, the token drawn from the adapter at temperature 1, the exact KL over the vocabulary at that
position from two forwards (adapter on, adapter off) on the same canvas. For the order drawn, the sum is an
unbiased estimate of that order's KL; over random orders its mean is the average per-order KL, which bounds the KL
between the two random-order samplers' answers from above (convexity) and equals it for models whose conditionals
agree across orders, as the LLaDA objective trains them to. Divided by the answer's length (up to and including
its first stop token) it is nats per answer token, the unit of the per-position KL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

__all__ = ["SequenceKL", "sequence_kl"]


@dataclass
class SequenceKL:
    """One Monte-Carlo path per prompt.

    Args:
        total (`torch.Tensor` of shape `(B,)`): the KL summed over the path, nats per answer.
        length (`torch.Tensor` of shape `(B,)`): tokens of the sampled answer up to and including its first stop
            token (the whole canvas if none).
        completion_ids (`torch.Tensor` of shape `(B, G)`): the sampled canvas.
    """

    total: torch.Tensor
    length: torch.Tensor
    completion_ids: torch.Tensor

    @property
    def per_token(self) -> torch.Tensor:
        """`total / length`, nats per answer token."""
        return self.total / self.length.clamp(min=1)


def _log_probs(model, canvas, attention, gen_length, rows, position) -> torch.Tensor:
    logits = model(input_ids=canvas, attention_mask=attention, logits_to_keep=gen_length).logits  # (B, G, V)
    return logits[rows, position].float().log_softmax(-1)


@torch.no_grad()
def sequence_kl(
    model: torch.nn.Module,
    reference: Callable[[], AbstractContextManager],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    gen_length: int,
    mask_token_id: int,
    stop_token_ids: Sequence[int],
    generator: torch.Generator,
) -> SequenceKL:
    """Estimate KL(model || reference) of the answers to each prompt along one random-order path of `model`.

    Args:
        model (`torch.nn.Module`):
            The policy, called as `model(input_ids=, attention_mask=)` and returning `.logits` (e.g. a PEFT model).
        reference (`Callable[[], ContextManager]`):
            Context-manager factory under which `model` is the reference (e.g. `peft_model.disable_adapter`).
        prompt_ids (`torch.Tensor` of shape `(B, P)`):
            Left-padded prompt ids.
        prompt_mask (`torch.Tensor` of shape `(B, P)`):
            Attention mask of the prompts.
        gen_length (`int`):
            Canvas length `G` (the sampler's `gen_length`): every position, padding included, is unmasked once,
            so a change of answer length is paid for too.
        mask_token_id (`int`):
            Id of the mask token.
        stop_token_ids (`Sequence[int]`):
            Tokens that end an answer (EOS, EOT), for the lengths.
        generator (`torch.Generator`):
            Source of the orders and tokens (on the model's device).

    Returns:
        [`SequenceKL`]. Costs `2 * gen_length` forwards of the batch.
    """
    if gen_length < 1:
        raise ValueError(f"gen_length must be >= 1, got {gen_length}.")
    device = prompt_ids.device
    num_rows, prompt_length = prompt_ids.shape
    canvas = torch.cat([prompt_ids, torch.full((num_rows, gen_length), mask_token_id, device=device)], dim=1)
    attention = torch.cat([prompt_mask, torch.ones_like(canvas[:, prompt_length:])], dim=1)
    rows = torch.arange(num_rows, device=device)
    # Drawn on the generator's own device, so that a CPU generator also drives a model on a GPU.
    source = generator.device if generator is not None else device
    order = torch.rand(num_rows, gen_length, generator=generator, device=source).to(device).argsort(dim=1)
    total = torch.zeros(num_rows, dtype=torch.float32, device=device)
    was_training = model.training
    model.eval()  # no dropout: the two forwards must differ by the adapter only
    try:
        for step in range(gen_length):
            position = order[:, step]  # of the canvas; only its G positions' logits are kept
            policy = _log_probs(model, canvas, attention, gen_length, rows, position)
            with reference():
                base = _log_probs(model, canvas, attention, gen_length, rows, position)
            total += (policy.exp() * (policy - base)).sum(-1)
            token = torch.multinomial(policy.exp().to(source), 1, generator=generator).squeeze(1).to(device)
            canvas[rows, prompt_length + position] = token
    finally:
        model.train(was_training)
    completion = canvas[:, prompt_length:]
    is_stop = torch.isin(completion, torch.tensor(list(stop_token_ids), device=device, dtype=completion.dtype))
    first_stop = torch.where(is_stop.any(1), is_stop.float().argmax(1) + 1, torch.full_like(rows, gen_length))
    return SequenceKL(total=total.cpu(), length=first_stop.cpu(), completion_ids=completion.cpu())
