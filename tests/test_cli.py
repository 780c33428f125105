"""The `diffusion-rl` command line: fast help, usage lines, one vocabulary, flags that work or are refused."""

import contextlib
import dataclasses
import io
import json
import subprocess
import sys
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest

from diffusion_rl.bias import cli
from diffusion_rl.bias import train as train_bias
from diffusion_rl.bias.cli_args import SAMPLER_DEFAULTS, SamplerArguments, resolve_sampler_settings
from diffusion_rl.log_callbacks import CompactPrinterCallback, format_log_line
from diffusion_rl.models.sampler_settings import stored_sampler_settings

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_top_level_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "from diffusion_rl.bias.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert "usage: diffusion-rl [-h] {train,generate,evaluate,report}" in out.stdout
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_import_diffusion_rl_is_cheap_and_models_register_llada():
    out = _run(
        "import sys, diffusion_rl\n"
        "print('torch' in sys.modules)\n"
        "import diffusion_rl.models\n"
        "from transformers import AutoConfig\n"
        "print(type(AutoConfig.for_model('llada')).__name__)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "LladaConfig"]


@pytest.mark.parametrize("command", ["generate", "evaluate", "report"])
def test_subcommand_usage_names_the_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: diffusion-rl {command} [-h]")


def test_train_usage_names_the_subcommand_and_lists_the_common_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: diffusion-rl train [-h]") and "Most used: --config RECIPE.yaml" in out


@pytest.mark.parametrize(
    ("argv", "new"),
    [
        (["generate", "--prompt", "Hi", "--model", "x"], "--model_name_or_path"),
        (["generate", "--prompt", "Hi", "--gen_length=16"], "--max_completion_length"),
        (["evaluate", "--adapter", "out"], "--adapter_name_or_path"),
        (["evaluate", "--num_prompts", "4"], "--eval_size"),
        (["evaluate", "--temperatures", "0", "1"], "--eval_temperatures"),
    ],
)
def test_old_flag_names_say_the_new_one(argv, new):
    with pytest.raises(SystemExit, match=f"is now {new}"):
        cli.main(argv)


def test_sampler_flags_are_config_fields():
    from diffusion_rl.config import DiffusionReinforceConfig

    config_fields = {f.name: f for f in dataclasses.fields(DiffusionReinforceConfig)}
    for f in dataclasses.fields(SamplerArguments):
        assert f.name in config_fields, f.name
        flag_type = next(t for t in typing.get_args(typing.get_type_hints(SamplerArguments)[f.name]) if t is not None)
        assert flag_type is typing.get_type_hints(DiffusionReinforceConfig)[f.name], f.name
        assert config_fields[f.name].default == SAMPLER_DEFAULTS[f.name], f.name
    assert set(SAMPLER_DEFAULTS) == {f.name for f in dataclasses.fields(SamplerArguments)}


def test_sampler_settings_come_from_the_flag_then_the_model_then_the_config(tmp_path):
    (tmp_path / "build_info.json").write_text(json.dumps({"sampler_settings": {"gen_length": 40, "steps": 40}}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"steps": 7}))
    stored = stored_sampler_settings(tmp_path)
    assert stored == {"max_completion_length": 40, "steps": 40}  # build_info.json first, config vocabulary
    resolved = resolve_sampler_settings(SamplerArguments(steps=20), stored)
    assert resolved == {**SAMPLER_DEFAULTS, "max_completion_length": 40, "steps": 20}

    (tmp_path / "build_info.json").unlink()
    assert stored_sampler_settings(tmp_path) == {"steps": 7}
    # An autoregressive generation config says nothing about a diffusion sampler.
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "max_new_tokens": 2048}))
    assert stored_sampler_settings(tmp_path) == {}


def test_the_shipped_default_model_stores_its_sampler_settings():
    from diffusion_rl.bias.default_model import PACKAGED_CHECKPOINT

    stored = stored_sampler_settings(PACKAGED_CHECKPOINT)
    assert {"steps", "max_completion_length", "block_length"} <= set(stored)


@pytest.mark.parametrize("flag", ["--load_in_4bit", "--load_in_8bit"])
def test_quantization_flags_are_refused_before_loading(flag, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("built a model before refusing the flag")

    monkeypatch.setattr(train_bias, "load_model_and_tokenizer", no_model)
    with pytest.raises(ValueError, match=f"{flag} is not supported"):
        train_bias.main(["--output_dir", str(tmp_path), flag, "true"])


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_model(implementation, tiny_model_dir):
    _, _, model_args = train_bias.parse_args(
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--config",
            "tiny_cpu.yaml",
            "--attn_implementation",
            implementation,
        ]
    )
    model, _ = train_bias.load_model_and_tokenizer(model_args, None)
    assert model.config._attn_implementation == implementation


def test_a_quick_try_scales_the_evaluation_down():
    script, _, _ = train_bias.parse_args(["--max_steps", "2"])
    assert script.eval_size == train_bias.MIN_SCALED_EVAL_SIZE
    script, _, _ = train_bias.parse_args(["--max_steps", "2", "--eval_size", "20"])
    assert script.eval_size == 20  # an explicit size wins
    recipe_size = train_bias.parse_args([])[0].eval_size
    assert train_bias.parse_args(["--max_steps", "1000"])[0].eval_size == recipe_size  # longer runs: unchanged


def test_compact_log_line():
    logs = {"loss": 0.123456, "reward": -0.5, "kl": float("nan"), "time/sampling": 3.0}
    line = format_log_line(logs, {"loss": "loss", "reward": "reward", "kl": "kl", "entropy": "H"}, 5, 60)
    assert line == "step 5/60 | loss 0.1235 | reward -0.5 | kl nan"


def test_the_end_of_training_dict_prints_the_step_metrics_it_carries():
    keys = {"loss": "loss", "reward": "reward"}
    state = SimpleNamespace(global_step=2, max_steps=2, is_world_process_zero=True)
    printer = CompactPrinterCallback(keys)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        printer.on_log(None, state, None, logs={"train_runtime": 9.0, "train_loss": 0.5})  # the summary alone
        printer.on_log(None, state, None, logs={"train_runtime": 9.0, "train_loss": 0.5, "reward": -0.25})
    assert out.getvalue() == "step 2/2 | reward -0.25\n"


def test_accelerate_launch_with_the_default_config_has_no_defaults_warning(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("print('launched')\n")
    config = ROOT / "examples" / "accelerate_configs" / "default.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "launched" in out.stdout and "were not passed" not in out.stderr + out.stdout


def test_in_training_evaluation_in_the_main_job(tiny_model_dir, tmp_path, capsys):
    argv = ["--model_name_or_path", str(tiny_model_dir), "--config", "tiny_cpu.yaml", "--output_dir", str(tmp_path)]
    argv += ["--max_steps", "2", "--train_size", "8", "--steps", "8", "--max_completion_length", "16"]
    argv += ["--block_length", "8", "--eval_size", "2", "--eval_free_text_size", "0", "--eval_unseen_roles_size", "0"]
    argv += ["--eval_strategy", "steps", "--eval_steps", "1", "--num_generations_eval", "2", "--skip_eval", "true"]
    train_bias.main(argv)
    logged = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if "eval_loss" in e] == [1, 2]
    assert "| eval loss " in capsys.readouterr().out
