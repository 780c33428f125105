"""Console and file logging for training jobs: a short line per log on the console, every raw dict in a file.

`transformers.Trainer` prints each log as a raw dict (a few dozen keys for this trainer: timings, memory, every
reward), which buries what a person wants to see. [`use_compact_logging`] swaps that printer for
[`CompactProgressCallback`] (the usual progress bar plus one short line with the chosen metrics) and adds
[`JsonlLogCallback`], which appends every dict as it was logged to a JSON Lines file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

__all__ = [
    "CompactPrinterCallback",
    "CompactProgressCallback",
    "JsonlLogCallback",
    "format_log_line",
    "use_compact_logging",
]


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def format_log_line(logs: Mapping, keys: Mapping[str, str], step: int, max_steps: int) -> str:
    """`step 5/60 | loss 0.12 | reward -0.3 | ...`: the values of `keys` (log key -> label) present in `logs`."""
    parts = [f"step {step}/{max_steps}" if max_steps > 0 else f"step {step}"]
    parts += [f"{label} {_format(logs[key])}" for key, label in keys.items() if logs.get(key) is not None]
    return " | ".join(parts)


class JsonlLogCallback(TrainerCallback):
    """Append every log dict (with its `step`) to a JSON Lines file, on the main process.

    Args:
        path (`str` or `os.PathLike`):
            The file; its folder is created. An existing file is appended to (a resumed run continues its log).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.entries = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, **logs}, default=float) + "\n")
        self.entries += 1


def _compact_line(keys: Mapping[str, str], state, logs: Mapping) -> str | None:
    if "train_runtime" in logs and all(logs.get(key) is None for key in keys):
        # Trainer's end-of-training summary dict: the caller presents it. The trainer folds the metrics of the steps
        # since the last logging step into the next dict it logs, which is this one when `max_steps` is not a
        # multiple of `logging_steps` (a 2-step try logs every 5): those steps get their line.
        return None
    if any(k.startswith("eval_") for k in logs):
        keys = {f"eval_{k}": f"eval {v}" for k, v in keys.items()}
    return format_log_line(logs, keys, state.global_step, state.max_steps)


class CompactPrinterCallback(TrainerCallback):
    """`PrinterCallback` that prints one short line per log instead of the raw dict (for `disable_tqdm=True`).

    Args:
        keys (`Mapping[str, str]`):
            Log key -> label of the values to show, in order (missing keys are skipped); evaluation logs show the
            same keys with their `eval_` prefix.
    """

    def __init__(self, keys: Mapping[str, str]):
        self.keys = dict(keys)

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = _compact_line(self.keys, state, logs) if state.is_world_process_zero and logs else None
        if line:
            print(line)


class CompactProgressCallback(ProgressCallback):
    """`ProgressCallback` (the tqdm bars) that writes one short line per log instead of the raw dict.

    Args:
        keys (`Mapping[str, str]`):
            As in [`CompactPrinterCallback`].
    """

    def __init__(self, keys: Mapping[str, str]):
        super().__init__()
        self.keys = dict(keys)

    def on_log(self, args, state, control, logs=None, **kwargs):
        line = _compact_line(self.keys, state, logs) if state.is_world_process_zero and logs else None
        if line and self.training_bar is not None:
            self.training_bar.write(line)
        elif line:
            print(line)


def use_compact_logging(trainer, keys: Mapping[str, str], log_file: str | os.PathLike) -> JsonlLogCallback:
    """Replace the trainer's dict printer with a compact one (progress bars kept unless `disable_tqdm`) and log
    every dict to `log_file`.

    Returns the [`JsonlLogCallback`] (its `entries` counts the dicts written).
    """
    for printer in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(printer)
    compact = CompactPrinterCallback if trainer.args.disable_tqdm else CompactProgressCallback
    trainer.add_callback(compact(keys))
    jsonl = JsonlLogCallback(log_file)
    trainer.add_callback(jsonl)
    return jsonl
