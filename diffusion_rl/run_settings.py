"""The settings a checkpoint was trained with, and a warning when a resume changes them.

`resume_from_checkpoint` restores the optimizer and the LR scheduler from `optimizer.pt` / `scheduler.pt`, so some
settings given anew on resume silently have no effect, and every other one silently changes the run midway.
Measured with transformers' AdamW and its `LambdaLR` schedules:

* `learning_rate`, `weight_decay`, `adam_beta1`, `adam_beta2`, `adam_epsilon`: **no effect**. They live in the
  optimizer's parameter groups (and `learning_rate` in the scheduler's `base_lrs`), which the checkpoint's state
  replaces.
* `lr_scheduler_type`, `lr_scheduler_kwargs`, `warmup_steps`: take effect from the first step after the resumed one.
  The schedule function is rebuilt from the new settings (its state does not hold it), on the checkpoint's base
  rate.
* everything else compared here (the rewards and their weights, `kl_coef`, `num_generations`, the sampler's
  `steps` / `block_length` / `temperature`, the batch, ...): takes effect at once, so the run changes midway.

Every checkpoint of the trainers gets a small `run_settings.json` with those settings (plus the reward names and
weights). On resume [`warn_changed_settings`] compares it with the current run and issues one
[`ChangedSettingsWarning`] that lists each changed field as `old -> new` with its effect. It does not refuse:
changing a setting on resume is sometimes intended (a lower temperature for the last steps, say). A checkpoint
written before this file existed is not compared. `max_steps` and `num_train_epochs` are not compared: raising
them is how a finished run is extended.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

__all__ = [
    "RUN_SETTINGS_NAME",
    "ChangedSettingsWarning",
    "changed_settings",
    "load_run_settings",
    "run_settings",
    "save_run_settings",
    "warn_changed_settings",
]

RUN_SETTINGS_NAME = "run_settings.json"

# Held by the optimizer's parameter groups (and the scheduler's base_lrs): the checkpoint's values win.
OPTIMIZER_FIELDS = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon")
# The schedule function is rebuilt from the arguments; only its step count and base rates are restored.
SCHEDULE_FIELDS = ("lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps")
# What every trainer compares besides its own fields.
COMMON_FIELDS = (
    *OPTIMIZER_FIELDS,
    *SCHEDULE_FIELDS,
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
)


class ChangedSettingsWarning(UserWarning):
    """A run resumes from a checkpoint written with other settings (each changed field is listed with its effect)."""


def _plain(value: Any) -> Any:
    # The JSON form, so that the current values compare with the stored ones (tuples as lists, enums as strings).
    return json.loads(json.dumps(value, default=str))


def run_settings(args, fields: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The settings to store in a checkpoint and compare on resume.

    Args:
        args (`TrainingArguments`):
            The run's arguments; their `to_dict()` form is used (enums as strings, tokens hidden).
        fields (`tuple[str]`):
            The fields of `args` to keep (those `args` lacks are left out).
        **extra:
            Settings that are not arguments, e.g. the trainer's reward names and effective weights.
    """
    values = args.to_dict()
    settings = {name: values[name] for name in fields if name in values}
    settings.update(extra)
    return _plain(settings)


def save_run_settings(output_dir: str, settings: dict[str, Any]) -> None:
    """Write `settings` to `output_dir/run_settings.json` (call it on the process that saves)."""
    with open(os.path.join(output_dir, RUN_SETTINGS_NAME), "w", encoding="utf-8") as f:
        json.dump({"settings": settings}, f, indent=2, sort_keys=True)
        f.write("\n")


def load_run_settings(checkpoint: str) -> dict[str, Any] | None:
    """The settings stored in `checkpoint`, or `None` when it has none (or an unreadable file: nothing to compare)."""
    path = os.path.join(checkpoint, RUN_SETTINGS_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return settings if isinstance(settings, dict) else None


def changed_settings(stored: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """`(field, old, new)` for every field both runs record and whose value differs, in the order of `current`."""
    return [
        (name, stored[name], value)
        for name, value in _plain(current).items()
        if name in stored and stored[name] != value
    ]


def _effect(name: str, optimizer_restored: bool) -> str:
    if optimizer_restored and name in OPTIMIZER_FIELDS:
        return "NO EFFECT: the checkpoint's optimizer and scheduler states keep the old value"
    if optimizer_restored and name in SCHEDULE_FIELDS:
        return "takes effect from the next step: the schedule is rebuilt from it, on the checkpoint's base rate"
    return "takes effect: the run changes from the resumed step on"


def warn_changed_settings(checkpoint: str, current: dict[str, Any], *, optimizer_restored: bool) -> str | None:
    """Issue one [`ChangedSettingsWarning`] if `current` differs from the settings stored in `checkpoint`.

    Args:
        checkpoint (`str`):
            The folder being resumed from.
        current (`dict`):
            The settings of this run, from [`run_settings`] with the same fields as at save time.
        optimizer_restored (`bool`):
            Whether the resume restores the optimizer and scheduler states (not with `save_only_model=True`).

    Returns:
        `str` or `None`: the warning's message, `None` when nothing changed (or nothing was stored).
    """
    stored = load_run_settings(checkpoint)
    if stored is None:
        return None
    changes = changed_settings(stored, current)
    if not changes:
        return None
    lines = [f"  {name}: {old!r} -> {new!r} ({_effect(name, optimizer_restored)})" for name, old, new in changes]
    no_effect = [name for name, _, _ in changes if optimizer_restored and name in OPTIMIZER_FIELDS]
    message = (
        f"Resuming from {checkpoint} with {len(changes)} setting(s) other than those it was trained with:\n"
        + "\n".join(lines)
        + "\nIf a change is not intended, resume with the old value."
        + (
            f" {', '.join(no_effect)} cannot be changed by a resume: to train with the new value, start a new run "
            "(without resume_from_checkpoint)."
            if no_effect
            else ""
        )
    )
    warnings.warn(message, ChangedSettingsWarning, stacklevel=4)  # at the caller of `trainer.train()`
    return message
