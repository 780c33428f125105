"""Nothing of the atomic save or the output_dir lock reaches the Hub (issue 15.6).

`transformers.Trainer` uploads `output_dir` ignoring only `_*` and `checkpoint-*`: the staging folder
`.tmp-checkpoint-N`, a renamed-aside `.old-checkpoint-N` and the lock file (pid, host) were uploaded, and a checkpoint
push (`hub_strategy="checkpoint"`) was started on the staging folder that is renamed a moment later.
"""

from __future__ import annotations

from pathlib import Path

import transformers
from datasets import Dataset
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from peft import LoraConfig

from diffusion_rl.checkpointing import HUB_IGNORE_PATTERNS, hub_upload_ignoring
from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.trainer import DiffusionReinforceTrainer


def _tree(root: Path) -> list[str]:
    files = [
        "adapter_model.safetensors", "adapter_config.json", "README.md", ".diffusion_rl.lock",
        ".tmp-checkpoint-3/checkpoint-3/adapter_model.safetensors", ".old-checkpoint-2/optimizer.pt",
        "checkpoint-1/optimizer.pt", "_private/notes.txt",
    ]  # fmt: skip
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_patterns_keep_only_the_adapter_and_card(tmp_path):
    kept = sorted(filter_repo_objects(_tree(tmp_path), ignore_patterns=HUB_IGNORE_PATTERNS))
    assert kept == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


class RecordingApi(HfApi):
    """The Hub is not reachable here: record the arguments of the upload instead of sending it."""

    calls: list[dict]

    def upload_folder(self, **kwargs):
        self.calls.append(kwargs)


def test_the_wrapper_adds_the_patterns_for_the_duration_of_the_call():
    api = RecordingApi()
    api.calls = []
    with hub_upload_ignoring(api):
        api.upload_folder(repo_id="me/x", folder_path=".", ignore_patterns=["_*", "checkpoint-*"])
        with hub_upload_ignoring(api):  # nested: patterns added once
            api.upload_folder(repo_id="me/x", folder_path=".")
    api.upload_folder(repo_id="me/x", folder_path=".")
    assert api.calls[0]["ignore_patterns"] == ["_*", "checkpoint-*", ".tmp-checkpoint-*", ".old-checkpoint-*",
                                               ".diffusion_rl.lock"]  # fmt: skip
    assert api.calls[1]["ignore_patterns"] == HUB_IGNORE_PATTERNS
    assert "ignore_patterns" not in api.calls[2]  # restored afterwards


def test_a_checkpoint_push_waits_for_the_rename(tmp_path, tiny_tokenizer, monkeypatch):
    seen = []

    def record_push(self, checkpoint_folder):  # transformers' upload, which needs the Hub
        seen.append((checkpoint_folder, Path(checkpoint_folder).is_dir(), sorted(Path(tmp_path).glob(".tmp-*"))))

    monkeypatch.setattr(transformers.Trainer, "_push_from_checkpoint", record_push)
    args = DiffusionReinforceConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=2, save_steps=1,
        max_completion_length=8, block_length=8, steps=2, kl_coef=0.0, estimator_variance_every=0,
        report_to=[], disable_tqdm=True,
    )  # fmt: skip
    trainer = DiffusionReinforceTrainer(
        build_tiny_model(tiny_tokenizer, seed=0), lambda prompts, completions, **kw: [len(c) / 9 for c in completions],
        args=args, train_dataset=Dataset.from_dict({"prompt": ["Who is the nurse?", "Who is the pilot?"]}),
        processing_class=tiny_tokenizer, peft_config=LoraConfig(r=2, target_modules=["q_proj"]),
    )  # fmt: skip
    trainer.args.push_to_hub = True  # after construction: no repository is created, the upload is recorded above
    trainer.train()
    assert seen == [(str(tmp_path / "checkpoint-1"), True, []), (str(tmp_path / "checkpoint-2"), True, [])]
