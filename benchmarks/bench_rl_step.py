"""Benchmark the RL step of the main job with exact vs fast (approximate) rollouts, in one run.

    python benchmarks/bench_rl_step.py [--steps 6] [--threads 1]   # default job, exact vs fast, time per step
    python benchmarks/bench_rl_step.py --full                      # + the whole main job both ways, final metrics
    python benchmarks/bench_rl_step.py --quick                     # CI: a random tiny model, 2 steps each

The job is the main job itself (`diffusion_rl.bias.train.main`) on whatever `load_default_model()` returns, with its
default recipe (`tiny_cpu.yaml`); the only difference between the two arms is the rollout sampler:

* **exact**: `sampler_cache="none"`, `sampler_threshold=None` (LLaDA's sampler);
* **fast**: `sampler_cache="dual"`, `sampler_threshold=0.9` (Fast-dLLM's dual KV cache + confidence-threshold
  parallel decoding, approximate; the fastest mode of `bench_sampler.py`), or what `--fast-cache` /
  `--fast-threshold` say.

The policy's own estimated log-likelihood per token of the rollouts it trains on (`logprob/mean` /
`completions/mean_length`) is printed per arm: how far the fast sampler's completions drift from what the policy
would sample (higher = the approximate decoding picks tokens the policy finds likelier than its own samples).

Time per step is the sum of the trainer's timed phases of each logged step (`time/sampling`, `time/reward`,
`time/logprob`, `time/old_logprob`, `time/backward`: wall seconds), median over the steps after the first (warm-up);
`train_runtime / steps` is printed beside it, and CPU seconds per step (this process's CPU time of a `steps`-step
job minus that of a 1-step job, over `steps - 1`, after an untimed warm-up job: other jobs on a shared machine do not
inflate it). Both arms run back to back in this process, so the ratio is measured
under the same load. With `--full`, each arm then runs the whole job (training and the before/after evaluation,
whose decoding stays exact: `eval_fast_sampler` is off) and the adapters' held-out metrics are compared with a
paired bootstrap over the evaluation prompts (fast minus exact, 95% BCa): "within" means the interval contains 0.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("time/sampling", "time/reward", "time/logprob", "time/old_logprob", "time/backward")
METRICS = ("neutral", "stereotyped", "correct", "valid", "gendered_pronoun_rate", "genbit_bias", "kl", "length")


def run_job(argv: list[str]) -> tuple[float, float, dict]:
    """Run the main job; returns its wall seconds, its CPU seconds (this process) and its report."""
    from diffusion_rl.bias.train import main as train_main

    start, cpu = time.perf_counter(), time.process_time()
    report = train_main(argv)
    return time.perf_counter() - start, time.process_time() - cpu, report


def step_entries(output_dir: Path) -> list[dict]:
    """The logged training steps (logging_steps=1: one entry per step)."""
    entries = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
    return [entry for entry in entries if "loss" in entry and "time/sampling" in entry]


def time_arm(name: str, extra: list[str], common: list[str], root: Path, steps: int, repeat: int = 0) -> dict:
    def argv(max_steps: int, tag: str) -> list[str]:
        return [*common, "--output_dir", str(root / f"{name}-{tag}-{repeat}"), "--max_steps", str(max_steps),
                "--logging_steps", "1", "--skip_eval", "true", *extra]  # fmt: skip

    # CPU seconds per step, robust to other jobs on a shared machine: (CPU of `steps` steps - CPU of 1 step) /
    # (steps - 1), which cancels the job's fixed set-up (model, data, trainer).
    _, cpu_one, _ = run_job(argv(1, "one"))
    output_dir = root / f"{name}-timing-{repeat}"
    wall, cpu, report = run_job(argv(steps, "timing"))
    entries = step_entries(output_dir)
    per_step = [sum(entry.get(key) or 0.0 for key in PHASES) for entry in entries]
    timed = per_step[1:] or per_step
    runtime = report["train_metrics"].get("train_runtime", wall)
    # Off-policy drift, as the policy sees it: its own log-likelihood per token of the rollouts it trains on.
    logp_per_token = [e["logprob/mean"] / max(e["completions/mean_length"], 1.0) for e in entries]
    phases = {key: statistics.median([e.get(key) or 0.0 for e in entries[1:] or entries]) for key in PHASES}
    return {"step_s": statistics.median(timed), "runtime_per_step_s": runtime / steps, "steps": len(per_step),
            "cpu_step_s": (cpu - cpu_one) / max(steps - 1, 1),
            "sampling_s": phases["time/sampling"], "phases_s": phases,
            "logp_per_token": statistics.mean(logp_per_token),
            "mean_length": statistics.mean(e["completions/mean_length"] for e in entries)}  # fmt: skip


def full_arm(name: str, extra: list[str], common: list[str], root: Path) -> Path:
    output_dir = root / f"{name}-full"
    run_job([*common, "--output_dir", str(output_dir), *extra])
    return output_dir


def compare_metrics(exact_dir: Path, fast_dir: Path) -> list[dict]:
    """Paired bootstrap of the adapters' per-prompt metrics, fast minus exact (same held-out prompts and seeds)."""
    import pandas as pd

    from diffusion_rl.evaluation.bootstrap import compare

    def adapter_records(folder: Path) -> pd.DataFrame:
        records = pd.read_json(folder / "records.jsonl", lines=True)
        return records[records["variant"] == "adapter"]

    exact, fast = adapter_records(exact_dir), adapter_records(fast_dir)
    metrics = [m for m in METRICS if m in exact.columns]
    table = compare(exact, fast, metrics=metrics)
    rows = []
    for _, row in table.iterrows():
        within = bool(row["ci_low"] <= 0.0 <= row["ci_high"])
        rows.append({"temperature": row["temperature"], "question_type": row["question_type"],
                     "metric": row["metric"], "exact": row["before"], "fast": row["after"], "diff": row["diff"],
                     "ci": [row["ci_low"], row["ci_high"]], "within_ci": within, "n": int(row["n"])})  # fmt: skip
    return rows


def tiny_model_dir(root: Path) -> Path:
    """A saved random tiny LLaDA + tokenizer (the CI path: no default-model build, no download)."""
    from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer

    path = root / "tiny-model"
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="random tiny model, 2 tiny steps per arm (CI)")
    parser.add_argument("--full", action="store_true", help="also run the whole job per arm and compare metrics")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per arm (the first is a warm-up)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timing runs per arm, alternating exact/fast (medians are reported)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--fast-cache", default="dual", help="sampler_cache of the fast arm (none, prefix, dual)")
    parser.add_argument("--fast-threshold", type=float, default=0.9, help="sampler_threshold of the fast arm")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fast = ["--sampler_cache", args.fast_cache, "--sampler_threshold", str(args.fast_threshold)]

    from diffusion_rl.bias.default_model import default_model_dir, packaged_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common: list[str] = ["--report_to", "none"]
        if args.quick:
            args.steps = 2
            common += ["--model_name_or_path", str(tiny_model_dir(root)), "--config", "tiny_cpu.yaml",
                       "--train_size", "16", "--per_device_train_batch_size", "4", "--num_generations", "2",
                       "--max_completion_length", "16", "--block_length", "16", "--steps", "16",
                       "--eval_size", "4", "--eval_free_text_size", "0", "--eval_unseen_roles_size", "0"]  # fmt: skip
            model = "random tiny LLaDA (2x64)"
        else:
            packaged = packaged_checkpoint()
            model = f"load_default_model(): {packaged or default_model_dir()}"
        print(f"model: {model}; threads {args.threads}; {args.steps} steps per arm; fast arm: {' '.join(fast)}")
        results = {"model": model, "threads": args.threads, "fast": fast}
        runs = {"exact": [], "fast": []}
        # One untimed 1-step job first: imports, lazy initialisations and caches cost the first job of a process.
        run_job([*common, "--output_dir", str(root / "warm-up"), "--max_steps", "1", "--skip_eval", "true"])
        for repeat in range(args.repeats):  # alternating, so that a change of machine load hits both arms
            for name, extra in (("exact", []), ("fast", fast)):
                runs[name].append(time_arm(name, extra, common, root, args.steps, repeat))
        for name, values in runs.items():  # the run with the median step time stands for the arm
            middle = statistics.median(r["step_s"] for r in values)
            results[name] = min(values, key=lambda r, middle=middle: abs(r["step_s"] - middle))
            results[name]["step_s_runs"] = [r["step_s"] for r in values]
        results["speedup"] = results["exact"]["step_s"] / results["fast"]["step_s"]
        results["speedup_runs"] = [e["step_s"] / f["step_s"] for e, f in zip(runs["exact"], runs["fast"])]
        cpu = {name: statistics.median(r["cpu_step_s"] for r in values) for name, values in runs.items()}
        results["cpu_speedup"] = cpu["exact"] / cpu["fast"]
        print(f"\n{'arm':<8}{'s/step (median phases)':>26}{'train_runtime/step':>22}{'CPU s/step':>12}"
              f"{'sampling s':>12}{'logp/token':>12}{'length':>8}")  # fmt: skip
        for name in ("exact", "fast"):
            r = results[name]
            print(f"{name:<8}{r['step_s']:>26.3f}{r['runtime_per_step_s']:>22.3f}{r['cpu_step_s']:>12.3f}"
                  f"{r['sampling_s']:>12.3f}{r['logp_per_token']:>12.3f}{r['mean_length']:>8.1f}")  # fmt: skip
        print("median seconds per phase: " + "; ".join(
            f"{name} " + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in results[name]["phases_s"].items())
            for name in ("exact", "fast")))  # fmt: skip
        if args.repeats > 1:
            print("per-run speed-ups: " + ", ".join(f"{x:.2f}x" for x in results["speedup_runs"]))
        print(f"CPU time per step, fast / exact: {results['cpu_speedup']:.2f}x")
        print(f"fast / exact speed-up per step: {results['speedup']:.2f}x (target >= 3x)")
        if args.full:
            exact_dir = full_arm("exact", [], common, root)
            fast_dir = full_arm("fast", fast, common, root)
            results["metrics"] = compare_metrics(exact_dir, fast_dir)
            print(f"\n{'T':>4} {'type':<16}{'metric':<24}{'exact':>8}{'fast':>8}{'95% CI of fast - exact':>26}")
            for r in results["metrics"]:
                ci = f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"
                print(f"{r['temperature']:>4g} {r['question_type']:<16}{r['metric']:<24}{r['exact']:>8.3f}"
                      f"{r['fast']:>8.3f}{ci:>20}  {'within' if r['within_ci'] else 'OUTSIDE'}")  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
