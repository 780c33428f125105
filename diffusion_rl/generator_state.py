"""The trainers' own `torch.Generator`s in every checkpoint, so that a resumed run is the uninterrupted one.

`transformers.Trainer` saves and restores only the global RNGs (`rng_state*.pth`). This library never draws from the
global RNG in its maths; it passes local generators (the RL sampler and estimator, the SFT masks). Their states must
be checkpointed too, or a resumed run draws different masks than the uninterrupted run would have. One file per
process, `diffusion_rng_state_<rank>.pth`, a `{name: state}` dict.
"""

from __future__ import annotations

import os

import torch
from transformers.utils import logging

__all__ = ["generator_state_file", "load_generator_states", "save_generator_states"]

logger = logging.get_logger(__name__)


def generator_state_file(directory: str, process_index: int) -> str:
    """Path of one process's generator states inside a checkpoint: `diffusion_rng_state_<process_index>.pth`."""
    return os.path.join(directory, f"diffusion_rng_state_{process_index}.pth")


def save_generator_states(directory: str, process_index: int, generators: dict[str, torch.Generator]) -> None:
    """Save the states of `generators` (by name) next to Trainer's own `rng_state*.pth` files.

    Args:
        directory (`str`):
            The checkpoint folder.
        process_index (`int`):
            This process's rank (each rank has its own streams).
        generators (`dict[str, torch.Generator]`):
            Generators to save, by name.
    """
    torch.save({name: g.get_state() for name, g in generators.items()}, generator_state_file(directory, process_index))


def load_generator_states(directory: str | None, process_index: int, generators: dict[str, torch.Generator]) -> bool:
    """Restore generators saved by [`save_generator_states`] in place; `False` (and a warning) if there is no file.

    Args:
        directory (`str`, *optional*):
            The checkpoint folder (`None`: nothing to restore).
        process_index (`int`):
            This process's rank.
        generators (`dict[str, torch.Generator]`):
            Generators to restore, by name; a name missing from the file is left as it is, with a warning.
    """
    if directory is None:
        return False
    path = generator_state_file(directory, process_index)
    if not os.path.isfile(path):
        logger.warning(f"{path} not found: the run resumes with fresh mask/sampling generators (not reproducible).")
        return False
    state = torch.load(path, weights_only=True)
    for name, generator in generators.items():
        if name in state and state[name].numel() != generator.get_state().numel():
            # A CPU generator's state is 5,056 bytes, a CUDA one's 16: the run was saved on another kind of device
            # (set_state raised a bare RuntimeError). The sequence cannot carry over; the run itself can.
            logger.warning(
                f"{path}: the {name!r} generator was saved on another kind of device ({state[name].numel()}-byte "
                f"state, this one's is {generator.get_state().numel()}); it resumes with a fresh generator (the "
                "masks and samples will not repeat the original run's)."
            )
        elif name in state:
            generator.set_state(state[name])
        else:
            logger.warning(f"{path} has no state for the {name!r} generator; it keeps its current state.")
    return True
