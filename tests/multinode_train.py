"""One "node" of a 2-node localhost run (torchrun, gloo), launched twice by tests/test_multinode_save.py.

    python -m torch.distributed.run --nnodes 2 --nproc_per_node 1 --node_rank R --master_addr 127.0.0.1 \
        --master_port P tests/multinode_train.py OUT_BASE {shared,local} {0,1}

`shared`: both nodes write into OUT_BASE (a shared filesystem); `local`: node R writes into OUT_BASE/node<R> (a
node-local disk). The last argument is `save_on_each_node`. Trains 2 steps of the tiny LLaDA, saving every step.
"""

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


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) / 10.0 for c in completions]


def main(base: str, layout: str, save_on_each_node: bool) -> None:
    torch.set_num_threads(1)
    node = int(os.environ["GROUP_RANK"])
    output_dir = base if layout == "shared" else os.path.join(base, f"node{node}")
    tokenizer = build_tiny_tokenizer()
    args = DiffusionReinforceConfig(
        use_cpu=True,
        ddp_backend="gloo",
        output_dir=output_dir,
        save_on_each_node=save_on_each_node,
        per_device_train_batch_size=2,
        num_generations=2,
        max_steps=2,
        learning_rate=1e-2,
        max_completion_length=8,
        block_length=8,
        steps=2,
        kl_coef=0.0,
        estimator_variance_every=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    trainer = DiffusionReinforceTrainer(
        build_tiny_model(tokenizer, seed=0),
        length_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [f"Tell me about person {i}." for i in range(4)]}),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    # Which process writes each checkpoint's trainer_state.json (the test reads these lines): on one filesystem two
    # writers of that file at once left two JSON documents in it.
    save_to_json = type(trainer.state).save_to_json

    def reporting_save_to_json(state, json_path):
        print(f"trainer_state.json written by process {args.process_index}: {json_path}", flush=True)
        return save_to_json(state, json_path)

    type(trainer.state).save_to_json = reporting_save_to_json
    trainer.train()
    assert trainer.state.global_step == 2
    exit_after_all_processes_finished(trainer.accelerator)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] == "1")
