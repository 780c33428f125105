"""`model_vocab_size`, which the sampler's and the estimator's token-id checks use, sees through the wrappers the
trainer hands them (DDP and DataParallel forward neither `get_input_embeddings` nor `config`)."""

import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.checks import model_vocab_size
from diffusion_rl.models.tiny import build_tiny_model


def test_vocab_size_through_wrappers(tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer)
    size = model.get_input_embeddings().num_embeddings
    assert model_vocab_size(model) == size
    assert model_vocab_size(torch.nn.DataParallel(model)) == size  # the DDP case: only `.module` leads back
    peft = get_peft_model(build_tiny_model(tiny_tokenizer), LoraConfig(r=2, target_modules=["q_proj"]))
    assert model_vocab_size(torch.nn.DataParallel(peft)) == size
