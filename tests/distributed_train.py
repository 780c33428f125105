"""Train the tiny LLaDA + LoRA for 2 steps under `accelerate launch`; launched by tests/test_distributed.py.

Each rank writes `<output_dir>/rank<k>.pt`: its full (gathered under ZeRO-3) parameters before and after training,
so the test can check that LoRA weights changed identically on every rank and base weights did not change.

    accelerate launch --config_file examples/accelerate_configs/cpu_zero3.yaml tests/distributed_train.py OUT_DIR

An optional second argument is a JSON object of `DiffusionReinforceConfig` overrides. Each rank also records the
prompts of every reward call (one call per generation batch) for the test to check how rollouts were split.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from launched_script_exit import exit_after_all_processes_finished  # noqa: E402
from peft import LoraConfig  # noqa: E402

from diffusion_rl.config import DiffusionReinforceConfig  # noqa: E402
from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from diffusion_rl.trainer import DiffusionReinforceTrainer  # noqa: E402

SCORED: list[list[str]] = []


def length_reward(prompts, completions, **kwargs):
    SCORED.append(list(prompts))
    return [float(len(c)) / 10.0 for c in completions]


def gathered_parameters(model) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    if any(hasattr(p, "ds_id") for p in params.values()):  # ZeRO-3: each rank holds a shard
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values())):
            return {name: p.detach().clone().cpu() for name, p in params.items()}
    return {name: p.detach().clone().cpu() for name, p in params.items()}


def main(output_dir: str, overrides: dict) -> None:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    dataset = Dataset.from_dict({"prompt": [f"Tell me about person {i}." for i in range(8)]})
    # On a machine without GPU, DDP needs `use_cpu=True` (else transformers sees no distributed setup and every rank
    # trains alone), while DeepSpeed needs it False (else accelerate silently falls back to DDP).
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    args = DiffusionReinforceConfig(
        use_cpu=not torch.cuda.is_available() and not deepspeed,
        output_dir=output_dir,
        per_device_train_batch_size=2,
        num_generations=2,
        max_steps=2,
        learning_rate=1e-2,
        max_completion_length=8,
        block_length=8,
        steps=4,
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        ddp_backend="gloo",
        disable_tqdm=True,
        seed=0,
        **overrides,
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = DiffusionReinforceTrainer(
        model, length_reward, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    start = gathered_parameters(trainer.model)
    trainer.train()
    after = gathered_parameters(trainer.model)
    rank = trainer.accelerator.process_index
    torch.save(
        {"base_before": before, "start": start, "after": after, "world_size": trainer.accelerator.num_processes,
         "scored": SCORED},
        os.path.join(output_dir, f"rank{rank}.pt"),
    )
    exit_after_all_processes_finished(trainer.accelerator)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
