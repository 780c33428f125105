"""REINFORCE fine-tuning of a masked diffusion LM: `DiffusionReinforceTrainer`.

Why not TRL's `GRPOTrainer`: it scores completions with a causal, one-token-shifted forward, which is wrong for a
mask predictor (LLaDA predicts the token *at* a masked position from the whole canvas). This trainer keeps TRL's
constructor, reward-function signature and metric names, and swaps the maths for diffusion-specific pieces:

```
generation batch (steps_per_generation micro-batches) -> chat template -> MaskedDiffusionSampler, one call
     (no grad, adapter ON) -> decode (stop at EOS/EOT) -> split into micro-batches
  -> before any update: KL to the adapter-disabled base on the clean prompt (kl_in="reward") and, for
     num_iterations > 1, per micro-batch the old log-probs of every inner iteration, each on its own mask seed
  -> reward callables (dataset columns + `kl=` as kwargs) -> advantages over the generation batch of all processes
then per micro-step: log-prob estimator (grad through LoRA; the iteration's mask seed) -> objective -> backward
```

The seed's reward `R = -(bias + 0.1 KL)` needs the per-sample KL before the rewards: one deterministic no-grad
forward pair (adapter on and off) on the clean prompt with the completion masked, at generation time
([`clean_prompt_kl`], independent of the estimator's masks). One call of `compute_loss` is one micro-batch;
`transformers.Trainer` does the gradient accumulation, AdamW, checkpoints and logging. Generation happens once
every `steps_per_generation * num_iterations` micro-steps (TRL's buffering, [`diffusion_rl.rollouts`]): the
dataloader yields generation batches, repeated by [`RepeatSampler`] for every micro-step that uses them.

Each per-device batch holds whole groups (the dataloader repeats every prompt `num_generations` times in a row and
the per-device batch size must be a multiple of `num_generations`); the advantages are computed on the rewards of
the whole generation batch gathered from all processes, as TRL does.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer, PreTrainedModel, Trainer, TrainerCallback
from transformers.utils import logging

from .batching import RepeatSampler, identity_collator
from .checkpoint_mixin import CheckpointMixin
from .checkpointing import SigtermCheckpointCallback, hub_upload_ignoring
from .checks import (
    check_lora_targets,
    check_map_style,
    check_not_already_peft,
    check_one_process_per_gpu,
    check_prompt_column,
    check_reward_columns,
    check_reward_funcs,
    check_trainable,
    check_whole_groups,
    load_masked_diffusion_model,
)
from .completions_table import log_completions_table
from .config import DiffusionReinforceConfig
from .kl_controller import KLController
from .logprobs import LogProbOutput, RolloutBatch, estimate_logprobs, logprob_estimator_std
from .model_card import TAGS, write_model_card
from .objectives import clip_fraction, compute_advantages, policy_loss, reinforce_loss, truncated_completions
from .output_lock import acquire_output_dir_lock
from .preflight import check_before_wrapping
from .resume import checkpoint_to_resume
from .rewards.base import RewardOutput, compute_rewards, reward_name
from .rewards.kl import KLReward
from .rollouts import RolloutMixin, check_generation_batch, seeded_generator
from .run_settings import COMMON_FIELDS, run_settings
from .signal_monitor import SignalMonitor
from .timing import PhaseTimer, peak_memory_mb

logger = logging.get_logger(__name__)

RewardFunc = Callable[..., list[float | None]]

# The settings stored in every checkpoint and compared on resume (diffusion_rl.run_settings), besides the rewards:
# the ones that shape the rollouts, the rewards' combination, the advantages and the loss.
RUN_SETTINGS_FIELDS = (
    *COMMON_FIELDS,
    "steps",
    "max_completion_length",
    "block_length",
    "temperature",
    "cfg_scale",
    "remasking",
    "max_prompt_length",
    "num_generations",
    "sampler_cache",
    "sampler_threshold",
    "steps_per_generation",
    "baseline",
    "scale_rewards",
    "mask_truncated_completions",
    "kl_coef",
    "kl_in",
    "kl_estimator",
    "kl_target",
    "kl_target_lr",
    "loss_type",
    "num_iterations",
    "epsilon",
    "epsilon_high",
    "logprob_estimator",
    "logprob_samples",
    "antithetic",
    "prompt_mask_prob",
)


class HubPushError(ConnectionError):
    """Uploading to the Hugging Face Hub failed (offline, unreachable or not authorised); local files are kept."""


class DiffusionReinforceTrainer(CheckpointMixin, RolloutMixin, Trainer):
    """Trainer for REINFORCE fine-tuning (LoRA by default) of masked diffusion language models such as LLaDA.

    Args:
        model (`str` or `PreTrainedModel`):
            The model to train, or a path / Hub id loaded with `AutoModelForCausalLM.from_pretrained` (LLaDA is
            registered with the Auto classes). Its config must define `mask_token_id`.
        reward_funcs (`Callable` or `list[Callable]`):
            Reward functions with TRL's signature `func(prompts, completions, **kwargs) -> list[float | None]`. The
            kwargs hold the dataset's other columns, `completion_ids`, `trainer_state`, TRL's `log_metric` /
            `log_extra` (a reward logs its own metrics and completions-table columns) and `kl` (per-sample
            KL(policy||base), a `(N,)` tensor or `None` without an adapter) so that [`KLReward`] can reuse it.
        args ([`DiffusionReinforceConfig`], *optional*):
            Configuration; defaults to `DiffusionReinforceConfig(output_dir="<model name>-DiffusionReinforce")`.
        train_dataset (`datasets.Dataset`):
            Dataset with a `prompt` column; map-style (a streaming `datasets.IterableDataset` is refused: every
            prompt is repeated `num_generations` times by index).
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`, *optional*):
            Evaluation dataset(s), same format.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            Tokenizer; loaded from the model's path when omitted.
        callbacks (`list[TrainerCallback]`, *optional*):
            Extra callbacks.
        optimizers (`tuple`, *optional*, defaults to `(None, None)`):
            Optimizer and scheduler (AdamW and the configured schedule when `None`).
        peft_config (`peft.PeftConfig`, *optional*):
            LoRA configuration. The KL to the base model is computed with the adapter disabled, so KL needs it.

    Override the hooks `_sample`, `_score`, `_compute_advantages`, `_estimate_logprobs` or `compute_loss` to change
    one stage of the pipeline (see `examples/custom_trainer.py`).

    Crash safety: a checkpoint is written to `output_dir/.tmp-checkpoint-N/` and renamed to `checkpoint-N` only once
    complete, so a process killed mid-save leaves no half-written `checkpoint-N` and `resume_from_checkpoint=True`
    picks the previous complete one. During `train()`, SIGTERM makes the trainer finish the current step, save a
    checkpoint and stop, then the signal is delivered as before (the process exits); see docs/errors.md.
    """

    _tag_names = TAGS

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: DiffusionReinforceConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        peft_config: PeftConfig | None = None,
    ):
        # Everything that needs no compute is validated first.
        args = self._resolve_args(model, args)
        check_one_process_per_gpu(args)
        reward_funcs, weights = check_reward_funcs(reward_funcs, args.reward_weights)
        self._check_kl_reward_name(args, reward_funcs, peft_config is not None or isinstance(model, PeftModel))
        check_not_already_peft(model, peft_config)
        self._check_datasets(args, train_dataset, eval_dataset, reward_funcs)
        self._check_push_to_hub(args)
        output_lock = acquire_output_dir_lock(args)  # one run per output_dir, taken before any model is loaded

        model = load_masked_diffusion_model(model)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        # Tokenizer, first rows, special tokens, lengths, finite weights: before the model is wrapped.
        check_before_wrapping(args, model, processing_class, train_dataset, eval_dataset)
        model = self._wrap_with_peft(model, peft_config, args.seed)
        check_trainable(model)
        reward_funcs, weights = self._add_kl_reward(args, model, reward_funcs, weights)

        super().__init__(
            model=model,
            args=args,
            data_collator=identity_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # compute_loss returns a per-micro-batch mean: let Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False

        self._init_rewards(reward_funcs, weights)
        self._init_special_token_ids()
        self._init_generators()
        self._init_metrics()
        self._output_lock = output_lock  # released when the process ends (or before SIGTERM is re-delivered)
        self._sigterm = SigtermCheckpointCallback(self.accelerator)
        self.add_callback(self._sigterm)
        self._kl_controller: KLController | None = None
        if args.kl_target is not None:
            self._kl_controller = KLController(args.kl_coef, args.kl_target, args.kl_target_lr)
            self.add_callback(self._kl_controller)

    # ------------------------------------------------------------------ set-up (called by __init__, in this order)

    @staticmethod
    def _resolve_args(model: str | PreTrainedModel, args: DiffusionReinforceConfig | None) -> DiffusionReinforceConfig:
        """`args`, or the default config with `output_dir="<model name>-DiffusionReinforce"`."""
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            return DiffusionReinforceConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-DiffusionReinforce")
        if not isinstance(args, DiffusionReinforceConfig):
            raise TypeError(f"args must be a DiffusionReinforceConfig, got {type(args).__name__}.")
        return args

    @staticmethod
    def _check_kl_reward_name(args: DiffusionReinforceConfig, reward_funcs: list, is_peft: bool) -> None:
        """Refuse a reward named like the [`KLReward`] that `_add_kl_reward` will append: their metrics would merge."""
        adds_kl = args.kl_in == "reward" and args.kl_coef > 0 and is_peft
        if adds_kl and not any(isinstance(f, KLReward) for f in reward_funcs):
            if KLReward.name in {reward_name(f) for f in reward_funcs}:
                raise ValueError(
                    f"a reward function is named {KLReward.name!r}, the name of the KL term added from kl_coef="
                    f"{args.kl_coef}: their metrics would be merged. Rename the function (its `name` or `__name__`), "
                    "or pass KLReward(coef=...) among reward_funcs yourself."
                )

    @staticmethod
    def _check_datasets(
        args: DiffusionReinforceConfig, train_dataset, eval_dataset, reward_funcs: list | None = None
    ) -> None:
        """Map-style datasets with a `prompt` column and no empty prompt, per-device batches of whole groups and,
        given `reward_funcs`, the training columns each reward declares it needs (see [`check_reward_columns`])."""
        if train_dataset is None:
            raise ValueError("train_dataset is required (a dataset with a 'prompt' column).")
        check_map_style(train_dataset, "train_dataset")
        check_map_style(eval_dataset, "eval_dataset")
        check_prompt_column(train_dataset, "train_dataset")
        check_prompt_column(eval_dataset, "eval_dataset")
        check_whole_groups(args, has_eval_dataset=eval_dataset is not None)
        check_generation_batch(args, train_dataset)
        if reward_funcs is not None:
            check_reward_columns(reward_funcs, train_dataset, "train_dataset")

    @staticmethod
    def _check_push_to_hub(args: DiffusionReinforceConfig) -> None:
        if args.push_to_hub:
            import huggingface_hub.constants

            if huggingface_hub.constants.HF_HUB_OFFLINE:
                raise HubPushError("push_to_hub=True but HF_HUB_OFFLINE is set; unset it or use push_to_hub=False.")

    @staticmethod
    def _wrap_with_peft(model: PreTrainedModel, peft_config: PeftConfig | None, seed: int) -> PreTrainedModel:
        """Add the adapter of `peft_config` (if any), after checking that its target modules exist."""
        if peft_config is None:
            return model
        check_lora_targets(model, getattr(peft_config, "target_modules", None))
        # The adapter's random init depends only on args.seed (same on every rank), without touching the caller's
        # global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, peft_config)

    @staticmethod
    def _add_kl_reward(
        args: DiffusionReinforceConfig, model: PreTrainedModel, reward_funcs: list, weights: list[float]
    ) -> tuple[list, list[float]]:
        """Append the seed's KL term to the rewards when `kl_in="reward"` (unless the user passed a [`KLReward`]).

        The KL to the base model is computed with the adapter disabled, so any KL term needs a PEFT model.
        """
        is_peft = isinstance(model, PeftModel)
        has_kl_reward = any(isinstance(f, KLReward) for f in reward_funcs)
        if args.kl_in == "reward" and args.kl_coef > 0 and not has_kl_reward and is_peft:
            # The seed's reward R = -(bias + kl_coef * KL): add the KL term unless the user already did.
            reward_funcs = [*reward_funcs, KLReward(coef=args.kl_coef)]
            weights = [*weights, 1.0]
            has_kl_reward = True
        elif args.kl_in == "reward" and args.kl_coef > 0 and not has_kl_reward:
            logger.warning(
                "kl_coef > 0 is ignored: the KL to the base model needs a LoRA adapter (pass peft_config), or set "
                "kl_coef=0 to silence this warning."
            )
        kl_in_loss = args.kl_in == "loss" and (args.kl_coef > 0 or args.kl_target is not None)
        if not is_peft and (has_kl_reward or kl_in_loss):
            raise ValueError(
                "KL(policy||base) is computed with the LoRA adapter disabled, so it needs a PEFT model: pass "
                "peft_config (or a PeftModel), or drop the KL term (kl_coef=0, no kl_target and no KLReward)."
            )
        return reward_funcs, weights

    def _init_rewards(self, reward_funcs: list, weights: list[float]) -> None:
        self.reward_funcs = reward_funcs
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self.reward_names = [reward_name(f) for f in reward_funcs]
        if self.args.num_generations > 1 and self.args.temperature == 0 and self.args.remasking != "random":
            logger.warning(
                "temperature=0 with low-confidence remasking is deterministic: all num_generations completions of a "
                "prompt are identical and group baselines give zero advantages. Use temperature > 0."
            )

    def _init_special_token_ids(self) -> None:
        """Mask, EOS, EOT and pad ids: the model's config first (EOS falls back to the tokenizer's), pad from the
        tokenizer."""
        config = self.accelerator.unwrap_model(self.model).config
        self.mask_token_id = config.mask_token_id
        self.eos_token_id = getattr(config, "eos_token_id", None) or self.processing_class.eos_token_id
        self.eot_token_id = getattr(config, "eot_token_id", None)
        self.pad_token_id = self.processing_class.pad_token_id

    def _init_generators(self) -> None:
        """Per-process RNG streams (sampling; masks of the log-prob estimator; the estimator-std metric), each with its
        own seed so that no stream perturbs another, saved with every checkpoint."""
        seed = self.args.sampler_seed if self.args.sampler_seed is not None else self.args.seed
        rank = self.args.process_index
        self._sampler_generator = torch.Generator(self.args.device).manual_seed(seed + 7919 * rank)
        self._logprob_generator = torch.Generator(self.args.device).manual_seed(seed + 7919 * rank + 104729)
        self._std_generator = torch.Generator(self.args.device).manual_seed(seed + 7919 * rank + 224737)
        # Evaluation draws from its own streams, re-seeded at every `evaluate()`: turning evaluation on must not
        # change the training run, and every evaluation of a run sees the same noise.
        self._eval_seed = seed + 7919 * rank + 350377
        self._eval_sampler_generator = torch.Generator(self.args.device)
        self._eval_logprob_generator = torch.Generator(self.args.device)
        self._reset_eval_generators()

    def _reset_eval_generators(self) -> None:
        self._eval_sampler_generator.manual_seed(self._eval_seed)
        self._eval_logprob_generator.manual_seed(self._eval_seed + 1)

    def _init_metrics(self) -> None:
        """Per-micro-batch metrics and completion rows, averaged / written at each `log` call."""
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._completions = {"train": defaultdict(list), "eval": defaultdict(list)}
        # What the reward functions report through TRL's `log_metric` / `log_extra` kwargs, flushed after scoring.
        self._pending_metrics: dict[str, list[float]] = defaultdict(list)
        self._pending_extra: dict[str, list] = defaultdict(list)
        self._phase_seconds = 0.0
        # The micro-batches of the current generation and the micro-step counter (see diffusion_rl.rollouts).
        self._buffered_inputs: list[dict[str, Any]] | None = None
        self._step = 0
        self._eval_rollouts = False
        # A learning signal that vanished for a whole logging window is reported (see diffusion_rl.signal_monitor).
        self._signal_monitor = SignalMonitor(self.reward_names, kl_in_loss=self.args.kl_in == "loss")
        self._std_measured_step: int | None = None

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`; on SIGTERM it saves a checkpoint at the end of the current step, stops, then exits.

        `resume_from_checkpoint` is checked first (see [`diffusion_rl.resume`]): a folder that lacks a file a resume
        needs, or holds a truncated one, raises `IncompleteCheckpointError` naming the file; `True` picks the newest
        *complete* checkpoint and logs which newer ones it skipped and why. The adapter in it must fit the model.
        Settings that differ from the checkpoint's (`run_settings.json`: the learning rate, the rewards, `kl_coef`,
        the sampler, ...) are listed in one `ChangedSettingsWarning`, each with whether it takes effect.
        """
        checkpoint = checkpoint_to_resume(
            resume_from_checkpoint, self.model, self.args, self.accelerator, settings=self._run_settings()
        )
        self._buffered_inputs = None  # rollouts of an earlier `train()` call are stale
        with self._sigterm.installed():
            return super().train(checkpoint, *args, **kwargs)

    def _run_settings(self) -> dict[str, Any]:
        """What `run_settings.json` holds: `RUN_SETTINGS_FIELDS`, the reward names and their effective weights (the
        KL term added from `kl_coef` included)."""
        weights = [float(f"{w:.7g}") for w in self.reward_weights.tolist()]  # float32: 0.3, not 0.30000001192...
        return run_settings(self.args, RUN_SETTINGS_FIELDS, rewards=self.reward_names, reward_weights=weights)

    def evaluate(self, *args, **kwargs):
        """`Trainer.evaluate` on the evaluation's own RNG streams, re-seeded each time (training is unaffected)."""
        self._reset_eval_generators()
        return super().evaluate(*args, **kwargs)

    # ------------------------------------------------------------------ data

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler:
        return RepeatSampler(eval_dataset, self._num_generations(training=False), shuffle=False)

    def _num_generations(self, training: bool | None = None) -> int:
        """Completions per prompt: `num_generations` in training, TRL's `num_generations_eval` (default: the same)
        in evaluation; `training=None` follows the model's mode."""
        training = self.model.training if training is None else training
        return self.args.num_generations if training else self.args.num_generations_eval or self.args.num_generations

    def _remove_unused_columns(self, dataset, description: str | None = None):
        # Every column may be needed by a reward function: keep them all.
        return dataset

    def _get_collator_with_removed_columns(self, data_collator, description: str | None = None):
        return data_collator

    # ------------------------------------------------------------------ scoring and maths (overridable hooks)

    def _reference(self):
        """Context-manager factory under which the model is the frozen base (adapter disabled); `None` without PEFT."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        return unwrapped.disable_adapter if isinstance(unwrapped, PeftModel) else None

    def _estimate_logprobs(
        self, model, batch: RolloutBatch, generator: torch.Generator | None = None, with_kl: bool = True
    ) -> LogProbOutput:
        """Sequence and per-token log-probabilities with grad (where enabled), per-draw estimates, entropy, and the KL
        to the base (`with_kl` and a PEFT model). `generator` sets the masks (the trainer passes the iteration's mask
        seed); defaults to the trainer's log-prob stream."""
        return estimate_logprobs(
            model,
            batch,
            generator=self._logprob_generator if generator is None else generator,
            recompute=self.args.logprob_recompute,
            reference=self._reference() if with_kl else None,
            kl_estimator=self.args.kl_estimator,
            # The KL needs a graph only when it is a loss term.
            kl_requires_grad=self.args.kl_in == "loss",
            **self._estimator_kwargs(),
        )

    def _estimator_kwargs(self) -> dict:
        """Estimator settings shared by the training pass and the estimator-std metric."""
        return {
            "estimator": self.args.logprob_estimator,
            "mask_token_id": self.mask_token_id,
            "num_samples": self.args.logprob_samples,
            "prompt_mask_prob": self.args.prompt_mask_prob,
            "antithetic": self.args.antithetic,
            "steps": self.args.steps,
            "block_length": self.args.block_length,
        }

    def _score(self, inputs: dict[str, Any], kl: torch.Tensor | None) -> RewardOutput:
        """Call the reward functions (TRL signature) on the decoded completions.

        Besides the dataset columns, the kwargs are TRL's `completion_ids`, `trainer_state`, `log_metric(name,
        value)` (a scalar for this batch, averaged over the logging interval and the processes, logged as `name`)
        and `log_extra(column, values)` (one value per sample, a column of the completions table), plus `kl`.
        Raises [`RewardError`] (a `ValueError` naming the reward) when one raises or returns NaN/inf.
        """
        kwargs = dict(inputs["columns"])
        kwargs["completion_ids"] = [
            ids[m].tolist() for ids, m in zip(inputs["completion_ids"], inputs["completion_mask"])
        ]
        kwargs["trainer_state"] = self.state
        kwargs["log_metric"] = self._log_metric
        kwargs["log_extra"] = self._log_extra
        # On the CPU, as everything else a reward gets: reward code written on a CPU (`np.asarray(kl)`) must not
        # break on a GPU. Detached: a reward is a constant for the gradient.
        kwargs["kl"] = None if kl is None else kl.detach().cpu()
        return compute_rewards(
            self.reward_funcs, inputs["prompts"], inputs["completions"], self.reward_weights, **kwargs
        )

    def _log_metric(self, name: str, value: float) -> None:
        """TRL's `log_metric` reward kwarg: record a scalar metric `name` for the batch being scored."""
        self._pending_metrics[name].append(float(value))

    def _log_extra(self, column: str, values: list) -> None:
        """TRL's `log_extra` reward kwarg: add `values` (one per sample of the batch) to the completions table."""
        self._pending_extra[column].extend(values)

    def _compute_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """Advantages `(N,)` from rewards `(N,)`: `baseline` then `scale_rewards` (groups are consecutive rows)."""
        return compute_advantages(
            rewards,
            num_generations=self._num_generations(),
            baseline=self.args.baseline,
            scale_rewards=self.args.scale_rewards,
        )

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """Policy-gradient loss of one micro-batch: the seed's `-(1/M) sum_i log p_i A_i` by default, or the
        configured `loss_type`, clipped ratio (`num_iterations > 1`) and KL term (`kl_in="loss"`); see
        [`diffusion_rl.objectives`]."""
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        batch = self._rollout_batch(inputs)
        iteration = inputs.get("iteration", 0)
        generator = seeded_generator(inputs["mask_seeds"][iteration], device)  # the masks of the old log-probs
        kl_in_loss = self.args.kl_in == "loss"
        with PhaseTimer(device) as t_logprob:
            lp = self._estimate_logprobs(model, batch, generator=generator, with_kl=kl_in_loss)
        old = inputs["old_token_logps"][iteration]
        if old is None and self.args.num_iterations > 1 and mode == "train" and lp.token_logps is not None:
            old = lp.token_logps.detach()  # iteration 0 runs before any update of this generation
        advantages = inputs["advantages"]
        kl_term = lp.kl if kl_in_loss and lp.kl is not None else None
        kl_coef = self._loss_kl_coef() if kl_term is not None else 0.0
        if lp.token_logps is None and self.args.loss_type == "reinforce" and old is None:
            # An estimator that only returns sequence log-probabilities still supports the seed's loss.
            loss = reinforce_loss(lp.logps, advantages, kl=kl_term, kl_coef=kl_coef)
        elif lp.token_logps is None:
            raise ValueError(
                f"loss_type={self.args.loss_type!r} / num_iterations={self.args.num_iterations} need per-token "
                "log-probabilities, but the estimator returned LogProbOutput.token_logps=None."
            )
        else:
            loss = policy_loss(
                lp.token_logps,
                inputs["loss_mask"],
                advantages,
                loss_type=self.args.loss_type,
                old_token_logps=old,
                epsilon=self.args.epsilon,
                epsilon_high=self.args.epsilon_high,
                kl=kl_term,
                kl_coef=kl_coef,
                max_completion_length=self.args.max_completion_length,
                num_items=inputs.get("num_items"),
            )

        self._phase_seconds += t_logprob.seconds
        metrics = self._metrics[mode]
        metrics["time/logprob"].append(t_logprob.seconds)
        if t_logprob.peak_mb is not None:
            metrics["memory/peak_mb/logprob"].append(t_logprob.peak_mb)
        if old is not None:
            fraction = clip_fraction(
                lp.token_logps, old, inputs["loss_mask"], advantages, loss_type=self.args.loss_type,
                epsilon=self.args.epsilon, epsilon_high=self.args.epsilon_high,
            )  # fmt: skip
            metrics["clip_ratio/region_mean"].append(self.accelerator.gather(fraction.reshape(1)).mean().item())
        self._record_metrics(mode, inputs, lp, first_iteration=iteration == 0)
        if mode == "train" and self._kl_controller is not None and kl_term is not None:
            metrics["kl_coef"].append(kl_coef)
            self._kl_controller.observe(metrics["kl"][-1])  # this micro-batch's KL, averaged over processes
        if mode == "train":
            flags = SignalMonitor.batch_flags(inputs["rewards_per_func"], advantages, loss)
            self._signal_monitor.observe(self.accelerator.gather(flags), self.state.global_step)
        if mode == "train" and self._should_measure_estimator_std():
            metrics["logprob/estimator_std"].append(self._estimator_std(model, batch))
        outputs = {"rewards": inputs["rewards"], "advantages": advantages, "logps": lp.logps}
        return (loss, outputs) if return_outputs else loss

    def _loss_kl_coef(self) -> float:
        """The KL coefficient of the loss: `kl_coef`, plus the dual-ascent multiplier when `kl_target` is set."""
        return self._kl_controller.coef if self._kl_controller is not None else self.args.kl_coef

    def _load_callback_state(self) -> None:
        # The multiplier is training state, not an option: restore it on every resume, whatever
        # `restore_callback_states_from_checkpoint` says (Trainer restores callbacks only when it is True).
        super()._load_callback_state()
        if self._kl_controller is None:
            return
        # Trainer may have replaced the callback by a copy rebuilt from the checkpoint: use the registered one.
        self._kl_controller = next(cb for cb in self.callback_handler.callbacks if isinstance(cb, KLController))
        saved = self.state.stateful_callbacks.get(type(self._kl_controller).__name__)
        if isinstance(saved, list):
            saved = saved[-1] if saved else None
        if saved is None:
            logger.warning("The checkpoint has no KLController state: the KL multiplier restarts at 0.")
            return
        self._kl_controller.multiplier = float(saved["attributes"]["multiplier"])

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        start = time.perf_counter()
        self._phase_seconds = 0.0  # the timed phases of this micro-step (sampling only when it generates)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step += 1
        if self.accelerator.device.type == "cuda":  # the backward is only queued when training_step returns
            torch.cuda.synchronize(self.accelerator.device)
        # The backward pass is what remains of the step once the timed phases are taken out.
        self._metrics["train"]["time/backward"].append(max(time.perf_counter() - start - self._phase_seconds, 0.0))
        self._metrics["train"]["memory/peak_mb"].append(peak_memory_mb(self.accelerator.device))
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ metrics

    def _should_measure_estimator_std(self) -> bool:
        """Once per measured optimizer step (its first micro-batch), not on every accumulation micro-batch."""
        every = self.args.estimator_variance_every
        step = self.state.global_step
        if not every or step % every or self._std_measured_step == step:
            return False
        self._std_measured_step = step
        return True

    def _estimator_std(self, model, batch: RolloutBatch) -> float:
        """Std of the log-prob estimator at the configured number of draws (two extra no-grad runs)."""
        std = logprob_estimator_std(
            model,
            batch,
            generator=self._std_generator,  # its own stream: the training masks do not depend on this metric
            **self._estimator_kwargs(),
        )
        return self.accelerator.gather(std.reshape(1).float()).mean().item()

    def _record_metrics(self, mode: str, inputs: dict[str, Any], lp: LogProbOutput, first_iteration: bool) -> None:
        """Log-prob metrics of every pass; reward, completion and table rows once per rollout (its first iteration)."""
        metrics = self._metrics[mode]
        gather = self.accelerator.gather
        # With kl_in="reward" the KL comes from the generation-time pass (what the rewards saw).
        kl = lp.kl if lp.kl is not None else (inputs["kl"] if first_iteration else None)
        if kl is not None:
            metrics["kl"].append(gather(kl.detach().float()).mean().item())
        if lp.entropy is not None:
            metrics["entropy"].append(gather(lp.entropy.detach().float()).mean().item())
        metrics["logprob/mean"].append(gather(lp.logps.detach().float()).mean().item())
        if not first_iteration:
            return

        rewards, advantages = inputs["rewards"], inputs["advantages"]
        all_rewards = gather(rewards)  # (N * world,)
        metrics["reward"].append(all_rewards.mean().item())
        group = self._num_generations()
        if group > 1:
            # TRL's reward_std: the within-group std, averaged over groups.
            metrics["reward_std"].append(all_rewards.view(-1, group).std(dim=1).mean().item())
        else:
            metrics["reward_std"].append(all_rewards.std().item() if all_rewards.numel() > 1 else 0.0)
        per_func = gather(inputs["rewards_per_func"])  # (N * world, K)
        for k, name in enumerate(inputs["reward_names"]):
            column = per_func[:, k]
            valid = column[~torch.isnan(column)]
            metrics[f"rewards/{name}/mean"].append(valid.mean().item() if valid.numel() else math.nan)
            metrics[f"rewards/{name}/std"].append(valid.std().item() if valid.numel() > 1 else math.nan)

        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        lengths = gather(completion_mask.sum(1).float())
        metrics["completions/mean_length"].append(lengths.mean().item())
        metrics["completions/min_length"].append(lengths.min().item())
        metrics["completions/max_length"].append(lengths.max().item())
        stops = [t for t in (self.eos_token_id, self.eot_token_id) if t is not None]
        terminated = ~truncated_completions(completion_ids, stops)
        metrics["completions/clipped_ratio"].append(1.0 - gather(terminated.float()).mean().item())
        # The log_extra columns of these rows (captured at scoring time, split per micro-batch).
        self._pending_extra.update(inputs["reward_extra"])
        extra = self._flush_reward_extra(len(inputs["prompts"]))

        if self.args.log_completions or self.args.num_completions_to_print:
            table = self._completions[mode]
            table["step"] += [self.state.global_step] * len(all_rewards)
            table["prompt"] += self._gather_objects([str(p) for p in inputs["prompts"]])
            table["completion"] += self._gather_objects(inputs["completions_text"])
            for k, name in enumerate(inputs["reward_names"]):
                table[f"rewards/{name}"] += per_func[:, k].tolist()
            table["reward"] += all_rewards.tolist()
            table["advantage"] += gather(advantages).tolist()
            table["logp"] += gather(lp.logps.detach().float()).tolist()
            if kl is not None:
                table["kl"] += gather(kl.detach().float()).tolist()
            for column, values in extra.items():
                table[column] += values

    def _gather_objects(self, items: list) -> list:
        if self.accelerator.num_processes == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(items)

    def _flush_reward_metrics(self, metrics: dict[str, list], device: torch.device) -> None:
        """Average what the rewards passed to `log_metric` for this batch over processes (weighted by how many values
        each rank recorded, as TRL does) and append it to `metrics`."""
        names = sorted(self._pending_metrics)
        if self.accelerator.num_processes > 1:
            names = sorted({name for keys in self._gather_objects([names]) for name in keys})
        for name in names:
            values = self._pending_metrics.get(name, [])
            stats = torch.tensor([[sum(values), len(values)]], device=device, dtype=torch.float32)
            stats = self.accelerator.gather(stats)  # (world, 2)
            total, count = stats.sum(0).tolist()
            metrics[name].append(total / count if count else math.nan)
        self._pending_metrics.clear()

    def _flush_reward_extra(self, num_samples: int) -> dict[str, list]:
        """The `log_extra` columns of this batch, gathered over processes (`None` where a rank logged nothing);
        empty unless the completions table is logged."""
        for column, values in self._pending_extra.items():
            if len(values) != num_samples:
                raise ValueError(
                    f"log_extra({column!r}, values) got {len(values)} values for a batch of {num_samples} samples; "
                    "pass one value per completion."
                )
        if not (self.args.log_completions or self.args.num_completions_to_print):
            self._pending_extra.clear()
            return {}
        columns = sorted(self._pending_extra)
        if self.accelerator.num_processes > 1:
            columns = sorted({column for keys in self._gather_objects([columns]) for column in keys})
        out = {}
        for column in columns:
            values = list(self._pending_extra.get(column, [None] * num_samples))
            out[column] = self._gather_objects(values)
        self._pending_extra.clear()
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {}
        for key, values in self._metrics[mode].items():
            valid = [v for v in values if not math.isnan(v)]
            metrics[key] = sum(valid) / len(valid) if valid else None
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        if mode == "train":
            messages = self._signal_monitor.end_window(self.state.global_step, logs.get("grad_norm"))
            if self.accelerator.is_main_process:
                self._signal_monitor.warn(messages)
        super().log(logs, start_time)
        self._metrics[mode].clear()
        table = self._completions[mode]
        if table and self.accelerator.is_main_process:
            log_completions_table(self, dict(table), mode)
        table.clear()

    # ------------------------------------------------------------------ Hub

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        """Write `output_dir/README.md`: PEFT metadata, tags, reward configuration and final metrics."""
        if self.is_world_process_zero():
            write_model_card(self, self.args.output_dir, model_name, dataset_name, tags)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            # After PEFT's own README: ours carries the reward configuration and the metrics.
            write_model_card(self, output_dir if output_dir is not None else self.args.output_dir)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, **kwargs):
        """Save the adapter and card locally, then upload; a failed upload raises `HubPushError`, files are kept."""
        self.save_model(_internal_call=True)
        self.create_model_card(model_name=kwargs.get("model_name"))
        from transformers.utils.hub import hf_api

        try:
            with hub_upload_ignoring(hf_api()):  # staging folders and the output_dir lock stay local
                return super().push_to_hub(commit_message=commit_message, blocking=blocking, **kwargs)
        except OSError as error:  # offline, unreachable, unauthorised: all OSError subclasses in huggingface_hub
            raise HubPushError(
                f"Uploading to the Hub failed ({type(error).__name__}: {error}). The adapter and model card are saved "
                f"in {self.args.output_dir!r}; fix the connection/credentials (or unset HF_HUB_OFFLINE) and call "
                "trainer.push_to_hub() again."
            ) from error
