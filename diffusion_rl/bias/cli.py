"""`diffusion-rl` command line: `train`, `generate`, `evaluate`, `report`.

    diffusion-rl train [--config RECIPE.yaml] [training/model/script flags]   # = examples/train_llada_bias.py
    diffusion-rl generate --prompt "Who is the nurse?" [--model PATH] [--adapter DIR]
    diffusion-rl evaluate --adapter DIR [--model PATH] [--dataset test|bbq|FILE] [--temperatures 0 0.7 1]
    diffusion-rl report --eval_dir DIR [--train_dir DIR]

`--model` defaults to the embedded default model (built on first use, then cached).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SAMPLER_FLAGS = {"steps": int, "gen_length": int, "block_length": int, "temperature": float, "cfg_scale": float}


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="LLaDA checkpoint (local dir or Hub id); default: embedded.")
    parser.add_argument("--adapter", default=None, help="PEFT adapter directory (e.g. a training output_dir).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sampler's torch.Generator.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="Weights.")
    parser.add_argument("--device", default=None, help="Device (default: cuda when available, else cpu).")


def _add_sampler_flags(parser: argparse.ArgumentParser, *, temperature: bool = True) -> None:
    from .default_model import DEFAULT_SAMPLER_SETTINGS

    for name, kind in SAMPLER_FLAGS.items():
        if name == "temperature" and not temperature:
            continue
        default = DEFAULT_SAMPLER_SETTINGS.get(name, 0.0)
        parser.add_argument(f"--{name}", type=kind, default=default, help=f"Sampler {name} (default {default}).")


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """Model (+ adapter) and tokenizer; the embedded default when `--model` is omitted."""
    import torch
    from transformers import AutoTokenizer

    dtype = getattr(torch, args.dtype)
    if args.model is None:
        from .default_model import load_default_model

        model, tokenizer = load_default_model()
        model = model.to(dtype)
    else:
        from ..models.llada import load_llada

        model, tokenizer = load_llada(args.model, dtype=dtype), AutoTokenizer.from_pretrained(args.model)
    if args.adapter is not None:
        from ..evaluation import load_adapter

        model = load_adapter(model, args.adapter)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from ..data.chat import tokenize_prompts
    from ..sampling.sampler import MaskedDiffusionSampler

    model, tokenizer = _load(args)
    settings = {name: getattr(args, name) for name in SAMPLER_FLAGS}
    sampler = MaskedDiffusionSampler(model, **settings)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in tokenize_prompts(tokenizer, args.prompt).items()}
    generator = torch.Generator(device=device).manual_seed(args.seed)
    out = sampler.generate(batch["input_ids"], batch["attention_mask"], generator=generator)
    for prompt, ids, valid in zip(args.prompt, out.completion_ids, out.completion_mask):
        text = tokenizer.decode(ids[valid], skip_special_tokens=True).strip()
        print(f"### {prompt}\n{text}\n")


def _eval_dataset(name: str, size: int, seed: int):
    from ..data import load_prompt_dataset
    from .data import generate_mcq_dataset, load_bbq_gender

    if name == "test":
        return generate_mcq_dataset(size, seed=seed, split="test", question_type=None)
    if name == "bbq":
        data = load_bbq_gender()
        return data.shuffle(seed=seed).select(range(min(size, len(data))))
    data = load_prompt_dataset(name)
    return data.select(range(min(size, len(data))))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_model, report_evaluation

    if args.adapter is None:
        raise SystemExit("diffusion-rl evaluate: pass --adapter DIR (the base arm is the same model, adapter off).")
    dataset = _eval_dataset(args.dataset, args.num_prompts, args.seed)  # before loading the model: fail fast
    model, tokenizer = _load(args)
    settings = {name: getattr(args, name) for name in SAMPLER_FLAGS if name != "temperature"}
    result = evaluate_model(
        model,
        tokenizer,
        dataset,
        temperatures=args.temperatures,
        sampler_kwargs=settings,
        seed=args.seed,
        batch_size=args.batch_size,
        compare_base=True,
    )
    path = report_evaluation(result, args.output_dir, log_history=args.adapter if args.with_training else None)
    print(result.metrics.to_string(index=False))
    print(f"\nreport: {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from ..evaluation import EvalResult
    from .evaluation import report_evaluation

    result = EvalResult.load(args.eval_dir)
    print(report_evaluation(result, args.eval_dir, log_history=args.train_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusion-rl", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="Train a LoRA adapter (flags as examples/train_llada_bias.py).", add_help=False)

    generate = commands.add_parser("generate", help="Generate completions for prompts.")
    generate.add_argument("--prompt", action="append", required=True, help="A user message (repeatable).")
    _add_model_flags(generate)
    _add_sampler_flags(generate)
    generate.set_defaults(func=cmd_generate)

    evaluate = commands.add_parser("evaluate", help="Before/after evaluation of an adapter, with a report.")
    _add_model_flags(evaluate)
    _add_sampler_flags(evaluate, temperature=False)
    evaluate.add_argument("--dataset", default="test", help="`test` (synthetic held-out), `bbq`, or a file.")
    evaluate.add_argument("--num_prompts", type=int, default=128, help="Number of evaluation prompts.")
    evaluate.add_argument("--temperatures", type=float, nargs="+", default=[0.0], help="Sampling temperatures.")
    evaluate.add_argument("--batch_size", type=int, default=32, help="Prompts per sampler call.")
    evaluate.add_argument("--output_dir", default="outputs/eval", help="Where the report is written.")
    evaluate.add_argument("--with_training", action="store_true", help="Plot the adapter dir's training curves.")
    evaluate.set_defaults(func=cmd_evaluate)

    report = commands.add_parser("report", help="Re-render report.md from a saved evaluation folder.")
    report.add_argument("--eval_dir", required=True, help="Folder written by `diffusion-rl evaluate`.")
    report.add_argument("--train_dir", default=None, help="Training output_dir, for the training curves.")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # the training flags belong to the job's own parser (TrlParser)
        from .train import main as train_main

        train_main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
