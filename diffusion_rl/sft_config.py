"""Training arguments of `DiffusionSFTTrainer`, in the style of TRL's `SFTConfig`.

TRL's `SFTTrainer` trains a causal LM on next-token prediction; a masked diffusion model (LLaDA) needs the masked
denoising objective of `diffusion_rl.sft` instead, and an answer slot of fixed length (the sampler's canvas). This
config adds the fields that layout needs and keeps TRL's SFT defaults where they apply (`learning_rate=2e-5`,
`logging_steps=10`). Everything is validated in `__post_init__`, before a model is loaded.
"""

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .validation import check_training_arguments

__all__ = ["DiffusionSFTConfig"]


@dataclass
class DiffusionSFTConfig(TrainingArguments):
    r"""
    Configuration of [`DiffusionSFTTrainer`]: supervised fine-tuning of a masked diffusion LM with LLaDA's objective.

    Only the parameters specific to this trainer are listed; see [`~transformers.TrainingArguments`] for the others.
    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5` and `logging_steps=10` (TRL's `SFTConfig`),
    `remove_unused_columns=False` (rows reach the collator untouched; it reads only the columns below). Unlike TRL,
    `bf16` and activation (gradient) checkpointing stay off unless asked, so that the defaults run on a CPU (as
    [`DiffusionReinforceConfig`] does); on a GPU set `bf16=True`, and `activation_checkpointing=True` for LLaDA-8B
    full fine-tuning.

    Parameters:
        > Layout (the same as the RL sampler's canvas)

        completion_length (`int`, *optional*):
            Length of the answer slot: the answer, its `<|eot_id|>`, then `<|endoftext|>` padding. Set it to the RL
            trainer's `max_completion_length` (the sampler's `gen_length`) so the model learns to fill exactly the
            canvas it will be asked to fill. `None` uses the longest answer + EOT of the datasets.
        max_prompt_length (`int`, *optional*):
            Longest prompt in tokens after the chat template; a longer prompt is an error (raised when the trainer is
            built, naming the row). `None` allows any length.
        system_prompt (`str`, *optional*):
            System message prepended to every prompt (an error for conversations that already start with one).

        > Objective

        mask_eps (`float`, *optional*, defaults to `1e-3`):
            Lower bound of the per-example masking probability `p = (1 - mask_eps) * t + mask_eps`, `t ~ U(0, 1)`
            (LLaDA's `eps`); keeps the `1 / p` weight bounded.

        > Dataset columns

        dataset_prompt_field (`str`, *optional*, defaults to `"prompt"`):
            Column of the prompt in TRL's prompt-completion format: a string, or a list of chat messages.
        dataset_completion_field (`str`, *optional*, defaults to `"completion"`):
            Column of the answer: a string, or a list holding one assistant message.
        dataset_messages_field (`str`, *optional*, defaults to `"messages"`):
            Column of TRL's conversational format: a list of messages whose last one is the assistant's answer (the
            messages before it are the prompt). Used when the dataset has no prompt column.
    """

    # TrainingArguments defaults changed for this trainer (TRL's SFTConfig values).
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (TRL's SFT default 2e-5)."})
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in [0, 1) as a ratio of all steps)."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep every dataset column; the collator reads only the prompt/completion/messages ones."},
    )

    # Layout
    completion_length: int | None = field(
        default=None,
        metadata={
            "help": "Answer slot length (answer + EOT + EOS padding); set it to the RL sampler's gen_length. "
            "None: the longest answer + EOT of the datasets."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Longest prompt in tokens after the chat template (longer is an error); None: any."},
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message prepended to every prompt (None: none)."}
    )

    # Objective
    mask_eps: float = field(
        default=1e-3,
        metadata={"help": "Lower bound of the masking probability p = (1 - eps) t + eps (LLaDA's 1e-3)."},
    )

    # Dataset columns
    dataset_prompt_field: str = field(
        default="prompt", metadata={"help": "Prompt column: a string or a list of chat messages."}
    )
    dataset_completion_field: str = field(
        default="completion", metadata={"help": "Answer column: a string or a list with one assistant message."}
    )
    dataset_messages_field: str = field(
        default="messages",
        metadata={"help": "Conversation column (TRL's conversational format); its last message is the answer."},
    )

    def __post_init__(self):
        # The numeric TrainingArguments fields (learning_rate > 0, finite max_grad_norm...), shared with the RL config.
        check_training_arguments(self)
        for name in ("completion_length", "max_prompt_length"):
            value = getattr(self, name)
            # bool is an int subclass: `True` would silently mean 1.
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        if isinstance(self.mask_eps, bool) or not isinstance(self.mask_eps, int | float):
            raise ValueError(f"mask_eps must be a number in [0, 1), got {self.mask_eps!r}.")
        if not (math.isfinite(self.mask_eps) and 0.0 <= self.mask_eps < 1.0):
            raise ValueError(f"mask_eps must be in [0, 1) (LLaDA uses 1e-3), got {self.mask_eps}.")
        if not math.isfinite(self.learning_rate) or self.learning_rate < 0:
            raise ValueError(f"learning_rate must be a finite number >= 0, got {self.learning_rate}.")
        if self.system_prompt is not None and (not isinstance(self.system_prompt, str) or not self.system_prompt):
            raise ValueError(f"system_prompt must be a non-empty string or None, got {self.system_prompt!r}.")
        names = ("dataset_prompt_field", "dataset_completion_field", "dataset_messages_field")
        for name in names:
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty column name, got {getattr(self, name)!r}.")
        if len({getattr(self, name) for name in names}) != len(names):
            raise ValueError(
                "dataset_prompt_field, dataset_completion_field and dataset_messages_field must name different "
                f"columns, got {[getattr(self, name) for name in names]}."
            )
        super().__post_init__()
