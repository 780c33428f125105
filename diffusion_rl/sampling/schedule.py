"""Block and step schedule of the LLaDA reverse process.

LLaDA discretises the reverse process on ``[0, 1]`` into ``steps`` equal intervals. Because its noise schedule is
linear, the expected number of tokens unmasked per interval is constant, so each block commits
``n_masked // steps_per_block`` tokens per step and spreads the remainder over the *first* steps. ``n_masked`` is
counted per row at the start of each block (upstream ``get_num_transfer_tokens``), here without a Python loop over
rows.
"""

from __future__ import annotations

import torch


def block_layout(gen_length: int, block_length: int, steps: int) -> tuple[int, int]:
    """Validate the semi-autoregressive layout and return `(num_blocks, steps_per_block)`.

    Args:
        gen_length (`int`):
            Number of generated tokens (masked positions appended to the prompt).
        block_length (`int`):
            Length of each block decoded left to right; must divide `gen_length`.
        steps (`int`):
            Total number of denoising steps over all blocks; must be a multiple of the number of blocks.

    Raises:
        ValueError: if a length is not positive or the divisibility constraints do not hold.
    """
    for name, value in (("gen_length", gen_length), ("block_length", block_length), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if gen_length % block_length != 0:
        raise ValueError(
            f"`gen_length` ({gen_length}) must be a multiple of `block_length` ({block_length}); "
            f"e.g. use block_length={gen_length} for a single block."
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks != 0:
        raise ValueError(
            f"`steps` ({steps}) must be a multiple of the number of blocks "
            f"(gen_length / block_length = {num_blocks}); "
            f"e.g. use steps={num_blocks * max(1, round(steps / num_blocks))}."
        )
    return num_blocks, steps // num_blocks


def num_transfer_tokens(mask_count: torch.Tensor, steps: int) -> torch.Tensor:
    """Number of tokens to commit at each step of a block.

    Args:
        mask_count (`torch.Tensor` of shape `(batch_size,)`):
            Number of masked positions per row at the start of the block.
        steps (`int`):
            Number of denoising steps in the block.

    Returns:
        `torch.LongTensor` of shape `(batch_size, steps)`: row `b` sums to `mask_count[b]`; the first
        `mask_count[b] % steps` entries are one larger than the others.
    """
    mask_count = mask_count.long().unsqueeze(1)  # (B, 1)
    base = mask_count // steps
    remainder = mask_count % steps
    step_index = torch.arange(steps, device=mask_count.device).unsqueeze(0)  # (1, S)
    return base + (step_index < remainder).long()  # (B, S)
