"""Weights verified by a content hash recorded in build_info.json (issue 15.9: a stale cache must not shadow the
shipped checkpoint). Tested on real saved tiny models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion_rl.checkpoint_integrity import (
    DIGEST_KEY,
    CheckpointIntegrityError,
    record_weights_digest,
    recorded_weights_digest,
    verify_weights,
    weights_digest,
)
from diffusion_rl.models.tiny import build_tiny_model


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_record_then_verify(model_dir):
    digest = record_weights_digest(model_dir)
    assert len(digest) == 64 and recorded_weights_digest(model_dir) == digest
    assert json.loads((model_dir / "build_info.json").read_text())[DIGEST_KEY] == digest
    assert verify_weights(model_dir) == digest


def test_the_digest_is_of_the_tensors_not_the_file_layout(model_dir):
    digest = weights_digest(model_dir)
    tensors = load_file(model_dir / "model.safetensors")
    # Same tensors, other metadata and another file order: same weights, same digest.
    save_file(dict(reversed(list(tensors.items()))), model_dir / "model.safetensors", metadata={"note": "copy"})
    assert weights_digest(model_dir) == digest


def test_other_weights_are_refused_naming_the_folder(model_dir, tiny_tokenizer):
    shipped = record_weights_digest(model_dir)
    stale = build_tiny_model(tiny_tokenizer, seed=1)  # "an older recipe": same architecture, other weights
    stale.save_pretrained(model_dir)
    with pytest.raises(CheckpointIntegrityError, match=rf"weights in {model_dir} are not the expected ones"):
        verify_weights(model_dir, expected=shipped)


def test_one_changed_value_changes_the_digest(model_dir):
    digest = weights_digest(model_dir)
    tensors = load_file(model_dir / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})
    assert weights_digest(model_dir) != digest


def test_truncated_missing_and_unrecorded(model_dir, tmp_path):
    with pytest.raises(CheckpointIntegrityError, match="records no 'weights_sha256'"):
        verify_weights(model_dir)
    record_weights_digest(model_dir)
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointIntegrityError, match="model.safetensors is truncated"):
        verify_weights(model_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointIntegrityError, match="has no \\*.safetensors"):
        weights_digest(empty)


def test_the_digest_does_not_depend_on_torch_state(model_dir):
    torch.manual_seed(123)
    assert weights_digest(model_dir) == weights_digest(model_dir)
