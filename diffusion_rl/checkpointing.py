"""Crash safety of checkpoints.

- [`replace_directory`]: atomic promotion of a fully written checkpoint folder (a process killed mid-save never leaves
  a half-written `checkpoint-N` that `resume_from_checkpoint=True` would pick).
- [`SigtermCheckpointCallback`]: on SIGTERM (a scheduler's warning before SIGKILL), save a checkpoint at the end of
  the current step, stop, then deliver the signal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading

import torch
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)


def replace_directory(source: str, target: str) -> None:
    """Move the complete directory `source` to `target` with renames only, replacing any existing `target`.

    `os.replace` is atomic but cannot overwrite a non-empty directory, so an existing `target` (a run resumed from
    an earlier checkpoint saves the same step again) is first renamed aside, then deleted. At every instant either
    the old or the new `target` is complete, or no directory has that name (then the previous checkpoint is used).
    """
    aside = None
    if os.path.exists(target):
        aside = os.path.join(os.path.dirname(target), f".old-{os.path.basename(target)}")
        if os.path.exists(aside):
            shutil.rmtree(aside)
        os.replace(target, aside)
    os.replace(source, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


class SigtermCheckpointCallback(TrainerCallback):
    """On SIGTERM, finish the current optimizer step, save a checkpoint, stop training, then deliver the signal.

    Schedulers (Slurm, Kubernetes, spot instances) send SIGTERM some time before SIGKILL. The handler only sets a
    flag; at the end of the step, `control.should_save` and `control.should_training_stop` are set, so Trainer writes
    `checkpoint-<step>` and leaves the loop. When training returns, the previous handler is restored and the signal is
    raised again, so the process ends (or the caller's handler runs) exactly as it would have, only after the save.
    A second SIGTERM does that at once, without waiting for the save.

    With several processes the flag is gathered at every step end (one scalar), so that all ranks save and stop at
    the same step even if the signal reaches them at different times (a save is collective under DeepSpeed).

    Args:
        accelerator (`accelerate.Accelerator`, *optional*):
            Used to agree on the flag across processes; `None` for a single process.
    """

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.received = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.received:  # asked twice: stop waiting for the checkpoint
            self._restore()
            signal.raise_signal(signal.SIGTERM)
            return
        self.received = True
        logger.warning("SIGTERM received: saving a checkpoint at the end of this step, then stopping.")

    def _restore(self) -> None:
        # signal.signal returns None for a handler installed outside Python: fall back to the default action.
        signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)

    @contextlib.contextmanager
    def installed(self):
        """Context manager: the handler is active inside, the previous one is restored on exit."""
        if threading.current_thread() is not threading.main_thread():
            yield  # Python only lets the main thread set signal handlers
            return
        self.received = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield
        finally:
            self._restore()
            if self.received:
                signal.raise_signal(signal.SIGTERM)

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.received
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            flag = torch.tensor([float(stop)], device=self.accelerator.device)
            stop = bool(self.accelerator.gather(flag).max().item())
        if stop:
            control.should_save = True
            control.should_training_stop = True
        return control
