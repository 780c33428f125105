"""How dataset rows become per-device batches: whole groups of generations, rows kept as dicts.

- [`RepeatSampler`]: yields every dataset index `num_generations` times in a row, so that a per-device batch whose
  size is a multiple of `num_generations` always holds whole groups (the group baselines are computed locally, with
  no collective).
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

    Args:
        data_source (`Sized`):
            The dataset (only its length is used).
        num_generations (`int`):
            How many times each index is repeated.
        shuffle (`bool`, *optional*, defaults to `True`):
            Whether to permute the indices (otherwise dataset order).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the permutation.
    """

    def __init__(self, data_source, num_generations: int, shuffle: bool = True, seed: int = 0):
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
        self.num_samples = len(data_source)
        self.num_generations = num_generations
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        for index in order:
            yield from [index] * self.num_generations

    def __len__(self) -> int:
        return self.num_samples * self.num_generations


def identity_collator(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Rows stay Python dicts: prompts are tokenized (and completions sampled) inside the training step.
    return features
