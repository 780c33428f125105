"""A prepared GPU check at LLaDA-8B shape: sampler tokens/s exact vs fast, one RL step's peak memory, MFU.

    python benchmarks/gpu_check.py [--output gpu_check.json]          # LLaDA-8B shape, bf16, on the GPU (~4 min)
    python benchmarks/gpu_check.py --tiny                             # reduced shape on CPU (what the test runs)

Nothing is downloaded: the model is `LladaForMaskedDiffusion(LladaConfig())` (LLaDA-8B's shape: 32 layers, width
4,096, MLP 12,288, vocabulary 126,464) with random weights, built directly in bf16 on the device. Measured in one run:

1. **Sampler throughput** at batch 8 x (128 prompt + 256 generated) tokens, 256 steps, block 32, temperature 1, the
   prompts left-padded as in training (every odd row's first quarter): the exact sampler, the dual KV cache, and
   the dual cache with confidence threshold 0.9 (random weights are not confident, so the threshold rarely fires
   here: its NFE is printed). Tokens/s = generated tokens / wall second (CUDA synchronised), after a one-block
   warm-up.
2. **One RL step's peak memory** (`torch.cuda.max_memory_allocated`) and time, after one untimed step, with and
   without gradient checkpointing: LoRA r=16 on q/k/v/o, the trainer's objective on random completions of the same
   shape and padding (one-step estimator with the KL to the adapter-disabled base in the loss, `policy_loss`,
   backward, AdamW step), so the number is the log-prob and update part of a step; the sampler's own peak is
   reported with (1).
3. **Model FLOP utilisation**: model FLOPs per forward, `2 * parameters * tokens` for the layers (every canvas
   position) plus the LM head (only the positions whose logits are kept) plus attention `4 * layers * width *
   tokens * keys`, divided by the measured time and the device's peak bf16 dense FLOP/s (`--peak-tflops`, else
   looked up from the device name; unknown devices and CPUs print achieved TFLOP/s only). A training step counts 3x
   the forward FLOPs of its policy forward (+1x with gradient checkpointing) plus the reference forward.

Prints a JSON object (and writes it to `--output`); asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_rl.logprobs import RolloutBatch, estimate_logprobs  # noqa: E402
from diffusion_rl.models.llada import LladaConfig, LladaForMaskedDiffusion  # noqa: E402
from diffusion_rl.objectives import policy_loss  # noqa: E402
from diffusion_rl.sampling import MaskedDiffusionSampler  # noqa: E402

# Peak dense bf16 tensor FLOP/s (no sparsity) by device-name substring.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
            vocab_size=2048, max_position_embeddings=256)  # fmt: skip
FULL_SHAPE = dict(batch=8, prompt=128, gen=256, steps=256, block=32, step_batch=8)
TINY_SHAPE = dict(batch=2, prompt=8, gen=16, steps=16, block=8, step_batch=2)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(tiny: bool, device: torch.device, dtype: torch.dtype) -> LladaForMaskedDiffusion:
    config = LladaConfig(**TINY) if tiny else LladaConfig()
    config.mask_token_id = config.vocab_size - 1 if tiny else config.mask_token_id
    config.eos_token_id = config.pad_token_id = 1 if tiny else config.eos_token_id
    config.eot_token_id = 2 if tiny else config.eot_token_id
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 directly: no float32 copy of 8B parameters
    try:
        with torch.device(device):
            model = LladaForMaskedDiffusion(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def forward_flops(config, batch: int, tokens: int, keys: int, logits_positions: int) -> float:
    """Model FLOPs of one forward: dense layers on `tokens` positions per row, attention against `keys`, LM head on
    `logits_positions` positions in all (the sampler keeps only the block's logits, the estimator the completion)."""
    width, layers = config.hidden_size, config.num_hidden_layers
    head_dim = width // config.num_attention_heads
    kv_width = config.num_key_value_heads * head_dim
    per_token_layer = 2 * (width * width * 2 + width * kv_width * 2 + 3 * width * config.intermediate_size)
    attention = 4 * layers * width * tokens * keys * batch
    return per_token_layer * layers * tokens * batch + attention + 2 * width * config.vocab_size * logits_positions


def sampler_flops(config, shape: dict, nfe: int, cache: str) -> float:
    """FLOPs of a generate call: full-canvas forwards, or with the dual cache one full forward per block and block-only
    forwards (attending to the whole canvas) for the other steps."""
    batch, length, block = shape["batch"], shape["prompt"] + shape["gen"], shape["block"]
    keep = batch * block
    if cache == "none":
        return nfe * forward_flops(config, batch, length, length, keep)
    blocks = shape["gen"] // block
    full = forward_flops(config, batch, length, length, keep)
    return blocks * full + max(nfe - blocks, 0) * forward_flops(config, batch, block, length, keep)


def left_padded_mask(rows: int, length: int, device: torch.device) -> torch.Tensor:
    """Attention mask of a left-padded batch, as training builds it: every odd row has its first quarter padded."""
    mask = torch.ones(rows, length, dtype=torch.long, device=device)
    mask[1::2, : length // 4] = 0
    return mask


def time_sampler(model, shape: dict, device: torch.device, **kwargs) -> dict:
    config = model.config
    generator = torch.Generator(device).manual_seed(0)
    prompt = torch.randint(3, config.vocab_size - 2, (shape["batch"], shape["prompt"]), generator=generator,
                           device=device)  # fmt: skip
    attention_mask = left_padded_mask(shape["batch"], shape["prompt"], device)
    prompt = prompt.masked_fill(attention_mask == 0, config.pad_token_id)
    settings = dict(mask_token_id=config.mask_token_id, eos_token_id=config.eos_token_id,
                    eot_token_id=config.eot_token_id, pad_token_id=config.pad_token_id, temperature=1.0,
                    block_length=shape["block"])  # fmt: skip
    warmup = MaskedDiffusionSampler(model, steps=shape["steps"] // (shape["gen"] // shape["block"]),
                                    gen_length=shape["block"], **settings, **kwargs)  # fmt: skip
    with torch.no_grad():
        # one block: kernels, allocator, cache paths
        warmup.generate(prompt, attention_mask=attention_mask, generator=generator)
        sampler = MaskedDiffusionSampler(model, steps=shape["steps"], gen_length=shape["gen"], **settings, **kwargs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        out = sampler.generate(prompt, attention_mask=attention_mask, generator=generator)
        synchronize(device)
        seconds = time.perf_counter() - start
    flops = sampler_flops(config, shape, out.nfe, kwargs.get("cache", "none"))
    result = {"seconds": seconds, "tokens_per_s": shape["batch"] * shape["gen"] / seconds, "nfe": out.nfe,
              "achieved_tflops": flops / seconds / 1e12}  # fmt: skip
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def rl_step_memory(model, shape: dict, device: torch.device, checkpointing: bool) -> dict:
    """Peak memory and time of the trainer's log-prob + update part of a step on random completions."""
    from peft import LoraConfig, get_peft_model

    config = model.config
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, lora)
    try:
        if checkpointing:  # non-reentrant: the frozen embeddings need no requires_grad hook
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        peft_model.train()
        rows, generator = shape["step_batch"], torch.Generator(device).manual_seed(1)
        prompt_mask = left_padded_mask(rows, shape["prompt"], device)
        batch = RolloutBatch(
            prompt_ids=torch.randint(3, config.vocab_size - 2, (rows, shape["prompt"]), generator=generator,
                                     device=device).masked_fill(prompt_mask == 0, config.pad_token_id),
            prompt_mask=prompt_mask,
            completion_ids=torch.randint(3, config.vocab_size - 2, (rows, shape["gen"]), generator=generator,
                                         device=device),
            completion_mask=torch.ones(rows, shape["gen"], dtype=torch.bool, device=device),
        )  # fmt: skip
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-5)
        advantages = torch.linspace(-1, 1, rows, device=device)

        def step() -> torch.Tensor:
            lp = estimate_logprobs(
                peft_model, batch, estimator="one_step", mask_token_id=config.mask_token_id, generator=generator,
                reference=peft_model.disable_adapter, kl_estimator="k3", kl_requires_grad=True,
            )  # fmt: skip
            loss = policy_loss(lp.token_logps, batch.completion_mask, advantages, loss_type="grpo", kl=lp.kl,
                               kl_coef=0.04)  # fmt: skip
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        # One untimed step first: the first backward pays one-time CUDA costs (kernel selection, workspaces, the
        # optimizer's state): on an H200 the first measurement (no checkpointing, less work) took 3.4x the second.
        step()
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        start = time.perf_counter()
        loss = step()
        synchronize(device)
        seconds = time.perf_counter() - start
        length = shape["prompt"] + shape["gen"]
        forward = forward_flops(config, rows, length, length, rows * shape["gen"])
        flops = forward * (1 + 3 + (1 if checkpointing else 0))  # reference, policy fwd+bwd, recompute
        result = {"seconds": seconds, "achieved_tflops": flops / seconds / 1e12, "loss": float(loss)}
        if device.type == "cuda":
            result["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            result["peak_above_weights_gb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**30
        return result
    finally:
        if checkpointing:
            model.activation_checkpointing_disable()
        peft_model.unload()  # the base model again, for the next measurement


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="reduced shape (2x64, vocab 2048) on CPU, for the test")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak bf16 dense TFLOP/s")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" or not args.tiny else torch.float32
    shape = TINY_SHAPE if args.tiny else FULL_SHAPE
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(args.tiny, device, dtype)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "shape": {**shape, "parameters": sum(p.numel() for p in model.parameters())},
        "build_seconds": time.perf_counter() - start,
    }
    report["sampler"] = {
        "exact": time_sampler(model, shape, device),
        "dual_cache": time_sampler(model, shape, device, cache="dual"),
        "dual_cache_threshold_0.9": time_sampler(model, shape, device, cache="dual", threshold=0.9),
    }
    exact = report["sampler"]["exact"]["tokens_per_s"]
    for values in report["sampler"].values():
        values["speedup_vs_exact"] = values["tokens_per_s"] / exact
    report["rl_step"] = {
        "without_gradient_checkpointing": rl_step_memory(model, shape, device, checkpointing=False),
        "with_gradient_checkpointing": rl_step_memory(model, shape, device, checkpointing=True),
    }
    peak = peak_tflops(device, args.peak_tflops)
    report["peak_tflops"] = peak
    for section in ("sampler", "rl_step"):
        for values in report[section].values():
            values["mfu"] = values["achieved_tflops"] / peak if peak else None
    report["total_seconds"] = time.perf_counter() - start
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
