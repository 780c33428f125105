"""One process per GPU: a single process that sees several GPUs is refused by both trainers and by the main job,
before any model is built (transformers would otherwise wrap the model in `torch.nn.DataParallel`). No machine here
has two GPUs, so `TrainingArguments.n_gpu` (a property read off the CUDA runtime) is replaced for these tests."""

import pytest
from datasets import Dataset
from transformers import TrainingArguments

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.sft_config import DiffusionSFTConfig
from diffusion_rl.sft_trainer import DiffusionSFTTrainer
from diffusion_rl.trainer import DiffusionReinforceTrainer

MATCH = r"sees 2 GPUs.*DataParallel.*accelerate launch.*CUDA_VISIBLE_DEVICES"


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))


def _model_never_built(*args, **kwargs):
    raise AssertionError("the model was built before the check")


def test_rl_trainer_refuses_data_parallel(tmp_path, two_gpus):
    args = DiffusionReinforceConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                                    max_completion_length=8, block_length=8, steps=2, report_to=[])  # fmt: skip
    with pytest.raises(ValueError, match=MATCH):
        DiffusionReinforceTrainer("never-loaded", lambda prompts, completions, **kw: [0.0] * len(completions),
                                  args=args, train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}))  # fmt: skip


def test_sft_trainer_refuses_data_parallel(tmp_path, two_gpus):
    args = DiffusionSFTConfig(output_dir=str(tmp_path), report_to=[])
    data = Dataset.from_dict({"prompt": ["a"], "completion": ["b"]})
    with pytest.raises(ValueError, match=MATCH):
        DiffusionSFTTrainer("never-loaded", args=args, train_dataset=data)


def test_main_job_refuses_data_parallel_before_loading(tmp_path, two_gpus, monkeypatch):
    from diffusion_rl.bias import train

    monkeypatch.setattr(train, "load_model_and_tokenizer", _model_never_built)
    with pytest.raises(ValueError, match=MATCH):
        train.main(["--output_dir", str(tmp_path / "out"), "--max_steps", "1"])
