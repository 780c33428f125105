import asyncio
import functools
import math

import pytest
import torch

from diffusion_rl.rewards.base import RewardError, compute_rewards, reward_name

PROMPTS = ["p0", "p1", "p2"]
COMPLETIONS = ["a", "bb", "ccc"]


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def sometimes_none(prompts, completions, **kwargs):
    return [1.0, None, -2.0]


class ColumnReward:
    name = "column"

    def __call__(self, prompts, completions, *, score, **kwargs):
        return list(score)


def test_weighted_nansum_matches_hand_computation():
    out = compute_rewards(
        [length_reward, sometimes_none, ColumnReward()],
        PROMPTS,
        COMPLETIONS,
        reward_weights=[0.5, 2.0, -1.0],
        score=[10, 20, 30],
    )
    assert out.names == ["length_reward", "sometimes_none", "column"]
    assert out.per_func.shape == (3, 3) and out.per_func.dtype == torch.float32
    assert math.isnan(out.per_func[1, 1])
    # row 1: 0.5 * 2 + (None skipped) - 20
    expected = torch.tensor([0.5 * 1 + 2 * 1 - 10, 0.5 * 2 - 20, 0.5 * 3 + 2 * -2 - 30])
    torch.testing.assert_close(out.total, expected, rtol=0, atol=0)


def test_all_none_row_totals_zero_and_default_weights_are_one():
    out = compute_rewards([lambda prompts, completions, **kw: [None, 1, None]], PROMPTS, COMPLETIONS)
    assert out.total.tolist() == [0.0, 1.0, 0.0]


def test_async_rewards_run_concurrently():
    events = []

    async def slow_a(prompts, completions, **kwargs):
        events.append("a start")
        await asyncio.sleep(0.05)
        events.append("a end")
        return [1.0] * len(completions)

    async def slow_b(prompts, completions, **kwargs):
        events.append("b start")
        await asyncio.sleep(0.05)
        events.append("b end")
        return [2.0] * len(completions)

    out = compute_rewards([slow_a, length_reward, slow_b], PROMPTS, COMPLETIONS)
    assert out.total.tolist() == [4.0, 5.0, 6.0]
    assert events.index("b start") < events.index("a end")  # both started before either finished


def test_async_reward_inside_running_loop():
    async def constant(prompts, completions, **kwargs):
        return [3.0] * len(completions)

    async def main():
        return compute_rewards([constant], PROMPTS, COMPLETIONS)

    assert asyncio.run(main()).total.tolist() == [3.0, 3.0, 3.0]


def test_reward_name_variants():
    assert reward_name(length_reward) == "length_reward"
    assert reward_name(ColumnReward()) == "column"
    assert reward_name(functools.partial(length_reward)) == "length_reward"

    class Anonymous:
        def __call__(self, prompts, completions, **kwargs):
            return []

    assert reward_name(Anonymous()) == "Anonymous"
    # A partial's own `__name__` (set by the user to tell two partials of one function apart) wins.
    strict = functools.partial(length_reward)
    strict.__name__ = "length_strict"
    assert reward_name(strict) == "length_strict"


def test_a_reward_that_mutates_its_inputs_does_not_change_what_the_next_one_sees():
    kl = torch.tensor([0.5, 1.0, 2.0])
    options = [["A", "B"], ["C", "D"], ["E", "F"]]
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    seen = {}

    def vandal(prompts, completions, kl, question_options, **kwargs):
        kl.mul_(-10.0)  # e.g. scaling the KL in place instead of `kl * coef`
        question_options[0].append("Z")
        question_options.pop()
        prompts[0][0]["content"] = "edited"
        completions.clear()
        return [0.0, 0.0, 0.0]

    def observer(prompts, completions, kl, question_options, **kwargs):
        seen.update(kl=kl.clone(), options=question_options, prompts=prompts, completions=completions)
        return [0.0, 0.0, 0.0]

    compute_rewards([vandal, observer], prompts, COMPLETIONS, kl=kl, question_options=options)
    assert seen["kl"].tolist() == [0.5, 1.0, 2.0]
    assert seen["options"] == [["A", "B"], ["C", "D"], ["E", "F"]]
    assert seen["prompts"][0][0]["content"] == "p0" and seen["completions"] == COMPLETIONS
    # The caller's own values (the trainer logs the KL after scoring) are untouched too.
    assert kl.tolist() == [0.5, 1.0, 2.0] and options == [["A", "B"], ["C", "D"], ["E", "F"]]
    assert prompts[0][0]["content"] == "p0"


def test_shared_reward_context_is_passed_as_is():
    # `trainer_state` and the `log_metric` callable are the trainer's live objects, not copies.
    state, logged = object(), []

    def reward(prompts, completions, trainer_state, log_metric, **kwargs):
        assert trainer_state is state
        log_metric("x", 1.0)
        return [0.0, 0.0, 0.0]

    compute_rewards([reward], PROMPTS, COMPLETIONS, trainer_state=state, log_metric=lambda n, v: logged.append(n))
    assert logged == ["x"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda prompts, completions, **kw: [1.0, 2.0], "returned 2 values for 3"),
        (lambda prompts, completions, **kw: [1.0, math.nan, 0.0], "nan"),
        (lambda prompts, completions, **kw: [1.0, math.inf, 0.0], "inf"),
        (lambda prompts, completions, **kw: [1.0, "x", 0.0], "non-numeric"),
        (lambda prompts, completions, **kw: 1.0, "must return a list"),
    ],
)
def test_bad_return_values_name_the_reward(bad, message):
    bad.name = "bad_reward"
    with pytest.raises(RewardError, match=message) as info:
        compute_rewards([length_reward, bad], PROMPTS, COMPLETIONS)
    assert "bad_reward" in str(info.value)


def test_raising_reward_is_chained_sync_and_async():
    def broken(prompts, completions, **kwargs):
        raise KeyError("missing column")

    async def broken_async(prompts, completions, **kwargs):
        raise RuntimeError("judge down")

    with pytest.raises(RewardError, match="'broken' raised KeyError") as info:
        compute_rewards([broken], PROMPTS, COMPLETIONS)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(RewardError, match="'broken_async' raised RuntimeError") as info:
        compute_rewards([length_reward, broken_async], PROMPTS, COMPLETIONS)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_length_and_weight_mismatches():
    with pytest.raises(ValueError, match="len\\(prompts\\) = 2 != len\\(completions\\) = 3"):
        compute_rewards([length_reward], PROMPTS[:2], COMPLETIONS)
    with pytest.raises(ValueError, match="2 reward_weights for 1"):
        compute_rewards([length_reward], PROMPTS, COMPLETIONS, reward_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        compute_rewards([], PROMPTS, COMPLETIONS)


def test_tensor_and_numpy_returns_are_accepted():
    import numpy as np

    def as_tensor(prompts, completions, **kwargs):
        return torch.tensor([1.0, 2.0, 3.0])

    def as_array(prompts, completions, **kwargs):
        return np.ones(3)

    out = compute_rewards([as_tensor, as_array], PROMPTS, COMPLETIONS)
    assert out.total.tolist() == [2.0, 3.0, 4.0]
