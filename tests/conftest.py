"""Shared fixtures: the embedded tiny LLaDA and its tokenizer, built once per test session (fully offline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import pytest  # noqa: E402
import torch  # noqa: E402

from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The offline tiny tokenizer (byte-level BPE, LLaDA special tokens, left padding)."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A tiny LLaDA (2 layers, width 64) in eval mode and float32, seed 0. Do not modify it in place."""
    return build_tiny_model(tiny_tokenizer, seed=0, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A directory holding ``tiny_model`` and ``tiny_tokenizer`` written with ``save_pretrained``."""
    path = tmp_path_factory.mktemp("tiny_llada")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
