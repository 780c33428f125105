"""The seed's grid: one LoRA adapter per training-set size, trained and reported by the main job with a named recipe.

For every size in `--sizes` (the seed: 1k, 2k, 3k, 4k nested subsets of the synthetic pool) this runs the main job,
`diffusion_rl.bias.train.main(argv)`, with `--recipe` (a packaged recipe of `diffusion_rl/bias/recipes/` or a YAML
path), `--train_size N`, the step count below and `--eval_temperatures` (default 0 0.7 1), so each cell gets the main
job's own outputs (adapter, `train_log.jsonl`, `records.jsonl` with the row metadata, `report.json`, `report.md`,
plots, and the second evaluation on unseen roles) in `<output_dir>/<recipe-stem>/size-<N>/`. The grid itself goes
to `<output_dir>/<recipe-stem>/`: `grid.csv` (every metric), `grid.md` (the main job's headline metrics), one row
per eval set x size x temperature x question type x variant (size 0 = the base model, adapter disabled),
`grid_<question_type>.png` (and `grid_unseen_roles_<question_type>.png`: metric vs size, one line per
temperature), `report.md`, `recipe.yaml` (the recipe exactly as run) and `plan.json` (overrides, steps, argv).

Steps per size (one optimizer step consumes `prompts_per_step` distinct prompts; the trainer's `RepeatSampler`
repeats each prompt `num_generations` times in a row, a batch of `per_device_train_batch_size` rows therefore holds
`per_device_train_batch_size / num_generations` prompts, and with `num_iterations > 1` each rollout is reused for
that many optimizer steps):

    prompts_per_step = per_device_train_batch_size * gradient_accumulation_steps * world_size
                       / (num_generations * num_iterations)
    max_steps(size)  = ceil(epochs * size / prompts_per_step)

all read from the parsed recipe (`paper.yaml`: 4 * 2 * 1 / (1 * 1) = 8 prompts a step; `tiny_cpu.yaml` as of
writing: 32 * 1 * 1 / (4 * 1) = 8).

CPU overrides. `paper.yaml` (the seed's recipe: GenBit + KL in the reward, no baseline) is written for LLaDA-8B on
GPUs. Run on the embedded default model (no `--model_name_or_path`), `--cpu_overrides auto` changes only what the
tiny model needs on a CPU: the recipe's `model_name_or_path` (-> the embedded default), `dtype` (-> float32),
`bf16` and gradient checkpointing (-> off), the sampler's `steps` / `max_completion_length` / `block_length` (->
`diffusion_rl.bias.default_model.DEFAULT_SAMPLER_SETTINGS`) and `learning_rate` (-> the one of `tiny_cpu.yaml`,
read at run time). Everything else (rewards, baseline, KL, estimator, prompt masking, batch) is the recipe's. Every
changed field is printed and recorded in `plan.json` and `report.md`. `auto` applies them when the recipe names a
model of its own and `--model_name_or_path` is not given (a recipe without one, like `tiny_cpu.yaml`, is written for
the default model and runs unchanged); `on` / `off` force them. Arguments the grid does not know are passed to every
cell's main job unchanged (e.g. `--eval_batch_size 16`); the ones the grid sets itself are refused. The same
`--epochs` gives both recipes the same prompts per size (their step counts differ). `--reuse_done` keeps the cells
that already finished with the same command line (a grid interrupted at size 3k restarts there).

    # (a) the seed's recipe on the embedded default model (CPU overrides applied and listed)
    python examples/paper_grid.py --recipe paper.yaml --output_dir docs/grid
    # (b) the default recipe, whatever tiny_cpu.yaml holds when it runs
    python examples/paper_grid.py --recipe tiny_cpu.yaml --output_dir docs/grid
    # a shorter grid: a quarter epoch per size (steps scale with --epochs)
    python examples/paper_grid.py --recipe paper.yaml --epochs 0.25 --output_dir docs/grid
    # the plan only (overrides, steps per size, each cell's command line), no training
    python examples/paper_grid.py --recipe paper.yaml --dry_run
    # smoke test: 2 tiny sizes, small evaluation, a few steps, on a saved random tiny LLaDA (no default-model build)
    python -c "from diffusion_rl.models.tiny import build_tiny_model as m, build_tiny_tokenizer as t; \\
        k = t(); m(k, seed=0).save_pretrained('tiny-llada'); k.save_pretrained('tiny-llada')"
    python examples/paper_grid.py --quick --model_name_or_path tiny-llada
    python examples/paper_grid.py --quick --model_name_or_path tiny-llada --recipe paper.yaml --cpu_overrides on

LLaDA-8B-Instruct on a GPU (no overrides: the recipe as published):

    python examples/paper_grid.py --recipe paper.yaml --model_name_or_path GSAI-ML/LLaDA-8B-Instruct \\
        --eval_size 256
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from diffusion_rl.bias import train as main_job
from diffusion_rl.bias.default_model import DEFAULT_SAMPLER_SETTINGS
from diffusion_rl.bias.evaluation import markdown_table, write_report
from diffusion_rl.evaluation import plot_grid

# Panels of grid_<question_type>.png (those a question type has values for): the answer-quality metrics of the
# targets first, then the seed's signals.
GRID_METRICS = (
    "correct_disambiguated",
    "stereotyped_ambiguous",
    "neutral_ambiguous",
    "valid",
    "disfluency_rate",
    "length",
    "gendered_pronoun_rate",
    "genbit_bias",
    "kl",
)
# The row keys of the grid, first in grid.csv / grid.md.
KEYS = ("eval_set", "dataset_size", "temperature", "question_type", "variant", "n")
# Flags the grid sets itself in every cell: given as pass-through arguments they would be ambiguous.
GRID_FLAGS = (
    "--config",
    "--train_size",
    "--max_steps",
    "--output_dir",
    "--eval_size",
    "--eval_free_text_size",
    "--eval_unseen_roles_size",
    "--eval_temperatures",
    "--eval_unseen_roles_temperatures",
    "--model_name_or_path",
    "--skip_eval",
    "--overwrite_output_dir",
)
# Sampler fields of the recipe <- keys of DEFAULT_SAMPLER_SETTINGS.
SAMPLER_FIELDS = {"steps": "steps", "max_completion_length": "gen_length", "block_length": "block_length"}
TINY_RECIPE = main_job.RECIPES_DIR / "tiny_cpu.yaml"
# --quick: a smoke test of the whole pipeline, not a measurement.
QUICK = {
    "sizes": [8, 16],
    "temperatures": [0.0, 1.0],
    "eval_size": 8,
    "eval_free_text_size": 4,
    "eval_unseen_roles_size": 4,
    "recipe": {"steps": 8, "max_completion_length": 16, "block_length": 8, "logging_steps": 1},
}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The grid's own options and the arguments passed through to every cell's main job."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Steps per size: ceil(epochs * size / prompts_per_step), prompts_per_step = "
        "per_device_train_batch_size * gradient_accumulation_steps * world_size / (num_generations * "
        "num_iterations) of the parsed recipe. Unknown options go to every cell's main job.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--recipe",
        default="tiny_cpu.yaml",
        help="Packaged recipe (paper.yaml = the seed's, tiny_cpu.yaml = the default) or a YAML path.",
    )
    parser.add_argument(
        "--model_name_or_path", default=None, help="LLaDA path or Hub id (default: the embedded default model)."
    )
    parser.add_argument(
        "--cpu_overrides",
        choices=["auto", "on", "off"],
        default="auto",
        help="Fit a GPU recipe to the tiny default model on a CPU (auto: when the recipe names a model of its own "
        "and --model_name_or_path is not given).",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1000, 2000, 3000, 4000], help="Training-set sizes (nested subsets)."
    )
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=[0.0, 0.7, 1.0], help="Evaluation temperatures."
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="Passes over each training subset.")
    for name in main_job.SCALED_EVAL_FIELDS:
        parser.add_argument(f"--{name}", type=int, default=None, help="Default: the recipe's (or the main job's).")
    parser.add_argument("--output_dir", default="outputs/paper_grid", help="The grid goes to <output_dir>/<stem>/.")
    parser.add_argument("--reuse_done", action="store_true", help="Keep cells already run with the same argv.")
    parser.add_argument("--dry_run", action="store_true", help="Write and print the plan only; train nothing.")
    parser.add_argument("--quick", action="store_true", help="2 tiny sizes, small eval, few steps: a smoke test.")
    args, passthrough = parser.parse_known_args(argv)
    if args.quick:
        args.sizes, args.temperatures = QUICK["sizes"], QUICK["temperatures"]
        for name in main_job.SCALED_EVAL_FIELDS:
            setattr(args, name, getattr(args, name) if getattr(args, name) is not None else QUICK[name])
    check_args(args, passthrough)
    return args, passthrough


def check_args(args: argparse.Namespace, passthrough: list[str]) -> None:
    """Refuse bad grid options before anything loads."""
    if any(size < 1 for size in args.sizes):
        raise ValueError(f"--sizes must be positive training-set sizes, got {args.sizes}.")
    if len(set(args.sizes)) != len(args.sizes):
        raise ValueError(f"--sizes has repeated values {args.sizes}; each size is one cell.")
    if not math.isfinite(args.epochs) or args.epochs <= 0:
        raise ValueError(f"--epochs must be a positive number, got {args.epochs}.")
    clashing = [a for a in passthrough if any(a == f or a.startswith(f + "=") for f in GRID_FLAGS)]
    if clashing:
        raise ValueError(
            f"{clashing} are set by the grid in every cell; use the grid's own options (--recipe, --sizes, --epochs, "
            "--temperatures, --eval_size, --model_name_or_path, --output_dir) instead."
        )
    stray = [a for a in passthrough if a.startswith("-") and not a.startswith("--")]
    if stray:
        raise ValueError(f"unknown short option(s) {stray}; the main job's options are long (--name value).")


def resolve_recipe(recipe: str) -> Path:
    """A YAML path, or the name of a packaged recipe (`paper.yaml`, `tiny_cpu.yaml`, ...)."""
    path = Path(recipe)
    if path.is_file():
        return path
    packaged = main_job.RECIPES_DIR / path.name
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(p.name for p in main_job.RECIPES_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"recipe {recipe!r} not found; pass a YAML path or one of the packaged recipes: {names}.")


def cpu_overrides_apply(mode: str, recipe: dict[str, Any], model_name_or_path: str | None) -> bool:
    if mode != "auto":
        return mode == "on"
    return model_name_or_path is None and recipe.get("model_name_or_path") is not None


def effective_recipe(args: argparse.Namespace, source: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The recipe as each cell runs it, and the fields changed from `source` (field, recipe value, grid value, why)."""
    recipe = yaml.safe_load(source.read_text()) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {str(source)!r} is not a YAML mapping of option: value.")
    overrides: list[dict[str, Any]] = []

    def override(name: str, value: Any, why: str) -> None:
        if name in recipe and recipe[name] == value:
            return
        overrides.append({"field": name, "recipe": recipe.get(name), "grid": value, "why": why})
        if value is None:
            recipe.pop(name, None)
        else:
            recipe[name] = value

    if args.model_name_or_path is not None and recipe.get("model_name_or_path") not in (None, args.model_name_or_path):
        override("model_name_or_path", args.model_name_or_path, "--model_name_or_path")
    if cpu_overrides_apply(args.cpu_overrides, recipe, args.model_name_or_path):
        if args.model_name_or_path is None and recipe.get("model_name_or_path") is not None:
            override("model_name_or_path", None, "the embedded default model")
        if recipe.get("dtype") not in (None, "auto", "float32"):
            override("dtype", "float32", "the tiny model is float32 on a CPU")
        for name in ("bf16", "fp16"):
            if recipe.get(name):
                override(name, False, "no half-precision autocast on a CPU")
        for name in ("activation_checkpointing", "gradient_checkpointing"):
            if recipe.get(name):
                override(name, False, "a 4-layer model needs no checkpointing; it only costs time")
        for name, key in SAMPLER_FIELDS.items():
            override(name, DEFAULT_SAMPLER_SETTINGS[key], f"the default model's DEFAULT_SAMPLER_SETTINGS[{key!r}]")
        tiny_lr = (yaml.safe_load(TINY_RECIPE.read_text()) or {}).get("learning_rate")
        if tiny_lr is not None:
            override("learning_rate", float(tiny_lr), "tiny_cpu.yaml's rate; the recipe's barely moves a tiny LoRA")
    if args.quick:
        for name, value in QUICK["recipe"].items():
            override(name, value, "--quick: a smoke test, not a measurement")
    return recipe, overrides


def prompts_per_step(config) -> Fraction:
    """Distinct prompts one optimizer step consumes (see the module docstring)."""
    rows = config.per_device_train_batch_size * config.gradient_accumulation_steps * config.world_size
    return Fraction(rows, config.num_generations * config.num_iterations)


def steps_for(size: int, epochs: float, per_step: Fraction) -> int:
    # Fraction(str(epochs)): 0.1 is exactly 1/10, so ceil() does not round 10.000000000000002 up to 11
    return max(1, math.ceil(Fraction(str(epochs)) * size / per_step))


def make_plan(args: argparse.Namespace, passthrough: list[str]) -> dict[str, Any]:
    """Everything the grid will run, decided before any model loads (recipe, overrides, steps, each cell's argv)."""
    source = resolve_recipe(args.recipe)
    recipe, overrides = effective_recipe(args, source)
    out = Path(args.output_dir) / source.stem
    recipe_path = out / "recipe.yaml"
    out.mkdir(parents=True, exist_ok=True)
    header = f"# {source.name} as run by examples/paper_grid.py; changed fields: "
    header += ", ".join(dict.fromkeys(o["field"] for o in overrides)) or "none"
    recipe_path.write_text(header + "\n" + yaml.safe_dump(recipe, sort_keys=False))
    common = ["--config", str(recipe_path)]
    if args.model_name_or_path is not None:
        common += ["--model_name_or_path", args.model_name_or_path]
    common += passthrough
    script_args, config, _ = main_job.parse_args(common)  # the recipe as the main job reads it (clear errors here)
    eval_sizes = {}
    for name in main_job.SCALED_EVAL_FIELDS:  # the grid's value, else the recipe's (else the main job's default)
        eval_sizes[name] = getattr(args, name) if getattr(args, name) is not None else getattr(script_args, name)
    per_step = prompts_per_step(config)
    cells = []
    for size in args.sizes:
        steps = steps_for(size, args.epochs, per_step)
        argv = [*common, "--train_size", str(size), "--max_steps", str(steps)]
        argv += ["--output_dir", str(out / f"size-{size}")]
        for name, value in eval_sizes.items():  # always explicit: the main job scales unset ones with max_steps
            argv += [f"--{name}", str(value)]
        temperatures = [f"{t:g}" for t in args.temperatures]  # both splits: the grid is per temperature
        argv += ["--eval_temperatures", *temperatures, "--eval_unseen_roles_temperatures", *temperatures]
        cells.append({"size": size, "max_steps": steps, "prompts_seen": float(steps * per_step), "argv": argv})
    return {
        "recipe": str(source),
        "recipe_as_run": str(recipe_path),
        "model": args.model_name_or_path or recipe.get("model_name_or_path") or "embedded default",
        "overrides": overrides,
        "passthrough": passthrough,
        "epochs": args.epochs,
        "prompts_per_step": {
            "value": float(per_step),
            "formula": "per_device_train_batch_size * gradient_accumulation_steps * world_size / "
            "(num_generations * num_iterations)",
            "terms": {
                "per_device_train_batch_size": config.per_device_train_batch_size,
                "gradient_accumulation_steps": config.gradient_accumulation_steps,
                "world_size": config.world_size,
                "num_generations": config.num_generations,
                "num_iterations": config.num_iterations,
            },
        },
        "temperatures": args.temperatures,
        "eval_sizes": eval_sizes,
        "cells": cells,
        "output_dir": str(out),
    }


def print_plan(plan: dict[str, Any]) -> None:
    lines = [f"grid: recipe {plan['recipe']} (as run: {plan['recipe_as_run']}), model {plan['model']}"]
    if plan["overrides"]:
        lines.append("overridden recipe fields:")
        lines += [f"  {o['field']}: {o['recipe']!r} -> {o['grid']!r}  ({o['why']})" for o in plan["overrides"]]
    else:
        lines.append("overridden recipe fields: none")
    pps = plan["prompts_per_step"]
    lines.append(f"prompts per optimizer step = {pps['formula']} = {pps['value']:g} {pps['terms']}")
    for cell in plan["cells"]:
        lines.append(f"  size {cell['size']}: max_steps {cell['max_steps']} ({plan['epochs']:g} epoch(s))")
    print("\n".join(lines), flush=True)


def cell_metrics(cell_dir: Path) -> pd.DataFrame:
    """The metrics.csv of a cell's main evaluation and of its unseen-roles one, with an `eval_set` column."""
    frames = []
    for eval_set, folder in (("main", cell_dir), ("unseen_roles", cell_dir / "unseen_roles")):
        path = folder / "metrics.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(eval_set=eval_set))
    if not frames:
        raise FileNotFoundError(f"{cell_dir} has no metrics.csv: the main job's evaluation did not run there.")
    return pd.concat(frames, ignore_index=True)


def base_spread(cells: list[pd.DataFrame]) -> float:
    """Largest difference between the base rows of any cell and the first (same model, prompts and seeds: ~0)."""
    keys = ["eval_set", "temperature", "question_type"]
    first = cells[0][cells[0]["variant"] == "base"].set_index(keys).sort_index()
    numeric = first.select_dtypes("number").columns
    spread = 0.0
    for frame in cells[1:]:
        other = frame[frame["variant"] == "base"].set_index(keys).sort_index()
        diff = (other[numeric] - first[numeric]).abs().max().max()
        spread = max(spread, 0.0 if pd.isna(diff) else float(diff))
    return spread


def run_cell(cell: dict[str, Any], reuse: bool) -> dict[str, Any]:
    """The main job on one size (or its earlier result with `--reuse_done` when it ran with the same argv)."""
    cell_dir = Path(cell["argv"][cell["argv"].index("--output_dir") + 1])
    stamp = cell_dir / "grid_cell.json"
    if reuse and (cell_dir / "report.json").is_file() and stamp.is_file():
        if json.loads(stamp.read_text()).get("argv") == cell["argv"]:
            print(f"size {cell['size']}: reusing {cell_dir}", flush=True)
            return json.loads((cell_dir / "report.json").read_text())
    cell_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(cell, indent=2) + "\n")
    print(f"\nsize {cell['size']}: python examples/train_llada_bias.py {' '.join(cell['argv'])}", flush=True)
    # A cell that is not reused is run again from scratch: replace what an earlier run left in its folder.
    return main_job.main([*cell["argv"], "--overwrite_output_dir", "true"])


def main(argv: list[str] | None = None) -> Path:
    """Run the grid; returns the path of the top-level `report.md` (of `plan.json` with `--dry_run`)."""
    args, passthrough = parse_args(list(sys.argv[1:] if argv is None else argv))
    plan = make_plan(args, passthrough)
    out = Path(plan["output_dir"])
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print_plan(plan)
    if args.dry_run:
        return out / "plan.json"

    cells, runtimes = [], {}
    for cell in plan["cells"]:
        report = run_cell(cell, args.reuse_done)
        runtimes[cell["size"]] = report.get("train_metrics", {}).get("train_runtime")
        cells.append(cell_metrics(out / f"size-{cell['size']}"))
    # The base arm is the same model on the same prompts and seeds in every cell: keep it once, as size 0.
    tables = [cells[0][cells[0]["variant"] == "base"].assign(dataset_size=0)]
    for frame, cell in zip(cells, plan["cells"]):
        tables.append(frame[frame["variant"] == "adapter"].assign(dataset_size=cell["size"]))
    grid = pd.concat(tables, ignore_index=True)
    grid = grid[[*KEYS, *[c for c in grid.columns if c not in KEYS]]]
    grid = grid.sort_values(["eval_set", "question_type", "temperature", "dataset_size"], ignore_index=True)
    grid.to_csv(out / "grid.csv", index=False)
    headline = grid[[*KEYS, *[m for m in main_job.TABLE_METRICS if m in grid.columns and grid[m].notna().any()]]]
    (out / "grid.md").write_text(markdown_table(headline) + "\n")

    plots = []
    for (eval_set, qtype), group in grid.groupby(["eval_set", "question_type"], sort=True):
        metrics = [m for m in GRID_METRICS if m in group.columns and group[m].notna().any()]
        name = f"grid_{qtype}.png" if eval_set == "main" else f"grid_{eval_set}_{qtype}.png"
        if metrics:
            plots.append(plot_grid(group, out / name, metrics=metrics))
    overrides = [f"{o['field']}: {o['recipe']!r} -> {o['grid']!r} ({o['why']})" for o in plan["overrides"]]
    pps = plan["prompts_per_step"]
    settings = {
        "recipe": plan["recipe"],
        "recipe as run": plan["recipe_as_run"],
        "model": plan["model"],
        "overridden recipe fields": "; ".join(overrides) or "none",
        "arguments passed to every cell": plan["passthrough"] or "none",
        "sizes": [c["size"] for c in plan["cells"]],
        "epochs": plan["epochs"],
        "prompts per optimizer step": f"{pps['value']:g} = {pps['formula']} with {pps['terms']}",
        "max_steps per size": {c["size"]: c["max_steps"] for c in plan["cells"]},
        "training time per size (s)": runtimes,
        "temperatures": plan["temperatures"],
        "evaluation sizes": plan["eval_sizes"],
    }
    notes = [f"per-size report: size-{c['size']}/report.md" for c in plan["cells"]]
    notes += [
        "dataset_size 0 is the base model (adapter disabled), taken from the first size's evaluation; the largest "
        f"difference between the base rows of any two cells is {base_spread(cells):.3g} (same prompts and seeds).",
        "eval_set main: held-out frames about the training roles (multiple choice + free text); unseen_roles: "
        "unseen frames and roles (multiple choice). Each point is one run on a small evaluation set.",
    ]
    report = write_report(
        out, metrics=headline, plots=plots, settings=settings, notes=notes, title="Dataset-size x temperature grid"
    )
    print(f"grid report at {report}")
    return report


if __name__ == "__main__":
    main()
