"""Run every benchmark script's `--quick` mode in a subprocess so that the scripts cannot rot.

Only that they run and print their result table is checked: timings depend on the machine and are never asserted.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> a line its result table always prints
SCRIPTS = {
    "bench_sampler.py": "exact / reference:",
    "bench_trainer.py": "held by logprob for backward",
    "bench_genbit.py": "speed-up",
    "bench_rl_step.py": "fast / exact speed-up per step",
    "bench_eval_kl.py": "kl_sequence / generation only:",
    "bench_cpu_threads.py": "default / one thread speed-up per step",
}
# Scripts without a --quick mode (they take no arguments and are cheap enough to run by hand).
WITHOUT_QUICK = {"bench_data.py"}


def test_every_benchmark_is_covered():
    found = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert found - WITHOUT_QUICK == set(SCRIPTS), "add the new benchmark script (and a --quick mode) to SCRIPTS"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_mode_runs(script, tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # nothing cached or built outside the test
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only: bench_rl_step --quick took over 120 s on 2 cores shared with 2 other jobs
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert SCRIPTS[script] in result.stdout


def test_gpu_check_runs_at_a_reduced_shape_on_cpu(tmp_path):
    """benchmarks/gpu_check.py is prepared for a GPU session (LLaDA-8B shape); here it runs its reduced shape."""
    import json

    output = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu", "--output",
         str(output)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert set(report["sampler"]) == {"exact", "dual_cache", "dual_cache_threshold_0.9"}
    assert report["sampler"]["exact"]["nfe"] == 16 and report["sampler"]["exact"]["tokens_per_s"] > 0
    assert set(report["rl_step"]) == {"without_gradient_checkpointing", "with_gradient_checkpointing"}
    assert all(step["achieved_tflops"] > 0 for step in report["rl_step"].values())


def test_wide_model_loads_through_the_real_model_path(tmp_path):
    """benchmarks/wide_model.py (the GPU jobs' stand-in for LLaDA-8B) at a reduced shape: the saved directory loads
    the way `--model_name_or_path` loads it, and its special ids agree with its tokenizer."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from wide_model import save_wide_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import torch
    from transformers import AutoTokenizer

    from diffusion_rl.models.llada import load_llada

    info = save_wide_model(tmp_path, layers=1, width=32, mlp=64, heads=2, device="cpu", dtype=torch.float32)
    model, tokenizer = load_llada(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.config.mask_token_id == tokenizer.mask_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.vocab_size == len(tokenizer)
    messages = [{"role": "user", "content": "Who is the nurse?"}]
    ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))
