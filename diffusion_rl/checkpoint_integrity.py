"""Are these the weights a checkpoint claims to hold? A content hash recorded next to them, checked on load.

A cached or copied model folder can silently hold other weights than the ones it is meant to be: a stale cache built
by an older recipe shadows the shipped checkpoint, a half-finished copy, a file replaced by hand. [`weights_digest`]
hashes the *tensors* of every `*.safetensors` file of a folder (name, dtype, shape and bytes, in name order, read
straight from the files without loading them into torch), so it does not change when only the file metadata or the
tensor order in the file differs. [`record_weights_digest`] writes it into the folder's `build_info.json` under
`"weights_sha256"`; [`verify_weights`] recomputes it and raises [`CheckpointIntegrityError`] naming the folder and
both digests when they differ.

Typical use (a builder that caches a model, and a loader that must not trust a stale cache)::

    record_weights_digest(target)                    # after save_pretrained, before publishing the folder
    verify_weights(cache_dir, expected=recorded_weights_digest(shipped_dir))   # before loading the cache
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

__all__ = [
    "DIGEST_KEY",
    "CheckpointIntegrityError",
    "record_weights_digest",
    "recorded_weights_digest",
    "verify_weights",
    "weights_digest",
]

DIGEST_KEY = "weights_sha256"
INFO_FILE = "build_info.json"
_CHUNK = 1 << 20


class CheckpointIntegrityError(ValueError):
    """A model folder's weights are missing, truncated, or differ from the digest recorded for them."""


def _tensor_entries(path: Path) -> tuple[int, dict]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointIntegrityError(f"{path} is truncated ({size} bytes): not a safetensors file.")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise CheckpointIntegrityError(f"{path} is truncated: its header runs past the end of the file.")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as error:
            raise CheckpointIntegrityError(f"{path} has a corrupt safetensors header: {error}") from error
    entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
    end = 8 + header_len + max((entry["data_offsets"][1] for entry in entries.values()), default=0)
    if size < end:
        raise CheckpointIntegrityError(f"{path} is truncated ({size} bytes, its header describes {end}).")
    return 8 + header_len, entries


def weights_digest(directory: str | os.PathLike) -> str:
    """SHA-256 (hex) of the tensors of every `*.safetensors` file in `directory`.

    Each tensor contributes its name, dtype, shape and raw bytes, in name order over all files, so the digest
    identifies the weights, not the file layout (metadata, tensor order, sharding into several files).

    Raises:
        `CheckpointIntegrityError`: no safetensors file, a truncated file, or a tensor name in two files.
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointIntegrityError(f"{directory} has no *.safetensors weights file.")
    tensors: dict[str, tuple[Path, int, dict]] = {}
    for path in files:
        data_start, entries = _tensor_entries(path)
        for name, entry in entries.items():
            if name in tensors:
                raise CheckpointIntegrityError(f"tensor {name!r} is in both {tensors[name][0].name} and {path.name}.")
            tensors[name] = (path, data_start, entry)
    digest = hashlib.sha256()
    handles: dict[Path, Any] = {}
    try:
        for name in sorted(tensors):
            path, data_start, entry = tensors[name]
            if path not in handles:
                handles[path] = open(path, "rb")  # closed in the finally below
            handle = handles[path]
            begin, end = entry["data_offsets"]
            digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
            handle.seek(data_start + begin)
            remaining = end - begin
            while remaining:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise CheckpointIntegrityError(f"{path} ended inside tensor {name!r}.")
                digest.update(chunk)
                remaining -= len(chunk)
    finally:
        for handle in handles.values():
            handle.close()
    return digest.hexdigest()


def recorded_weights_digest(directory: str | os.PathLike, info_file: str = INFO_FILE) -> str | None:
    """The digest recorded in `directory/info_file` (`None` if the file or the key is absent)."""
    path = Path(directory) / info_file
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointIntegrityError(f"{path} is not valid JSON: {error}") from error
    value = info.get(DIGEST_KEY) if isinstance(info, dict) else None
    return value if isinstance(value, str) else None


def record_weights_digest(directory: str | os.PathLike, info_file: str = INFO_FILE) -> str:
    """Compute the digest of `directory`'s weights and store it in `directory/info_file` (created if needed).

    Returns:
        `str`: the digest.
    """
    path = Path(directory) / info_file
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    info[DIGEST_KEY] = weights_digest(directory)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees a half-written build_info.json
    return info[DIGEST_KEY]


def verify_weights(
    directory: str | os.PathLike, expected: str | None = None, info_file: str = INFO_FILE
) -> str:
    """Raise [`CheckpointIntegrityError`] unless the weights of `directory` have the expected digest.

    Args:
        directory (`str` or `os.PathLike`):
            The model folder to check.
        expected (`str`, *optional*):
            The digest the weights must have (e.g. the one recorded for the shipped checkpoint); defaults to the one
            recorded in `directory/info_file`.
        info_file (`str`, *optional*, defaults to `"build_info.json"`):
            Where the digest is recorded.

    Returns:
        `str`: the (matching) digest.
    """
    if expected is None:
        expected = recorded_weights_digest(directory, info_file)
        if expected is None:
            raise CheckpointIntegrityError(
                f"{Path(directory) / info_file} records no {DIGEST_KEY!r}: the weights cannot be verified. Rebuild "
                "the folder (its builder records the digest) or call record_weights_digest on a folder you trust."
            )
    actual = weights_digest(directory)
    if actual != expected:
        raise CheckpointIntegrityError(
            f"the weights in {directory} are not the expected ones (sha256 {actual[:12]}..., expected "
            f"{expected[:12]}...): a stale or modified copy. Delete the folder so it is rebuilt or re-copied."
        )
    return actual
