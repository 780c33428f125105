"""The reward protocol and the function that evaluates several rewards on one batch.

A reward is any callable with TRL's signature::

    reward(prompts: list[str], completions: list[str], **kwargs) -> list[float | None]

``kwargs`` carry the dataset's other columns (one list per column, aligned with ``prompts``) plus trainer context.
Higher is better; ``None`` means "not applicable to this sample" (e.g. an MCQ reward on a free-text prompt) and is
excluded from the weighted sum, as in TRL. Rewards may be ``async def``: :func:`compute_rewards` awaits all of them
concurrently (useful for rewards that call a remote judge).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

RewardFunc = Callable[..., Any]


class RewardError(ValueError):
    """A reward function misbehaved (raised, or returned values of the wrong number or kind)."""


@dataclass
class RewardOutput:
    """Rewards of one batch.

    Args:
        total (`torch.Tensor` of shape `(N,)`, float32):
            Weighted sum over reward functions, skipping ``None`` (NaN) entries; ``0`` where every function
            returned ``None``.
        per_func (`torch.Tensor` of shape `(N, K)`, float32):
            Unweighted value of each function, NaN where it returned ``None``.
        names (`list[str]`):
            The K reward names (see :func:`reward_name`), in the order of ``per_func``'s columns.
    """

    total: torch.Tensor
    per_func: torch.Tensor
    names: list[str]


def reward_name(func: RewardFunc) -> str:
    """Name of a reward for logging: its ``name`` attribute, else ``__name__``, else (a ``functools.partial``) the
    wrapped function's name, else its class name."""
    for attribute in ("name", "__name__"):  # a partial has a `__name__` only when the user set one
        name = getattr(func, attribute, None)
        if isinstance(name, str) and name:
            return name
    if isinstance(func, functools.partial):
        return reward_name(func.func)
    return type(func).__name__


def as_text(item: Any, what: str, index: int) -> str:
    """Text of a prompt or completion: a string, or a TRL conversational list of ``{"role", "content"}`` messages.

    Raises:
        TypeError: for anything else, naming ``what`` and ``index``.
    """
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in item):
        return "\n".join(m["content"] for m in item)
    raise TypeError(
        f"{what}[{index}] must be a str or a list of {{'role', 'content'}} messages, got {type(item).__name__}."
    )


def check_batch(prompts: Sequence[Any], completions: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``prompts`` and ``completions`` are sequences of equal length."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise TypeError("prompts and completions must be lists of texts, not a single str: wrap it in a list.")
    if len(prompts) != len(completions):
        raise ValueError(
            f"len(prompts) = {len(prompts)} != len(completions) = {len(completions)}: pass one prompt per completion "
            "(repeat a prompt for each of its sampled completions)."
        )


def _validate(name: str, values: Any, n: int) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().tolist()
    elif hasattr(values, "tolist") and not isinstance(values, list):  # numpy arrays
        values = values.tolist()
    if not isinstance(values, list | tuple):
        raise RewardError(f"Reward {name!r} returned {type(values).__name__}; it must return a list of {n} floats.")
    if len(values) != n:
        raise RewardError(f"Reward {name!r} returned {len(values)} values for {n} completions; return one per sample.")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
            continue
        if not isinstance(v, numbers.Real):
            raise RewardError(f"Reward {name!r} returned a non-numeric value {v!r} (type {type(v).__name__}) at {i}.")
        v = float(v)
        if not math.isfinite(v):
            raise RewardError(f"Reward {name!r} returned {v} at index {i}; return None for 'not applicable'.")
        out.append(v)
    return out


def _own_copy(value: Any) -> Any:
    """A copy of a reward input that the reward may modify freely: tensors are cloned, containers deep-copied (they
    are per-batch lists of texts, ids and metadata: small). Anything else (`trainer_state`, the `log_metric` /
    `log_extra` callables, scalars, `None`) is passed as is: it is shared on purpose or immutable."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list | tuple | dict | set):
        return copy.deepcopy(value)
    return value


async def _gather(pending: dict[int, Any]) -> dict[int, Any]:
    async def run(k: int, awaitable: Any) -> tuple[int, Any]:
        try:
            return k, await awaitable
        except Exception as exc:  # returned, so that every reward's error names the reward that raised it
            return k, exc

    return dict(await asyncio.gather(*(run(k, a) for k, a in pending.items())))


def _run_async(pending: dict[int, Any]) -> dict[int, Any]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_gather(pending))
    # Called from inside an event loop (a notebook): run ours in a worker thread instead of nesting loops.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _gather(pending)).result()


def compute_rewards(
    reward_funcs: Sequence[RewardFunc],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    reward_weights: Sequence[float] | torch.Tensor | None = None,
    **kwargs: Any,
) -> RewardOutput:
    """Evaluate every reward on a batch and combine them.

    ``total[i] = nansum_k(weight_k * reward_k[i])`` where ``None`` counts as NaN (skipped), as in TRL's GRPO.

    Args:
        reward_funcs (`Sequence[Callable]`):
            Rewards with the TRL signature; sync and ``async def`` may be mixed (async ones run concurrently).
        prompts (`Sequence`):
            One prompt per completion.
        completions (`Sequence`):
            The generated texts.
        reward_weights (`Sequence[float]` or `torch.Tensor`, *optional*, defaults to all ones):
            One weight per reward function.
        **kwargs:
            Dataset columns and trainer context, forwarded to every reward. Each reward gets its own copy of the
            prompts, completions, tensors and lists (a reward may modify them in place without the next one seeing
            it); other values (`trainer_state`, callables) are shared.

    Raises:
        RewardError: (a ``ValueError``) naming the reward that raised, returned the wrong number of values, a
            non-numeric value, NaN or inf.
        ValueError: on mismatched lengths of ``prompts``/``completions`` or of ``reward_weights``.
    """
    check_batch(prompts, completions)
    if len(reward_funcs) == 0:
        raise ValueError("compute_rewards needs at least one reward function.")
    names = [reward_name(f) for f in reward_funcs]
    k = len(reward_funcs)
    if reward_weights is None:
        weights = torch.ones(k, dtype=torch.float32)
    else:
        # on the CPU, where per_func is built: weights given as a CUDA tensor failed with a device mismatch
        weights = torch.as_tensor(reward_weights, dtype=torch.float32, device="cpu").flatten()
        if weights.numel() != k:
            raise ValueError(f"Got {weights.numel()} reward_weights for {k} reward functions {names}; pass one each.")

    prompts, completions = list(prompts), list(completions)
    results: dict[int, Any] = {}
    pending: dict[int, Any] = {}
    for j, func in enumerate(reward_funcs):
        # Each reward gets its own copies: one that edits its inputs in place (`kl.mul_(coef)`, a column's lists)
        # would otherwise change what the next reward, and the trainer's metrics, see.
        own = {key: _own_copy(value) for key, value in kwargs.items()}
        try:
            out = func(prompts=_own_copy(prompts), completions=_own_copy(completions), **own)
        except Exception as exc:
            for awaitable in pending.values():  # started coroutines would otherwise warn "never awaited"
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
            raise RewardError(f"Reward {names[j]!r} raised {type(exc).__name__}: {exc}") from exc
        if inspect.isawaitable(out):
            pending[j] = out
        else:
            results[j] = out
    if pending:
        for j, out in _run_async(pending).items():
            if isinstance(out, Exception):
                raise RewardError(f"Reward {names[j]!r} raised {type(out).__name__}: {out}") from out
            results[j] = out

    n = len(completions)
    columns = [_validate(names[j], results[j], n) for j in range(k)]
    per_func = torch.tensor(columns, dtype=torch.float32).reshape(k, n).T.contiguous()  # (N, K)
    total = torch.nansum(per_func * weights, dim=1)  # (N,)
    return RewardOutput(total=total, per_func=per_func, names=names)
