"""Generate completions on a held-out prompt set with the base model and with the adapter (the caller scores them).

Both arms see the same prompts in the same batches with the same sampler seeds (one `torch.Generator` per batch,
seeded from ``(seed, temperature index, batch index)``), so at temperature 0 the two arms differ only through the
adapter and at T > 0 they share the Gumbel noise: differences are paired per prompt, which the bootstrap in
`bootstrap.py` relies on. The base arm is the same PEFT model under `model.disable_adapter()` (no second copy of the
weights). KL(adapter || base) is measured on the adapter's generated text as the one-step log-prob estimator sees it:
one forward with the prompt clean and the whole completion masked, adapter on and off, `token_kl` on the valid
completion positions (so a freshly initialised LoRA gives exactly 0).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..adapter_check import AdapterMismatchError, check_adapter_dir, check_adapter_fits
from ..data.chat import tokenize_prompts
from ..rewards.kl import clean_prompt_kl
from ..sampling.sampler import MaskedDiffusionSampler
from ..validation import check_temperatures
from .sequence_kl import sequence_kl


def load_adapter(model: torch.nn.Module, adapter_path: str | Path, *, adapter_name: str = "default"):
    """Attach a saved LoRA adapter to `model` for evaluation, checking first that it fits.

    Args:
        model (`torch.nn.Module`): the base model (e.g. from `load_llada` or `build_tiny_model`).
        adapter_path (`str` or `Path`): a directory written by `PeftModel.save_pretrained` / the trainer.
        adapter_name (`str`, *optional*, defaults to `"default"`): name of the adapter inside the PEFT model.

    Returns:
        `peft.PeftModel` in eval mode.

    Raises:
        `FileNotFoundError`: no `adapter_config.json` or no adapter weights in `adapter_path`.
        `AdapterMismatchError`: the adapter targets modules the model lacks, has tensors the model has no place for
            (e.g. trained on a deeper model), lacks tensors the model expects (a shallower one), or its shapes
            differ. The message gives the counts and the base model recorded in `adapter_config.json`; `model` is
            left without the adapter.
        `NonFiniteWeightsError`: the adapter (or the model) holds NaN or inf values; `model` is left without the
            adapter.
        `ValueError`: `model` is already a `PeftModel` (nothing is changed).
    """
    from peft import PeftConfig, PeftModel

    from ..preflight import NonFiniteWeightsError, check_finite_weights

    if isinstance(model, PeftModel):
        # PEFT would nest a second PeftModel, and undoing that after a failed check strips the caller's own adapter.
        raise ValueError(
            f"model is already a PeftModel (adapters {sorted(model.peft_config)}); pass its base model "
            "(`model.get_base_model()`, or a freshly loaded one), or add this adapter with "
            "`model.load_adapter(path, adapter_name=...)`."
        )
    adapter_path = check_adapter_dir(adapter_path)
    config = PeftConfig.from_pretrained(str(adapter_path))
    targets = config.target_modules
    if isinstance(targets, str):  # a regex in PEFT; let PEFT resolve it, shapes are still checked below
        targets = None
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(targets or ()) - module_names)
    if missing:
        raise AdapterMismatchError(
            f"adapter {adapter_path} targets modules {missing} that the model does not have "
            f"(base model of the adapter: {config.base_model_name_or_path!r}); load the matching base model."
        )
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_path), adapter_name=adapter_name)
    except RuntimeError as err:  # torch's "size mismatch for ..." when loading the state dict
        raise AdapterMismatchError(
            f"adapter {adapter_path} does not fit this model (base model of the adapter: "
            f"{config.base_model_name_or_path!r}): {err}"
        ) from err
    try:
        # PEFT only logs extra tensors (a deeper model's layers) and leaves missing ones at their fresh init.
        check_adapter_fits(peft_model, adapter_path, adapter_name)
        # A diverged run's adapter would evaluate to empty answers and a NaN KL without a word.
        check_finite_weights(peft_model)
    except (AdapterMismatchError, NonFiniteWeightsError):
        peft_model.unload()  # give the caller's model back without the injected LoRA layers
        raise
    return peft_model.eval()


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def completion_kl(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    mask_token_id: int,
) -> torch.Tensor:
    """Per-sample KL(adapter || base) at the completion positions, completion fully masked, prompt clean.

    Args:
        model (`peft.PeftModel`): a model whose `disable_adapter()` context gives the base model.
        prompt_ids (`torch.Tensor` of shape `(B, P)`): left-padded prompt ids.
        prompt_mask (`torch.Tensor` of shape `(B, P)`): attention mask of the prompt.
        completion_mask (`torch.Tensor` of shape `(B, G)`): which completion positions count (bool).
        mask_token_id (`int`): id of the mask token.

    Returns:
        `torch.Tensor` of shape `(B,)` (float32).
    """
    if not _is_peft(model):
        raise TypeError("completion_kl needs a PEFT model (with disable_adapter()); load one with load_adapter().")
    # The reward's KL, chunked: its memory is bounded by KL_CHUNK_POSITIONS x V, not B x G x V (both arms' logits
    # and their float32 copies were ~20 GB at LLaDA-8B, eval batch 32 x gen 256).
    return clean_prompt_kl(
        model, model.disable_adapter, prompt_ids, prompt_mask, completion_mask, mask_token_id=mask_token_id
    )


def _batch_seed(seed: int, temperature_index: int, batch_index: int) -> int:
    # SeedSequence mixes the three numbers so neighbouring batches/temperatures get unrelated streams.
    return int(np.random.SeedSequence([seed, temperature_index, batch_index]).generate_state(1)[0])


def _prompt_text(prompt: str | list[dict]) -> str:
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), str(prompt))


def _decode(tokenizer, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
    return [
        tokenizer.decode(ids[mask].tolist(), skip_special_tokens=True).strip()
        for ids, mask in zip(completion_ids, completion_mask.bool())
    ]


@dataclass
class EvalResult:
    """Generations and metrics of one evaluation run.

    Args:
        records (`pd.DataFrame`): one row per (temperature, variant, prompt): the prompt, the completion and every
            per-text metric (e.g. `diffusion_rl.bias.evaluation.record_metrics`).
        metrics (`pd.DataFrame`): one row per (temperature, variant, question_type) with the aggregated metrics
            (e.g. `diffusion_rl.bias.evaluation.summarize`).
        notes (`list[str]`): metrics that were skipped and why (e.g. no choice metadata).
        config (`dict`): the settings used (temperatures, sampler settings, seed, batch size).
    """

    records: pd.DataFrame
    metrics: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def variant(self, name: str) -> pd.DataFrame:
        """The records of one arm (`"base"`, `"adapter"` or `"model"`)."""
        if name not in set(self.records["variant"]):
            raise ValueError(f"no records for variant {name!r}; available: {sorted(set(self.records['variant']))}.")
        return self.records[self.records["variant"] == name].reset_index(drop=True)

    def save(self, output_dir: str | Path) -> Path:
        """Write `records.jsonl`, `metrics.csv` and `eval_config.json` (with the notes) into `output_dir`."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.records.to_json(output_dir / "records.jsonl", orient="records", lines=True)
        self.metrics.to_csv(output_dir / "metrics.csv", index=False)
        (output_dir / "eval_config.json").write_text(json.dumps({**self.config, "notes": self.notes}, indent=2))
        return output_dir

    @classmethod
    def load(cls, output_dir: str | Path) -> EvalResult:
        """Read back what `save` wrote (e.g. to re-render a report without generating again)."""
        output_dir = Path(output_dir)
        missing = [n for n in ("records.jsonl", "metrics.csv", "eval_config.json") if not (output_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{str(output_dir)!r} is not a saved evaluation (missing {', '.join(missing)}); pass the folder "
                "written by `EvalResult.save` / `diffusion-rl evaluate`."
            )
        config = json.loads((output_dir / "eval_config.json").read_text())
        notes = config.pop("notes", [])
        records = pd.read_json(output_dir / "records.jsonl", orient="records", lines=True)
        return cls(records=records, metrics=pd.read_csv(output_dir / "metrics.csv"), notes=notes, config=config)


def _generate_batch(
    sampler: MaskedDiffusionSampler,
    tokenizer,
    encoded: Mapping[str, torch.Tensor],
    variant: str,
    generator: torch.Generator,
) -> tuple[list[str], list[int], list[bool], torch.Tensor]:
    """Sample one batch with one arm; returns texts, completion lengths (tokens, incl. EOS), whether each completion
    ended with a stop token inside the canvas, and the per-sample KL."""
    model = sampler.model
    input_ids = encoded["input_ids"].to(generator.device)
    attention_mask = encoded["attention_mask"].to(generator.device)
    with model.disable_adapter() if variant == "base" else contextlib.nullcontext():
        out = sampler.generate(input_ids, attention_mask=attention_mask, generator=generator)
    texts = _decode(tokenizer, out.completion_ids, out.completion_mask)
    # An answer "ended" when its last kept token is a stop token (EOS/EOT), not because the canvas ran out.
    stops = torch.tensor(sampler.eos_token_ids + sampler.eot_token_ids, dtype=out.completion_ids.dtype)
    lengths = out.completion_mask.sum(dim=1)  # (N,)
    last = out.completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]  # (N,)
    ended = (lengths > 0) & torch.isin(last.cpu(), stops)
    if variant == "adapter":
        kl = completion_kl(model, input_ids, attention_mask, out.completion_mask, mask_token_id=sampler.mask_token_id)
    else:  # KL(base || base) is exactly 0; the plain "model" arm has no reference to compare with
        kl = torch.zeros(len(texts)) if variant == "base" else torch.full((len(texts),), float("nan"))
    return texts, lengths.tolist(), ended.tolist(), kl


def _iter_batches(n: int, batch_size: int) -> Iterator[tuple[int, slice]]:
    for batch_index, start in enumerate(range(0, n, batch_size)):
        yield batch_index, slice(start, min(start + batch_size, n))


def generate_completions(
    model: torch.nn.Module,
    tokenizer,
    dataset: Sequence[Mapping] | Any,
    *,
    temperatures: Sequence[float] = (0.0,),
    sampler_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    compare_base: bool = True,
    max_prompt_length: int | None = None,
    metadata_columns: Sequence[str] = (),
    sequence_kl_paths: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Generate on `dataset` at each temperature with the adapter (and the base model), without scoring.

    The generic half of an evaluation: an application scores the records afterwards (the gender-bias application's
    `diffusion_rl.bias.evaluation.evaluate_model` adds its per-text metrics and per-setting summary).

    Args:
        model (`torch.nn.Module`): a PEFT model (adapter on/off gives the two arms) or a plain model (one arm,
            reported as variant `"model"`; then `compare_base` must be `False`).
        tokenizer: the model's tokenizer with a chat template.
        dataset (`datasets.Dataset` or `Sequence[Mapping]`): rows with a `prompt` (string or chat messages) and
            optionally the MCQ metadata (`question_type`, `question_options`, `neutral_option_indices`,
            `gold_option_index`, `stereotyped_option_index`, `context_condition`).
        temperatures (`Sequence[float]`, *optional*, defaults to `(0.0,)`): sampling temperatures, each in
            [0, 10].
        sampler_kwargs (`Mapping`, *optional*): settings for `MaskedDiffusionSampler` (`steps`, `gen_length`,
            `block_length`, `remasking`, `cfg_scale`, ...); the temperature comes from `temperatures`.
        seed (`int`, *optional*, defaults to `0`): base seed of the per-batch sampler generators.
        batch_size (`int`, *optional*, defaults to `8`): prompts per sampler call.
        compare_base (`bool`, *optional*, defaults to `True`): also generate with the adapter disabled.
        max_prompt_length (`int`, *optional*): passed to `tokenize_prompts` (longer prompts raise).
        metadata_columns (`Sequence[str]`, *optional*, defaults to `()`): dataset columns copied beside each
            completion (`None` where a row lacks one), so that `records.jsonl` can be re-scored on its own.
        sequence_kl_paths (`bool`, *optional*, defaults to `False`): also estimate KL(adapter || base) of the
            answer distributions along one random-order temperature-1 path of the adapter per prompt
            ([`diffusion_rl.evaluation.sequence_kl`]; `2 * gen_length` forwards per batch, seeded from `seed`),
            into the records' `kl_sequence` (nats per answer token) and `kl_sequence_total` (nats per answer),
            the same value on every adapter row of a prompt and 0 on the base rows. Needs a PEFT model.
        progress (`bool`, *optional*, defaults to `True`): a progress bar over the sampler calls (on stderr; shown
            by the first process only).

    Returns:
        `EvalResult` whose `records` hold the prompts and completions (`index`, `id`, `question_type`,
        `temperature`, `variant`, `prompt`, `completion`, `length`, `ended` (a stop token closed the answer inside
        the canvas), `kl`, and the `metadata_columns`) and whose `metrics` is empty.
    """
    rows = [dict(r) for r in dataset]
    if not rows:
        raise ValueError("the evaluation set is empty; pass at least one prompt.")
    if any("prompt" not in r for r in rows):
        raise ValueError("every evaluation row needs a 'prompt' column (string or chat messages).")
    temps = check_temperatures("temperatures", list(temperatures))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    peft = _is_peft(model)
    if compare_base and not peft:
        raise ValueError(
            "compare_base=True needs a PEFT model so the base arm is the adapter disabled; wrap the model with "
            "load_adapter(model, path) or pass compare_base=False."
        )
    sampler_kwargs = dict(sampler_kwargs or {})
    if "temperature" in sampler_kwargs:
        raise ValueError("pass temperatures through `temperatures`, not sampler_kwargs['temperature'].")
    mask_token_id = sampler_kwargs.pop("mask_token_id", None) or getattr(model.config, "mask_token_id", None)
    if mask_token_id is None:
        raise ValueError("the model config has no mask_token_id; pass sampler_kwargs={'mask_token_id': ...}.")
    variants = ["base", "adapter"] if compare_base else (["adapter"] if peft else ["model"])
    if sequence_kl_paths and not peft:
        raise ValueError(
            "sequence_kl_paths=True compares the adapter with the base model, so it needs a PEFT model: wrap the "
            "model with load_adapter(model, path) or pass sequence_kl_paths=False."
        )

    # One sampler per temperature, built (and so its settings checked) before anything is generated.
    samplers = [
        MaskedDiffusionSampler(model, mask_token_id=mask_token_id, temperature=t, **sampler_kwargs) for t in temps
    ]
    device = _model_device(model)
    # Tokenised per batch (not padded to the longest prompt of the whole set) and once for all temperatures/arms.
    batches = [
        (
            batch_index,
            sl,
            tokenize_prompts(tokenizer, [r["prompt"] for r in rows[sl]], max_prompt_length=max_prompt_length),
        )
        for batch_index, sl in _iter_batches(len(rows), batch_size)
    ]
    _check_batches(samplers[0], batches)
    was_training = model.training
    model.eval()
    out_rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    # Generation is most of an evaluation's time (minutes on a CPU): say how far it is. One bar, on rank 0.
    bar = tqdm(
        total=(len(temps) * len(variants) + int(sequence_kl_paths)) * len(batches),
        desc="generating",
        unit="batch",
        disable=not progress or os.environ.get("RANK", "0") != "0",
    )
    path_kl = (
        _sequence_kls(model, batches, seed, sampler_kwargs, mask_token_id, tokenizer, device, bar)
        if sequence_kl_paths
        else {}
    )
    for t_index, (temperature, sampler) in enumerate(zip(temps, samplers)):
        for variant in variants:
            bar.set_postfix_str(f"T={temperature:g}, {variant}")
            for batch_index, sl, encoded in batches:
                generator = torch.Generator(device=device).manual_seed(_batch_seed(seed, t_index, batch_index))
                texts, lengths, ended, kl = _generate_batch(sampler, tokenizer, encoded, variant, generator)
                for offset, (text, length) in enumerate(zip(texts, lengths)):
                    row = rows[sl.start + offset]
                    out_rows.append(
                        {
                            **{column: row.get(column) for column in metadata_columns},
                            "index": sl.start + offset,
                            "id": row.get("id", sl.start + offset),
                            "question_type": _question_type(row),
                            "temperature": temperature,
                            "variant": variant,
                            "prompt": _prompt_text(row["prompt"]),
                            "completion": text,
                            "length": length,
                            "ended": bool(ended[offset]),
                            "kl": float(kl[offset]),
                            **_path_kl_columns(path_kl, sl.start + offset, variant),
                        }
                    )
                bar.update()
    bar.close()
    if was_training:
        model.train()
    config = {
        "temperatures": temps,
        "sampler_kwargs": {**sampler_kwargs, "mask_token_id": int(mask_token_id)},
        "seed": seed,
        "batch_size": batch_size,
        "variants": variants,
        "num_prompts": len(rows),
    }
    return EvalResult(records=pd.DataFrame(out_rows), metrics=pd.DataFrame(), config=config)


def _check_batches(sampler: MaskedDiffusionSampler, batches: list) -> None:
    """Run the sampler's input checks (positions, vocabulary, mask token, padding) on every batch before the first
    is generated, so that a bad row fails at once instead of after the batches before it; the error names the row."""
    for _, sl, encoded in batches:
        try:
            sampler._prepare_inputs(encoded["input_ids"], encoded["attention_mask"])
        except (TypeError, ValueError) as error:
            for offset, (ids, mask) in enumerate(zip(encoded["input_ids"], encoded["attention_mask"])):
                real = mask.bool()  # the row alone, without its batch's padding
                try:
                    sampler._prepare_inputs(ids[real][None], mask[real][None])
                except (TypeError, ValueError) as row_error:
                    raise type(row_error)(f"evaluation row {sl.start + offset}: {row_error}") from row_error
            raise type(error)(f"evaluation rows {sl.start}-{sl.stop - 1}: {error}") from error


def _sequence_kls(model, batches, seed, sampler_kwargs, mask_token_id, tokenizer, device, bar) -> dict:
    """`{row index: (nats per token, nats per answer)}` from one `sequence_kl` path per prompt."""
    # The sampler's canvas length and stop tokens (from its settings and the model's config).
    probe = MaskedDiffusionSampler(model, mask_token_id=mask_token_id, **sampler_kwargs)
    stops = [*probe.eos_token_ids, *probe.eot_token_ids] or [tokenizer.eos_token_id]
    gen_length = probe.gen_length
    out: dict[int, tuple[float, float]] = {}
    bar.set_postfix_str("sequence KL")
    for batch_index, sl, encoded in batches:
        # Its own stream: a longer entropy list than the sampler's (seed, t, batch), so the two are unrelated.
        stream = int(np.random.SeedSequence([seed, 2**31 - 1, batch_index, 7]).generate_state(1)[0])
        result = sequence_kl(
            model,
            model.disable_adapter,
            encoded["input_ids"].to(device),
            encoded["attention_mask"].to(device),
            gen_length=gen_length,
            mask_token_id=mask_token_id,
            stop_token_ids=stops,
            generator=torch.Generator(device=device).manual_seed(stream),
        )
        for offset, (per_token, total) in enumerate(zip(result.per_token.tolist(), result.total.tolist())):
            out[sl.start + offset] = (per_token, total)
        bar.update()
    return out


def _path_kl_columns(path_kl: dict, index: int, variant: str) -> dict[str, float]:
    if not path_kl:
        return {}
    per_token, total = path_kl[index] if variant == "adapter" else (0.0, 0.0)
    return {"kl_sequence": per_token, "kl_sequence_total": total}


def _question_type(row: Mapping) -> str:
    qtype = row.get("question_type")
    if qtype:
        return str(qtype)
    return "multiple_choice" if row.get("question_options") else "free_text"
