"""Train the tiny LLaDA + LoRA with DiffusionSFTTrainer for 2 steps under `accelerate launch`, then evaluate.

Launched by tests/test_sft_trainer.py. Each rank writes `<output_dir>/rank<k>.pt`: its full (gathered under ZeRO-3)
parameters before and after training, its eval loss and the state of its mask generator.

    accelerate launch --config_file examples/accelerate_configs/cpu_ddp.yaml tests/distributed_sft_train.py OUT_DIR
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from distributed_train import gathered_parameters  # noqa: E402  (tests/ is the script's directory)
from launched_script_exit import exit_after_all_processes_finished  # noqa: E402
from peft import LoraConfig  # noqa: E402

from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from diffusion_rl.sft_config import DiffusionSFTConfig  # noqa: E402
from diffusion_rl.sft_trainer import DiffusionSFTTrainer  # noqa: E402


def main(output_dir: str) -> None:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    dataset = Dataset.from_dict(
        {
            "prompt": [f"Tell me about person {i}." for i in range(8)],
            "completion": [f"Person {i} cooks." for i in range(8)],
        }
    )
    # See tests/distributed_train.py: DDP on CPU needs use_cpu=True, DeepSpeed needs it False.
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    args = DiffusionSFTConfig(
        use_cpu=not torch.cuda.is_available() and not deepspeed,
        output_dir=output_dir,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        ddp_backend="gloo",
        disable_tqdm=True,
        seed=0,
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = DiffusionSFTTrainer(
        model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    start = gathered_parameters(trainer.model)
    trainer.train()
    after = gathered_parameters(trainer.model)
    eval_loss = trainer.evaluate()["eval_loss"]
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "base_before": before,
            "start": start,
            "after": after,
            "world_size": trainer.accelerator.num_processes,
            "eval_loss": eval_loss,
            "mask_state": trainer._mask_generator.get_state(),
        },
        os.path.join(output_dir, f"rank{rank}.pt"),
    )
    exit_after_all_processes_finished(trainer.accelerator)


if __name__ == "__main__":
    main(sys.argv[1])
