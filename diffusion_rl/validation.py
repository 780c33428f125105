"""Type and range checks for configuration fields, shared by every config of the library.

Why one module: `DiffusionReinforceConfig` and `DiffusionSFTConfig` both subclass `transformers.TrainingArguments`,
whose `__post_init__` checks almost none of its numbers: a `learning_rate` of `nan`, `0` or the string `"1e-5"`, a
`max_grad_norm` of `nan` (which turns every gradient into NaN when clipping) or `True` as a batch size are accepted
and fail late or, worse, train silently. Each config calls [`check_training_arguments`] and checks its own fields
with [`check_int`], [`check_float`], [`check_bool`] and [`check_float_list`], so the messages name the field, the
value and the allowed range the same way everywhere.

Every check raises a `ValueError` (a wrong type too: a config field is a value the user typed, and one exception
class keeps `except ValueError` simple). `bool` is rejected where a number is expected, because `True` is an `int`
in Python and would silently mean `1`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "check_bool",
    "check_float",
    "check_float_list",
    "check_int",
    "check_temperatures",
    "check_training_arguments",
]

# Highest sampling temperature an evaluation accepts (above it the answers are noise).
MAX_TEMPERATURE = 10.0


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _bounds(minimum, maximum, min_inclusive: bool, max_inclusive: bool) -> str:
    if minimum is not None and maximum is not None:
        return f"in {'[' if min_inclusive else '('}{minimum:g}, {maximum:g}{']' if max_inclusive else ')'}"
    parts = []
    if minimum is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {maximum:g}")
    return " and ".join(parts)


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    hint: str = "",
) -> None:
    """Raise a `ValueError` unless `value` is an integer (not a `bool`) in `[minimum, maximum]`.

    Args:
        name (`str`):
            Field name, used in the message.
        value (`Any`):
            The value to check.
        minimum (`int`, *optional*):
            Smallest allowed value (inclusive).
        maximum (`int`, *optional*):
            Largest allowed value (inclusive).
        allow_none (`bool`, *optional*, defaults to `False`):
            Whether `None` is allowed.
        hint (`str`, *optional*, defaults to `""`):
            Appended to the message (what the field means, how to fix it).
    """
    if value is None and allow_none:
        return
    suffix = f" {hint}" if hint else ""
    expected = "an integer" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}.{suffix}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum == 1 and maximum is None:
            expected = "a positive integer" + (" or None" if allow_none else "")
        else:
            expected = f"an integer {_bounds(minimum, maximum, True, True)}"
        raise ValueError(f"{name} must be {expected}, got {value}.{suffix}")


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    allow_none: bool = False,
    hint: str = "",
) -> None:
    """Raise a `ValueError` unless `value` is a finite real number (not a `bool`, not a string) within the bounds.

    Args:
        name (`str`):
            Field name, used in the message.
        value (`Any`):
            The value to check (an `int` is accepted).
        minimum (`float`, *optional*):
            Lower bound.
        maximum (`float`, *optional*):
            Upper bound.
        min_inclusive (`bool`, *optional*, defaults to `True`):
            Whether `minimum` itself is allowed.
        max_inclusive (`bool`, *optional*, defaults to `True`):
            Whether `maximum` itself is allowed.
        allow_none (`bool`, *optional*, defaults to `False`):
            Whether `None` is allowed.
        hint (`str`, *optional*, defaults to `""`):
            Appended to the message.
    """
    if value is None and allow_none:
        return
    suffix = f" {hint}" if hint else ""
    expected = "a number" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}.{suffix}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.{suffix}")
    low_bad = minimum is not None and (value < minimum if min_inclusive else value <= minimum)
    high_bad = maximum is not None and (value > maximum if max_inclusive else value >= maximum)
    if low_bad or high_bad:
        bounds = _bounds(minimum, maximum, min_inclusive, max_inclusive)
        raise ValueError(f"{name} must be {bounds}, got {value}.{suffix}")


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise a `ValueError` unless `value` is a `bool` (a string such as `"false"` would be truthy)."""
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        expected = "True or False" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}.")


def check_float_list(name: str, values: Any, *, allow_none: bool = False, hint: str = "") -> None:
    """Raise a `ValueError` unless `values` is a list/tuple of finite numbers (each named by its index)."""
    if values is None and allow_none:
        return
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValueError(f"{name} must be a list of numbers, got {_describe(values)}.{f' {hint}' if hint else ''}")
    for index, value in enumerate(values):
        check_float(f"{name}[{index}]", value, hint=hint)


def check_temperatures(name: str, values: Any) -> list[float]:
    """The sampling temperatures of an evaluation as floats; a `ValueError` for an empty list, a value outside
    `[0, MAX_TEMPERATURE]` or a repeated one."""
    check_float_list(name, values, hint=f"Use values in [0, {MAX_TEMPERATURE:g}] (0 = greedy).")
    temps = [float(t) for t in values]
    if not temps:
        raise ValueError(f"{name} is empty; pass at least one, e.g. (0.0,).")
    for t in temps:
        if not 0.0 <= t <= MAX_TEMPERATURE:
            raise ValueError(f"temperature {t} is out of range; use values in [0, {MAX_TEMPERATURE}] (0 = greedy).")
    if len(set(temps)) != len(temps):
        raise ValueError(f"{name} {temps} contain duplicates; list each temperature once.")
    return temps


# Numeric fields of `transformers.TrainingArguments` (transformers 5) that its `__post_init__` leaves unchecked.
# name -> (kind, minimum, min_inclusive, maximum, allow_none, hint)
_TRAINING_FIELDS: dict[str, tuple] = {
    "learning_rate": (
        "float", 0.0, False, None, False,
        "A learning rate <= 0 never moves (or reverses) the weights; the seed uses 2e-5 for LLaDA-8B.",
    ),
    "num_train_epochs": ("float", 0.0, True, None, False, "Use a positive number of epochs, or set max_steps."),
    "max_steps": ("int", -1, True, None, False, "Use -1 (train num_train_epochs) or a positive number of steps."),
    "warmup_steps": ("float", 0.0, True, None, False, "A count of steps, or a float in [0, 1) as a ratio."),
    "weight_decay": ("float", 0.0, True, None, False, ""),
    "adam_beta1": ("float", 0.0, True, 1.0, False, ""),
    "adam_beta2": ("float", 0.0, True, 1.0, False, ""),
    "adam_epsilon": ("float", 0.0, True, None, False, ""),
    "max_grad_norm": ("float", 0.0, True, None, True, "0 or None disables gradient clipping."),
    "label_smoothing_factor": ("float", 0.0, True, 1.0, False, ""),
    "neftune_noise_alpha": ("float", 0.0, True, None, True, ""),
    "logging_steps": ("float", 0.0, False, None, False, "An integer, or a float in (0, 1) as a ratio of all steps."),
    "eval_steps": ("float", 0.0, False, None, True, "An integer, or a float in (0, 1) as a ratio of all steps."),
    "save_steps": ("float", 0.0, False, None, False, "An integer, or a float in (0, 1) as a ratio of all steps."),
    "eval_delay": ("float", 0.0, True, None, False, ""),
    "per_device_train_batch_size": ("int", 1, True, None, False, ""),
    "per_device_eval_batch_size": ("int", 1, True, None, False, ""),
    "gradient_accumulation_steps": ("int", 1, True, None, False, ""),
    "eval_accumulation_steps": ("int", 1, True, None, True, ""),
    "torch_empty_cache_steps": ("int", 1, True, None, True, ""),
    "save_total_limit": ("int", 0, True, None, True, ""),
    "seed": ("int", 0, True, None, False, ""),
    "data_seed": ("int", 0, True, None, True, ""),
    "dataloader_num_workers": ("int", 0, True, None, False, ""),
    "dataloader_prefetch_factor": ("int", 1, True, None, True, ""),
    "ddp_timeout": ("int", 1, True, None, False, ""),
    "ddp_bucket_cap_mb": ("int", 1, True, None, True, ""),
    "local_rank": ("int", -1, True, None, False, "Set by the launcher (torchrun / accelerate); -1 outside one."),
}  # fmt: skip
# Betas must stay below 1 (a beta of 1 never forgets the first gradient and divides by zero in the bias correction).
_EXCLUSIVE_MAXIMUM = {"adam_beta1", "adam_beta2", "label_smoothing_factor"}


def check_training_arguments(args: Any) -> None:
    """Check the numeric fields of a `transformers.TrainingArguments` (or subclass): type, finiteness and range.

    Call it from a config's `__post_init__` before `super().__post_init__()`. Notable rules: `learning_rate > 0`,
    `max_steps == -1` or `>= 1` (`0` would silently train `num_train_epochs` instead), `max_grad_norm` finite
    (`nan` turns every clipped gradient into NaN), batch sizes and accumulation steps `>= 1`, Adam betas in `[0, 1)`.

    Args:
        args (`transformers.TrainingArguments`):
            The arguments to check; fields it does not have are skipped.
    """
    for name, (kind, minimum, min_inclusive, maximum, allow_none, hint) in _TRAINING_FIELDS.items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if kind == "int":
            check_int(name, value, minimum=minimum, maximum=maximum, allow_none=allow_none, hint=hint)
        else:
            check_float(
                name,
                value,
                minimum=minimum,
                maximum=maximum,
                min_inclusive=min_inclusive,
                max_inclusive=name not in _EXCLUSIVE_MAXIMUM,
                allow_none=allow_none,
                hint=hint,
            )
    max_steps = getattr(args, "max_steps", -1)
    # The range check lets 0 through (minimum -1); transformers would then silently train num_train_epochs.
    if max_steps == 0:
        raise ValueError(
            "max_steps=0 is ambiguous (transformers then trains num_train_epochs); use -1 for epochs or a positive "
            "number of steps."
        )
    if max_steps < 0 and getattr(args, "num_train_epochs", 1) == 0:
        raise ValueError(
            "num_train_epochs=0 with max_steps=-1 trains no step at all; set num_train_epochs > 0 or max_steps > 0."
        )
