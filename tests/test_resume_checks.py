"""Incomplete or corrupt checkpoints are refused by name; `resume_from_checkpoint=True` falls back (issue 15.4).

`transformers.Trainer` silently resumes without `optimizer.pt`, `scheduler.pt` or an RNG file (a different result)
and fails on a truncated `adapter_model.safetensors` / `trainer_state.json` with an error that names no file. The
checkpoints here are written by the real savers (PEFT, torch, `TrainerState`, the library's generator states).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import TrainerState
from transformers.utils import logging as hf_logging

from diffusion_rl.generator_state import save_generator_states
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.resume import IncompleteCheckpointError, checkpoint_problems, resolve_resume_checkpoint


class Args:
    """The fields of TrainingArguments that the resolution reads."""

    def __init__(self, output_dir, **kw):
        self.output_dir = str(output_dir)
        self.process_index = kw.get("process_index", 0)
        self.world_size = kw.get("world_size", 1)
        self.save_only_model = kw.get("save_only_model", False)
        self.deepspeed = None


def write_checkpoint(directory: Path, tokenizer, step: int) -> Path:
    path = directory / f"checkpoint-{step}"
    model = get_peft_model(
        build_tiny_model(tokenizer, seed=0, hidden_size=16, intermediate_size=32, num_hidden_layers=1),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    model.save_pretrained(path)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = sum(p.sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    torch.save(scheduler.state_dict(), path / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, path / "rng_state.pth")
    save_generator_states(str(path), 0, {"sampler": torch.Generator().manual_seed(1)})
    TrainerState(global_step=step).save_to_json(str(path / "trainer_state.json"))
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("ckpts")
    write_checkpoint(root, tiny_tokenizer, 2)
    write_checkpoint(root, tiny_tokenizer, 4)
    return root


@pytest.fixture
def run_dir(pristine, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(pristine, target)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_complete_checkpoint_has_no_problem(run_dir):
    assert checkpoint_problems(str(run_dir / "checkpoint-4")) == []


@pytest.mark.parametrize(
    "name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "diffusion_rng_state_0.pth", "trainer_state.json"]
)
def test_a_missing_file_is_named(run_dir, name):
    os.remove(run_dir / "checkpoint-4" / name)
    with pytest.raises(IncompleteCheckpointError, match=rf"checkpoint-4: .*{name} is missing"):
        resolve_resume_checkpoint(str(run_dir / "checkpoint-4"), Args(run_dir))


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("adapter_model.safetensors", r"adapter_model\.safetensors is truncated"),
        ("trainer_state.json", r"trainer_state\.json is truncated or not valid JSON"),
        ("optimizer.pt", r"optimizer\.pt is truncated or corrupt"),
        ("diffusion_rng_state_0.pth", r"diffusion_rng_state_0\.pth is truncated or corrupt"),
        ("adapter_config.json", r"adapter_config\.json is truncated or not valid JSON"),
    ],
)
def test_a_truncated_file_is_named(run_dir, name, match):
    truncate(run_dir / "checkpoint-4" / name)
    with pytest.raises(IncompleteCheckpointError, match=match):
        resolve_resume_checkpoint(str(run_dir / "checkpoint-4"), Args(run_dir))


def test_safetensors_truncated_inside_the_header_and_after_it(run_dir):
    path = run_dir / "checkpoint-4" / "adapter_model.safetensors"
    size = path.stat().st_size
    truncate(path, keep=4 / size)  # not even the header length
    assert any("shorter than the 8-byte" in p for p in checkpoint_problems(str(path.parent)))
    shutil.copy(run_dir / "checkpoint-2" / path.name, path)
    with open(path, "r+b") as f:  # cut the very last byte of tensor data
        f.truncate(size - 1)
    assert any("adapter_model.safetensors is truncated" in p for p in checkpoint_problems(str(path.parent)))


def test_requirements_follow_the_run(run_dir):
    checkpoint = run_dir / "checkpoint-4"
    os.remove(checkpoint / "optimizer.pt")
    os.remove(checkpoint / "scheduler.pt")
    assert checkpoint_problems(str(checkpoint), optimizer=False) == []  # save_only_model=True saves no optimizer
    os.rename(checkpoint / "rng_state.pth", checkpoint / "rng_state_1.pth")
    os.rename(checkpoint / "diffusion_rng_state_0.pth", checkpoint / "diffusion_rng_state_1.pth")
    assert checkpoint_problems(str(checkpoint), optimizer=False, process_index=1, world_size=2) == []
    problems = checkpoint_problems(str(checkpoint), optimizer=False, process_index=0, world_size=2)
    assert any("rng_state_0.pth is missing" in p for p in problems)


def test_true_falls_back_to_the_newest_complete_checkpoint_and_says_so(run_dir, caplog):
    os.remove(run_dir / "checkpoint-4" / "optimizer.pt")
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            chosen = resolve_resume_checkpoint(True, Args(run_dir))
    finally:
        hf_logging.disable_propagation()
    assert chosen == str(run_dir / "checkpoint-2")
    assert "Skipping incomplete checkpoint" in caplog.text and "optimizer.pt is missing" in caplog.text
    assert "Resuming from" in caplog.text and "checkpoint-2" in caplog.text


def test_true_with_nothing_complete_lists_every_checkpoint(run_dir):
    truncate(run_dir / "checkpoint-4" / "trainer_state.json")
    os.remove(run_dir / "checkpoint-2" / "scheduler.pt")
    with pytest.raises(IncompleteCheckpointError, match=r"(?s)no checkpoint is complete.*checkpoint-4.*checkpoint-2"):
        resolve_resume_checkpoint(True, Args(run_dir))


def test_true_without_any_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint-N folder"):
        resolve_resume_checkpoint(True, Args(tmp_path))


def test_none_and_false_do_not_resume(tmp_path):
    assert resolve_resume_checkpoint(None, Args(tmp_path)) is None
    assert resolve_resume_checkpoint(False, Args(tmp_path)) is None


def test_a_staging_folder_is_never_a_candidate(run_dir):
    os.rename(run_dir / "checkpoint-4", run_dir / ".tmp-checkpoint-6")
    assert resolve_resume_checkpoint(True, Args(run_dir)) == str(run_dir / "checkpoint-2")
