"""Small pieces the trainer needs that are not the training loop itself.

- [`RepeatSampler`]: yields every dataset index `num_generations` times in a row, so that a per-device batch whose
  size is a multiple of `num_generations` always holds whole groups (the group baselines are computed locally).
- [`PhaseTimer`]: wall time and peak memory of one phase (sampling, reward, log-prob, backward).
- [`check_lora_targets`], [`check_prompt_column`]: clear errors before any compute is spent.
- [`identity_collator`]: rows stay dicts; prompts are tokenized inside the training step.
- [`log_completions_table`]: the completions table (parquet, wandb, tensorboard, console).
- [`SigtermCheckpointCallback`], [`replace_directory`]: crash safety (a checkpoint on SIGTERM; atomic promotion of a
  fully written checkpoint folder).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging

logger = logging.get_logger(__name__)


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


def check_prompt_column(dataset, name: str) -> None:
    """Raise a `ValueError` unless `dataset` (or each dataset of a dict) has a `prompt` column with no empty prompt."""
    if dataset is None:
        return
    if isinstance(dataset, dict):  # eval_dataset may be a dict of datasets
        for key, value in dataset.items():
            check_prompt_column(value, f"{name}[{key!r}]")
        return
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        columns = list(dataset[0].keys()) if len(dataset) else []
    if "prompt" not in columns:
        raise ValueError(
            f"{name} has no 'prompt' column (columns: {columns}). Rename the column holding the prompts to 'prompt' "
            "(a string or a list of chat messages); other columns are passed to the reward functions as kwargs."
        )
    import datasets

    if isinstance(dataset, datasets.Dataset):  # map-style: one Arrow column read (a stream is not scanned)
        for index, prompt in enumerate(dataset["prompt"]):
            if not prompt or (isinstance(prompt, str) and not prompt.strip()):
                raise ValueError(f"{name} row {index} has an empty prompt; remove the row or give it text.")


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


def _module_matches(name: str, target: str) -> bool:
    # PEFT's rule for a plain (non-regex) target name: the full name or its dotted suffix.
    return name == target or name.endswith("." + target)


def check_lora_targets(model: nn.Module, target_modules) -> None:
    """Raise a `ValueError` naming the missing LoRA target modules and the linear layers that do exist.

    Only list/set targets are checked here; a string is a regex or `"all-linear"`, which PEFT validates itself.

    Args:
        model (`nn.Module`):
            The model about to be wrapped.
        target_modules (`list[str] | set[str] | str | None`):
            `LoraConfig.target_modules`.
    """
    if target_modules is None or isinstance(target_modules, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = sorted(t for t in target_modules if not any(_module_matches(n, t) for n in names))
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"LoRA target modules {missing} were not found in {type(model).__name__}. Linear layers in this model: "
            f"{linear}. Fix `peft_config.target_modules` (LLaDA in Llama naming uses q_proj, k_proj, v_proj, o_proj)."
        )


def log_completions_table(trainer, table: dict[str, list], mode: str) -> None:
    """Write the completions logged since the last `log` call (main process only).

    With `log_completions`: to `output_dir/completions/<mode>_step_<step>.parquet`, and to wandb / tensorboard when
    `report_to` asks for them. With `num_completions_to_print`: a rich table of that many rows on the console.

    Args:
        trainer (`DiffusionReinforceTrainer`):
            The trainer (its `args`, `state` and callbacks are read).
        table (`dict[str, list]`):
            Columns of equal length: `step`, `prompt`, `completion`, `rewards/<name>` per reward function,
            `reward` (weighted total), `advantage`, `logp` and `kl` (when computed).
        mode (`str`):
            `"train"` or `"eval"`.
    """
    args, step = trainer.args, trainer.state.global_step
    if args.log_completions:
        import pandas as pd  # a dependency of `datasets`

        frame = pd.DataFrame(table)
        directory = os.path.join(args.output_dir, "completions")
        os.makedirs(directory, exist_ok=True)
        frame.to_parquet(os.path.join(directory, f"{mode}_step_{step:07d}.parquet"), index=False)
        report_to = args.report_to or []
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({f"{mode}/completions": wandb.Table(dataframe=frame)})
        if "tensorboard" in report_to:
            for callback in trainer.callback_handler.callbacks:
                writer = getattr(callback, "tb_writer", None)
                if writer is not None:
                    writer.add_text(f"{mode}/completions", frame.to_string(index=False), step)
    num_print = args.num_completions_to_print
    if num_print:
        from trl.trainer.utils import print_prompt_completions_sample

        # The first rows, not TRL's random subset: that one draws from Python's global RNG.
        rows = {k: v[:num_print] for k, v in table.items()}
        rewards = {k: v for k, v in rows.items() if k == "reward" or k.startswith("rewards/")}
        extra = {k: rows[k] for k in ("logp", "kl") if k in rows}
        print_prompt_completions_sample(
            rows["prompt"], rows["completion"], rewards, rows["advantage"], step, extra=extra
        )


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
