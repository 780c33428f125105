"""Notice a learning signal that has vanished: warn once per logging window, naming the likely causes and fixes.

A REINFORCE step learns only from non-zero advantages. Several mistakes make them all exactly zero without any
error, and the run then trains for hours with loss 0 and a LoRA `B` that stays 0 (measured: a reward returning
`None` for every sample, e.g. an MCQ reward on free-text prompts, trains with loss 0 and no warning):

* every reward function returns `None` for every sample (the weighted sum skips `None`, so every total is 0);
* one reward function returns `None` for every sample (it silently contributes nothing);
* every advantage is 0: identical rewards within each group (`temperature=0`, a constant reward), or a constant
  reward under `baseline="mean"`;
* the loss or the clipped gradient norm is exactly 0.

[`SignalMonitor`] counts these per micro-batch (gathered over processes) and [`SignalMonitor.end_window`] returns
one message per problem that held for the *whole* logging window; the trainer logs each one and issues a
[`VanishingSignalWarning`]. A single zero batch is normal (e.g. a group whose completions all scored the same); a
whole window of them is not.
"""

from __future__ import annotations

import warnings

import torch
from transformers.utils import logging

__all__ = ["NonFiniteLossError", "SignalMonitor", "VanishingSignalWarning"]

logger = logging.get_logger(__name__)
_HEAD = 4  # flags before the per-reward ones: advantage, any reward, non-zero loss, finite loss


class NonFiniteLossError(FloatingPointError):
    """The loss of a micro-batch is NaN or inf (raised before its backward pass, on every process)."""


class VanishingSignalWarning(UserWarning):
    """A whole logging window had no learning signal (all rewards `None`, all advantages 0, or zero loss/gradient)."""


class SignalMonitor:
    """Per-window counters of vanished learning signals.

    Args:
        reward_names (`list[str]`):
            Names of the reward functions, in the order of `RewardOutput.per_func`'s columns.
        kl_in_loss (`bool`, *optional*, defaults to `False`):
            Whether the loss has a KL term (then zero advantages do not mean a zero gradient).
    """

    def __init__(self, reward_names: list[str], kl_in_loss: bool = False):
        self.reward_names = list(reward_names)
        self.kl_in_loss = kl_in_loss
        self._reset()
        self.first_step: int | None = None

    def _reset(self) -> None:
        self.batches = 0
        self.with_advantage = 0
        self.with_any_reward = 0
        self.with_loss = 0
        self.with_reward = [0] * len(self.reward_names)

    @staticmethod
    def batch_flags(per_func: torch.Tensor, advantages: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """This process's flags for one micro-batch, `(4 + K,)` float: any non-zero advantage, any non-`None`
        reward, non-zero loss, finite loss, then per reward function any non-`None` value. Gather them over
        processes and pass the result to [`observe`]."""
        present = ~torch.isnan(per_func.float())  # (N, K)
        loss = loss.detach().float().reshape(())
        head = torch.stack(
            [
                (advantages.detach() != 0).any().float(),
                present.any().float(),
                (loss != 0).float(),
                torch.isfinite(loss).float(),
            ]
        )
        return torch.cat([head.to(present.device), present.any(dim=0).float()])

    def observe(self, flags: torch.Tensor, step: int) -> None:
        """Count one micro-batch from the flags of [`batch_flags`], `(4 + K,)` or gathered `(P * (4 + K),)`.

        Raises:
            `NonFiniteLossError`: the loss is NaN or inf on some process (every process raises, so none waits in a
                collective). `transformers.Trainer` would otherwise hide it from the logs (`logging_nan_inf_filter`)
                while AdamW turns every weight into NaN.
        """
        rows = flags.detach().float().reshape(-1, _HEAD + len(self.reward_names))
        if float(rows[:, 3].min()) < 1:
            raise NonFiniteLossError(
                f"the loss is NaN or inf at step {step + 1}: stopping before the update spreads it to every weight. "
                "Likely causes: NaN/inf weights or inputs, a reward of extreme magnitude, or a learning rate so high "
                "that the previous step diverged (lower learning_rate, keep max_grad_norm). The last checkpoint "
                "holds the weights before this step."
            )
        flags = rows.amax(dim=0).tolist()
        if self.first_step is None:
            self.first_step = step
        self.batches += 1
        self.with_advantage += flags[0] > 0
        self.with_any_reward += flags[1] > 0
        self.with_loss += flags[2] > 0
        for k, value in enumerate(flags[_HEAD:]):
            self.with_reward[k] += value > 0

    def end_window(self, step: int, grad_norm: float | None = None) -> list[str]:
        """Messages for the problems that held in every micro-batch since the last window; then start a new window."""
        if self.batches == 0:
            return []
        span = f"steps {self.first_step + 1}-{step}" if self.first_step is not None else f"step {step}"
        messages = []
        if self.with_any_reward == 0:
            messages.append(
                f"Every reward function returned None for every sample in {span} ({self.batches} micro-batches; "
                f"rewards {self.reward_names}): every total reward is 0 and nothing is learned. Likely causes: the "
                "rewards do not apply to these prompts (e.g. an MCQ reward such as neutral_choice on free-text "
                "prompts), or their answer parsing never matches the completions (print some with "
                "num_completions_to_print). Fix the data or the reward."
            )
        else:
            for name, count in zip(self.reward_names, self.with_reward):
                if count == 0:
                    messages.append(
                        f"Reward {name!r} returned None for every sample in {span}: it contributes nothing to the "
                        "learning signal. Check that it applies to these prompts (print completions with "
                        "num_completions_to_print) or remove it."
                    )
            if self.with_advantage == 0:
                messages.append(
                    f"Every advantage was exactly 0 in {span} ({self.batches} micro-batches), so the REINFORCE "
                    "gradient is 0. Likely causes: the rewards are identical within each group (temperature=0, or a "
                    "reward that is constant on these completions) with baseline 'rloo'/'group', or constant within "
                    "each batch with baseline 'mean'. Fix: sample with temperature > 0, use a reward that varies, "
                    "or baseline='none'."
                )
        if self.with_loss == 0 and not messages:  # not already explained by the rewards or advantages
            messages.append(f"The loss was exactly 0 in every micro-batch of {span}: nothing is learned.")
        if grad_norm is not None and isinstance(grad_norm, int | float) and grad_norm == 0 and not messages:
            messages.append(
                f"The gradient norm is exactly 0 at step {step}: no parameter receives a gradient. Check that the "
                "adapter's parameters require grad and that the loss depends on them."
            )
        self._reset()
        self.first_step = None
        return messages

    def warn(self, messages: list[str]) -> None:
        """Log each message and issue it as a [`VanishingSignalWarning`] (call on the main process)."""
        for message in messages:
            logger.warning(message)
            warnings.warn(message, VanishingSignalWarning, stacklevel=3)

