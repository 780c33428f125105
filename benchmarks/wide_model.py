"""Save a random-weight LLaDA of LLaDA-8B's width and depth around the default model's tokenizer, for GPU jobs.

    python benchmarks/wide_model.py OUT_DIR                     # 32 layers x 4,096, MLP 12,288: 7.0 B parameters
    python benchmarks/wide_model.py OUT_DIR --layers 2 --width 128 --mlp 256 --heads 4 --device cpu --dtype float32

Nothing can be downloaded where the GPU checks run, so LLaDA-8B-Instruct itself cannot be trained there. This model
has its shape (all but the vocabulary: the default model's 1,489 words instead of 126,464 tokens, so the special ids
and chat template match a tokenizer that ships with the package), which is what memory and speed depend on, and it
goes through the same command line as the real model: `--model_name_or_path OUT_DIR`. Its answers are noise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_rl.models.llada import LladaConfig, LladaForMaskedDiffusion  # noqa: E402

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "diffusion_rl" / "bias" / "default_checkpoint"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SPECIAL_IDS = ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id", "eot_token_id")


def save_wide_model(out: str | Path, *, layers=32, width=4096, mlp=12288, heads=32, device="cuda",
                    dtype=torch.bfloat16) -> dict:  # fmt: skip
    """Build the model directly on `device` in `dtype` (no float32 copy), save it with the default tokenizer, and
    return `{"parameters", "seconds"}`."""
    start = time.perf_counter()
    small = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    config = LladaConfig(vocab_size=small["vocab_size"], hidden_size=width, intermediate_size=mlp,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         **{key: small[key] for key in SPECIAL_IDS})  # fmt: skip
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LladaForMaskedDiffusion(config)
    finally:
        torch.set_default_dtype(previous)
    out = Path(out)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(DEFAULT_CHECKPOINT / name, out / name)
    return {"parameters": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--mlp", type=int, default=12288)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    result = save_wide_model(args.out, layers=args.layers, width=args.width, mlp=args.mlp, heads=args.heads,
                             device=args.device, dtype=getattr(torch, args.dtype))  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
