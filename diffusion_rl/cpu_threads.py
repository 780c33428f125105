"""How many CPU threads torch uses in a job, so that `accelerate launch` on a CPU does not leave cores idle.

`accelerate launch` exports `OMP_NUM_THREADS` to the script: its `--num_cpu_threads_per_process`, else the shell's
`OMP_NUM_THREADS`, else 1 (only a config with `use_cpu: true` gets the physical cores per process instead). With the
packaged one-process config (`use_cpu: false`, so that the same file picks the GPU when there is one), a CPU job
therefore computed on one core of the machine. Measured on 2 idle cores (docs/benchmarks.md): the main job's 60
training steps took 358 s on the one thread accelerate left it and 198 s on two.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# `accelerate launch` exports these to the script; a plain `python script.py` has none of them.
_ACCELERATE_LAUNCH_ENV = "ACCELERATE_MIXED_PRECISION"
# The launchers' local world sizes; WORLD_SIZE last (on one machine it is the local count; on several it is too
# many, which only leaves threads unused).
_LOCAL_PROCESS_COUNT_ENV = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "WORLD_SIZE")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one, else `os.cpu_count()`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def local_process_count() -> int:
    """Processes of this job on this machine (the launcher's local world size; 1 without a launcher)."""
    for name in _LOCAL_PROCESS_COUNT_ENV:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def set_cpu_threads(requested: int | None, on_cpu: bool) -> int | None:
    """Set torch's intra-op threads for a job computing on the CPU; returns the number set, or `None` if untouched.

    Args:
        requested (`int`, *optional*):
            Threads per process, as the user asked (`--cpu_threads`); set whatever the device.
        on_cpu (`bool`):
            Whether the job computes on the CPU. Without `requested`, only a CPU job that `accelerate launch` left
            on one thread (`OMP_NUM_THREADS=1`, its default) gets the available cores divided among the local
            processes. A thread count the user chose (any other `OMP_NUM_THREADS`) or a run without accelerate's
            launcher is left as it is.
    """
    import torch

    if requested is not None:
        if requested < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {requested}; leave it unset to use the available cores.")
        torch.set_num_threads(requested)
        return requested
    launched_by_accelerate = _ACCELERATE_LAUNCH_ENV in os.environ
    if not on_cpu or not launched_by_accelerate or os.environ.get("OMP_NUM_THREADS") != "1":
        return None
    threads = max(1, available_cores() // local_process_count())
    if threads == torch.get_num_threads():
        return None
    torch.set_num_threads(threads)
    logger.info(
        "accelerate launch set OMP_NUM_THREADS=1; computing on %d CPU threads per process instead "
        "(--cpu_threads 1 keeps one).",
        threads,
    )
    return threads
