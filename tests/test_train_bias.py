"""The main job (examples/train_llada_bias.py = diffusion_rl.bias.train) and the `diffusion-rl` CLI."""

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_rl.bias import train as train_bias
from diffusion_rl.bias.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--steps", "8", "--max_completion_length", "16", "--block_length", "8", "--eval_batch_size", "8"]


@pytest.fixture(scope="module")
def tiny_job(tiny_model_dir, tmp_path_factory):
    """Two training steps of the main job on the random tiny model, with the before/after evaluation."""
    out = tmp_path_factory.mktemp("job")
    argv = ["--model_name_or_path", str(tiny_model_dir), "--config", "tiny_cpu.yaml", "--output_dir", str(out)]
    argv += ["--max_steps", "2", "--train_size", "16", "--eval_size", "8", *TINY_RUN]
    argv += ["--eval_free_text_size", "2", "--eval_unseen_roles_size", "3", "--logging_steps", "1"]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        report = train_bias.main(argv)
    return out, report, console.getvalue()


def test_defaults_are_the_tiny_recipe_and_a_model_id_selects_the_paper_recipe():
    script, config, model = train_bias.parse_args([])
    assert model.model_name_or_path is None and config.output_dir == "outputs/tiny-debias"
    assert (config.baseline, config.num_generations, config.max_steps) == ("rloo", 4, 60)
    script, config, model = train_bias.parse_args(["--model_name_or_path", "GSAI-ML/LLaDA-8B-Instruct", "--bf16", "0"])
    assert (config.steps, config.block_length, config.max_completion_length) == (128, 32, 128)
    assert (config.baseline, config.kl_coef, config.learning_rate) == ("none", 0.1, 2e-5)
    assert model.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_command_line_overrides_the_recipe():
    _, config, _ = train_bias.parse_args(["--max_steps", "3", "--temperature", "0.5"])
    assert (config.max_steps, config.temperature) == (3, 0.5)


def test_every_packaged_recipe_parses():
    for recipe in sorted(train_bias.RECIPES_DIR.glob("*.yaml")):
        script, config, model = train_bias.parse_args(["--config", str(recipe), "--bf16", "false"])
        assert config.max_completion_length % config.block_length == 0, recipe.name
    assert (ROOT / "examples" / "recipes" / "paper.yaml").is_file()  # the examples/ path users read about


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="recipe 'nope.yaml' not found.*tiny_cpu.yaml"):
        train_bias.parse_args(["--config", "nope.yaml"])


def test_unwritable_output_dir_fails_before_any_model_is_built(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output_dir check")

    monkeypatch.setattr(train_bias, "load_model_and_tokenizer", must_not_load)
    with pytest.raises(PermissionError, match="output_dir .* is not writable"):
        train_bias.main(["--output_dir", str(blocker / "out")])
    assert blocker.read_text() == "not a directory"


def test_unknown_reward_is_rejected_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(train_bias, "load_model_and_tokenizer", lambda *a: pytest.fail("loaded"))
    with pytest.raises(ValueError, match="unknown reward.*'fairness'"):
        train_bias.main(["--output_dir", str(tmp_path), "--rewards", "genbit", "fairness"])


def test_offline_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["--model_name_or_path", "someone/not-cached-llada", "--bf16", "false", "--output_dir", str(tmp_path)]
    with pytest.raises(FileNotFoundError, match="(?s)cannot download 'someone/not-cached-llada'.*pass a local path"):
        train_bias.main(argv)


def test_main_job_trains_saves_and_reports(tiny_job):
    out, report, _ = tiny_job
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["train_size"] == 16 and saved["eval_size"] == 8 + 2  # multiple choice + free text
    assert saved["unseen_roles"]["eval_size"] == 3 and (out / "unseen_roles" / "report.md").is_file()
    # the recipe samples the main split at T=0 and 0.7, the unseen roles greedily, without the sequence KL
    unseen = [json.loads(line) for line in (out / "unseen_roles" / "records.jsonl").read_text().splitlines()]
    assert {r["temperature"] for r in unseen} == {0.0} and not any("kl_sequence" in r for r in unseen)
    # records.jsonl carries each prompt's metadata beside its completion, so anyone can re-score it
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["question_type"] for r in records} == {"multiple_choice", "free_text"}
    assert {r["split"] for r in records} == {"test_seen_roles"}
    assert {r["temperature"] for r in records} == {0.0, 0.7}
    for key in (
        "id",
        "question_options",
        "context_condition",
        "gold_option_index",
        "stereotyped_option_index",
        "neutral_option_indices",
        "occupation",
        "completion",
        "variant",
        "temperature",
    ):
        assert key in records[0], key
    rows = {r["metric"]: r for r in saved["before_after"]}
    kl_labels = (
        "KL(adapter || base), completion masked, per position",
        "KL(adapter || base) of the answers, per token",
    )
    for label in ("gendered-pronoun rate", "GenBit |bias| per text", *kl_labels, "answer validity"):
        assert label in rows
        assert rows[label]["change"] == pytest.approx(rows[label]["after"] - rows[label]["before"])
    for label in kl_labels:
        assert rows[label]["before"] == 0.0  # the base arm is the adapter disabled
        assert rows[label]["after"] > 0.0  # two AdamW steps moved the LoRA weights
    # The sequence KL is one path per prompt: the same on every adapter row of a prompt, at every temperature.
    by_prompt: dict = {}
    for r in records:
        if r["variant"] == "adapter":
            by_prompt.setdefault(r["index"], set()).add((r["kl_sequence"], r["kl_sequence_total"]))
        else:
            assert (r["kl_sequence"], r["kl_sequence_total"]) == (0.0, 0.0)
    assert all(len(values) == 1 for values in by_prompt.values())
    assert all(total >= 0 and math.isfinite(per_token) for ((per_token, total),) in by_prompt.values())
    text = (out / "report.md").read_text()
    assert "before vs after" in text and "Limitations" in text
    assert report == saved


def test_main_job_prints_short_lines_and_where_everything_went(tiny_job):
    out, _, console = tiny_job
    assert "step 1/2 | loss" in console and "{'loss'" not in console  # one short line per log, no raw dict
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "loss" in entry] == [1, 2]
    assert "time/sampling" in logged[0]  # the raw dicts, every key, go to the file
    assert f"Outputs in {out}/:" in console
    for name in ("adapter_model.safetensors", "train_log.jsonl", "report.md", "records.jsonl"):
        assert f"  {name} " in console


def test_cli_generate_evaluate_and_report(tiny_job, tiny_model_dir, tmp_path, capsys):
    out = tiny_job[0]
    model = ["--model_name_or_path", str(tiny_model_dir), "--adapter_name_or_path", str(out)]
    sampler = ["--steps", "8", "--max_completion_length", "16", "--block_length", "8"]
    cli_main(["generate", *model, "--prompt", "Who is the nurse?", "Who is the pilot?", "--batch_size", "1", *sampler])
    captured = capsys.readouterr()
    assert "### Who is the nurse?" in captured.out and "### Who is the pilot?" in captured.out
    assert "sampler: steps=8, max_completion_length=16, block_length=8" in captured.err
    eval_dir = tmp_path / "eval"
    argv = ["evaluate", *model, "--eval_size", "4", *sampler]
    cli_main([*argv, "--output_dir", str(eval_dir), "--eval_temperatures", "0", "1"])
    printed = capsys.readouterr().out
    assert "base model (before) vs base + adapter (after)" in printed and "gendered-pronoun rate" in printed
    assert (eval_dir / "report.md").is_file() and (eval_dir / "records.jsonl").is_file()
    (eval_dir / "report.md").unlink()
    cli_main(["report", "--eval_dir", str(eval_dir)])
    assert (eval_dir / "report.md").is_file()


def test_cli_report_on_a_folder_that_is_not_an_evaluation(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved evaluation"):
        cli_main(["report", "--eval_dir", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("config", ["cpu_ddp.yaml", "cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_example_launches_with_each_cpu_accelerate_config(config, tiny_model_dir, tmp_path):
    if "zero" in config:
        pytest.importorskip("deepspeed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    cmd += [str(ROOT / "examples" / "accelerate_configs" / config), str(ROOT / "examples" / "train_llada_bias.py")]
    cmd += ["--model_name_or_path", str(tiny_model_dir), "--config", "tiny_cpu.yaml", "--output_dir", str(tmp_path)]
    cmd += ["--max_steps", "2", "--train_size", "16", "--eval_size", "4", "--ddp_backend", "gloo", *TINY_RUN]
    cmd += ["--use_cpu", "false" if "zero" in config else "true"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "report.json").is_file()


def test_config_equals_form_custom_recipe_without_use_peft_and_resume_true(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("max_steps: 3\noutput_dir: outputs/mine\n")  # no use_peft: the job still trains a LoRA
    script, config, model = train_bias.parse_args([f"--config={recipe}", "--resume_from_checkpoint", "true"])
    assert config.max_steps == 3 and model.use_peft is True
    assert config.resume_from_checkpoint is True  # Trainer's "latest checkpoint", not a path named "true"
    _, _, model = train_bias.parse_args(["--config", str(recipe), "--use_peft", "false"])
    assert model.use_peft is False  # explicit: main() refuses it with a clear error


def test_help_renders(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_bias.parse_args(["--help"])
    assert exit_info.value.code == 0 and "--logprob_recompute" in capsys.readouterr().out


def test_previous_run_is_refused_replaced_or_resumed(tmp_path):
    """A folder with a finished run is refused; `--overwrite_output_dir` removes its log and reports (the adapter is
    then overwritten by the new save); a resume keeps everything; a user's own file is never touched."""
    import pytest

    from diffusion_rl.bias.train import check_previous_run, clear_previous_run

    assert check_previous_run(tmp_path, overwrite=False, resuming=False) == []  # an empty folder is fine
    files = {"adapter_model.safetensors": "w", "train_log.jsonl": "{}", "report.md": "r", "notes.txt": "mine"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(FileExistsError, match="--overwrite_output_dir true"):
        check_previous_run(tmp_path, overwrite=False, resuming=False)
    assert check_previous_run(tmp_path, overwrite=False, resuming=True) == []
    stale = check_previous_run(tmp_path, overwrite=True, resuming=False)
    assert all((tmp_path / name).read_text() == text for name, text in files.items())  # nothing removed yet
    assert sorted(p.name for p in stale) == ["report.md", "train_log.jsonl"]
    clear_previous_run(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_model.safetensors", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_one_lora_target_module_stays_a_module_name():
    """trl.ModelConfig makes `--lora_target_modules q_proj` a string, which PEFT would read as a full-name regex."""
    from trl import ModelConfig

    from diffusion_rl.bias.train import check_model_args

    for given, expected in (("q_proj", ["q_proj"]), ("all-linear", "all-linear"), (["q_proj", "v_proj"], None)):
        args = ModelConfig(use_peft=True, lora_target_modules=given)
        check_model_args(args)
        assert args.lora_target_modules == (given if expected is None else expected)


def test_flags_that_would_do_nothing_are_warned_about():
    import warnings

    import pytest

    from diffusion_rl.bias.train import BiasScriptArguments

    with pytest.warns(UserWarning, match=r"--train_size, --question_type shape the synthetic data only"):
        BiasScriptArguments(dataset_name="my.jsonl", train_size=3, question_type="free_text")
    with pytest.warns(UserWarning, match="every evaluation size is 0"):
        BiasScriptArguments(eval_size=0, eval_free_text_size=0, eval_unseen_roles_size=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults, a file with default synthetic fields, and --skip_eval: silent
        BiasScriptArguments()
        BiasScriptArguments(dataset_name="my.jsonl")
        BiasScriptArguments(eval_size=0, eval_free_text_size=0, eval_unseen_roles_size=0, skip_eval=True)
