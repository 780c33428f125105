"""The checkpoint side of [`DiffusionReinforceTrainer`]: atomic staged saves, multi-node promotion, deferred Hub
pushes, and the trainer's own generator states and `run_settings.json` (see [`diffusion_rl.run_settings`]) in every
checkpoint.

A mixin (like [`diffusion_rl.rollouts.RolloutMixin`]) so that `trainer.py` keeps the training maths; it overrides
`transformers.Trainer`'s `_get_output_dir`, `_save_checkpoint`, `_push_from_checkpoint`, `_save_rng_state` and
`_load_rng_state`, and uses the trainer's `args`, `state`, `accelerator`, `_sampler/_logprob/_std_generator` and
`_run_settings()`.
"""

from __future__ import annotations

import os
import shutil

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .checkpointing import hub_upload_ignoring, is_promoter, replace_directory, write_node_marker
from .generator_state import load_generator_states, save_generator_states
from .run_settings import save_run_settings

__all__ = ["CheckpointMixin"]


class CheckpointMixin:
    """Staged, atomic checkpoint saves (see [`diffusion_rl.checkpointing`]) for a `transformers.Trainer` subclass."""

    # Set while a checkpoint is being written: the staging folder (inside output_dir) that Trainer writes into.
    _checkpoint_staging: str | None = None
    # A checkpoint push that Trainer asked for during the staged save: sent once the folder has its final name.
    _pending_push: str | None = None

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        # While saving, Trainer's `<run_dir>/checkpoint-N` resolves to `<run_dir>/.tmp-checkpoint-N/checkpoint-N`.
        return run_dir if self._checkpoint_staging is None else os.path.join(run_dir, self._checkpoint_staging)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder and rename it to `checkpoint-N` only once every file is there.

        Trainer writes `checkpoint-N` in place, so a process killed mid-save left a folder without (say)
        `trainer_state.json` that `resume_from_checkpoint=True` would pick and fail on. With several nodes exactly one
        process per filesystem renames the staged folder (shared or node-local `output_dir`, with or without
        `save_on_each_node`; see [`diffusion_rl.checkpointing`]), and a Hub push of the checkpoint waits for the
        rename, so that neither the staging folder nor a folder about to be renamed is uploaded.
        """
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, f".tmp-{name}")
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        # The first process of every node: one of them per filesystem will promote (markers below).
        node_leader = self.args.local_process_index == 0
        node_index = self.args.process_index - self.args.local_process_index
        if node_leader and os.path.exists(staging_root):
            shutil.rmtree(staging_root, ignore_errors=True)  # left by a save that was killed: start clean
        self.accelerator.wait_for_everyone()
        if node_leader:
            write_node_marker(staging_root, node_index)
        self.accelerator.wait_for_everyone()  # every node's marker is down before anyone looks
        # A node that sees a lower node's marker shares that node's filesystem: with save_on_each_node its main
        # process would write the same model and trainer_state.json files into the same staging folder at the same
        # time (measured: a trainer_state.json with two JSON documents in it). Only the lower node writes them.
        shared_with_lower_node = node_leader and not is_promoter(staging_root, node_index)
        save_on_each_node = self.args.save_on_each_node
        self._checkpoint_staging = os.path.basename(staging_root)
        try:
            if shared_with_lower_node:
                self.args.save_on_each_node = False  # should_save: the world's main process only
            super()._save_checkpoint(model, trial)
            if self.args.should_save:  # inside the staged folder, so it is promoted with the rest
                save_run_settings(staged, self._run_settings())
            if self.state.best_model_checkpoint == staged:
                self.state.best_model_checkpoint = final
                if self.args.should_save:  # the state file inside must name the final folder
                    self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        finally:
            self._checkpoint_staging = None
            self.args.save_on_each_node = save_on_each_node
        self.accelerator.wait_for_everyone()  # every rank has written its files (RNG states, ZeRO shards)
        promote = node_leader and is_promoter(staging_root, node_index)
        self.accelerator.wait_for_everyone()  # every leader has read the markers before a promoter removes them
        if promote and os.path.isdir(staged):
            replace_directory(staged, final)
            shutil.rmtree(staging_root)
            # Trainer rotated inside the staging folder; rotate among the real checkpoints.
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()
        if self._pending_push is not None:
            self._pending_push = None
            self._push_from_checkpoint(final)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Called by Trainer inside the staged save: upload once the folder has its final name.
        if self._checkpoint_staging is not None:
            self._pending_push = checkpoint_folder
            return
        from transformers.utils.hub import hf_api

        with hub_upload_ignoring(hf_api()):
            super()._push_from_checkpoint(checkpoint_folder)

    def _generators(self) -> dict[str, torch.Generator]:
        return {name: getattr(self, f"_{name}_generator") for name in ("sampler", "logprob", "std")}

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        save_generator_states(output_dir, self.args.process_index, self._generators())

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        load_generator_states(checkpoint, self.args.process_index, self._generators())
