"""examples/paper_grid.py: the plan (recipe overrides, steps per size) without compute, and `--quick` end to end."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from diffusion_rl.bias.default_model import DEFAULT_SAMPLER_SETTINGS
from diffusion_rl.bias.train import RECIPES_DIR as RECIPES

GRID_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "paper_grid.py"


def load_grid():
    spec = importlib.util.spec_from_file_location("paper_grid", GRID_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_recipe_on_the_default_model_overrides_only_what_a_cpu_needs(tmp_path):
    grid = load_grid()
    plan = json.loads(grid.main(["--recipe", "paper.yaml", "--dry_run", "--output_dir", str(tmp_path)]).read_text())
    tiny_lr = yaml.safe_load((RECIPES / "tiny_cpu.yaml").read_text())["learning_rate"]
    changed = {o["field"]: o["grid"] for o in plan["overrides"]}
    assert changed == {
        "model_name_or_path": None,
        "dtype": "float32",
        "bf16": False,
        "activation_checkpointing": False,
        "steps": DEFAULT_SAMPLER_SETTINGS["steps"],
        "max_completion_length": DEFAULT_SAMPLER_SETTINGS["gen_length"],
        "block_length": DEFAULT_SAMPLER_SETTINGS["block_length"],
        "learning_rate": tiny_lr,
    }
    paper = yaml.safe_load((RECIPES / "paper.yaml").read_text())
    as_run = yaml.safe_load(Path(plan["recipe_as_run"]).read_text())
    unchanged = {k: v for k, v in paper.items() if k not in changed}
    assert unchanged == {k: v for k, v in as_run.items() if k not in changed}
    assert "model_name_or_path" not in as_run  # -> the embedded default model
    # the seed's objective is untouched: 4 x 2 rows a step, 1 generation a prompt -> 8 prompts a step
    assert (as_run["baseline"], as_run["kl_in"], as_run["num_generations"]) == ("none", "reward", 1)
    assert plan["prompts_per_step"]["value"] == 8
    assert [(c["size"], c["max_steps"]) for c in plan["cells"]] == [(1000, 125), (2000, 250), (3000, 375), (4000, 500)]
    argv = plan["cells"][0]["argv"]
    temperatures = argv.index("--eval_temperatures"), argv.index("--eval_unseen_roles_temperatures")
    assert argv[temperatures[0] + 1 : temperatures[1]] == argv[temperatures[1] + 1 :] == ["0", "0.7", "1"]
    assert argv[argv.index("--output_dir") + 1] == str(tmp_path / "paper" / "size-1000")


def test_default_recipe_runs_unchanged_and_steps_follow_the_parsed_config(tmp_path):
    grid = load_grid()
    argv = ["--dry_run", "--output_dir", str(tmp_path), "--sizes", "100", "--epochs", "0.1"]
    plan = json.loads(grid.main(argv).read_text())
    assert plan["recipe"].endswith("tiny_cpu.yaml") and plan["overrides"] == []
    tiny = yaml.safe_load((RECIPES / "tiny_cpu.yaml").read_text())
    per_step = tiny.get("per_device_train_batch_size", 8) * tiny.get("gradient_accumulation_steps", 1)
    per_step /= tiny.get("num_generations", 1) * tiny.get("num_iterations", 1)
    assert plan["prompts_per_step"]["value"] == per_step
    assert plan["cells"][0]["max_steps"] == math.ceil(10 / per_step)
    # passed-through options reach every cell and the step count: 16 rows x 2 accumulated / (4 x 2 reuses) = 4
    extra = ["--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "2", "--num_iterations", "2"]
    plan = json.loads(grid.main([*argv, "--sizes", "1000", "--epochs", "1", *extra]).read_text())
    assert plan["prompts_per_step"]["value"] == 16 * 2 / (tiny.get("num_generations", 1) * 2)
    assert " ".join(extra) in " ".join(plan["cells"][0]["argv"])


def test_bad_grid_options_fail_before_any_compute(tmp_path):
    grid = load_grid()
    with pytest.raises(ValueError, match="set by the grid in every cell"):
        grid.main(["--dry_run", "--output_dir", str(tmp_path), "--max_steps", "3"])
    with pytest.raises(FileNotFoundError, match="recipe 'nope.yaml' not found.*paper.yaml"):
        grid.main(["--recipe", "nope.yaml", "--dry_run", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--sizes must be positive"):
        grid.main(["--sizes", "0", "--dry_run", "--output_dir", str(tmp_path)])


@pytest.mark.slow
def test_paper_grid_quick_with_the_seeds_recipe(tiny_model_dir, tmp_path):
    grid = load_grid()
    argv = ["--quick", "--recipe", "paper.yaml", "--model_name_or_path", str(tiny_model_dir), "--cpu_overrides", "on"]
    report = grid.main([*argv, "--output_dir", str(tmp_path)])
    out = tmp_path / "paper"
    table = pd.read_csv(out / "grid.csv")
    # Base (size 0) once, then one adapter per size; 2 temperatures x (2 question types + unseen-roles MCQ) each.
    assert sorted(set(table["dataset_size"])) == [0, 8, 16]
    assert len(table) == 3 * 2 * 3
    assert set(table[table["dataset_size"] == 0]["variant"]) == {"base"}
    for name in ("grid_multiple_choice", "grid_free_text", "grid_unseen_roles_multiple_choice"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    plan = json.loads((out / "plan.json").read_text())
    # bf16 on a CPU would fail: the CPU overrides ran, then --quick shrank the sampler further
    assert {"model_name_or_path", "bf16", "dtype", "learning_rate", "steps"} <= {o["field"] for o in plan["overrides"]}
    assert [c["max_steps"] for c in plan["cells"]] == [1, 2]  # 8 prompts a step (4 x 2 rows, 1 generation each)
    for size in (8, 16):
        size_dir = out / f"size-{size}"  # the main job's own outputs
        assert (size_dir / "adapter_config.json").is_file() and (size_dir / "plots" / "training.png").is_file()
        assert json.loads((size_dir / "report.json").read_text())["train_size"] == size
        assert "context_condition" in (size_dir / "records.jsonl").read_text()
        assert (size_dir / "unseen_roles" / "metrics.csv").is_file()
    text = report.read_text()
    assert report == out / "report.md" and "size-8/report.md" in text and "bf16: True -> False" in text
