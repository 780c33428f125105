"""Does a saved LoRA adapter fit the model it is loaded into? Compare tensor names and shapes, name the base.

PEFT loads an adapter into any model whose module names match: an adapter trained on a 6-layer model loads into a
4-layer one (the extra layers' tensors are dropped with a log line) and a 2-layer adapter into a 4-layer model
leaves layers 2-3 with a fresh LoRA (a warning only). Either way the evaluation or the resumed training runs on
another adapter than the one saved, and exits 0. [`check_adapter_fits`] compares the tensors of the adapter file
(read from the safetensors header, nothing loaded) with the adapter tensors the PEFT model expects, and raises
[`AdapterMismatchError`] with the counts, a few examples and the base model recorded in `adapter_config.json`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

__all__ = [
    "AdapterMismatchError",
    "adapter_file_shapes",
    "check_adapter_dir",
    "check_adapter_fits",
    "recorded_base_model",
]

SAFE_NAME = "adapter_model.safetensors"
BIN_NAME = "adapter_model.bin"


class AdapterMismatchError(ValueError):
    """The adapter was trained for a different base model (missing or extra tensors, mismatched shapes)."""


def check_adapter_dir(adapter_path: str | os.PathLike) -> Path:
    """Check that `adapter_path` holds a saved adapter (config and weights) without loading anything.

    Called by `load_adapter`, and by `diffusion-rl evaluate` / `generate` before they load the base model: a
    mistyped `--adapter_name_or_path` used to be reported only once the model had loaded (minutes for LLaDA-8B).

    Raises:
        `FileNotFoundError`: no such folder (a Hub id must be downloaded first), no `adapter_config.json` there, or
            no `adapter_model.safetensors` / `.bin`; the message names the newest `checkpoint-N` inside when the
            folder is a run's `output_dir` without a final save.
    """
    path = Path(adapter_path)
    if not path.exists():
        # An `owner/name` the user pushed: only local folders are read (PEFT's Hub download is not wired in).
        hub = len(path.parts) == 2 and not str(adapter_path).startswith((".", "/", "~"))
        hint = (
            f" To use a Hub adapter, download it first (`hf download {adapter_path} --local-dir DIR`)." if hub else ""
        )
        raise FileNotFoundError(
            f"no adapter folder at {str(path)!r} (one holding adapter_config.json and {SAFE_NAME}); pass the "
            f"directory the trainer saved the adapter to.{hint}"
        )
    if not (path / "adapter_config.json").is_file():
        prefix = "checkpoint-"  # a run's output_dir without a final save still holds its checkpoints
        steps = sorted(int(p.name[len(prefix) :]) for p in path.glob(prefix + "*") if p.name[len(prefix) :].isdigit())
        inside = f" It holds checkpoints: pass one, e.g. {path / f'checkpoint-{steps[-1]}'}." if steps else ""
        raise FileNotFoundError(
            f"{path} has no adapter_config.json; pass the directory the trainer saved the adapter to.{inside}"
        )
    if not ((path / SAFE_NAME).is_file() or (path / BIN_NAME).is_file()):
        raise FileNotFoundError(
            f"{path} has adapter_config.json but no {SAFE_NAME} (or {BIN_NAME}): the adapter's weights are missing "
            "(a copy or save that did not finish?). Pass a folder holding both."
        )
    return path


def recorded_base_model(adapter_path: str | os.PathLike) -> str | None:
    """`base_model_name_or_path` from the adapter's `adapter_config.json` (`None` if absent)."""
    path = Path(adapter_path) / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


def adapter_file_shapes(adapter_path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the saved adapter (safetensors header; a `.bin` file is loaded on CPU)."""
    adapter_path = Path(adapter_path)
    safe = adapter_path / SAFE_NAME
    if safe.is_file():
        with open(safe, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    binary = adapter_path / BIN_NAME
    if binary.is_file():
        state = torch.load(binary, map_location="cpu", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    raise FileNotFoundError(f"{adapter_path} has neither {SAFE_NAME} nor {BIN_NAME}.")


def _examples(names, limit: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_adapter_fits(peft_model, adapter_path: str | os.PathLike, adapter_name: str = "default") -> None:
    """Raise [`AdapterMismatchError`] unless the saved adapter has exactly the tensors (and shapes) `peft_model`
    expects for `adapter_name`.

    Args:
        peft_model (`peft.PeftModel`):
            A model that already holds the adapter `adapter_name` (loaded from, or to be resumed from, the folder).
        adapter_path (`str` or `os.PathLike`):
            The folder with `adapter_model.safetensors` and `adapter_config.json`.
        adapter_name (`str`, *optional*, defaults to `"default"`):
            Name of the adapter inside the PEFT model.
    """
    from peft import get_peft_model_state_dict

    saved = adapter_file_shapes(adapter_path)
    expected = {
        name: tuple(tensor.shape)
        for name, tensor in get_peft_model_state_dict(peft_model, adapter_name=adapter_name).items()
    }
    unexpected = set(saved) - set(expected)
    missing = set(expected) - set(saved)
    # A ZeRO-3 partition is empty on this rank: its shape cannot be compared.
    mismatched = {
        name for name in set(saved) & set(expected) if expected[name] != saved[name] and 0 not in expected[name]
    }
    if not (unexpected or missing or mismatched):
        return
    parts = []
    if unexpected:
        parts.append(f"{len(unexpected)} saved tensor(s) have no place in this model ({_examples(unexpected)})")
    if missing:
        parts.append(f"{len(missing)} adapter tensor(s) of this model are not in the file ({_examples(missing)})")
    if mismatched:
        name = sorted(mismatched)[0]
        parts.append(
            f"{len(mismatched)} tensor(s) differ in shape (e.g. {name}: saved {saved[name]}, model {expected[name]})"
        )
    recorded = recorded_base_model(adapter_path)
    origin = (
        f"It was trained on base model {recorded!r} (adapter_config.json base_model_name_or_path); load that base "
        "model."
        if recorded
        else "Its adapter_config.json records no base_model_name_or_path: load the base model it was trained on."
    )
    raise AdapterMismatchError(f"adapter {adapter_path} does not fit this model: " + "; ".join(parts) + ". " + origin)
