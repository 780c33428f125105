"""SignalMonitor on hand-made micro-batches: which vanished signals are reported, and when (issue 15.2)."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_rl.signal_monitor import NonFiniteLossError, SignalMonitor

NAN = math.nan


def _flags(per_func, advantages, loss):
    return SignalMonitor.batch_flags(torch.tensor(per_func), torch.tensor(advantages), torch.tensor(loss))


def _window(monitor, batches, step=3, grad_norm=None):
    for per_func, advantages, loss in batches:
        monitor.observe(_flags(per_func, advantages, loss), step - 1)
    return monitor.end_window(step, grad_norm)


def test_a_healthy_window_has_no_message():
    monitor = SignalMonitor(["a", "b"])
    assert _window(monitor, [([[1.0, NAN], [0.5, 2.0]], [0.3, -0.3], 0.1)], grad_norm=0.5) == []


def test_all_rewards_none_for_the_whole_window():
    monitor = SignalMonitor(["a", "b"])
    messages = _window(monitor, [([[NAN, NAN]] * 2, [0.0, 0.0], 0.0)] * 2)
    assert len(messages) == 1 and messages[0].startswith("Every reward function returned None")
    assert "steps 3-3" in messages[0] and "2 micro-batches" in messages[0]


def test_one_batch_with_signal_is_enough():
    monitor = SignalMonitor(["a"])
    batches = [([[NAN]] * 2, [0.0, 0.0], 0.0), ([[1.0], [2.0]], [0.5, -0.5], 0.2)]
    assert _window(monitor, batches) == []


def test_one_reward_always_none_and_zero_advantages():
    monitor = SignalMonitor(["a", "b"])
    messages = _window(monitor, [([[1.0, NAN], [1.0, NAN]], [0.0, 0.0], 0.0)])
    assert any("Reward 'b' returned None for every sample" in m for m in messages)
    assert any("Every advantage was exactly 0" in m for m in messages)
    assert not any("The loss was exactly 0" in m for m in messages)  # already explained


def test_zero_loss_and_zero_gradient_are_reported_when_nothing_else_explains_them():
    assert _window(SignalMonitor(["a"]), [([[1.0], [2.0]], [0.5, -0.5], 0.0)]) == [
        "The loss was exactly 0 in every micro-batch of steps 3-3: nothing is learned."
    ]
    messages = _window(SignalMonitor(["a"]), [([[1.0], [2.0]], [0.5, -0.5], 0.2)], grad_norm=0.0)
    assert len(messages) == 1 and "gradient norm is exactly 0 at step 3" in messages[0]


def test_flags_gathered_over_processes():
    # Process 0 has no usable reward, process 1 has one: the window had a signal.
    monitor = SignalMonitor(["a"])
    gathered = torch.cat([_flags([[NAN]], [0.0], 0.0), _flags([[1.0]], [0.4], 0.1)])
    monitor.observe(gathered, 0)
    assert monitor.end_window(1) == []


def test_a_non_finite_loss_on_any_process_raises():
    monitor = SignalMonitor(["a"])
    gathered = torch.cat([_flags([[1.0]], [0.4], 0.1), _flags([[1.0]], [0.4], math.inf)])
    with pytest.raises(NonFiniteLossError, match="the loss is NaN or inf at step 5"):
        monitor.observe(gathered, 4)


def test_the_window_resets():
    monitor = SignalMonitor(["a"])
    assert _window(monitor, [([[NAN]], [0.0], 0.0)], step=1)
    assert _window(monitor, [([[1.0]], [0.4], 0.1)], step=2) == []
    assert monitor.end_window(3) == []  # nothing observed: nothing to say
