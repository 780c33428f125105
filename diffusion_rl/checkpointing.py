"""Crash safety of checkpoints.

- [`replace_directory`]: atomic promotion of a fully written checkpoint folder (a process killed mid-save never leaves
  a half-written `checkpoint-N` that `resume_from_checkpoint=True` would pick).
- [`SigtermCheckpointCallback`]: on SIGTERM (a scheduler's warning before SIGKILL), save a checkpoint at the end of
  the current step, stop, then deliver the signal.
- [`write_node_marker`], [`is_promoter`]: with several nodes, exactly one process per *filesystem* promotes the
  staged folder, whatever `save_on_each_node` says and whether `output_dir` is shared or node-local (see below).
- [`HUB_IGNORE_PATTERNS`], [`hub_upload_ignoring`]: staging folders, renamed-aside folders and the output-folder
  lock never reach the Hub.

Multi-node promotion. Every process writes into `.tmp-checkpoint-N/checkpoint-N` (its RNG files at least), so the
folder exists on every node's view of `output_dir`. Renaming it is the job of one process per filesystem: on a
shared filesystem with `save_on_each_node=True` two nodes' main processes used to both rename it (the second crashed
with `FileNotFoundError` and no `checkpoint-N` was left), and on node-local disks with `save_on_each_node=False` the
other nodes never renamed theirs (their RNG files stayed in `.tmp-checkpoint-N`). Now the first process of each node
drops a marker `.node-<index>` into `.tmp-checkpoint-N/`; after a barrier each one lists the markers it can see, and
the one with the smallest index among them promotes: one per shared filesystem, one per node-local disk. The markers
go down before the files: a node that sees a lower node's marker writes no model or `trainer_state.json` (its
main process saves as with `save_on_each_node=False`), since two writers of one file on a shared filesystem left
two JSON documents in it.
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

from .output_lock import LOCK_NAME, release_all

logger = logging.get_logger(__name__)

_MARKER_PREFIX = ".node-"
# transformers' own patterns ("_*", "checkpoint-*"), plus what this library writes into output_dir.
HUB_IGNORE_PATTERNS = ["_*", "checkpoint-*", ".tmp-checkpoint-*", ".old-checkpoint-*", LOCK_NAME]


def write_node_marker(staging_root: str, node_index: int) -> None:
    """Drop `.node-<node_index>` into the staging root (called by the first process of each node)."""
    os.makedirs(staging_root, exist_ok=True)
    with open(os.path.join(staging_root, f"{_MARKER_PREFIX}{node_index}"), "w"):
        pass


def is_promoter(staging_root: str, node_index: int) -> bool:
    """Whether this node's first process promotes: its marker is the smallest one visible on its filesystem."""
    try:
        seen = [int(n[len(_MARKER_PREFIX) :]) for n in os.listdir(staging_root) if n.startswith(_MARKER_PREFIX)]
    except FileNotFoundError:
        return False
    return bool(seen) and min(seen) == node_index


@contextlib.contextmanager
def hub_upload_ignoring(api, patterns: list[str] = HUB_IGNORE_PATTERNS):
    """Within the block, `api.upload_folder` (a `huggingface_hub.HfApi`) also ignores `patterns`.

    `transformers.Trainer` uploads `output_dir` with fixed `ignore_patterns` (`_*`, `checkpoint-*`) that do not
    cover the staging folders of the atomic save or the lock file; its upload calls are not configurable, so the
    shared `HfApi` instance they go through gets a wrapper for the duration of the call.
    """
    if "upload_folder" in vars(api):  # already wrapped (a nested call)
        yield
        return
    original = api.upload_folder

    def upload_folder(*args, ignore_patterns=None, **kwargs):
        given = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        return original(*args, ignore_patterns=given + [p for p in patterns if p not in given], **kwargs)

    api.upload_folder = upload_folder
    try:
        yield
    finally:
        del api.upload_folder


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
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    # The default action ends the process without atexit: release the output_dir lock first.
                    release_all()
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
