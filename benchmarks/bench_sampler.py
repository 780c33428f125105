"""Benchmark MaskedDiffusionSampler: exact vs the plain upstream re-implementation, fast modes vs exact.

    python benchmarks/bench_sampler.py [--quick] [--model default|DIR] [--prompts fixed|mcq] [--threads N]

Everything is measured in the same run, on CPU. Tokens/s is generated tokens (batch x gen_length) per second of this
thread's CPU time (median of the timed repeats; with 1 torch thread that is the wall time of an idle machine, and
other jobs on a shared machine do not inflate it); peak memory is the peak of torch.profiler's CPU allocation
timeline during one ``generate`` (model weights excluded); agreement is the fraction of generated tokens equal to the
exact sampler's at temperature 0; with ``--prompts mcq`` (held-out synthetic multiple-choice questions, the default
with ``--model default``), choice agreement is the fraction of prompts whose parsed answer (``parse_choice``) equals
the exact sampler's. Timings are printed, never asserted.

By default the model is the embedded tiny LLaDA with random weights drawn large (std ``--init-std``) and its output
layer scaled by ``--sharpen``, so that its confidences spread over (0, 1) as a trained model's do (with the tiny
model's small default init they are all ~1/vocab, and threshold decoding never fires). It is a mechanics and cost
check, not a quality estimate: agreement of the approximate modes is much lower on random weights than on a trained
model, whose predictions vary smoothly with the context.
``--model default`` benchmarks the trained default model (SFT, built and cached on first use), ``--model DIR`` any
saved LLaDA checkpoint with the tiny tokenizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the plain upstream reference lives with the tests
sys.path.insert(0, str(ROOT))

from upstream_llada_generate import generate as upstream_generate  # noqa: E402

from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from diffusion_rl.sampling import MaskedDiffusionSampler  # noqa: E402

PROMPTS = [
    "Who is the nurse in this story?",
    "Describe what a good engineer does every day.",
    "The doctor and the secretary met. Who was late?",
    "Write one sentence about a teacher.",
]


def peak_memory_mb(fn) -> float:
    """Peak of the CPU allocation timeline recorded by torch.profiler while `fn` runs (MB)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def timed(fn, repeats: int, warmup: bool) -> tuple[float, object]:
    """Median CPU seconds of this thread over `repeats` calls of `fn`, and its last result."""
    if warmup:
        fn()
    times, result = [], None
    for _ in range(repeats):
        start = time.thread_time()
        result = fn()
        times.append(time.thread_time() - start)
    return statistics.median(times), result


def prompt_batch(kind: str, batch: int) -> tuple[list[list[dict]], list[list[str]] | None]:
    """Chat messages of `batch` prompts and, for MCQ prompts, their answer options."""
    if kind == "fixed":
        return [[{"role": "user", "content": p}] for p in PROMPTS[:batch]], None
    from diffusion_rl.bias.data import generate_mcq_dataset

    rows = generate_mcq_dataset(batch, seed=0, split="test")  # held out from the default model's SFT data
    return [[{"role": "user", "content": p}] for p in rows["prompt"]], rows["question_options"]


def choice_agreement(tokenizer, out, reference, options: list[list[str]]) -> float:
    """Fraction of prompts whose parsed answer (option index or None) equals the reference's."""
    from diffusion_rl.bias.rewards.choice import parse_choice

    def choices(result):
        texts = [
            tokenizer.decode(ids[mask], skip_special_tokens=True)
            for ids, mask in zip(result.completion_ids, result.completion_mask)
        ]
        return [parse_choice(text, opts) for text, opts in zip(texts, options)]

    return statistics.mean(a == b for a, b in zip(choices(out), choices(reference)))


def count_forwards(model, fn) -> int:
    calls = []
    handle = model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings for CI (< 20 s)")
    parser.add_argument(
        "--model",
        type=str,
        default=None,
        help="'default' (the SFT default model, built on first use) or a checkpoint directory",
    )
    parser.add_argument("--init-std", type=float, default=0.5, help="weight std of the default random model")
    parser.add_argument("--sharpen", type=float, default=2.0, help="output-layer scale of the default random model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--gen-length", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--prompts",
        choices=("fixed", "mcq"),
        default=None,
        help="4 fixed open prompts, or held-out MCQ prompts (default: mcq for --model default, else fixed)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.model == "default":
        from diffusion_rl.bias.default_model import load_default_model

        model, tokenizer = load_default_model()
        name = "default model (tiny LLaDA after the skewed SFT)"
    elif args.model:
        from diffusion_rl.models.llada import load_llada

        tokenizer = build_tiny_tokenizer()
        model = load_llada(args.model, dtype=torch.float32).eval()
        name = args.model
    else:
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, seed=0, hidden_size=64, num_hidden_layers=2)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # large weights: confidences spread over (0, 1) as in a trained model
            for param_name, param in model.named_parameters():
                if "norm" not in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * args.init_std)
            model.lm_head.weight.mul_(args.sharpen)
        name = f"tiny LLaDA (random N(0, {args.init_std}^2) weights, 2x64, lm_head x{args.sharpen})"
    if args.quick:
        gen_length, block_length, repeats, batch = 32, 16, 1, 2
    else:
        gen_length, block_length, repeats, batch = args.gen_length, args.block_length, 3, args.batch
    if args.prompts is None:
        args.prompts = "mcq" if args.model == "default" else "fixed"
    if args.prompts == "fixed" and batch > len(PROMPTS):
        raise ValueError(f"--prompts fixed has {len(PROMPTS)} prompts; use --batch <= {len(PROMPTS)} or --prompts mcq")
    warmup = not args.quick
    steps = gen_length
    messages, options = prompt_batch(args.prompts, batch)
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
    settings = dict(steps=steps, gen_length=gen_length, block_length=block_length)
    n_tokens = batch * gen_length
    print(
        f"model: {name}; {args.prompts} prompts, batch {batch}, prompt {input_ids.shape[1]}, {settings}, "
        f"threads {args.threads}"
    )

    def reference():
        return upstream_generate(
            model, input_ids, attention_mask, mask_id=model.config.mask_token_id, temperature=0.0, **settings
        )

    exact = MaskedDiffusionSampler(model, **settings)

    def run_exact():
        return exact.generate(input_ids, attention_mask)

    model(input_ids[:1])  # first-call overheads (kernel selection, lazy init) outside the timings
    t_ref, ref_out = timed(reference, repeats, warmup)
    t_exact, exact_out = timed(run_exact, repeats, warmup)
    identical = (exact_out.sequences == ref_out).double().mean().item()
    mem_ref, mem_exact = peak_memory_mb(reference), peak_memory_mb(run_exact)
    nfe_ref = count_forwards(model, reference)
    rows = [("reference (upstream)", n_tokens / t_ref, nfe_ref, mem_ref, 1.0, "-")]
    rows.append(("exact", n_tokens / t_exact, exact_out.nfe, mem_exact, t_ref / t_exact, f"{identical:.1%} identical"))

    fast_modes = [
        ("prefix cache", dict(cache="prefix")),
        ("dual cache", dict(cache="dual")),
        (f"threshold {args.threshold}", dict(threshold=args.threshold)),
        (f"dual cache + threshold {args.threshold}", dict(cache="dual", threshold=args.threshold)),
    ]
    for label, kwargs in fast_modes:
        sampler = MaskedDiffusionSampler(model, **settings, **kwargs)

        def run(sampler=sampler):
            return sampler.generate(input_ids, attention_mask)

        t_fast, out = timed(run, repeats, warmup)
        agreement = (out.completion_ids == exact_out.completion_ids).double().mean().item()
        memory = float("nan") if args.quick else peak_memory_mb(run)  # --quick: memory of the exact modes only
        note = f"{agreement:.1%} agree"
        if options is not None:
            note += f", choice {choice_agreement(tokenizer, out, exact_out, options):.0%}"
        rows.append((label, n_tokens / t_fast, out.nfe, memory, t_exact / t_fast, note))

    print(f"\n{'sampler':<36} {'tokens/s':>10} {'NFE':>5} {'peak MB':>8} {'speed-up':>9}  tokens vs baseline")
    for i, (label, tps, nfe, mem, ratio, note) in enumerate(rows):
        baseline = "vs ref" if i == 1 else ("vs exact" if i > 1 else "")
        print(f"{label:<36} {tps:>10.1f} {nfe:>5d} {mem:>8.2f} {ratio:>8.2f}x  {note} {baseline}")
    print(f"\nexact / reference: {t_ref / t_exact:.2f}x tokens/s, peak memory {mem_exact / mem_ref:.2f}x")


if __name__ == "__main__":
    main()
