"""Training arguments of `DiffusionReinforceTrainer`, in the style of TRL's `GRPOConfig`.

The defaults reproduce the seed's recipe where it published one (REINFORCE without baseline, reward
``-(bias + 0.1 KL)``, AdamW at 2e-5, LLaDA sampling with 128 steps, block 32, no CFG) and run on a CPU without flags
(float32: no bf16 unless asked). Everything is validated in `__post_init__`, before a model is loaded.
"""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .logprobs import ESTIMATORS, KL_ESTIMATORS
from .objectives import BASELINES, LOSS_TYPES, SCALE_REWARDS
from .sampling.fast import CACHE_MODES
from .validation import check_bool, check_float, check_float_list, check_int, check_training_arguments

__all__ = ["DiffusionReinforceConfig"]

REMASKING = ("low_confidence", "random")
KL_IN = ("reward", "loss")

# The seed says "random token masking to simulate partial observability" without a rate; d1 uses 0.3.
DEFAULT_PROMPT_MASK_PROB = 0.15


@dataclass
class DiffusionReinforceConfig(TrainingArguments):
    r"""
    Configuration of [`DiffusionReinforceTrainer`]: REINFORCE fine-tuning of a masked diffusion model (LLaDA).

    Only the parameters specific to this trainer are listed; see [`~transformers.TrainingArguments`] for the others.
    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5` (the seed's AdamW rate),
    `remove_unused_columns=False` (reward functions read dataset columns), `logging_steps=10`,
    `ddp_find_unused_parameters=False` (every trainable parameter, e.g. each LoRA matrix, gets a gradient in every
    step; transformers would default a PEFT model to `True`, which costs DDP a graph traversal per step and a
    warning that no parameter was unused).

    Parameters:
        > Sampling (the rollout)

        steps (`int`, *optional*, defaults to `128`):
            Denoising steps of the sampler for the whole completion; a multiple of the number of blocks.
        max_completion_length (`int`, *optional*, defaults to `128`):
            Completion length `gen_length` (the sampler's canvas size); a multiple of `block_length`.
        block_length (`int`, *optional*, defaults to `32`):
            Semi-autoregressive block length of the sampler.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature (`0` = greedy). REINFORCE needs on-policy samples; at `1.0` the `"trajectory"`
            estimator is the exact log-probability of the sampled tokens given the order.
        cfg_scale (`float`, *optional*, defaults to `0.0`):
            Unsupervised classifier-free guidance scale (`0` disables it).
        remasking (`str`, *optional*, defaults to `"low_confidence"`):
            Which positions the sampler commits first: `"low_confidence"` or `"random"`.
        max_prompt_length (`int`, *optional*):
            Left-truncate prompts to this many tokens after the chat template, as TRL's `GRPOConfig` does (one
            warning per process; the start of the template is what is cut). `None` keeps them whole; a prompt that
            then does not fit the model with its completion is an error.
        num_generations (`int`, *optional*, defaults to `1`):
            Completions sampled per prompt (the seed samples one). The global batch
            (`per_device_train_batch_size * num_processes * gradient_accumulation_steps`) must be a multiple of it.
        num_generations_eval (`int`, *optional*):
            Completions sampled per prompt during evaluation (TRL's name; fewer saves compute); `None` uses
            `num_generations`. `per_device_eval_batch_size` must be a multiple of it.
        sampler_seed (`int`, *optional*):
            Seed of the sampler's and estimator's `torch.Generator` (combined with the process index); defaults to
            `seed`.
        sampler_cache (`str`, *optional*, defaults to `"none"`):
            Block-wise KV cache of the rollout sampler (Fast-dLLM): `"none"` (exact), `"prefix"` or `"dual"`
            (approximate: the rollouts are slightly off-policy; see [`diffusion_rl.sampling.fast`]).
        sampler_threshold (`float`, *optional*):
            Confidence-threshold parallel decoding of the rollout sampler: also commit every masked position of the
            block whose confidence is `>= sampler_threshold` (approximate; needs `remasking="low_confidence"`).
            `None` is exact. The `"trajectory"` estimator replays the exact decoding path and refuses both levers.
        eval_fast_sampler (`bool`, *optional*, defaults to `False`):
            Also use `sampler_cache` / `sampler_threshold` when evaluating (`eval_dataset`, the before/after report).
            Off by default, so that evaluation numbers do not depend on the approximation.
        steps_per_generation (`int`, *optional*):
            Micro-batches sampled by one sampler call (TRL's name): the rollouts of `steps_per_generation`
            micro-batches are generated together, scored, then split for the loss. Defaults to
            `gradient_accumulation_steps` (one generation per optimizer step); must divide it. TRL's
            `generation_batch_size` is `per_device_train_batch_size * num_processes * steps_per_generation`.

        > Rewards and baseline

        reward_weights (`list[float]`, *optional*):
            Weight of each reward function; `None` weights them all `1.0`.
        baseline (`str`, *optional*, defaults to `"none"`):
            `"none"` (the seed: `A = R`), `"mean"` (batch mean), `"rloo"` (leave-one-out within a prompt's
            generations) or `"group"` (GRPO: the group mean). `"rloo"` and `"group"` need `num_generations >= 2`.
            Computed over the whole generation batch of all processes (TRL).
        scale_rewards (`str`, *optional*):
            Divide the centred rewards by a standard deviation (TRL): `"group"` (of the prompt's generations),
            `"batch"` (of the whole generation batch) or `"none"`. `None` follows `baseline`: `"group"` for
            `baseline="group"` (GRPO's `(R - mean) / (std + 1e-4)`), `"none"` otherwise.
        mask_truncated_completions (`bool`, *optional*, defaults to `False`):
            Give zero loss weight to completions without EOS/EOT inside `max_completion_length` (TRL); they still
            count in the batch size and in the baselines.
        kl_coef (`float`, *optional*, defaults to `0.1`):
            Weight of KL(policy || base) (the seed's 0.1). TRL's `beta` is `kl_coef=beta` with `kl_in="loss"` and
            `kl_estimator="k3"`.
        kl_in (`str`, *optional*, defaults to `"reward"`):
            `"reward"` (the seed: `R = reward - kl_coef * KL`, a constant for the gradient, through `KLReward`) or
            `"loss"` (a differentiable penalty `kl_coef * mean(KL)` added to the loss).
        kl_estimator (`str`, *optional*, defaults to `"full"`):
            `"full"` (exact sum over the vocabulary at each position, the seed's definition), `"k1"` or `"k3"`
            (single-sample estimators at the completion token).
        kl_target (`float`, *optional*):
            A KL budget in nats/token (`kl_in="loss"` only). When set, the loss's KL coefficient is
            `kl_coef + lambda`, where the multiplier `lambda >= 0` rises by dual ascent while the logged `kl` is above
            the budget and falls back while it is below: `lambda <- max(0, lambda + kl_target_lr * (kl - kl_target))`
            after every optimizer step. It is logged as `kl_coef` and saved in checkpoints. `None` keeps the fixed
            `kl_coef`. See [`diffusion_rl.kl_controller.KLController`].
        kl_target_lr (`float`, *optional*, defaults to `0.05`):
            Step size of that multiplier: each step the coefficient moves by `kl_target_lr` times the KL's distance
            to the budget.

        > Objective (see [`diffusion_rl.objectives`])

        loss_type (`str`, *optional*, defaults to `"reinforce"`):
            `"reinforce"` (the seed: `-(1/M) sum_i logp_i A_i`, `logp` summed over the completion), or TRL's
            token-normalised `"grpo"` (mean over each completion's tokens, then over completions), `"dr_grpo"` (sum
            over tokens / (batch * max_completion_length)) or `"dapo"` (sum over tokens / number of tokens).
        num_iterations (`int`, *optional*, defaults to `1`):
            Optimizer steps per generation (d1's diffu-GRPO / TRL's PPO-style reuse). With more than one, the loss
            is the clipped surrogate with ratios to the log-probabilities of the sampling policy, computed before
            the updates on the same random masks (one mask seed per inner iteration); per token for the token-level
            loss types, per sequence for `"reinforce"`.
        epsilon (`float`, *optional*, defaults to `0.2`):
            Lower clip range of the ratio (`1 - epsilon`).
        epsilon_high (`float`, *optional*):
            Upper clip range (`1 + epsilon_high`); defaults to `epsilon` (DAPO raises it, e.g. 0.28).

        > Log-likelihood estimation

        logprob_estimator (`str`, *optional*, defaults to `"one_step"`):
            `"one_step"` (d1 mean-field, the seed), `"mc_elbo"` (LLaDA's Monte-Carlo ELBO) or `"trajectory"`
            (TraceRL replay of the sampling order); see [`diffusion_rl.logprobs`].
        logprob_samples (`int`, *optional*, defaults to `1`):
            Monte-Carlo draws (`one_step`, `mc_elbo`) or denoising steps evaluated (`trajectory`; set it to `steps`
            for the exact sum).
        antithetic (`bool`, *optional*, defaults to `False`):
            Coupled complementary masks (`mc_elbo` only; needs an even `logprob_samples`).
        logprob_recompute (`bool`, *optional*):
            Checkpoint each draw's policy forward so memory does not grow with `logprob_samples` (~35-45% more
            log-prob time). Defaults to on when `logprob_samples > 1`.
        prompt_mask_prob (`float`, *optional*):
            Probability of masking each prompt token when estimating log-probabilities. Defaults to `0.15` for
            `one_step` (the seed's "random token masking to simulate partial observability"; the rate was not
            published, d1 uses 0.3) and to `0.0` otherwise; `trajectory` requires `0`.
        estimator_variance_every (`int`, *optional*, defaults to `10`):
            Log `logprob/estimator_std` (two extra no-grad estimates) every this many steps; `0` never.

        > Logging

        log_completions (`bool`, *optional*, defaults to `False`):
            Write the prompts, completions and rewards of each logging step to `output_dir/completions/*.parquet`
            (and to wandb / tensorboard when `report_to` asks).
        num_completions_to_print (`int`, *optional*):
            Completions printed with each log (`None` prints none).
    """

    # TrainingArguments defaults changed for this trainer.
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (the seed's 2e-5)."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns: reward functions receive them as keyword arguments."},
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in [0, 1) as a ratio of all steps)."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's find_unused_parameters. False: every trainable parameter (each LoRA matrix) gets a "
            "gradient every step, so the search (and DDP's warning that found nothing) is skipped."
        },
    )

    # Sampling
    steps: int = field(default=128, metadata={"help": "Sampler denoising steps (a multiple of the number of blocks)."})
    max_completion_length: int = field(
        default=128, metadata={"help": "Completion length gen_length (a multiple of block_length)."}
    )
    block_length: int = field(default=32, metadata={"help": "Semi-autoregressive block length of the sampler."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    cfg_scale: float = field(default=0.0, metadata={"help": "Classifier-free guidance scale (0 disables it)."})
    remasking: str = field(
        default="low_confidence",
        metadata={"help": "Commit order: 'low_confidence' or 'random'.", "choices": REMASKING},
    )
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Left-truncate prompts to this many tokens (None keeps them whole)."}
    )
    num_generations: int = field(default=1, metadata={"help": "Completions sampled per prompt (the seed: 1)."})
    num_generations_eval: int | None = field(
        default=None,
        metadata={"help": "Completions per prompt during evaluation (TRL's name); None uses num_generations."},
    )
    sampler_seed: int | None = field(
        default=None, metadata={"help": "Seed of the sampler/estimator torch.Generator (defaults to `seed`)."}
    )
    sampler_cache: str = field(
        default="none",
        metadata={
            "help": "Block-wise KV cache of the rollout sampler: 'none' (exact), 'prefix' or 'dual' (approximate, "
            "faster; the rollouts drift slightly off-policy). Not with logprob_estimator='trajectory'.",
            "choices": CACHE_MODES,
        },
    )
    sampler_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Confidence-threshold parallel decoding of the rollouts: also commit every masked position of "
            "the block with confidence >= this (approximate, faster; None is exact). Not with "
            "logprob_estimator='trajectory'."
        },
    )
    eval_fast_sampler: bool = field(
        default=False,
        metadata={"help": "Also use sampler_cache / sampler_threshold for evaluation (default: exact decoding)."},
    )
    steps_per_generation: int | None = field(
        default=None,
        metadata={
            "help": "Micro-batches whose rollouts one sampler call generates (TRL). Default: "
            "gradient_accumulation_steps, i.e. one generation per optimizer step; must divide it."
        },
    )

    # Rewards and baseline
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weight of each reward function (None: all 1.0)."}
    )
    baseline: str = field(
        default="none",
        metadata={"help": "'none' (the seed), 'mean', 'rloo' or 'group'.", "choices": BASELINES},
    )
    scale_rewards: str | None = field(
        default=None,
        metadata={
            "help": "Divide the centred rewards by the std of the 'group', the 'batch', or 'none' (TRL). Default: "
            "'group' with baseline='group' (GRPO), else 'none'.",
            "choices": SCALE_REWARDS,
        },
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={"help": "Zero loss weight for completions without EOS/EOT inside max_completion_length (TRL)."},
    )
    kl_coef: float = field(
        default=0.1,
        metadata={
            "help": "Weight of KL(policy || base) (the seed's 0.1). TRL's beta is kl_coef=beta with kl_in='loss' "
            "and kl_estimator='k3'."
        },
    )
    kl_in: str = field(
        default="reward", metadata={"help": "Put the KL in the 'reward' (the seed) or the 'loss'.", "choices": KL_IN}
    )
    kl_estimator: str = field(
        default="full",
        metadata={"help": "'full' (exact over the vocabulary), 'k1' or 'k3'.", "choices": KL_ESTIMATORS},
    )
    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "KL budget, nats/token (kl_in='loss'): the coefficient becomes kl_coef + lambda, lambda raised by "
            "dual ascent while the KL is above the budget. None: a fixed kl_coef."
        },
    )
    kl_target_lr: float = field(
        default=0.05, metadata={"help": "Step of the KL multiplier: lambda += kl_target_lr * (kl - kl_target)."}
    )

    # Objective
    loss_type: str = field(
        default="reinforce",
        metadata={
            "help": "'reinforce' (the seed: summed log-probs), or token-normalised 'grpo', 'dr_grpo', 'dapo' (TRL).",
            "choices": LOSS_TYPES,
        },
    )
    num_iterations: int = field(
        default=1,
        metadata={"help": "Optimizer steps per generation; > 1 uses the clipped ratio to the sampling policy (d1)."},
    )
    epsilon: float = field(default=0.2, metadata={"help": "Lower clip range of the ratio (1 - epsilon)."})
    epsilon_high: float | None = field(
        default=None, metadata={"help": "Upper clip range (1 + epsilon_high); defaults to epsilon."}
    )

    # Log-likelihood estimation
    logprob_estimator: str = field(
        default="one_step",
        metadata={"help": "'one_step' (d1, the seed), 'mc_elbo' or 'trajectory'.", "choices": tuple(ESTIMATORS)},
    )
    logprob_samples: int = field(
        default=1, metadata={"help": "Monte-Carlo draws, or trajectory steps evaluated (= steps for the exact sum)."}
    )
    antithetic: bool = field(
        default=False, metadata={"help": "Coupled complementary masks (mc_elbo only; even logprob_samples)."}
    )
    logprob_recompute: bool | None = field(
        default=None,
        metadata={
            "help": "Checkpoint each draw's policy forward and re-run it in backward: memory stays that of one draw "
            "whatever logprob_samples is, for 35 to 45 percent more log-prob time (docs/benchmarks.md). Default: on "
            "when logprob_samples > 1."
        },
    )
    prompt_mask_prob: float | None = field(
        default=None,
        metadata={"help": "Prompt-token masking rate of the estimator (default 0.15 for one_step, else 0)."},
    )
    estimator_variance_every: int = field(
        default=10, metadata={"help": "Log logprob/estimator_std every N steps (0 = never)."}
    )

    # Logging
    log_completions: bool = field(
        default=False, metadata={"help": "Write completions and rewards to output_dir/completions/*.parquet."}
    )
    num_completions_to_print: int | None = field(
        default=None, metadata={"help": "Completions printed with each log (None prints none)."}
    )

    def sampler_kwargs(self, for_eval: bool = False) -> dict:
        """The `MaskedDiffusionSampler` settings of this config (rollouts and before/after evaluation share them).

        Args:
            for_eval (`bool`, *optional*, defaults to `False`):
                Settings for evaluation: the approximate levers (`sampler_cache`, `sampler_threshold`) only when
                `eval_fast_sampler` asks for them.
        """
        kwargs = {
            "steps": self.steps,
            "gen_length": self.max_completion_length,
            "block_length": self.block_length,
            "temperature": self.temperature,
            "cfg_scale": self.cfg_scale,
            "remasking": self.remasking,
        }
        if not for_eval or self.eval_fast_sampler:
            kwargs.update(cache=self.sampler_cache, threshold=self.sampler_threshold)
        return kwargs

    def __post_init__(self):
        # Every number is checked for type, finiteness and range, naming the field (transformers checks almost none).
        check_training_arguments(self)
        for name in ("antithetic", "log_completions"):  # a string such as "false" would be truthy
            check_bool(name, getattr(self, name))
        check_bool("logprob_recompute", self.logprob_recompute, allow_none=True)
        self._check_choices()
        self._check_sampling()
        self._check_estimator()
        self._check_objective()
        self._check_rewards()
        check_int("num_completions_to_print", self.num_completions_to_print, minimum=0, allow_none=True)
        super().__post_init__()
        self._check_batch()

    def _check_rewards(self) -> None:
        check_float("kl_coef", self.kl_coef, minimum=0.0, hint="The seed uses 0.1; 0 disables the KL term.")
        check_float("kl_target", self.kl_target, minimum=0.0, allow_none=True, hint="None keeps a fixed kl_coef.")
        check_float("kl_target_lr", self.kl_target_lr, minimum=0.0, min_inclusive=False)
        if self.kl_target is not None and self.kl_in != "loss":
            raise ValueError(
                f"kl_target={self.kl_target} adapts the KL coefficient of the loss, but kl_in={self.kl_in!r} puts the "
                "KL in the reward: set kl_in='loss', or drop kl_target to keep the seed's fixed KL in the reward."
            )
        check_float_list(
            "reward_weights",
            self.reward_weights,
            allow_none=True,
            hint="A NaN or inf weight silently zeroes the reward it weights (NaN entries are skipped in the sum).",
        )
        if self.reward_weights and all(w == 0 for w in self.reward_weights):
            raise ValueError(
                f"every reward weight is 0 (reward_weights={self.reward_weights}): the learning signal would be "
                "identically zero. Give at least one reward a non-zero weight."
            )

    def _check_choices(self) -> None:
        for name, choices in (
            ("remasking", REMASKING),
            ("baseline", BASELINES),
            ("kl_in", KL_IN),
            ("kl_estimator", KL_ESTIMATORS),
            ("logprob_estimator", tuple(ESTIMATORS)),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"Unknown {name}={getattr(self, name)!r}; choose one of {list(choices)}.")

    def _check_sampling(self) -> None:
        for name in ("steps", "max_completion_length", "block_length", "num_generations"):
            check_int(name, getattr(self, name), minimum=1)
        check_float("temperature", self.temperature, minimum=0.0, hint="0 is greedy decoding.")
        check_float("cfg_scale", self.cfg_scale, minimum=0.0, hint="0 disables classifier-free guidance.")
        check_int("max_prompt_length", self.max_prompt_length, minimum=1, allow_none=True)
        check_int("sampler_seed", self.sampler_seed, minimum=0, allow_none=True)
        check_int("num_generations_eval", self.num_generations_eval, minimum=1, allow_none=True)
        if self.max_completion_length % self.block_length:
            raise ValueError(
                f"max_completion_length={self.max_completion_length} must be a multiple of "
                f"block_length={self.block_length}; e.g. set block_length to a divisor of it."
            )
        num_blocks = self.max_completion_length // self.block_length
        if self.steps % num_blocks:
            raise ValueError(
                f"steps={self.steps} must be a multiple of the number of blocks "
                f"(max_completion_length / block_length = {num_blocks}) so every block gets the same steps."
            )
        if self.baseline in ("rloo", "group") and self.num_generations < 2:
            raise ValueError(
                f"baseline={self.baseline!r} compares several generations of the same prompt: set "
                f"num_generations >= 2 (got {self.num_generations}) or use baseline='none' / 'mean'."
            )
        if self.baseline in ("rloo", "group") and self.num_generations_eval == 1:
            raise ValueError(
                f"baseline={self.baseline!r} needs groups in evaluation too: set num_generations_eval >= 2 (or None, "
                "to use num_generations)."
            )

    def _check_estimator(self) -> None:
        check_int("logprob_samples", self.logprob_samples, minimum=1)
        check_int("estimator_variance_every", self.estimator_variance_every, minimum=0, hint="0 never measures it.")
        if self.antithetic and self.logprob_estimator != "mc_elbo":
            raise ValueError("antithetic=True only applies to logprob_estimator='mc_elbo'.")
        if self.antithetic and self.logprob_samples % 2:
            raise ValueError(f"antithetic=True pairs draws: logprob_samples must be even, got {self.logprob_samples}.")
        if self.prompt_mask_prob is None:
            self.prompt_mask_prob = DEFAULT_PROMPT_MASK_PROB if self.logprob_estimator == "one_step" else 0.0
        check_float("prompt_mask_prob", self.prompt_mask_prob, minimum=0.0, maximum=1.0, max_inclusive=False)
        if self.logprob_estimator == "trajectory" and self.prompt_mask_prob > 0:
            raise ValueError(
                "logprob_estimator='trajectory' replays the sampler's exact inputs and cannot mask the prompt: "
                "set prompt_mask_prob=0 (or leave it unset)."
            )

    def _check_objective(self) -> None:
        """Loss type, clipping, reward scaling and the approximate sampler (issue 13 item 2, issue 14)."""
        for name, choices in (("loss_type", LOSS_TYPES), ("sampler_cache", CACHE_MODES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"Unknown {name}={getattr(self, name)!r}; choose one of {list(choices)}.")
        if self.scale_rewards not in (*SCALE_REWARDS, None):
            raise ValueError(f"Unknown scale_rewards={self.scale_rewards!r}; choose one of {list(SCALE_REWARDS)}.")
        check_int("num_iterations", self.num_iterations, minimum=1, hint="1 is on-policy (no ratio).")
        check_int("steps_per_generation", self.steps_per_generation, minimum=1, allow_none=True)
        if self.steps_per_generation is None:  # TRL's default: one generation per optimizer step
            self.steps_per_generation = self.gradient_accumulation_steps
        if self.gradient_accumulation_steps % self.steps_per_generation:
            raise ValueError(
                f"steps_per_generation={self.steps_per_generation} must divide gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}, so that every optimizer step uses whole generations (leave it "
                "unset for one generation per optimizer step)."
            )
        check_float("epsilon", self.epsilon, minimum=0.0, maximum=1.0, max_inclusive=False)
        check_float("epsilon_high", self.epsilon_high, minimum=0.0, allow_none=True)
        check_float("sampler_threshold", self.sampler_threshold, minimum=0.0, maximum=1.0, min_inclusive=False,
                    allow_none=True, hint="A confidence (probability); None decodes exactly.")  # fmt: skip
        for name in ("mask_truncated_completions", "eval_fast_sampler"):
            check_bool(name, getattr(self, name))
        if self.scale_rewards in ("group", "batch") and self.baseline == "none":
            raise ValueError(
                f"scale_rewards={self.scale_rewards!r} divides centred rewards by their std, but baseline='none' "
                "does not centre them: pick baseline='mean', 'rloo' or 'group', or scale_rewards='none'."
            )
        if self.scale_rewards == "group" and self.num_generations < 2:
            raise ValueError(
                f"scale_rewards='group' needs num_generations >= 2 (got {self.num_generations}): a group of one "
                "has no standard deviation."
            )
        approximate = self.sampler_cache != "none" or self.sampler_threshold is not None
        if approximate and self.logprob_estimator == "trajectory":
            raise ValueError(
                f"logprob_estimator='trajectory' replays the sampler's exact decoding path, but sampler_cache="
                f"{self.sampler_cache!r} / sampler_threshold={self.sampler_threshold} make the sampler approximate "
                "(the replayed conditionals would differ from the ones that drew the tokens): use sampler_cache="
                "'none' and sampler_threshold=None, or logprob_estimator='one_step' / 'mc_elbo'."
            )
        if self.sampler_threshold is not None and self.remasking != "low_confidence":
            raise ValueError(
                "sampler_threshold compares model confidences; it needs remasking='low_confidence' (got "
                f"{self.remasking!r})."
            )

    def _check_batch(self) -> None:
        # Needs the device set-up of TrainingArguments.__post_init__ for world_size.
        rows = self.per_device_train_batch_size * (self.steps_per_generation or 1) * self.world_size
        if self.baseline == "mean" and rows == 1:
            # The mean is taken over the generation batch: a batch of one row is its own baseline, so A = 0.
            raise ValueError(
                "baseline='mean' subtracts the mean reward of the generation batch, and with "
                "per_device_train_batch_size=1 (x steps_per_generation=1 x 1 process = 1 row) every advantage is "
                "exactly 0 (nothing is learned). Use per_device_train_batch_size >= 2, or baseline='none'."
            )
        global_batch = self.per_device_train_batch_size * self.world_size * self.gradient_accumulation_steps
        if global_batch % self.num_generations:
            raise ValueError(
                f"The global batch (per_device_train_batch_size={self.per_device_train_batch_size} x "
                f"num_processes={self.world_size} x gradient_accumulation_steps={self.gradient_accumulation_steps} "
                f"= {global_batch}) must be a multiple of num_generations={self.num_generations}."
            )
