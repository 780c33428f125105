"""Which checkpoint a run may resume from: a complete, uncorrupted one, or a clear error naming the file.

`transformers.Trainer` resumes from whatever `checkpoint-N` it is given: a missing `optimizer.pt`, `scheduler.pt` or
`rng_state*.pth` is skipped without an error (the run continues with a fresh optimizer, i.e. a different result),
and a truncated `adapter_model.safetensors` or `trainer_state.json` fails with a bare `SafetensorError` /
`JSONDecodeError` that names no file. [`checkpoint_problems`] inspects a checkpoint folder without loading any
tensor (safetensors headers against the file size, the zip directory of `.pt` files, the JSON of the state), and
[`resolve_resume_checkpoint`] turns `resume_from_checkpoint` into a folder:

* a path: it must be complete, else [`IncompleteCheckpointError`] names the missing or truncated file;
* `True`: the newest *complete* `checkpoint-N` of `output_dir`; newer incomplete ones are skipped with a warning
  that names what is wrong with them.

With several processes the choice is made by the main process and broadcast, and every process checks its own files
(its RNG states, and everything on a node-local disk), so that all ranks resume from the same folder or all raise.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .generator_state import generator_state_file

__all__ = ["IncompleteCheckpointError", "checkpoint_problems", "checkpoint_to_resume", "resolve_resume_checkpoint"]

logger = logging.get_logger(__name__)

_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
WEIGHT_FILES = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder lacks a file a resume needs, or one of its files is truncated or corrupt."""


def _safetensors_problem(path: str) -> str | None:
    """Why `path` is not a whole safetensors file (header length, JSON header, data end vs. file size), or `None`."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, shorter than the 8-byte safetensors header length)"
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            return f"is truncated (its header says {header_len} header bytes, the file has {size} bytes in all)"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "has a corrupt safetensors header (not JSON)"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f"is truncated ({size} bytes, its header describes {expected})"
    return None


def _torch_file_problem(path: str) -> str | None:
    # torch.save writes a zip archive; its central directory is at the end, so a truncated file fails to open.
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return f"is truncated or corrupt ({error})"
    return None


def _json_problem(path: str, required_key: str | None = None) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as error:
        return f"is truncated or not valid JSON ({error})"
    if required_key is not None and (not isinstance(data, dict) or required_key not in data):
        return f"has no {required_key!r} entry"
    return None


def _file_problem(path: str) -> str | None:
    if path.endswith(".safetensors"):
        return _safetensors_problem(path)
    if path.endswith((".pt", ".pth", ".bin")):
        return _torch_file_problem(path)
    if path.endswith(".json"):
        return _json_problem(path, "global_step" if os.path.basename(path) == "trainer_state.json" else None)
    return None


def checkpoint_problems(
    checkpoint: str,
    *,
    process_index: int = 0,
    world_size: int = 1,
    optimizer: bool = True,
    deepspeed: bool = False,
    generator_states: bool = True,
) -> list[str]:
    """What makes `checkpoint` unusable for an exact resume by process `process_index` (empty when complete).

    Nothing is loaded: file presence, safetensors headers against file sizes, the zip directory of torch files and
    the JSON of `trainer_state.json`.

    Args:
        checkpoint (`str`):
            A `checkpoint-N` folder.
        process_index (`int`, *optional*, defaults to `0`):
            The process whose RNG files are required (`rng_state_<i>.pth`, `diffusion_rng_state_<i>.pth`).
        world_size (`int`, *optional*, defaults to `1`):
            Number of processes (Trainer writes `rng_state.pth` for one process, `rng_state_<i>.pth` for several).
        optimizer (`bool`, *optional*, defaults to `True`):
            Whether the optimizer and scheduler states are required (`False` for `save_only_model=True`).
        deepspeed (`bool`, *optional*, defaults to `False`):
            DeepSpeed keeps the optimizer in `global_step*/` (and a `latest` file) instead of `optimizer.pt`.
        generator_states (`bool`, *optional*, defaults to `True`):
            Whether this library's `diffusion_rng_state_<i>.pth` (sampler and estimator generators) is required.

    Returns:
        `list[str]`: one line per problem, each naming the file.
    """
    if not os.path.isdir(checkpoint):
        return [f"{checkpoint} is not a directory"]
    names = set(os.listdir(checkpoint))
    problems = []

    def need(name: str, why: str) -> None:
        if name not in names:
            problems.append(f"{name} is missing ({why})")

    need("trainer_state.json", "step, logs and callbacks state")
    if not any(name in names for name in WEIGHT_FILES) and not deepspeed:
        problems.append(f"no weights file ({' / '.join(WEIGHT_FILES[:3])} ...) is there")
    if "adapter_model.safetensors" in names or "adapter_model.bin" in names:
        need("adapter_config.json", "the adapter's configuration")
    if optimizer:
        if deepspeed:
            if "latest" not in names and not any(n.startswith("global_step") for n in names):
                problems.append("the DeepSpeed optimizer states (global_step*/ and latest) are missing")
        else:
            need("optimizer.pt", "without it the run would restart AdamW's moments: a different result")
            need("scheduler.pt", "without it the learning-rate schedule would restart")
    rng = "rng_state.pth" if world_size <= 1 else f"rng_state_{process_index}.pth"
    need(rng, "the global RNG state of this process")
    if generator_states:
        need(os.path.basename(generator_state_file(checkpoint, process_index)), "the sampler and mask generators")
    # Shards named by an index must all be there.
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if index_name in names:
            try:
                with open(os.path.join(checkpoint, index_name), encoding="utf-8") as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
            except (ValueError, KeyError) as error:
                problems.append(f"{index_name} is truncated or corrupt ({error})")
                shards = []
            problems += [f"{shard} is missing (named by {index_name})" for shard in shards if shard not in names]
    for name in sorted(names):
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path):
            problem = _file_problem(path)
            if problem is not None:
                problems.append(f"{name} {problem}")
    return problems


def _checkpoints_newest_first(output_dir: str) -> list[str]:
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found, reverse=True)]


def _format(checkpoint: str, problems: list[str]) -> str:
    return f"{checkpoint}: " + "; ".join(problems)


def _requirements(args: Any) -> dict[str, Any]:
    return {
        "process_index": args.process_index,
        "world_size": args.world_size,
        "optimizer": not getattr(args, "save_only_model", False),
        "deepspeed": bool(getattr(args, "deepspeed", None)),
    }


def _choose_locally(resume_from_checkpoint: str | bool, output_dir: str, requirements: dict) -> tuple[str, list]:
    """(chosen folder, [(skipped folder, problems), ...]); raises when nothing usable exists."""
    if not isinstance(resume_from_checkpoint, bool):
        path = os.fspath(resume_from_checkpoint)
        problems = checkpoint_problems(path, **requirements)
        if problems:
            raise IncompleteCheckpointError(
                f"Cannot resume from {_format(path, problems)}. Resume from a complete checkpoint (or pass "
                "resume_from_checkpoint=True to use the newest complete one)."
            )
        return path, []
    candidates = _checkpoints_newest_first(output_dir)
    if not candidates:
        raise ValueError(
            f"resume_from_checkpoint=True but {output_dir!r} holds no {PREFIX_CHECKPOINT_DIR}-N folder; start "
            "without resuming or pass the checkpoint's path."
        )
    skipped = []
    for candidate in candidates:
        problems = checkpoint_problems(candidate, **requirements)
        if not problems:
            return candidate, skipped
        skipped.append((candidate, problems))
    raise IncompleteCheckpointError(
        "resume_from_checkpoint=True but no checkpoint is complete:\n"
        + "\n".join(_format(c, p) for c, p in skipped)
        + "\nDelete the broken folders to start over, or restore the missing files."
    )


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, args: Any, accelerator=None) -> str | None:
    """The checkpoint folder to resume from (`None`: do not resume), checked on every process.

    Args:
        resume_from_checkpoint (`str`, `bool` or `None`):
            `Trainer.train`'s argument: a folder, `True` for the newest complete checkpoint of `args.output_dir`, or
            `None` / `False` to start fresh.
        args (`TrainingArguments`):
            The run's arguments (`output_dir`, `process_index`, `world_size`, `save_only_model`, `deepspeed`).
        accelerator (`accelerate.Accelerator`, *optional*):
            With several processes, the main process chooses and every process checks its own files; all raise if
            one of them cannot resume.

    Raises:
        `IncompleteCheckpointError`: (a `ValueError`) the given folder, or every `checkpoint-N`, is incomplete or
            corrupt; the message names each file.
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    requirements = _requirements(args)
    multi = accelerator is not None and accelerator.num_processes > 1
    error: Exception | None = None
    chosen, skipped = None, []
    if not multi or accelerator.is_main_process:
        try:
            chosen, skipped = _choose_locally(resume_from_checkpoint, args.output_dir, requirements)
        except ValueError as exc:
            error = exc
    if multi:
        from accelerate.utils import broadcast_object_list, gather_object

        message = [chosen, None if error is None else (type(error).__name__, str(error))]
        broadcast_object_list(message, from_process=0)
        chosen, failure = message
        if failure is None:
            # Each process needs its own RNG files, and on a node-local disk the whole folder.
            local = [] if os.path.isdir(chosen) else [f"{chosen} does not exist on this node"]
            local = local or checkpoint_problems(chosen, **requirements)
            failures = [p for p in gather_object([(args.process_index, local)]) if p[1]]
            if failures:
                lines = [f"process {rank}: " + "; ".join(problems) for rank, problems in failures]
                failure = ("IncompleteCheckpointError", f"Cannot resume from {chosen}:\n" + "\n".join(lines))
        if failure is not None:
            kind, text = failure
            raise (IncompleteCheckpointError if kind == "IncompleteCheckpointError" else ValueError)(text)
    elif error is not None:
        raise error
    for candidate, problems in skipped:
        logger.warning(f"Skipping incomplete checkpoint {_format(candidate, problems)}.")
    if skipped:
        logger.warning(f"Resuming from {chosen}, the newest complete checkpoint.")
    return chosen


def checkpoint_to_resume(
    resume_from_checkpoint: str | bool | None, model, args, accelerator, settings: dict[str, Any] | None = None
) -> str | None:
    """What a trainer's `train(resume_from_checkpoint)` resumes from: [`resolve_resume_checkpoint`], and, when the
    model is a PEFT model, the adapter in that checkpoint checked against it (`adapter_check.check_adapter_fits`).

    Given this run's `settings` (`diffusion_rl.run_settings.run_settings`), the main process also warns once, with a
    `ChangedSettingsWarning`, about every one that differs from the settings the checkpoint was trained with, and
    whether the change takes effect (see [`diffusion_rl.run_settings`]).

    Shared by `DiffusionReinforceTrainer.train` and `DiffusionSFTTrainer.train`.
    """
    from peft import PeftModel

    from .adapter_check import check_adapter_fits
    from .run_settings import warn_changed_settings

    checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, args, accelerator)
    unwrapped = accelerator.unwrap_model(model)
    if checkpoint is not None and isinstance(unwrapped, PeftModel):
        check_adapter_fits(unwrapped, checkpoint, unwrapped.active_adapter)
    if checkpoint is not None and settings is not None and accelerator.is_main_process:
        warn_changed_settings(checkpoint, settings, optimizer_restored=not getattr(args, "save_only_model", False))
    return checkpoint
