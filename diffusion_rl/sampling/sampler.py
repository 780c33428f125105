"""LLaDA's masked-diffusion sampler, exact and batched, for any Hugging Face model that returns ``.logits``.

The algorithm is the reverse process of LLaDA (Nie et al., 2025, arXiv:2502.09992; upstream ``ML-GSAI/LLaDA``
``generate.py``): the canvas is the prompt followed by ``gen_length`` mask tokens, decoded block by block (semi
autoregressively); at each step the model predicts every masked position, and the ``k`` most confident predictions
of the current block are committed for good (no re-masking), ``k`` following the linear schedule of
:mod:`.schedule`.

It is token-identical to upstream at ``temperature=0`` but does less work: logits, Gumbel noise and confidences are
computed only where they can matter (the masked positions of the current block) instead of over the whole canvas,
there is no Python loop over rows, and no per-step ``empty_cache``. What differs from upstream on purpose:

* the mask token is never predicted (its logit is set to ``-inf``): LLaDA never predicts it anyway (it is never a
  training target), but a random or lightly trained model can, and upstream would then leave it in the output;
* classifier-free guidance works with and without an attention mask (upstream crashes without one);
* ``confidence_eos_eot_inf`` gives EOS and EOT predictions zero confidence at every temperature (upstream only
  does so for both at ``temperature=0``; above it, EOS is mistakenly cleared on the noisy logits);
* Gumbel-max is computed in log space, ``argmax(l - T log(-log u))``, the same argmax as upstream's
  ``exp(l) / (-log u)^T`` without its overflow for logits above ~709;
* ties between equal confidences are broken towards the leftmost position (``torch.topk`` leaves them unspecified);
* all randomness comes from the ``torch.Generator`` passed to :meth:`MaskedDiffusionSampler.generate`.

It also records, for each generated token, the global step at which it was committed; the trajectory log-prob
estimator replays the decoding order from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_token_ids, model_vocab_size
from ..validation import check_float
from .fast import CACHE_MODES, BlockKVCache, threshold_selection
from .schedule import block_layout, num_transfer_tokens

REMASKING = ("low_confidence", "random")
# float64 elements per pass of `_predict` on CPU (1 MiB): larger passes fall out of the L2 cache.
_CPU_CHUNK_ELEMENTS = 2**17


@dataclass
class SamplerOutput:
    """Result of :meth:`MaskedDiffusionSampler.generate`.

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + gen_length)`):
            Prompt (left padding kept) followed by the generated tokens.
        completion_ids (`torch.LongTensor` of shape `(batch_size, gen_length)`):
            The generated tokens, ``sequences[:, prompt_length:]``.
        completion_mask (`torch.BoolTensor` of shape `(batch_size, gen_length)`):
            True up to and including the first EOS/EOT token of each row (everything if there is none).
        commit_step (`torch.LongTensor` of shape `(batch_size, gen_length)`):
            Global denoising step (``0..steps-1``) at which each generated token was committed. A token is visible
            to the model at step ``t`` iff its ``commit_step < t``.
        attention_mask (`torch.LongTensor` of shape `(batch_size, prompt_length + gen_length)`):
            Padding mask of ``sequences`` (the prompt's mask extended with ones over the generated part).
        prompt_length (`int`):
            Number of (left-padded) prompt positions.
        nfe (`int`):
            Number of model forward calls (a classifier-free-guidance forward batches the conditional and
            unconditional inputs and counts once).
    """

    sequences: torch.LongTensor
    completion_ids: torch.LongTensor
    completion_mask: torch.BoolTensor
    commit_step: torch.LongTensor
    attention_mask: torch.LongTensor
    prompt_length: int
    nfe: int


def _token_ids(value: int | Sequence[int] | None, name: str) -> tuple[int, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, int) else list(value)
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"`{name}` must be a non-negative int or a list of them, got {value!r}.")
    return tuple(values)


def _forward_parameters(model: nn.Module) -> set[str]:
    """Keyword arguments the underlying forward accepts (PEFT wrappers forward ``**kwargs`` to their base model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


class MaskedDiffusionSampler:
    """Batched LLaDA sampler (low-confidence or random remasking, semi-autoregressive blocks, CFG).

    Token ids left as `None` are read from ``model.config`` when it defines them (``mask_token_id``,
    ``eos_token_id``, ``eot_token_id``, ``pad_token_id``).

    Args:
        model (`torch.nn.Module`):
            A mask predictor with bidirectional attention whose forward takes ``input_ids`` and ``attention_mask``
            and returns an object with ``.logits`` of shape `(batch, length, vocab)` (e.g. a
            ``LlamaForCausalLM`` with ``is_causal=False``, LLaDA, or a PEFT wrapper of either).
        mask_token_id (`int`, *optional*):
            Id of the mask token (126336 for LLaDA).
        steps (`int`, *optional*, defaults to `128`):
            Total number of denoising steps; a multiple of ``gen_length // block_length``.
        gen_length (`int`, *optional*, defaults to `128`):
            Number of generated tokens.
        block_length (`int`, *optional*, defaults to `32`):
            Length of the semi-autoregressive blocks; divides ``gen_length``.
        temperature (`float`, *optional*, defaults to `0.0`):
            Gumbel-max sampling temperature; ``0`` is greedy (argmax).
        cfg_scale (`float`, *optional*, defaults to `0.0`):
            Unsupervised classifier-free guidance scale ``s``: logits ``un + (s + 1) (cond - un)`` where the
            unconditional input has its prompt replaced by masks. ``0`` disables it.
        remasking (`str`, *optional*, defaults to `"low_confidence"`):
            ``"low_confidence"`` commits the predictions with the highest softmax probability, ``"random"`` commits
            random masked positions.
        eos_token_id (`int` or `list[int]`, *optional*):
            End-of-sequence id(s) (LLaDA: 126081, also its padding). Ends ``completion_mask``.
        eot_token_id (`int` or `list[int]`, *optional*):
            End-of-turn id(s) (LLaDA-Instruct: 126348). Ends ``completion_mask``.
        pad_token_id (`int`, *optional*):
            Padding id; must differ from the mask id. When ``generate`` gets no attention mask, the leading run of
            pad tokens of each row is treated as left padding.
        logits_eos_inf (`bool`, *optional*, defaults to `False`):
            Forbid predicting EOS (its logit is set to ``-inf`` before sampling), as upstream.
        confidence_eos_eot_inf (`bool`, *optional*, defaults to `False`):
            Give predictions of EOS or EOT zero confidence (computed from logits without EOS/EOT) so that they
            are committed last; identical for EOS and EOT at every temperature.
        cache (`str`, *optional*, defaults to `"none"`):
            ``"none"`` is exact. ``"prefix"`` / ``"dual"`` enable the approximate block-wise KV cache of
            :mod:`.fast` (changes the sampled distribution; read its docstring before using it for RL).
        threshold (`float`, *optional*):
            Approximate confidence-threshold parallel decoding (see :mod:`.fast`): also commit every masked
            position of the block with confidence ``>= threshold``. Requires ``remasking="low_confidence"``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_token_id: int | None = None,
        steps: int = 128,
        gen_length: int = 128,
        block_length: int = 32,
        temperature: float = 0.0,
        cfg_scale: float = 0.0,
        remasking: str = "low_confidence",
        eos_token_id: int | Sequence[int] | None = None,
        eot_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        logits_eos_inf: bool = False,
        confidence_eos_eot_inf: bool = False,
        cache: str = "none",
        threshold: float | None = None,
    ):
        config = getattr(model, "config", None)

        def from_config(value, name):
            return getattr(config, name, None) if value is None else value

        mask_token_id = from_config(mask_token_id, "mask_token_id")
        if mask_token_id is None:
            raise ValueError("`mask_token_id` is required (model.config has none); LLaDA uses 126336.")
        (self.mask_token_id,) = _token_ids(mask_token_id, "mask_token_id")
        self.eos_token_ids = _token_ids(from_config(eos_token_id, "eos_token_id"), "eos_token_id")
        self.eot_token_ids = _token_ids(from_config(eot_token_id, "eot_token_id"), "eot_token_id")
        pad = _token_ids(from_config(pad_token_id, "pad_token_id"), "pad_token_id")
        self.pad_token_id = pad[0] if pad else None
        if self.pad_token_id == self.mask_token_id:
            raise ValueError(
                f"The pad token id equals the mask token id ({self.mask_token_id}): padding would be decoded as "
                "masks. Give the tokenizer a distinct pad token (LLaDA pads with EOS, 126081)."
            )
        if self.mask_token_id in self.eos_token_ids + self.eot_token_ids:
            raise ValueError(f"The mask token id ({self.mask_token_id}) cannot also be an EOS/EOT id.")

        self.num_blocks, self.steps_per_block = block_layout(gen_length, block_length, steps)
        if remasking not in REMASKING:
            raise ValueError(f"Unknown `remasking` {remasking!r}; choose one of {REMASKING}.")
        # Finite: an infinite temperature turns the Gumbel scores into NaN (the argmax then commits [MASK] tokens),
        # an infinite guidance scale the logits (NaN softmax, arbitrary commits); NaN fails `>= 0` with no hint.
        check_float("temperature", temperature, minimum=0.0, hint="0 is greedy decoding.")
        check_float("cfg_scale", cfg_scale, minimum=0.0, hint="0 disables classifier-free guidance.")
        if cache not in CACHE_MODES:
            raise ValueError(f"Unknown `cache` {cache!r}; choose one of {CACHE_MODES}.")
        if threshold is not None:
            if not 0 < threshold <= 1:
                raise ValueError(f"`threshold` must be in (0, 1] (a probability), got {threshold}.")
            if remasking != "low_confidence":
                raise ValueError("`threshold` compares model confidences; it requires remasking='low_confidence'.")
        if logits_eos_inf and not self.eos_token_ids:
            raise ValueError("`logits_eos_inf=True` needs an `eos_token_id` (none given and none in model.config).")
        if confidence_eos_eot_inf and not (self.eos_token_ids or self.eot_token_ids):
            raise ValueError("`confidence_eos_eot_inf=True` needs an `eos_token_id` or `eot_token_id`.")

        params = _forward_parameters(model)
        self._keeps_logits = "logits_to_keep" in params
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        if cache != "none" and not ({"cache", "past_key_values"} & params and "position_ids" in params):
            raise ValueError(
                f"cache={cache!r} needs a model whose forward accepts `cache` (or `past_key_values`) and "
                "`position_ids` (transformers decoder models do); use cache='none'."
            )

        self.model = model
        self._vocab_size = model_vocab_size(model)
        self.steps = steps
        self.gen_length = gen_length
        self.block_length = block_length
        self.temperature = float(temperature)
        self.cfg_scale = float(cfg_scale)
        self.remasking = remasking
        self.logits_eos_inf = logits_eos_inf
        self.confidence_eos_eot_inf = confidence_eos_eot_inf
        self.cache = cache
        self.threshold = threshold

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ input checks

    def _prepare_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise TypeError("`input_ids` must be a 2D LongTensor of shape (batch_size, prompt_length).")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"`input_ids` must hold integer token ids, got dtype {input_ids.dtype}.")
        if input_ids.shape[0] == 0:
            raise ValueError("`input_ids` is an empty batch; pass at least one prompt.")
        # RoPE runs past the declared maximum without an error, so an over-long canvas would decode silently badly.
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and input_ids.shape[1] + self.gen_length > limit:
            raise ValueError(
                f"prompt batch width {input_ids.shape[1]} + gen_length {self.gen_length} exceeds the model's "
                f"max_position_embeddings={limit}; shorten the prompts (max_prompt_length, or truncate_left=True in "
                "tokenize_prompts) or lower gen_length."
            )
        # An id past the embedding (another model's tokenizer) or a negative one (-100 padding) was a bare IndexError.
        check_token_ids(self._vocab_size, input_ids=input_ids)
        if (input_ids == self.mask_token_id).any():
            raise ValueError(
                f"A prompt contains the mask token ({self.mask_token_id}); it would be decoded as a generated "
                "position. Remove it from the prompt (or pad with a distinct pad token)."
            )
        device = self.device
        input_ids = input_ids.to(device=device, dtype=torch.long)
        if attention_mask is None and self.pad_token_id is not None:
            # Only the *leading* run of pad tokens is padding: LLaDA pads with EOS, which may also occur in a prompt.
            attention_mask = ((input_ids != self.pad_token_id).long().cummax(dim=1).values).long()
            if bool(attention_mask.all()):
                attention_mask = None
        if attention_mask is None:
            return input_ids, None
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)}, expected {tuple(input_ids.shape)}."
            )
        attention_mask = attention_mask.to(device=device, dtype=torch.long)
        if bool((attention_mask[:, 1:] < attention_mask[:, :-1]).any()):
            raise ValueError(
                "`attention_mask` is not left-padded: the generated tokens are appended after the prompt, so "
                "padding must come first. Set `tokenizer.padding_side = 'left'`."
            )
        return input_ids, attention_mask

    # ------------------------------------------------------------------ model calls

    def _logits(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        keep: torch.Tensor,
        prompt_length: int,
        **model_kwargs,
    ) -> tuple[torch.Tensor, object]:
        """Guided logits of the positions `keep` of `x` (model dtype) and the cache the model returned (or None).

        `x` is the whole canvas, or at a cached step the positions fed after the cache; its first `prompt_length`
        positions are the prompt, which the unconditional CFG input replaces by masks.
        """
        if self.cfg_scale > 0:
            un_x = x.clone()
            un_x[:, :prompt_length] = self.mask_token_id
            x = torch.cat([x, un_x], dim=0)  # (2B, L')
            attention_mask = None if attention_mask is None else attention_mask.repeat(2, 1)
        if self._keeps_logits:
            model_kwargs["logits_to_keep"] = keep
        out = self.model(input_ids=x, attention_mask=attention_mask, **model_kwargs)
        logits = out.logits if self._keeps_logits else out.logits[:, keep]  # (B or 2B, K, V)
        if self.cfg_scale > 0:
            cond, un = logits.chunk(2, dim=0)
            logits = un + (self.cfg_scale + 1) * (cond - un)
        if not model_kwargs.get("use_cache"):
            return logits, None
        # transformers >= 5.x names the returned cache `cache`, earlier releases `past_key_values`. `.get` with the
        # new name first: indexing a 5.x output by the old name logs a deprecation warning.
        cache = out.get("cache")
        return logits, cache if cache is not None else out.get("past_key_values")

    def _block_logits(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        start: int,
        end: int,
        prompt_length: int,
        kv_cache: BlockKVCache | None,
        refresh: bool,
    ) -> torch.Tensor:
        """Guided logits `(B, block_length, V)` of the current block `[start, end)` of the canvas `x`."""
        if kv_cache is None or refresh:
            keep = torch.arange(start, end, device=x.device)
            extra = {"use_cache": True} if kv_cache is not None else {}
            logits, cache = self._logits(x, attention_mask, keep, prompt_length, **extra)
            if kv_cache is not None:
                kv_cache.refresh(cache, start, end)
            return logits
        q_start, q_end = kv_cache.query_span(x.shape[1])
        model_kwargs = {
            self._cache_kwarg: kv_cache.build(),
            "use_cache": True,
            "position_ids": torch.arange(q_start, q_end, device=x.device).unsqueeze(0),
        }
        keep = torch.arange(end - start, device=x.device)  # the block leads the fed positions
        logits, _ = self._logits(x[:, q_start:q_end], kv_cache.attention_mask(attention_mask), keep, 0, **model_kwargs)
        return logits

    # ------------------------------------------------------------------ one step

    def _random(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
        # Drawn on the generator's device so that a CPU generator also drives a CUDA model.
        return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64).to(device)

    def _predict(
        self, logits: torch.Tensor, masked: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted tokens and confidences of the masked positions of the block.

        Args:
            logits (`torch.Tensor` of shape `(B, K, V)`): guided logits of the block.
            masked (`torch.BoolTensor` of shape `(B, K)`): still-masked block positions.

        Returns:
            `(x0, confidence)` of shapes `(N,)` and `(N,)` in the row-major order of ``masked.nonzero()``.
        """
        rows = logits[masked]  # (N, V): only positions that can be committed
        # On CPU the float64 work below is memory-bound: past ~1 MB of float64 per pass it falls out of cache and
        # runs up to 4x slower, so process groups of rows. Rows are independent and the Gumbel noise is drawn in row
        # order, so the result (random stream included) is the same as in one pass. GPUs get one pass.
        per_chunk = _CPU_CHUNK_ELEMENTS // rows.shape[1] if rows.device.type == "cpu" else rows.shape[0]
        x0, confidence = zip(*(self._predict_rows(chunk, generator) for chunk in rows.split(max(per_chunk, 1))))
        x0 = torch.cat(x0)  # (N,)
        if self.remasking == "random":
            return x0, self._random((x0.shape[0],), generator, x0.device)
        return x0, torch.cat(confidence)  # (N,)

    def _predict_rows(
        self, rows: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(x0, confidence)` of logit rows `(n, V)`; confidence is `None` with random remasking."""
        rows = rows.double()  # (n, V), a copy: edited in place below
        rows[:, self.mask_token_id] = -torch.inf  # committing [MASK] would leave a hole in the completion
        if self.logits_eos_inf:
            rows[:, list(self.eos_token_ids)] = -torch.inf
        if self.temperature == 0:
            x0 = rows.argmax(dim=-1)  # (n,)
        else:
            u = self._random(tuple(rows.shape), generator, rows.device)
            # argmax exp(l) / (-log u)^T == argmax l - T log(-log u): Gumbel-max on softmax(l / T)
            x0 = (rows - self.temperature * torch.log(-torch.log(u))).argmax(dim=-1)
        if self.remasking == "random":
            return x0, None
        if self.confidence_eos_eot_inf:
            rows[:, list(self.eos_token_ids + self.eot_token_ids)] = -torch.inf
        probs = torch.softmax(rows, dim=-1)  # (n, V) float64
        return x0, probs.gather(1, x0.unsqueeze(1)).squeeze(1)

    @staticmethod
    def _top_k(confidence: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Per-row top-`k[b]` mask of `confidence` (B, K), ties broken towards the lower index."""
        order = confidence.sort(dim=1, descending=True, stable=True).indices  # (B, K)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        return ranks < k.unsqueeze(1)

    # ------------------------------------------------------------------ public

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SamplerOutput:
        """Decode ``gen_length`` tokens after each (left-padded) prompt.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prompt_length)`):
                Left-padded prompts; must not contain the mask token.
            attention_mask (`torch.Tensor` of shape `(batch_size, prompt_length)`, *optional*):
                1 for prompt tokens, 0 for (left) padding.
            generator (`torch.Generator`, *optional*):
                Source of all randomness (Gumbel noise, random remasking). Without one, a generator seeded from
                the OS is used; the global RNG is never touched.

        Returns:
            [`SamplerOutput`] on the model's device.
        """
        input_ids, attention_mask = self._prepare_inputs(input_ids, attention_mask)
        device = input_ids.device
        needs_random = self.temperature > 0 or self.remasking == "random"
        if needs_random and generator is None:
            # On the inputs' device: a CPU generator would draw every step's (n, V) noise on the CPU and copy it over.
            generator = torch.Generator(device=device)
            generator.seed()

        batch, prompt_length = input_ids.shape
        length = prompt_length + self.gen_length
        x = torch.full((batch, length), self.mask_token_id, dtype=torch.long, device=device)
        x[:, :prompt_length] = input_ids
        if attention_mask is not None:
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones(batch, self.gen_length)], dim=1
            )  # (B, L)
        commit_step = torch.full((batch, self.gen_length), -1, dtype=torch.long, device=device)
        kv_cache = BlockKVCache(self.cache) if self.cache != "none" else None
        nfe = 0

        for block in range(self.num_blocks):
            start = prompt_length + block * self.block_length
            end = start + self.block_length
            schedule = num_transfer_tokens((x[:, start:end] == self.mask_token_id).sum(dim=1), self.steps_per_block)
            busy_steps = schedule.amax(dim=0).tolist()  # one sync per block: skip steps that commit nothing
            refresh = True  # the KV cache (if any) is rebuilt by the first forward of each block
            for i in range(self.steps_per_block):
                if busy_steps[i] == 0 and self.threshold is None:
                    continue
                block_x = x[:, start:end]  # (B, K) view
                masked = block_x == self.mask_token_id
                if self.threshold is not None and not bool(masked.any()):
                    break  # threshold decoding finished the block early
                logits = self._block_logits(x, attention_mask, start, end, prompt_length, kv_cache, refresh)
                refresh = False
                nfe += 1
                x0, conf = self._predict(logits, masked, generator)
                confidence = torch.full(masked.shape, -torch.inf, dtype=torch.float64, device=device)
                confidence[masked] = conf
                proposal = block_x.clone()
                proposal[masked] = x0
                commit = self._top_k(confidence, schedule[:, i]) & masked
                if self.threshold is not None:
                    commit = threshold_selection(confidence, masked, commit, self.threshold)
                x[:, start:end] = torch.where(commit, proposal, block_x)
                block_steps = commit_step[:, start - prompt_length : end - prompt_length]
                block_steps[commit] = block * self.steps_per_block + i

        completion = x[:, prompt_length:]
        stop_ids = torch.tensor(self.eos_token_ids + self.eot_token_ids, dtype=torch.long, device=device)
        is_stop = torch.isin(completion, stop_ids)
        # valid up to and including the first stop token: no stop token strictly before
        completion_mask = (is_stop.long().cumsum(dim=1) - is_stop.long()) == 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
        return SamplerOutput(
            sequences=x,
            completion_ids=completion,
            completion_mask=completion_mask,
            commit_step=commit_step,
            attention_mask=attention_mask,
            prompt_length=prompt_length,
            nfe=nfe,
        )
