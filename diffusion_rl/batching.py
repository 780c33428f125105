"""How dataset rows become per-device batches: whole groups of generations, rows kept as dicts.

- [`RepeatSampler`]: yields every dataset index `num_generations` times in a row, so that a per-device batch whose
  size is a multiple of `num_generations` always holds whole groups; with `repeat_count > 1` it also repeats each
  generation batch, which the trainer samples once and reuses (see [`diffusion_rl.rollouts`]).
- [`identity_collator`]: rows stay dicts; prompts are tokenized inside the training step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class RepeatSampler(torch.utils.data.Sampler[int]):
    """Shuffled dataset indices, each repeated `num_generations` times consecutively.

    The permutation depends only on `(seed, epoch)`, not on how many times the sampler was iterated before, so a
    run resumed from a checkpoint sees the same prompt order as the uninterrupted run.

    With `repeat_count > 1` the permutation is cut into chunks of `batch_size` prompts (the global generation batch;
    an incomplete last chunk is dropped, as in TRL) and each chunk is yielded `repeat_count` times in a row: the
    dataloader then hands every micro-step the generation batch it belongs to, and the trainer samples it once.

    Args:
        data_source (`Sized`):
            The dataset (only its length is used).
        num_generations (`int`):
            How many times each index is repeated.
        shuffle (`bool`, *optional*, defaults to `True`):
            Whether to permute the indices (otherwise dataset order).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the permutation.
        batch_size (`int`, *optional*):
            Distinct prompts per chunk (the generation batch of all processes, divided by `num_generations`);
            required when `repeat_count > 1`.
        repeat_count (`int`, *optional*, defaults to `1`):
            How many times each chunk is yielded (`steps_per_generation * num_iterations` in the trainer).
    """

    def __init__(
        self,
        data_source,
        num_generations: int,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        repeat_count: int = 1,
    ):
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
        if repeat_count < 1:
            raise ValueError(f"repeat_count must be >= 1, got {repeat_count}.")
        if repeat_count > 1 and (batch_size is None or batch_size < 1):
            raise ValueError(f"repeat_count={repeat_count} needs a positive batch_size, got {batch_size!r}.")
        self.num_samples = len(data_source)
        self.num_generations = num_generations
        self.shuffle = shuffle
        self.seed = seed
        self.batch_size = batch_size
        self.repeat_count = repeat_count
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        if self.repeat_count == 1:
            for index in order:
                yield from [index] * self.num_generations
            return
        for start in range(0, self.num_samples - self.batch_size + 1, self.batch_size):
            chunk = order[start : start + self.batch_size]
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from [index] * self.num_generations

    def __len__(self) -> int:
        if self.repeat_count == 1:
            return self.num_samples * self.num_generations
        chunks = self.num_samples // self.batch_size
        return chunks * self.batch_size * self.num_generations * self.repeat_count


def identity_collator(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Rows stay Python dicts: prompts are tokenized (and completions sampled) inside the training step.
    return features
