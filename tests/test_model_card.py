"""The model card: no local paths, a usage snippet that loads base + adapter and samples, versions, citations."""

import contextlib
import copy
import io
import re

import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.model_card import build_model_card, framework_versions


def _card(tmp_path, base_model: str, **kwargs) -> str:
    args = DiffusionReinforceConfig(
        output_dir=str(tmp_path / "out"), steps=4, max_completion_length=8, block_length=8, report_to=[]
    )
    card = build_model_card(
        base_model=base_model,
        model_name=None,
        reward_names=["length_reward", "kl"],
        reward_weights=[1.0, 1.0],
        args=args,
        final_metrics={"loss": 0.5},
        hub_model_id="you/tiny-adapter",
        **kwargs,
    )
    return str(card)


def test_a_local_base_model_leaves_no_path_in_the_card(tmp_path, tiny_model_dir):
    text = _card(tmp_path, str(tiny_model_dir), dataset_name=str(tmp_path / "data.jsonl"))
    assert str(tmp_path) not in text and str(tiny_model_dir) not in text and "/tmp" not in text
    assert f"a local checkpoint (`{tiny_model_dir.name}`)" in text
    assert f'load_llada("path/to/{tiny_model_dir.name}")' in text
    assert "base_model:" not in text.split("---")[1]  # a local path is not valid Hub metadata


def test_versions_license_and_citations(tmp_path):
    text = _card(tmp_path, "GSAI-ML/LLaDA-8B-Instruct", license="apache-2.0")
    assert "license: apache-2.0" in text.split("---")[1] and "base_model: GSAI-ML/LLaDA-8B-Instruct" in text
    for package, version in framework_versions().items():
        assert f"- {package}: {version}" in text
    assert "arXiv:2502.09992" in text and "Large Language Diffusion Models" in text
    assert "diffusion_rl seed recipe" in text


def test_the_usage_snippet_loads_base_and_adapter_and_samples(tmp_path, tiny_model, tiny_model_dir):
    adapter_dir = tmp_path / "adapter"
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        get_peft_model(copy.deepcopy(tiny_model), lora).save_pretrained(adapter_dir)
    text = _card(tmp_path, "GSAI-ML/LLaDA-8B-Instruct")
    snippet = re.search(r"## Usage\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "MaskedDiffusionSampler(model, steps=4, gen_length=8, block_length=8" in snippet
    # The card names Hub ids; run it on the local tiny model and adapter instead.
    snippet = snippet.replace("GSAI-ML/LLaDA-8B-Instruct", str(tiny_model_dir)).replace(
        "you/tiny-adapter", str(adapter_dir)
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "model_card_usage", "exec"), {})
    assert printed.getvalue().endswith("\n") and len(printed.getvalue().splitlines()) == 1


def test_the_main_jobs_card_loads_the_embedded_default_model(tmp_path):
    from diffusion_rl.bias.default_model import load_default_model
    from diffusion_rl.bias.train import DEFAULT_MODEL_CODE

    base, _ = load_default_model(log=None)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    text = _card(tmp_path, base.name_or_path, base_model_code=DEFAULT_MODEL_CODE)
    assert base.name_or_path not in text and "load_default_model()" in text
    snippet = re.search(r"## Usage\n\n```python\n(.*?)```", text, re.S).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet.replace("you/tiny-adapter", str(tmp_path / "adapter")), "usage", "exec"), {})
    assert len(printed.getvalue().splitlines()) == 1
