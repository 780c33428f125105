"""A KL budget for the loss's KL term: the coefficient rises by dual ascent while the policy is further from the base
model than `kl_target` nats/token, and falls back to `kl_coef` once it is within it.

The constrained problem `max E[R]  s.t.  KL(policy || base) <= kl_target` has the Lagrangian
`E[R] - (kl_coef + lambda) * KL` with a multiplier `lambda >= 0`. After every optimizer step the multiplier takes
a projected gradient step on the dual, `lambda <- max(0, lambda + kl_target_lr * (KL - kl_target))`, where `KL` is
the mean KL of that step's micro-batches (the same number the trainer logs as `kl`). Unlike a fixed coefficient it
leaves the policy free while the KL is within budget, and unlike a proportional controller that multiplies the
coefficient (Ziegler et al., 2019) it does not decay to zero while the KL stays low, so it acts at the moment the KL
overshoots.

The multiplier is part of the training state: it is saved in `trainer_state.json` (an `ExportableState` callback)
and restored on resume, so a resumed run uses the coefficient the interrupted run had reached.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

__all__ = ["KLController"]


class KLController(TrainerCallback, ExportableState):
    """The KL coefficient of the loss, `kl_coef + lambda`, with `lambda` updated by dual ascent after each step.

    Args:
        kl_coef (`float`):
            The coefficient's floor (the configured `kl_coef`): the loss's coefficient is never below it.
        kl_target (`float`):
            The KL budget, nats/token (same estimator and averaging as the logged `kl`).
        kl_target_lr (`float`):
            Step size of the multiplier: a step whose KL is `d` above the budget raises the coefficient by
            `kl_target_lr * d`; one below it lowers the coefficient by as much, down to `kl_coef`.
        multiplier (`float`, *optional*, defaults to `0.0`):
            The current `lambda` (non-zero when restored from a checkpoint).
    """

    def __init__(self, kl_coef: float, kl_target: float, kl_target_lr: float, multiplier: float = 0.0):
        for name, value in (("kl_coef", kl_coef), ("kl_target", kl_target), ("kl_target_lr", kl_target_lr)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
        self.kl_coef = float(kl_coef)
        self.kl_target = float(kl_target)
        self.kl_target_lr = float(kl_target_lr)
        self.multiplier = float(multiplier)
        self._step_kls: list[float] = []

    @property
    def coef(self) -> float:
        """The coefficient the loss uses now: `kl_coef + lambda`."""
        return self.kl_coef + self.multiplier

    def observe(self, kl: float) -> None:
        """Record the mean KL of one training micro-batch (already averaged over processes)."""
        if math.isfinite(kl):  # a micro-batch whose KL is NaN (no valid position) says nothing about the budget
            self._step_kls.append(float(kl))

    def update(self) -> None:
        """One dual-ascent step with the mean KL observed since the last update (no change if none was)."""
        if not self._step_kls:
            return
        kl = sum(self._step_kls) / len(self._step_kls)
        self._step_kls.clear()
        self.multiplier = max(0.0, self.multiplier + self.kl_target_lr * (kl - self.kl_target))

    def on_step_end(self, args, state, control, **kwargs):
        self.update()

    def state(self) -> dict:
        return {
            "args": {"kl_coef": self.kl_coef, "kl_target": self.kl_target, "kl_target_lr": self.kl_target_lr},
            "attributes": {"multiplier": self.multiplier},
        }
