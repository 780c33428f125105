"""What `kl_sequence` costs an evaluation: `generate_completions` with and without `sequence_kl_paths`, same run.

python benchmarks/bench_eval_kl.py            # 128 held-out multiple-choice prompts, T=0 and 0.7, batch 32
python benchmarks/bench_eval_kl.py --quick    # CI smoke run (4 prompts)

The embedded default model with a LoRA moved off zero (the cost does not depend on the adapter's values), its own
sampler settings (the main job's evaluation), both arms. Prints the best of `--repeats` wall times of each and the
ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer

from diffusion_rl.bias.data import generate_mcq_dataset
from diffusion_rl.bias.default_model import packaged_checkpoint
from diffusion_rl.evaluation import generate_completions
from diffusion_rl.models.llada import load_llada
from diffusion_rl.models.sampler_settings import stored_sampler_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 prompts, one repeat, for CI")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    prompts, repeats = (4, 1) if args.quick else (args.prompts, args.repeats)

    checkpoint = packaged_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(load_llada(checkpoint), lora).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02, generator=torch.Generator().manual_seed(0))
    stored = stored_sampler_settings(checkpoint)
    sampler = {"steps": stored["steps"], "gen_length": stored["max_completion_length"]}
    sampler["block_length"] = stored["block_length"]
    dataset = generate_mcq_dataset(prompts, seed=0, split="test_seen_roles", question_type="multiple_choice")
    kwargs = dict(temperatures=(0.0, 0.7), sampler_kwargs=sampler, batch_size=32, progress=False)

    seconds = {}
    for with_kl in (False, True):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            result = generate_completions(model, tokenizer, dataset, sequence_kl_paths=with_kl, **kwargs)
            best = min(best, time.perf_counter() - start)
        seconds[with_kl] = best
    adapter = result.records[result.records["variant"] == "adapter"]
    print(f"{prompts} prompts x 2 temperatures x 2 arms, sampler {sampler}, torch threads {torch.get_num_threads()}")
    print(f"generation only:           {seconds[False]:8.2f} s")
    print(f"generation + kl_sequence:  {seconds[True]:8.2f} s")
    print(f"kl_sequence / generation only: {seconds[True] / seconds[False]:.2f}x")
    print(f"mean kl_sequence of this adapter: {adapter['kl_sequence'].mean():.4f} nats/token")


if __name__ == "__main__":
    main()
