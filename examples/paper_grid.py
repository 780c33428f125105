"""The seed's grid: one LoRA adapter per training-set size, each evaluated before/after at several temperatures.

For every size in `--sizes` (the seed: 1k, 2k, 3k, 4k nested subsets of the synthetic pool) this trains an adapter
with `DiffusionReinforceTrainer` (reward = -(GenBit bias + 0.1 KL), the seed's recipe), evaluates base and adapter on
the same held-out prompts (multiple-choice and open-ended, reported separately) with the same sampler seeds at each
temperature in `--temperatures`, and writes per size `size-<N>/report.md` (tables, bootstrap CIs, plots, examples).
The grid itself goes to `grid.csv`, `grid.md`, `grid_<question_type>.png` (metric vs dataset size, one line per
temperature; size 0 = the base model) and a top-level `report.md`.

Embedded default model (CPU; the first run builds it, a few minutes):

    python examples/paper_grid.py --quick           # 2 tiny sizes, smoke test (about a minute or two)
    python examples/paper_grid.py --epochs 0.25     # sizes 1k-4k, a quarter epoch each (CPU, under 30 minutes)
    python examples/paper_grid.py                   # sizes 1k-4k, one epoch each (long on CPU)

LLaDA-8B-Instruct on a GPU:

    python examples/paper_grid.py --model GSAI-ML/LLaDA-8B-Instruct --dtype bfloat16 --steps 128 \\
        --gen-length 128 --block-length 32 --eval-size 256
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import torch
from peft import LoraConfig

from diffusion_rl import DiffusionReinforceConfig, DiffusionReinforceTrainer, GenBitReward, load_llada
from diffusion_rl.bias.data import generate_mcq_dataset, load_synthetic_subset
from diffusion_rl.bias.evaluation import evaluate_model, markdown_table, report_evaluation, write_report
from diffusion_rl.evaluation import plot_grid

GRID_METRICS = ("gendered_pronoun_rate", "pronoun_rate", "genbit_corpus", "kl", "neutral", "valid")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="LLaDA path or Hub id (default: the embedded default model).")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 3000, 4000])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.7, 1.0])
    parser.add_argument("--eval-size", type=int, default=64, help="Held-out test records (half MCQ, half free text).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Passes over each training subset.")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument(
        "--lr", type=float, default=None, help="Default: 2e-5 (seed) for LLaDA, 5e-4 for the tiny model."
    )
    parser.add_argument("--steps", type=int, default=24, help="Sampler denoising steps (reduced: 2 tokens a step).")
    parser.add_argument("--gen-length", type=int, default=48, help="The default model's answer slot is 48 tokens.")
    parser.add_argument("--block-length", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/paper_grid")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and eval set: a smoke test for CI.")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.eval_size, args.steps, args.gen_length, args.block_length = [8, 16], 8, 8, 16, 8
        args.temperatures = [0.0, 1.0]
    return args


def load_base(args: argparse.Namespace):
    """A fresh base model (PEFT wraps it in place, so every adapter starts from a new copy) and its tokenizer."""
    if args.model is None:
        from diffusion_rl.bias.default_model import load_default_model

        return load_default_model()
    from transformers import AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_llada(args.model, dtype=getattr(torch, args.dtype)).to(device).eval()
    return model, AutoTokenizer.from_pretrained(args.model)


def train_adapter(args: argparse.Namespace, size: int, output_dir: Path):
    model, tokenizer = load_base(args)
    micro_batches = args.batch_size * args.grad_accum
    config = DiffusionReinforceConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_steps=max(1, math.ceil(args.epochs * size / micro_batches)),
        learning_rate=args.lr or (2e-5 if args.model else 5e-4),
        steps=args.steps,
        max_completion_length=args.gen_length,
        block_length=args.block_length,
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        seed=args.seed,
        bf16=args.dtype == "bfloat16",
        report_to=[],
    )
    trainer = DiffusionReinforceTrainer(
        model,
        [GenBitReward()],  # the trainer adds KLReward(coef=0.1): R = -(bias + 0.1 KL), as in the seed
        args=config,
        train_dataset=load_synthetic_subset(size, seed=args.seed),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    trainer.train()
    trainer.save_model(str(output_dir / "adapter"))
    return trainer.model, tokenizer, trainer.state.log_history


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.output_dir)
    eval_set = generate_mcq_dataset(args.eval_size, seed=args.seed, split="test", question_type=None)
    sampler = {"steps": args.steps, "gen_length": args.gen_length, "block_length": args.block_length}
    tables, size_reports = [], []
    for size in args.sizes:
        size_dir = out / f"size-{size}"
        model, tokenizer, history = train_adapter(args, size, size_dir)
        result = evaluate_model(
            model, tokenizer, eval_set, temperatures=args.temperatures, sampler_kwargs=sampler, seed=args.seed
        )
        size_reports.append(report_evaluation(result, size_dir, log_history=history, seed=args.seed))
        metrics = result.metrics
        if not tables:  # the base arm is identical for every size (same model, prompts and seeds): keep it once
            tables.append(metrics[metrics["variant"] == "base"].assign(dataset_size=0))
        tables.append(metrics[metrics["variant"] == "adapter"].assign(dataset_size=size))
        print(f"size {size}: report at {size_reports[-1]}")
    grid = pd.concat(tables, ignore_index=True)
    grid = grid[["dataset_size", *[c for c in grid.columns if c != "dataset_size"]]]
    grid.to_csv(out / "grid.csv", index=False)
    (out / "grid.md").write_text(markdown_table(grid) + "\n")
    plots = []
    for qtype, group in grid.groupby("question_type"):
        metrics = [m for m in GRID_METRICS if m in group.columns and group[m].notna().any()]
        plots.append(plot_grid(group, out / f"grid_{qtype}.png", metrics=metrics))
    report = write_report(
        out,
        metrics=grid,
        plots=plots,
        settings={"sizes": args.sizes, "temperatures": args.temperatures, "model": args.model or "embedded default"},
        notes=[f"per-size report: {p.relative_to(out)}" for p in size_reports]
        + ["dataset_size 0 is the base model (adapter disabled)."],
        title="Dataset-size x temperature grid",
    )
    print(f"grid report at {report}")
    return report


if __name__ == "__main__":
    main()
