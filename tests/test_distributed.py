"""`accelerate launch` with 2 CPU processes (gloo): DDP, DeepSpeed ZeRO-2 and ZeRO-3 train 2 steps.

Checks on the parameters every rank saved (tests/distributed_train.py): the LoRA weights changed and are identical
on both ranks, the base weights are bit-for-bit those of the freshly built model.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "accelerate_configs"


def _base_name(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(config: str, output_dir: Path, overrides: dict | None = None) -> list[dict]:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # The launched script must import this checkout even when the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [accelerate, "launch", "--config_file", str(CONFIGS / config), "--main_process_port", str(_free_port())]
    command += [str(ROOT / "tests" / "distributed_train.py"), str(output_dir), json.dumps(overrides or {})]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"accelerate launch failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return [torch.load(output_dir / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(
    "config",
    [
        "cpu_ddp.yaml",
        pytest.param(
            "cpu_zero2.yaml",
            marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed"),
        ),
        pytest.param(
            "cpu_zero3.yaml",
            marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed"),
        ),
    ],
)
def test_two_process_training(config, tmp_path):
    ranks = _launch(config, tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    after0, after1 = ranks[0]["after"], ranks[1]["after"]
    lora = [name for name in after0 if "lora_" in name]
    assert lora, "no LoRA parameters were saved"
    for name in after0:
        assert torch.equal(after0[name], after1[name]), f"{name} differs between ranks"
    for name in lora:
        assert torch.equal(ranks[0]["start"][name], ranks[1]["start"][name]), f"{name} started differently"
    # Zero-initialised B: every lora_B must have moved; A moves from step 2 on.
    for name in lora:
        if "lora_B" in name:
            assert not torch.equal(after0[name], ranks[0]["start"][name]), f"{name} did not change"
    assert any(not torch.equal(after0[n], ranks[0]["start"][n]) for n in lora if "lora_A" in n)
    base = [name for name in after0 if "lora_" not in name]
    assert len(base) == len(ranks[0]["base_before"])
    for name in base:
        assert torch.equal(after0[name], ranks[0]["base_before"][_base_name(name)]), f"base weight {name} changed"


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_generation_batches_and_reuse(tmp_path):
    """DDP with one generation per optimizer step (2 micro-batches) reused over 2 iterations: each rank samples its
    own 4 rows (2 prompts x 2 generations) once, the ranks' prompts differ, advantages over both ranks ('mean')."""
    overrides = {"gradient_accumulation_steps": 2, "num_iterations": 2, "loss_type": "grpo", "baseline": "mean"}
    ranks = _launch("cpu_ddp.yaml", tmp_path, overrides)
    scored = [r["scored"] for r in ranks]
    assert [len(calls) for calls in scored] == [1, 1]  # 2 optimizer steps = 1 generation x 2 iterations
    for calls in scored:
        assert len(calls[0]) == 4 and calls[0][0::2] == calls[0][1::2]  # whole groups of 2
    assert not set(scored[0][0]) & set(scored[1][0])  # each rank its own prompts
    after0, after1 = ranks[0]["after"], ranks[1]["after"]
    for name in after0:
        assert torch.equal(after0[name], after1[name]), f"{name} differs between ranks"
    assert any(not torch.equal(after0[n], ranks[0]["start"][n]) for n in after0 if "lora_B" in n)
