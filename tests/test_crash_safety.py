"""Crash safety of checkpoints: a save killed half-way is never resumed from, and SIGTERM saves before exiting.

Both scenarios run the tiny LLaDA in a child process (this file, run as a script), kill it for real, then resume in
the test process. The child is a small subclass of the trainer whose hooks do the killing at a chosen moment, so the
tests are deterministic: no timing races with the parent.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig

from diffusion_rl.checkpointing import replace_directory
from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer
from diffusion_rl.trainer import DiffusionReinforceTrainer

REPO = Path(__file__).resolve().parents[1]


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def sigterm_reward(prompts, completions, trainer_state=None, **kwargs):
    # Raised *during* step 3 (global_step is still 2): the signal lands mid-step, as a scheduler's would.
    if trainer_state is not None and trainer_state.global_step == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return length_reward(prompts, completions)


class KillMidSaveTrainer(DiffusionReinforceTrainer):
    """SIGKILLs its own process while writing checkpoint-2: after the adapter, optimizer and RNG files, before the
    trainer state."""

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def _trainer(output_dir, tokenizer, max_steps: int, save_steps: int, reward=length_reward, cls=None, **overrides):
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        num_generations=2,
        max_steps=max_steps,
        learning_rate=1e-2,
        max_completion_length=8,
        block_length=8,
        steps=2,
        temperature=1.0,
        baseline="none",
        estimator_variance_every=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    dataset = Dataset.from_dict({"prompt": [f"Describe person {i} at work." for i in range(4)]})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return (cls or DiffusionReinforceTrainer)(
        build_tiny_model(tokenizer, seed=0),
        reward,
        args=DiffusionReinforceConfig(**values),
        train_dataset=dataset,
        eval_dataset=dataset if values.get("eval_strategy", "no") != "no" else None,
        processing_class=tokenizer,
        peft_config=lora,
    )


def _run_child(mode: str, output_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, __file__, mode, str(output_dir)], env=env, capture_output=True, text=True, timeout=120
    )


def _checkpoints(output_dir: Path) -> list[str]:
    return sorted(p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint-"))


def test_save_killed_midway_resumes_from_previous_complete_checkpoint(tmp_path, tiny_tokenizer):
    out = tmp_path / "run"
    child = _run_child("kill-mid-save", out)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    # Only complete checkpoints carry the checkpoint-N name; the half-written one stays in its staging directory.
    assert _checkpoints(out) == ["checkpoint-1"]
    assert (out / ".tmp-checkpoint-2").is_dir()
    assert not (out / ".tmp-checkpoint-2" / "trainer_state.json").exists()

    resumed = _trainer(out, tiny_tokenizer, max_steps=3, save_steps=1)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3
    # It started from checkpoint-1: steps 2 and 3 were trained (and logged) again.
    assert [e["step"] for e in resumed.state.log_history if "loss" in e] == [1, 2, 3]
    assert _checkpoints(out) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    # The staging directory of a step is replaced when that step is saved again.
    assert not (out / ".tmp-checkpoint-2").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_sigterm_saves_a_checkpoint_then_exits(tmp_path, tiny_tokenizer):
    out = tmp_path / "run"
    child = _run_child("sigterm", out)
    # The previous (default) handler is restored and the signal re-delivered once the checkpoint is written.
    assert child.returncode == -signal.SIGTERM, child.stderr[-3000:]
    assert _checkpoints(out) == ["checkpoint-3"]  # save_steps=100: this save comes from the signal alone
    # The default SIGTERM action skips atexit: the output_dir lock is released before the signal is re-delivered.
    assert not (out / ".diffusion_rl.lock").exists()
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3

    resumed = _trainer(out, tiny_tokenizer, max_steps=4, save_steps=100)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    assert [e["step"] for e in resumed.state.log_history if "loss" in e] == [1, 2, 3, 4]


def test_sigterm_handler_is_restored_after_training(tmp_path, tiny_tokenizer):
    def previous(signum, frame):
        raise AssertionError("not called")

    old = signal.signal(signal.SIGTERM, previous)
    try:
        trainer = _trainer(tmp_path / "run", tiny_tokenizer, max_steps=1, save_steps=100)
        trainer.train()
        assert signal.getsignal(signal.SIGTERM) is previous
        assert _checkpoints(tmp_path / "run") == ["checkpoint-1"]  # the final step (save_steps does not divide)
    finally:
        signal.signal(signal.SIGTERM, old)


def test_best_checkpoint_names_the_final_folder(tmp_path, tiny_tokenizer):
    # save_strategy="best" saves the step that just became best: Trainer records the folder it wrote, which here
    # is the staging one, and the trainer must point the state (in memory and on disk) at the final name.
    out = tmp_path / "run"
    trainer = _trainer(
        out,
        tiny_tokenizer,
        max_steps=1,
        save_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="best",
        metric_for_best_model="reward",
    )
    trainer.train()
    assert _checkpoints(out) == ["checkpoint-1"]
    assert trainer.state.best_model_checkpoint == str(out / "checkpoint-1")
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(out / "checkpoint-1")


def test_replace_directory_swaps_a_complete_folder(tmp_path):
    old, new = tmp_path / "checkpoint-2", tmp_path / "staging"
    old.mkdir()
    (old / "stale.bin").write_text("old")
    new.mkdir()
    (new / "trainer_state.json").write_text("new")
    replace_directory(str(new), str(old))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    assert sorted(p.name for p in old.iterdir()) == ["trainer_state.json"]  # nothing of the old folder survives


if __name__ == "__main__":
    mode, output = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    tokenizer = build_tiny_tokenizer()
    if mode == "kill-mid-save":
        _trainer(output, tokenizer, max_steps=3, save_steps=1, cls=KillMidSaveTrainer).train()
    elif mode == "sigterm":
        _trainer(output, tokenizer, max_steps=50, save_steps=100, reward=sigterm_reward).train()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    raise SystemExit("the child was expected to be killed")
