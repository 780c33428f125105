"""Adapters that do not fit the base model are refused with counts and the recorded base (issue 15.7).

Measured before the fix: an adapter trained on a 6-layer model loaded into the 4-layer default model through
`diffusion-rl evaluate` and wrote a report (PEFT dropped the extra layers' tensors); a 2-layer adapter only warned
(layers 2-3 kept a fresh LoRA). Both now raise `AdapterMismatchError`, and the caller's model is left unwrapped.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from diffusion_rl.adapter_check import AdapterMismatchError, adapter_file_shapes, check_adapter_fits
from diffusion_rl.evaluation import load_adapter
from diffusion_rl.models.tiny import build_tiny_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _adapter(tmp_path, tokenizer, name: str, layers: int, base: str) -> str:
    model = build_tiny_model(tokenizer, seed=0, num_hidden_layers=layers)
    model.name_or_path = base  # what PEFT records as base_model_name_or_path (from_pretrained sets it)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=TARGETS, init_lora_weights=False))
    path = tmp_path / name
    peft_model.save_pretrained(path)
    return str(path)


@pytest.fixture
def base(tiny_tokenizer):
    return build_tiny_model(tiny_tokenizer, seed=0, num_hidden_layers=4)


def test_an_adapter_of_a_deeper_model_is_refused(tmp_path, tiny_tokenizer, base):
    path = _adapter(tmp_path, tiny_tokenizer, "six", 6, "org/six-layer-base")
    with pytest.raises(
        AdapterMismatchError,
        match=r"(?s)16 saved tensor\(s\) have no place in this model .*layers\.4\..*trained on base model "
        r"'org/six-layer-base'",
    ):
        load_adapter(base, path)
    # The caller's model is given back without LoRA layers.
    assert not any("lora_" in name for name, _ in base.named_parameters())


def test_an_adapter_of_a_shallower_model_is_refused(tmp_path, tiny_tokenizer, base):
    path = _adapter(tmp_path, tiny_tokenizer, "two", 2, "org/two-layer-base")
    with pytest.raises(AdapterMismatchError, match=r"16 adapter tensor\(s\) of this model are not in the file"):
        load_adapter(base, path)


def test_a_fitting_adapter_loads_with_its_weights(tmp_path, tiny_tokenizer, base):
    path = _adapter(tmp_path, tiny_tokenizer, "four", 4, "org/four-layer-base")
    model = load_adapter(base, path)
    assert isinstance(model, PeftModel)
    saved = PeftModel.from_pretrained(build_tiny_model(tiny_tokenizer, seed=0, num_hidden_layers=4), path)
    for (name, a), (_, b) in zip(model.named_parameters(), saved.named_parameters()):
        if "lora_" in name:
            assert torch.equal(a, b), name
    assert len(adapter_file_shapes(path)) == 4 * 4 * 2


def test_check_on_a_model_that_already_has_the_adapter(tmp_path, tiny_tokenizer):
    # The resume path: the trainer's PEFT model vs a checkpoint's adapter file.
    path = _adapter(tmp_path, tiny_tokenizer, "six", 6, "org/six")
    model = get_peft_model(
        build_tiny_model(tiny_tokenizer, seed=0, num_hidden_layers=4), LoraConfig(r=2, target_modules=TARGETS)
    )
    with pytest.raises(AdapterMismatchError, match="have no place"):
        check_adapter_fits(model, path)
    other_rank = get_peft_model(
        build_tiny_model(tiny_tokenizer, seed=0, num_hidden_layers=6), LoraConfig(r=4, target_modules=TARGETS)
    )
    with pytest.raises(AdapterMismatchError, match=r"differ in shape \(e\.g\. .*saved \(2, 64\), model \(4, 64\)"):
        check_adapter_fits(other_rank, path)
    check_adapter_fits(copy.deepcopy(other_rank), other_rank.save_pretrained(tmp_path / "r4") or tmp_path / "r4")
