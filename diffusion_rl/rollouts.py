"""Generation once per optimizer step, and reuse of each rollout over `num_iterations` updates (TRL's buffering).

Sampling dominates an RL step of a masked diffusion model (every completion costs `steps` full forwards), and one
sampler call over the whole step's prompts keeps the accelerator busier than `gradient_accumulation_steps` small
ones. So the trainer's dataloader yields the *generation batch* (`per_device_train_batch_size *
steps_per_generation` rows), the trainer samples and scores it once, and the loss runs on micro-batches split from
it (:func:`split_rollouts`). With `num_iterations > 1` the same micro-batches are reused for that many optimizer
steps (d1's diffu-GRPO), and the dataloader repeats each generation batch accordingly ([`RepeatSampler`]'s
`repeat_count`), exactly as TRL's `GRPOTrainer` arranges it:

```
micro-step s:   0    1    2    3  |  4    5    6    7      (steps_per_generation = gradient_accumulation_steps = 2,
generation:     G0 (sampled at s=0) |  G1 (sampled at s=4)     num_iterations = 2)
micro-batch:    0    1    0    1  |  0    1    0    1
iteration k:    0    0    1    1  |  0    0    1    1
```

The seed's reward `-(bias + kl_coef * KL)` needs the KL before scoring: it is one deterministic no-grad forward pair on
the clean prompt with the completion masked (:func:`~diffusion_rl.rewards.kl.clean_prompt_kl`, chunked so that
its memory does not grow with batch x gen_length x vocabulary), at generation time.

The log-likelihood estimators draw random masks, and d1's clipped ratio compares the new and old policies on the
*same* masks. Each (iteration, micro-batch) pair gets its own mask seed (:func:`draw_mask_seeds`), drawn once per
generation from the trainer's log-prob generator (so checkpoints still resume exactly): the old log-probabilities
of iteration `k` are computed before any update with seed `(k, j)`, and the gradient pass of iteration `k` on
micro-batch `j` reuses it. Iteration 0 runs before the first update of the generation, so its old log-probabilities
are the gradient pass's own, detached (no extra forward, as in TRL).
"""

from __future__ import annotations

from typing import Any

import torch
from trl.models import unwrap_model_for_generation

from .batching import RepeatSampler
from .data.chat import tokenize_prompts
from .logprobs import RolloutBatch
from .objectives import truncated_completions
from .rewards.kl import clean_prompt_kl
from .sampling.sampler import MaskedDiffusionSampler, SamplerOutput
from .timing import PhaseTimer

__all__ = [
    "RolloutMixin",
    "check_generation_batch",
    "draw_mask_seeds",
    "seeded_generator",
    "split_rollouts",
    "trim_left_padding",
]

# Seeds are drawn below 2**62 so that `seed` fits a torch.Generator's int64 seed whatever the platform.
_SEED_BOUND = 2**62


def draw_mask_seeds(generator: torch.Generator, num_iterations: int, num_chunks: int) -> list[list[int]]:
    """`num_iterations x num_chunks` seeds for the estimator's masks, drawn from `generator` (advances it)."""
    seeds = torch.randint(_SEED_BOUND, (num_iterations, num_chunks), generator=generator, device=generator.device)
    return seeds.tolist()


def seeded_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A fresh `torch.Generator` on `device` seeded with `seed` (the same seed gives the same masks)."""
    return torch.Generator(device).manual_seed(int(seed))


def trim_left_padding(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row (a micro-batch of a larger, left-padded batch).

    The model attends with the mask and RoPE is relative, so the dropped columns change nothing but the cost.
    """
    real = prompt_mask.bool().any(0)  # (P,)
    if not bool(real.any()):
        return prompt_ids, prompt_mask
    first = int(real.nonzero()[0])
    return prompt_ids[:, first:], prompt_mask[:, first:]


def check_generation_batch(args, train_dataset) -> None:
    """Raise a `ValueError` when `train_dataset` holds fewer prompts than one generation batch of all processes.

    With `steps_per_generation * num_iterations > 1` the dataloader only yields whole generation batches (an
    incomplete last one is dropped, as in TRL), so a smaller dataset would train on nothing.
    """
    if args.steps_per_generation * args.num_iterations == 1 or not hasattr(train_dataset, "__len__"):
        return
    prompts = args.train_batch_size * args.steps_per_generation * args.world_size // args.num_generations
    if len(train_dataset) < prompts:
        raise ValueError(
            f"train_dataset has {len(train_dataset)} prompts, fewer than one generation batch ({prompts} prompts = "
            f"per_device_train_batch_size={args.per_device_train_batch_size} x steps_per_generation="
            f"{args.steps_per_generation} x num_processes={args.world_size} / num_generations={args.num_generations}"
            "): add prompts, or lower steps_per_generation / the batch size."
        )


def _rows(value: Any, start: int, end: int) -> Any:
    if isinstance(value, torch.Tensor | list):
        return value[start:end]
    if isinstance(value, dict):
        return {key: _rows(item, start, end) for key, item in value.items()}
    return value  # scalars and None are shared by every chunk


def split_rollouts(rollouts: dict[str, Any], num_chunks: int, num_rows: int) -> list[dict[str, Any]]:
    """Split a generation batch into `num_chunks` contiguous micro-batches of equal size.

    Args:
        rollouts (`dict`):
            Tensors whose first dimension is the row, lists with one entry per row, dicts of those (dataset
            columns), or anything else (copied to every chunk). `prompt_ids` / `prompt_mask` are trimmed of the
            columns that are padding in every row of a chunk.
        num_chunks (`int`):
            Number of micro-batches; must divide `num_rows`.
        num_rows (`int`):
            Rows of the generation batch.

    Returns:
        `list[dict]`: the micro-batches, in row order (groups of generations stay whole when the chunk size is a
        multiple of the group size).
    """
    if num_chunks < 1 or num_rows % num_chunks:
        raise ValueError(
            f"A generation batch of {num_rows} rows cannot be split into {num_chunks} equal micro-batches; the "
            "dataloader should give per_device_train_batch_size * steps_per_generation rows."
        )
    size = num_rows // num_chunks
    chunks = []
    for j in range(num_chunks):
        chunk = {key: _rows(value, j * size, (j + 1) * size) for key, value in rollouts.items()}
        if "prompt_ids" in chunk and "prompt_mask" in chunk:
            chunk["prompt_ids"], chunk["prompt_mask"] = trim_left_padding(chunk["prompt_ids"], chunk["prompt_mask"])
        chunks.append(chunk)
    return chunks


class RolloutMixin:
    """The rollout stage of [`DiffusionReinforceTrainer`]: generation batches in, scored micro-batches out.

    Uses the trainer's `args`, `accelerator`, `model`, generators, special token ids, metrics and the hooks `_score`,
    `_estimate_logprobs`, `_compute_advantages`, `_reference`; overrides `transformers.Trainer`'s
    `get_train_dataloader`, `_get_train_sampler` and `_prepare_inputs`. `_sample` is a hook: override it to change
    how completions are drawn.
    """

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches of `per_device_train_batch_size * steps_per_generation` rows: one generation batch per micro-step
        that uses it (TRL's design; only the first of them is sampled, see [`diffusion_rl.rollouts`])."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=self._train_batch_size * self.args.steps_per_generation,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        prompts = self._train_batch_size * args.steps_per_generation * args.world_size // args.num_generations
        return RepeatSampler(
            dataset,
            args.num_generations,
            shuffle=True,
            seed=args.seed,
            batch_size=prompts,
            repeat_count=args.steps_per_generation * args.num_iterations,
        )

    def _prepare_inputs(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """The micro-batch of this micro-step, with its rollouts, rewards and advantages (no grad).

        Training: the generation batch in `inputs` is sampled and scored once every `steps_per_generation *
        num_iterations` micro-steps and its micro-batches reused in between (TRL's buffering). Evaluation: this
        batch is sampled and scored on its own.
        """
        if not self.model.training:
            return self._generate_and_score(inputs, num_chunks=1, num_iterations=1)[0]
        chunks, iterations = self.args.steps_per_generation, self.args.num_iterations
        if self._buffered_inputs is None:
            # First micro-step of `train()`, or of a resumed run: count micro-steps from the optimizer step.
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
        if self._buffered_inputs is None or self._step % (chunks * iterations) == 0:
            self._buffered_inputs = self._generate_and_score(inputs, num_chunks=chunks, num_iterations=iterations)
        micro_batch = dict(self._buffered_inputs[self._step % chunks])
        micro_batch["iteration"] = (self._step // chunks) % iterations
        return micro_batch

    def _generate(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Tokenize the prompts, sample completions in one sampler call and decode them (no grad)."""
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        prompts = [row["prompt"] for row in inputs]
        columns = {key: [row[key] for row in inputs] for key in inputs[0] if key != "prompt"}
        # TRL's max_prompt_length: longer prompts are left-truncated (tokenize_prompts warns once).
        encoded = tokenize_prompts(
            self.processing_class,
            prompts,
            max_prompt_length=self.args.max_prompt_length,
            truncate_left=self.args.max_prompt_length is not None,
        )
        prompt_ids = encoded["input_ids"].to(device)  # (N, P)
        prompt_mask = encoded["attention_mask"].to(device)  # (N, P)

        self._eval_rollouts = mode == "eval"
        with PhaseTimer(device) as timer, torch.no_grad():
            # Under ZeRO-3 this gathers the sharded weights once per rollout, not once per denoising step.
            with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as unwrapped:
                was_training = unwrapped.training
                unwrapped.eval()
                try:
                    out = self._sample(unwrapped, prompt_ids, prompt_mask)
                finally:
                    unwrapped.train(was_training)
            self._restore_activation_checkpointing()
        self._phase_seconds += timer.seconds
        self._metrics[mode]["time/sampling"].append(timer.seconds)
        if timer.peak_mb is not None:
            self._metrics[mode]["memory/peak_mb/sampling"].append(timer.peak_mb)

        completion_mask = out.completion_mask.bool()  # (N, G)
        completions_text = [
            self.processing_class.decode(ids[mask].tolist(), skip_special_tokens=True)
            for ids, mask in zip(out.completion_ids, completion_mask)
        ]
        if prompts and not isinstance(prompts[0], str):
            # Conversational prompts get conversational completions, as in TRL.
            completions = [[{"role": "assistant", "content": text}] for text in completions_text]
        else:
            completions = completions_text
        return {
            "prompts": prompts,
            "completions": completions,
            "completions_text": completions_text,
            "columns": columns,
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": out.completion_ids,
            "completion_mask": completion_mask,
            "commit_step": out.commit_step,
        }

    def _generate_and_score(self, inputs: list[dict[str, Any]], num_chunks: int, num_iterations: int) -> list[dict]:
        """Sample a generation batch, compute what must be known before any update, score it, split it.

        Returns `num_chunks` micro-batches, each with its rows' rewards, advantages, loss mask, mask seeds (one per
        inner iteration) and old per-token log-probs (`None` for iteration 0, which runs before any update).
        """
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        rollouts = self._generate(inputs)
        num_rows = len(rollouts["prompts"])
        chunks = split_rollouts(rollouts, num_chunks, num_rows)
        # Evaluation has its own streams, so turning it on does not change the training masks or samples.
        mask_stream = self._logprob_generator if mode == "train" else self._eval_logprob_generator
        seeds = draw_mask_seeds(mask_stream, num_iterations, num_chunks)
        with PhaseTimer(device) as timer, torch.no_grad():
            for j, chunk in enumerate(chunks):
                chunk["mask_seeds"] = [seeds[k][j] for k in range(num_iterations)]
                chunk["old_token_logps"] = [None] * num_iterations
                batch = self._rollout_batch(chunk)
                for k in range(1, num_iterations):  # the sampling policy's log-probs on iteration k's masks
                    generator = seeded_generator(seeds[k][j], device)
                    lp = self._estimate_logprobs(self.model, batch, generator=generator, with_kl=False)
                    chunk["old_token_logps"][k] = lp.token_logps
        self._phase_seconds += timer.seconds
        if num_iterations > 1:
            self._metrics[mode]["time/old_logprob"].append(timer.seconds)

        with PhaseTimer(device) as t_reward:
            # The seed's reward needs KL(policy || base) before scoring: one deterministic forward pair on the clean
            # prompt with the completion masked (no estimator masks, no dropout), chunked over the vocabulary.
            reference = self._reference()
            kl = None
            if reference is not None and self.args.kl_in == "reward":
                kl = clean_prompt_kl(
                    self.model, reference, rollouts["prompt_ids"], rollouts["prompt_mask"],
                    rollouts["completion_mask"], mask_token_id=self.mask_token_id,
                )  # fmt: skip
            scored = self._score(rollouts, kl)
        self._phase_seconds += t_reward.seconds
        self._metrics[mode]["time/reward"].append(t_reward.seconds)
        self._flush_reward_metrics(self._metrics[mode], device)
        extra = {column: list(values) for column, values in self._pending_extra.items()}
        self._pending_extra.clear()
        for column, values in extra.items():  # split per micro-batch below, so check the count here
            if len(values) != num_rows:
                raise ValueError(
                    f"log_extra({column!r}, values) got {len(values)} values for a batch of {num_rows} samples; "
                    "pass one value per completion."
                )
        rewards = scored.total.to(device=device, dtype=torch.float32)  # (N,)
        advantages = self._global_advantages(rewards)  # (N,)
        loss_mask = rollouts["completion_mask"]
        if self.args.mask_truncated_completions:
            stops = [t for t in (self.eos_token_id, self.eot_token_id) if t is not None]
            loss_mask = loss_mask & ~truncated_completions(rollouts["completion_ids"], stops)[:, None]
        num_items = None
        if self.args.loss_type == "dapo" and mode == "train":
            # dapo divides by the tokens of the step: per micro-batch, the mean over processes and micro-batches.
            tokens = self.accelerator.gather(loss_mask.sum().float().reshape(1)).sum()
            num_items = max(tokens.item(), 1.0) / (self.accelerator.num_processes * num_chunks)
        per_row = {
            "rewards": rewards,
            "rewards_per_func": scored.per_func.to(device, torch.float32),
            "advantages": advantages,
            "kl": kl,
            "loss_mask": loss_mask,
            "reward_extra": extra,
        }
        for chunk, rows in zip(chunks, split_rollouts(per_row, num_chunks, num_rows)):
            chunk.update(rows, reward_names=scored.names, num_items=num_items)
        return chunks

    def _sample(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> SamplerOutput:
        """Sample completions for a left-padded prompt batch `(N, P)` with the (unwrapped) policy, adapter on.

        The approximate levers (`sampler_cache`, `sampler_threshold`) apply to training rollouts, and to evaluation
        only with `eval_fast_sampler`.
        """
        sampler = MaskedDiffusionSampler(
            model,
            mask_token_id=self.mask_token_id,
            **self.args.sampler_kwargs(for_eval=self._eval_rollouts),
            eos_token_id=self.eos_token_id,
            eot_token_id=self.eot_token_id,
            pad_token_id=self.pad_token_id,
        )
        generator = self._eval_sampler_generator if self._eval_rollouts else self._sampler_generator
        return sampler.generate(prompt_ids, attention_mask=prompt_mask, generator=generator)

    def _restore_activation_checkpointing(self) -> None:
        """Re-enable activation checkpointing with the user's `activation_checkpointing_kwargs` after a rollout.

        TRL's `unwrap_model_for_generation` turns checkpointing off for generation and back on with default settings,
        so from the second step on `every_n_layers`, `offload` and the `torch.utils.checkpoint` options (e.g.
        `use_reentrant`) were dropped: more memory with `offload`, slower steps with `every_n_layers`. Enabled as
        `transformers.Trainer.__init__` enables it.
        """
        kwargs = dict(self.args.activation_checkpointing_kwargs or {})
        if not self.args.activation_checkpointing or not kwargs:  # nothing but the defaults TRL restored
            return
        every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
        self.accelerator.unwrap_model(self.model_wrapped).activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload
        )

    @staticmethod
    def _rollout_batch(inputs: dict[str, Any]) -> RolloutBatch:
        return RolloutBatch(
            prompt_ids=inputs["prompt_ids"],
            prompt_mask=inputs["prompt_mask"],
            completion_ids=inputs["completion_ids"],
            completion_mask=inputs["completion_mask"],
            commit_step=inputs["commit_step"],
        )

    def _global_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """This process's advantages, computed over the rewards of the generation batch of all processes (TRL): the
        `mean` baseline and `scale_rewards="batch"` see the whole batch; the groups are whole on every process."""
        all_rewards = self.accelerator.gather(rewards)  # (N * world,), in process order
        start = self.accelerator.process_index * len(rewards)
        return self._compute_advantages(all_rewards)[start : start + len(rewards)].detach()
