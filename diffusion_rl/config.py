"""Training arguments of `DiffusionReinforceTrainer`, in the style of TRL's `GRPOConfig`.

The defaults reproduce the seed's recipe where it published one (REINFORCE without baseline, reward
``-(bias + 0.1 KL)``, AdamW at 2e-5, LLaDA sampling with 128 steps, block 32, no CFG) and run on a CPU without flags
(float32: no bf16 unless asked). Everything is validated in `__post_init__`, before a model is loaded.
"""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .advantages import BASELINES
from .logprobs import ESTIMATORS, KL_ESTIMATORS

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
    `remove_unused_columns=False` (reward functions read dataset columns), `logging_steps=10`.

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
            Left-truncate prompts to this many tokens (`None` keeps them whole).
        num_generations (`int`, *optional*, defaults to `1`):
            Completions sampled per prompt (the seed samples one). The global batch
            (`per_device_train_batch_size * num_processes * gradient_accumulation_steps`) must be a multiple of it.
        sampler_seed (`int`, *optional*):
            Seed of the sampler's and estimator's `torch.Generator` (combined with the process index); defaults to
            `seed`.

        > Rewards and baseline

        reward_weights (`list[float]`, *optional*):
            Weight of each reward function; `None` weights them all `1.0`.
        baseline (`str`, *optional*, defaults to `"none"`):
            `"none"` (the seed: `A = R`), `"mean"` (batch mean), `"rloo"` (leave-one-out within a prompt's
            generations) or `"group"` (GRPO normalisation). `"rloo"` and `"group"` need `num_generations >= 2`.
        kl_coef (`float`, *optional*, defaults to `0.1`):
            Weight of KL(policy || base) (the seed's 0.1).
        kl_in (`str`, *optional*, defaults to `"reward"`):
            `"reward"` (the seed: `R = reward - kl_coef * KL`, a constant for the gradient, through `KLReward`) or
            `"loss"` (a differentiable penalty `kl_coef * mean(KL)` added to the loss).
        kl_estimator (`str`, *optional*, defaults to `"full"`):
            `"full"` (exact sum over the vocabulary at each position, the seed's definition), `"k1"` or `"k3"`
            (single-sample estimators at the completion token).

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
    sampler_seed: int | None = field(
        default=None, metadata={"help": "Seed of the sampler/estimator torch.Generator (defaults to `seed`)."}
    )

    # Rewards and baseline
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weight of each reward function (None: all 1.0)."}
    )
    baseline: str = field(
        default="none",
        metadata={"help": "'none' (the seed), 'mean', 'rloo' or 'group'.", "choices": BASELINES},
    )
    kl_coef: float = field(default=0.1, metadata={"help": "Weight of KL(policy || base) (the seed's 0.1)."})
    kl_in: str = field(
        default="reward", metadata={"help": "Put the KL in the 'reward' (the seed) or the 'loss'.", "choices": KL_IN}
    )
    kl_estimator: str = field(
        default="full",
        metadata={"help": "'full' (exact over the vocabulary), 'k1' or 'k3'.", "choices": KL_ESTIMATORS},
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

    def sampler_kwargs(self) -> dict:
        """The `MaskedDiffusionSampler` settings of this config (rollouts and before/after evaluation share them)."""
        return {
            "steps": self.steps,
            "gen_length": self.max_completion_length,
            "block_length": self.block_length,
            "temperature": self.temperature,
            "cfg_scale": self.cfg_scale,
            "remasking": self.remasking,
        }

    def __post_init__(self):
        self._check_choices()
        self._check_sampling()
        self._check_estimator()
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}.")
        if self.reward_weights is not None and not all(isinstance(w, (int, float)) for w in self.reward_weights):
            raise ValueError(f"reward_weights must be a list of numbers, got {self.reward_weights!r}.")
        if self.num_completions_to_print is not None and self.num_completions_to_print < 0:
            raise ValueError(f"num_completions_to_print must be >= 0, got {self.num_completions_to_print}.")
        super().__post_init__()
        self._check_batch()

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
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
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
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}.")
        if self.max_prompt_length is not None and self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be a positive integer or None, got {self.max_prompt_length}.")
        if self.baseline in ("rloo", "group") and self.num_generations < 2:
            raise ValueError(
                f"baseline={self.baseline!r} compares several generations of the same prompt: set "
                f"num_generations >= 2 (got {self.num_generations}) or use baseline='none' / 'mean'."
            )

    def _check_estimator(self) -> None:
        if not isinstance(self.logprob_samples, int) or self.logprob_samples < 1:
            raise ValueError(f"logprob_samples must be a positive integer, got {self.logprob_samples!r}.")
        if self.antithetic and self.logprob_estimator != "mc_elbo":
            raise ValueError("antithetic=True only applies to logprob_estimator='mc_elbo'.")
        if self.antithetic and self.logprob_samples % 2:
            raise ValueError(f"antithetic=True pairs draws: logprob_samples must be even, got {self.logprob_samples}.")
        if self.prompt_mask_prob is None:
            self.prompt_mask_prob = DEFAULT_PROMPT_MASK_PROB if self.logprob_estimator == "one_step" else 0.0
        if not 0.0 <= self.prompt_mask_prob < 1.0:
            raise ValueError(f"prompt_mask_prob must be in [0, 1), got {self.prompt_mask_prob}.")
        if self.logprob_estimator == "trajectory" and self.prompt_mask_prob > 0:
            raise ValueError(
                "logprob_estimator='trajectory' replays the sampler's exact inputs and cannot mask the prompt: "
                "set prompt_mask_prob=0 (or leave it unset)."
            )
        if self.estimator_variance_every < 0:
            raise ValueError(f"estimator_variance_every must be >= 0, got {self.estimator_variance_every}.")

    def _check_batch(self) -> None:
        # Needs the device set-up of TrainingArguments.__post_init__ for world_size.
        global_batch = self.per_device_train_batch_size * self.world_size * self.gradient_accumulation_steps
        if global_batch % self.num_generations:
            raise ValueError(
                f"The global batch (per_device_train_batch_size={self.per_device_train_batch_size} x "
                f"num_processes={self.world_size} x gradient_accumulation_steps={self.gradient_accumulation_steps} "
                f"= {global_batch}) must be a multiple of num_generations={self.num_generations}."
            )
