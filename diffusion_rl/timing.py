"""Wall time and peak memory of one phase of a training step (sampling, reward, log-prob, backward).

The trainer logs them as `time/<phase>` and `memory/peak_mb[/<phase>]`; benchmarks/bench_trainer.py reads the same
numbers.
"""

from __future__ import annotations

import resource
import sys
import time

import torch


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA `max_memory_allocated` on a GPU, else the process's maximum resident set size.

    On CPU the maximum RSS cannot be reset, so it is the peak of the whole process so far, not of one phase.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class PhaseTimer:
    """Context manager that records the wall time (s) and, on CUDA, the peak memory (MiB) of one phase.

    Args:
        device (`torch.device`):
            The device the phase runs on (peak memory is reset and read on CUDA only).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.peak_mb: float | None = None

    def __enter__(self) -> PhaseTimer:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = peak_memory_mb(self.device)
        self.seconds = time.perf_counter() - self._start
