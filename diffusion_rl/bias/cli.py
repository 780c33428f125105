"""`diffusion-rl` command line: `train`, `generate`, `evaluate`, `report`.

    diffusion-rl train [--config RECIPE.yaml] [flags]          # = python examples/train_llada_bias.py
    diffusion-rl generate --prompt "Who is the nurse?" [--model_name_or_path PATH] [--adapter_name_or_path DIR]
    diffusion-rl evaluate --adapter_name_or_path DIR [--dataset_name test|bbq|FILE|FOLDER|HUB_ID] [--eval_size N]
    diffusion-rl report --eval_dir DIR [--train_dir DIR]

Flags use the training job's (and TRL's) names; `diffusion-rl <command> --help` lists them. `--model_name_or_path`
defaults to the embedded default model, and the sampler flags to the settings stored with the model.

Answering fast: this module imports only `argparse` at the top. `diffusion-rl --help` never imports torch; a
subcommand imports what it needs once its own parser has run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

COMMANDS = {
    "train": "Train a LoRA adapter with REINFORCE (flags as examples/train_llada_bias.py).",
    "generate": "Generate completions for prompts with a model (+ adapter).",
    "evaluate": "Before/after evaluation of an adapter, with a report and plots.",
    "report": "Re-render report.md from a saved evaluation folder.",
}
# Old flag -> its name now (one vocabulary with the training job and TRL).
RENAMED_FLAGS = {
    "--model": "--model_name_or_path",
    "--adapter": "--adapter_name_or_path",
    "--gen_length": "--max_completion_length",
    "--gen-length": "--max_completion_length",
    "--num_prompts": "--eval_size",
    "--temperatures": "--eval_temperatures",
    "--batch_size": "--eval_batch_size",
    "--dataset": "--dataset_name",
}


def _check_renamed(command: str, argv: list[str]) -> None:
    for arg in argv:
        flag = arg.split("=", 1)[0]
        new = RENAMED_FLAGS.get(flag)
        if new is None or (command == "generate" and flag == "--batch_size"):
            continue
        raise SystemExit(f"diffusion-rl {command}: {flag} is now {new} (the training job's and TRL's name).")


def _parse(command: str, dataclass_types: tuple, argv: list[str]) -> tuple:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, prog=f"diffusion-rl {command}", description=COMMANDS[command])
    return parser.parse_args_into_dataclasses(argv)


def load_model(model_args) -> tuple[Any, Any, Any]:
    """`(model, tokenizer, base)`: the model (+ adapter) in eval mode on the requested device, its tokenizer, and the
    model before the adapter (for its stored sampler settings); the embedded default when `model_name_or_path` is
    omitted. Loads like the training job's `load_model_and_tokenizer`, kept separate so that the bad-input catalogue
    can forbid model loading in the job while `generate` must load to report a missing checkpoint.
    """
    import torch
    from transformers import AutoTokenizer

    dtype = model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    if model_args.model_name_or_path is None:
        from .default_model import load_default_model

        model, tokenizer = load_default_model(model_args.cache_dir)
        if dtype != "auto":
            model = model.to(dtype)
        if model_args.attn_implementation is not None:
            model.set_attn_implementation(model_args.attn_implementation)
    else:
        from ..models.llada import load_llada

        name = model_args.model_name_or_path
        kwargs = {"dtype": dtype, "revision": model_args.model_revision}
        if model_args.attn_implementation is not None:
            kwargs["attn_implementation"] = model_args.attn_implementation
        model = load_llada(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    base = model
    if model_args.adapter_name_or_path is not None:
        from ..evaluation import load_adapter

        model = load_adapter(model, model_args.adapter_name_or_path)
    device = model_args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer, base


def _check_adapter(model_args) -> None:
    """A wrong `--adapter_name_or_path` fails now: `load_adapter` would say the same once the model had loaded."""
    if model_args.adapter_name_or_path is not None:
        from ..adapter_check import check_adapter_dir

        check_adapter_dir(model_args.adapter_name_or_path)


def _sampler_settings(sampler_args, base_model) -> dict[str, Any]:
    from ..models.sampler_settings import stored_sampler_settings
    from .cli_args import resolve_sampler_settings

    stored = stored_sampler_settings(base_model)
    settings = resolve_sampler_settings(sampler_args, stored)
    origin = "stored with the model" if stored else "config defaults"
    shown = ", ".join(f"{k}={v}" for k, v in settings.items())
    print(f"sampler: {shown} (unset flags: {origin})", file=sys.stderr)
    return settings


def cmd_generate(argv: list[str]) -> None:
    from .cli_args import GenerateArguments, ModelArguments, SamplerArguments, to_sampler_kwargs

    model_args, sampler_args, gen_args = _parse(
        "generate", (ModelArguments, SamplerArguments, GenerateArguments), argv
    )
    if not gen_args.prompt:
        raise SystemExit('diffusion-rl generate: pass --prompt "A question" ["Another question" ...].')
    if gen_args.batch_size < 1:
        raise SystemExit(f"diffusion-rl generate: --batch_size must be >= 1, got {gen_args.batch_size}.")
    # Before the model loads (the sampler would refuse both only then, NaN as "must be >= 0").
    empty = [i for i, prompt in enumerate(gen_args.prompt) if not prompt.strip()]
    if empty:
        raise SystemExit(f"diffusion-rl generate: prompt {empty[0]} is empty; give every --prompt some text.")
    from ..validation import MAX_TEMPERATURE, check_float

    check_float("temperature", sampler_args.temperature, minimum=0.0, maximum=MAX_TEMPERATURE, allow_none=True)
    _check_adapter(model_args)
    import torch
    from tqdm.auto import tqdm

    from ..data.chat import tokenize_prompts
    from ..sampling.sampler import MaskedDiffusionSampler

    model, tokenizer, base = load_model(model_args)
    sampler = MaskedDiffusionSampler(model, **to_sampler_kwargs(_sampler_settings(sampler_args, base)))
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(model_args.seed)
    prompts, size = gen_args.prompt, gen_args.batch_size
    starts = range(0, len(prompts), size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=len(starts) < 2, file=sys.stderr):
        chunk = prompts[start : start + size]
        batch = {k: v.to(device) for k, v in tokenize_prompts(tokenizer, chunk).items()}
        out = sampler.generate(batch["input_ids"], batch["attention_mask"], generator=generator)
        for prompt, ids, valid in zip(chunk, out.completion_ids, out.completion_mask.bool()):
            text = tokenizer.decode(ids[valid], skip_special_tokens=True).strip()
            print(f"### {prompt}\n{text}\n")


def _eval_dataset(args, seed: int):
    from ..data import load_prompt_dataset

    if args.dataset_name == "test":
        from .data import generate_mcq_dataset

        return generate_mcq_dataset(args.eval_size, seed=seed, split="test", question_type=None)
    if args.dataset_name == "bbq":
        from .data import load_bbq_gender

        data = load_bbq_gender()
        return data.shuffle(seed=seed).select(range(min(args.eval_size, len(data))))
    data = load_prompt_dataset(args.dataset_name, split=args.dataset_test_split, config_name=args.dataset_config)
    return data.select(range(min(args.eval_size, len(data))))


def cmd_evaluate(argv: list[str]) -> None:
    from .cli_args import EvaluateArguments, ModelArguments, SamplerArguments, to_sampler_kwargs

    model_args, sampler_args, eval_args = _parse(
        "evaluate", (ModelArguments, SamplerArguments, EvaluateArguments), argv
    )
    if model_args.adapter_name_or_path is None:
        raise SystemExit(
            "diffusion-rl evaluate: pass --adapter_name_or_path DIR (the base arm is the same model, adapter off)."
        )
    if sampler_args.temperature is not None:
        raise SystemExit("diffusion-rl evaluate: the temperatures are --eval_temperatures (e.g. 0 0.7 1).")
    from .train import before_after_table, check_output_dir, print_table

    # Both before loading the model: an unwritable output_dir used to fail only when saving, after the generation.
    output_dir = check_output_dir(eval_args.output_dir)
    found = [name for name in ("report.md", "records.jsonl") if (output_dir / name).exists()]
    if found and not eval_args.overwrite_output_dir:  # e.g. a training run's own report
        raise SystemExit(
            f"diffusion-rl evaluate: {output_dir} already holds a report ({', '.join(found)}); pass another "
            "--output_dir, or --overwrite_output_dir true to replace it."
        )
    _check_adapter(model_args)
    dataset = _eval_dataset(eval_args, model_args.seed)
    from .evaluation import evaluate_model, report_evaluation

    if eval_args.with_training and Path(model_args.adapter_name_or_path).is_dir():
        from ..evaluation.plots import load_log_history

        load_log_history(model_args.adapter_name_or_path)  # a missing log fails now, not after the generation

    model, tokenizer, base = load_model(model_args)
    settings = to_sampler_kwargs(_sampler_settings(sampler_args, base))
    settings.pop("temperature")
    result = evaluate_model(
        model,
        tokenizer,
        dataset,
        temperatures=eval_args.eval_temperatures,
        sampler_kwargs=settings,
        seed=model_args.seed,
        batch_size=eval_args.eval_batch_size,
        compare_base=True,
        sequence_kl_paths=eval_args.eval_sequence_kl,
    )
    log_history = model_args.adapter_name_or_path if eval_args.with_training else None
    path = report_evaluation(result, eval_args.output_dir, log_history=log_history)
    print_table(before_after_table(result.metrics))  # the training job's table: one row per metric
    print(f"\n{len(dataset)} prompts. report: {path}\nrecords, metrics and plots: {path.parent}")


def cmd_report(argv: list[str]) -> None:
    from .cli_args import ReportArguments

    (args,) = _parse("report", (ReportArguments,), argv)
    from ..evaluation import EvalResult
    from .evaluation import report_evaluation

    result = EvalResult.load(args.eval_dir)
    print(report_evaluation(result, args.eval_dir, log_history=args.train_dir))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the subcommands and their one-line help (each subcommand parses its own flags)."""
    parser = argparse.ArgumentParser(
        prog="diffusion-rl",
        description=__doc__.split("\n")[0],
        epilog="Run `diffusion-rl <command> --help` for a command's flags.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, text in COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # --help, or an error naming the valid commands
        return
    command, rest = argv[0], argv[1:]
    if command in ("generate", "evaluate"):
        _check_renamed(command, rest)
    if command == "train":  # the training flags belong to the job's own parser (TrlParser)
        from .train import main as train_main

        train_main(rest, prog="diffusion-rl train")
        return
    {"generate": cmd_generate, "evaluate": cmd_evaluate, "report": cmd_report}[command](rest)


if __name__ == "__main__":
    main()
