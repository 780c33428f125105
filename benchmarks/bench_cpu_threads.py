"""Benchmark the main job under `accelerate launch` on a CPU: one thread (accelerate's default) vs all cores.

    python benchmarks/bench_cpu_threads.py [--steps 8]    # the default model and recipe, training steps only
    python benchmarks/bench_cpu_threads.py --quick        # CI: a random tiny model, 3 steps per arm

Both arms are `accelerate launch --config_file examples/accelerate_configs/default.yaml examples/train_llada_bias.py`
in a subprocess, back to back, with `--skip_eval true`; `OMP_NUM_THREADS` is removed from their environment, so the
launcher sets its own default (1):

* **one thread**: `--cpu_threads 1`, what every CPU job got before `diffusion_rl.cpu_threads.set_cpu_threads`;
* **default**: no flag, so the job takes the available cores (`set_cpu_threads`).

Seconds per step are the sum of the trainer's timed phases of each logged step (`time/sampling`, `time/reward`,
`time/logprob`, `time/old_logprob`, `time/backward`), median over the steps after the first; the wall time of the
whole subprocess (start-up and model loading included) is printed beside it. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_rl_step import PHASES, step_entries, tiny_model_dir  # the RL-step benchmark's timing and tiny model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = (("one thread", ["--cpu_threads", "1"]), ("default", []))


def run_arm(extra: list[str], common: list[str], output_dir: Path) -> dict:
    """Launch the job; its wall seconds and median seconds per step (after the first)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "examples" / "accelerate_configs" / "default.yaml"),
        str(ROOT / "examples" / "train_llada_bias.py"),
        *common, "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"the job failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    steps = [sum(e.get(key) or 0.0 for key in PHASES) for e in step_entries(output_dir)]
    return {"wall_s": wall, "step_s": statistics.median(steps[1:] or steps), "steps": len(steps)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="random tiny model, 3 steps per arm (CI)")
    parser.add_argument("--steps", type=int, default=8, help="training steps per arm (the first is a warm-up)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    from diffusion_rl.cpu_threads import available_cores

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common = ["--report_to", "none", "--logging_steps", "1", "--skip_eval", "true"]
        if args.quick:
            args.steps = 3
            common += ["--model_name_or_path", str(tiny_model_dir(root)), "--config", "tiny_cpu.yaml",
                       "--train_size", "16",
                       "--per_device_train_batch_size", "4", "--num_generations", "2",
                       "--max_completion_length", "16", "--block_length", "16", "--steps", "16"]  # fmt: skip
            model = "random tiny LLaDA (2x64)"
        else:
            model = "load_default_model() with tiny_cpu.yaml"
        common += ["--max_steps", str(args.steps)]
        print(f"model: {model}; {args.steps} steps per arm; {available_cores()} cores available")
        results = {"model": model, "cores": available_cores()}
        for index, (name, extra) in enumerate(ARMS):
            results[name] = run_arm(extra, common, root / f"arm-{index}")
        print(f"\n{'arm':<12}{'s/step (median phases)':>26}{'job wall s':>12}")
        for name, _ in ARMS:
            print(f"{name:<12}{results[name]['step_s']:>26.3f}{results[name]['wall_s']:>12.1f}")
        results["speedup"] = results["one thread"]["step_s"] / results["default"]["step_s"]
        print(f"default / one thread speed-up per step: {results['speedup']:.2f}x")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
