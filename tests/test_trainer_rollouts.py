"""The trainer's rollout stage and objectives end to end on the tiny LLaDA: one generation per optimizer step, reuse
over `num_iterations` on the same masks, the approximate sampler levers, and the new loss options against the
quantities recorded in the completions table."""

import os

import pandas as pd
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback

from diffusion_rl.batching import RepeatSampler
from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.trainer import DiffusionReinforceTrainer


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def _dataset(n: int = 8) -> Dataset:
    names = ["Alex", "Sam", "Robin", "Kim", "Jo", "Lee", "Max", "Ash"]
    return Dataset.from_dict({"prompt": [f"Describe {names[i % 8]}, a nurse." for i in range(n)]})


class Recording(DiffusionReinforceTrainer):
    """Records every sampler call (rows, forwards, positions fed) and every estimator call (grad mode, values)."""

    def _sample(self, model, prompt_ids, prompt_mask):
        forwards = []
        handle = model.register_forward_pre_hook(
            lambda module, args, kwargs: forwards.append(kwargs["input_ids"].shape[1]), with_kwargs=True
        )
        try:
            out = super()._sample(model, prompt_ids, prompt_mask)
        finally:
            handle.remove()
        self.samples.append({"rows": len(prompt_ids), "forwards": len(forwards), "positions": sum(forwards),
                             "eval": self._eval_rollouts, "out": out})  # fmt: skip
        return out

    def _estimate_logprobs(self, model, batch, generator=None, with_kl=True):
        lp = super()._estimate_logprobs(model, batch, generator=generator, with_kl=with_kl)
        self.estimates.append({"grad": torch.is_grad_enabled(), "tokens": lp.token_logps.detach().clone()})
        return lp


def _trainer(tmp_path, tokenizer, reward_funcs=length_reward, **overrides) -> Recording:
    values = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2, max_steps=2,
        learning_rate=1e-2, max_completion_length=8, block_length=8, steps=4, temperature=1.0,
        estimator_variance_every=0, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
    )  # fmt: skip
    values.update(overrides)
    trainer = Recording(
        build_tiny_model(tokenizer, seed=0),
        reward_funcs,
        args=DiffusionReinforceConfig(**values),
        train_dataset=_dataset(),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    trainer.samples, trainer.estimates = [], []
    return trainer


def _tables(trainer) -> list[pd.DataFrame]:
    folder = os.path.join(trainer.args.output_dir, "completions")
    return [pd.read_parquet(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]


def _logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize(("steps_per_generation", "calls", "rows"), [(None, 2, 8), (1, 4, 4)])
def test_one_sampler_call_per_optimizer_step(tmp_path, tiny_tokenizer, steps_per_generation, calls, rows):
    """Default: the 2 micro-batches of a step are sampled in one call of 8 rows; steps_per_generation=1 is the old
    per-micro-batch sampling. Either way every micro-batch is trained on, each prompt's group stays whole."""
    trainer = _trainer(
        tmp_path, tiny_tokenizer, gradient_accumulation_steps=2, steps_per_generation=steps_per_generation,
        log_completions=True,
    )  # fmt: skip
    trainer.train()
    assert [s["rows"] for s in trainer.samples] == [rows] * calls
    grad_passes = [e for e in trainer.estimates if e["grad"]]
    assert len(grad_passes) == 4 and all(len(e["tokens"]) == 4 for e in grad_passes)
    for table in _tables(trainer):
        assert len(table) == 8
        prompts = table["prompt"].tolist()
        assert prompts[0::2] == prompts[1::2]  # groups of num_generations=2 consecutive rows


def test_num_iterations_reuses_rollouts_with_the_same_masks(tmp_path, tiny_tokenizer):
    """d1's diffu-GRPO: 2 optimizer steps per generation; the old log-probs of iteration 1 are computed before any
    update on iteration 1's masks, and the gradient pass of iteration 1 uses those very masks."""
    trainer = _trainer(
        tmp_path, tiny_tokenizer, num_iterations=2, max_steps=4, loss_type="grpo", learning_rate=1e-9,
        logprob_estimator="mc_elbo", prompt_mask_prob=0.3,
    )  # fmt: skip
    trainer.train()
    assert len(trainer.samples) == 2  # 4 optimizer steps, 2 generations
    # Per generation: the no-grad old pass of iteration 1, then the gradient passes of iterations 0 and 1.
    per_generation = [trainer.estimates[i : i + 3] for i in (0, 3)]
    assert len(trainer.estimates) == 6
    for old_pass, first, second in per_generation:
        assert [old_pass["grad"], first["grad"], second["grad"]] == [False, True, True]
        # lr ~ 0: the same masks give the same values (ratio 1); other masks give other values.
        torch.testing.assert_close(second["tokens"], old_pass["tokens"], rtol=0, atol=1e-5)
        assert (second["tokens"] - first["tokens"]).abs().max() > 1e-2
    logs = _logs(trainer)
    assert all(entry["clip_ratio/region_mean"] == 0.0 for entry in logs[1::2])


def test_num_iterations_clips_once_the_policy_moved(tmp_path, tiny_tokenizer):
    trainer = _trainer(
        tmp_path, tiny_tokenizer, num_iterations=3, max_steps=3, loss_type="grpo", learning_rate=0.05, epsilon=0.01,
        baseline="group",
    )  # fmt: skip
    trainer.train()
    assert len(trainer.samples) == 1
    logs = _logs(trainer)
    assert "clip_ratio/region_mean" in logs[0] and logs[0]["clip_ratio/region_mean"] == 0.0  # iteration 0: ratio 1
    assert logs[2]["clip_ratio/region_mean"] > 0.0


def test_grpo_loss_and_k3_kl_in_the_loss_match_the_table(tmp_path, tiny_tokenizer):
    """TRL's beta: kl_in="loss", kl_estimator="k3". On-policy grpo: loss = -mean(A) + beta * mean(kl)."""
    trainer = _trainer(
        tmp_path, tiny_tokenizer, loss_type="grpo", kl_in="loss", kl_estimator="k3", kl_coef=0.5, baseline="rloo",
        log_completions=True, learning_rate=0.05,
    )  # fmt: skip
    trainer.train()
    for entry, table in zip(_logs(trainer), _tables(trainer)):
        expected = -table["advantage"].mean() + 0.5 * table["kl"].mean()
        assert entry["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert _tables(trainer)[1]["kl"].max() > 0


def test_scale_rewards_batch_over_the_generation_batch(tmp_path, tiny_tokenizer):
    trainer = _trainer(
        tmp_path, tiny_tokenizer, baseline="mean", scale_rewards="batch", gradient_accumulation_steps=2,
        log_completions=True,
    )  # fmt: skip
    trainer.train()
    for table in _tables(trainer):
        rewards = torch.tensor(table["reward"].to_numpy())
        expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)  # all 8 rows of the step's generation
        torch.testing.assert_close(torch.tensor(table["advantage"].to_numpy()), expected, rtol=1e-4, atol=1e-5)


def test_mask_truncated_completions_gives_no_gradient_to_cut_off_completions(tmp_path, tiny_tokenizer):
    """The random tiny model never stops within 8 tokens: every completion is truncated, so nothing is learned."""
    trainer = _trainer(tmp_path, tiny_tokenizer, mask_truncated_completions=True, loss_type="grpo", kl_coef=0.0)
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert all(entry["completions/clipped_ratio"] == 1.0 for entry in _logs(trainer))
    assert all(torch.equal(lora[n], p) for n, p in trainer.model.named_parameters() if n in lora)
    control = _trainer(tmp_path, tiny_tokenizer, mask_truncated_completions=False, loss_type="grpo", kl_coef=0.0)
    control.train()
    assert any(not torch.equal(lora[n], p) for n, p in control.model.named_parameters() if n in lora)


def test_fast_sampler_in_training_only_unless_asked(tmp_path, tiny_tokenizer):
    """sampler_threshold commits confident tokens early (fewer forwards; the random tiny model is ~uniform over its
    2048 tokens, so a threshold of 1e-4 commits a whole block at once), the dual cache feeds only the block; the
    completions stay well formed; evaluation decodes exactly unless eval_fast_sampler is set."""
    common = dict(max_completion_length=8, block_length=4, steps=8, max_steps=1)
    exact = _trainer(tmp_path, tiny_tokenizer, **common)
    exact.train()
    fast = _trainer(tmp_path, tiny_tokenizer, sampler_cache="dual", sampler_threshold=1e-4, **common)
    fast.train()
    exact_call, fast_call = exact.samples[0], fast.samples[0]
    assert fast_call["forwards"] < exact_call["forwards"] == 8
    assert fast_call["positions"] < exact_call["positions"]
    out = fast_call["out"]
    assert out.completion_ids.shape == (4, 8) and bool(out.completion_mask[:, 0].all())
    assert bool((out.commit_step >= 0).all()) and bool((out.commit_step < 8).all())
    assert not (out.completion_ids == tiny_tokenizer.mask_token_id).any()  # every position decoded
    fast.evaluate(_dataset(4))
    assert fast.samples[-1]["eval"] and fast.samples[-1]["forwards"] == 8  # exact in evaluation
    asked = _trainer(tmp_path, tiny_tokenizer, sampler_threshold=1e-4, eval_fast_sampler=True, **common)
    asked.evaluate(_dataset(4))
    assert asked.samples[-1]["forwards"] < 8


def test_trajectory_estimator_refuses_the_approximate_sampler(tmp_path):
    for lever in ({"sampler_cache": "prefix"}, {"sampler_threshold": 0.9}):
        with pytest.raises(ValueError, match="trajectory.*exact decoding path"):
            DiffusionReinforceConfig(output_dir=str(tmp_path), logprob_estimator="trajectory", **lever)


def test_cli_parser_reaches_the_new_fields(tmp_path):
    """The main job's command line (`diffusion-rl train`, examples/train_llada_bias.py) parses every new field."""
    from diffusion_rl.bias.train import parse_args

    _, args, _ = parse_args(
        ["--output_dir", str(tmp_path), "--sampler_cache", "dual", "--sampler_threshold", "0.9", "--loss_type",
         "dr_grpo", "--num_iterations", "2", "--epsilon_high", "0.28", "--scale_rewards", "none", "--baseline",
         "group", "--num_generations", "2", "--mask_truncated_completions", "true", "--gradient_accumulation_steps",
         "2", "--per_device_train_batch_size", "2"]
    )  # fmt: skip
    assert (args.sampler_cache, args.sampler_threshold, args.loss_type, args.num_iterations) == ("dual", 0.9,
                                                                                                   "dr_grpo", 2)
    assert args.steps_per_generation == 2 and args.scale_rewards == "none" and args.mask_truncated_completions
    assert args.sampler_kwargs()["cache"] == "dual" and "cache" not in args.sampler_kwargs(for_eval=True)


def test_dataset_smaller_than_a_generation_batch_is_refused(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="fewer than one generation batch"):
        DiffusionReinforceTrainer(
            build_tiny_model(tiny_tokenizer, seed=0), length_reward, processing_class=tiny_tokenizer,
            args=DiffusionReinforceConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                                          gradient_accumulation_steps=4, report_to=[]),
            train_dataset=_dataset(3),
        )  # fmt: skip


def test_repeat_sampler_repeats_whole_generation_batches():
    sampler = RepeatSampler(range(5), num_generations=2, shuffle=False, batch_size=2, repeat_count=3)
    assert list(sampler) == [0, 0, 1, 1] * 3 + [2, 2, 3, 3] * 3  # the incomplete chunk [4] is dropped
    assert len(sampler) == len(list(sampler))
    assert list(RepeatSampler(range(3), num_generations=2, shuffle=False)) == [0, 0, 1, 1, 2, 2]


def test_rollouts_keep_the_activation_checkpointing_settings(tmp_path, tiny_tokenizer):
    """TRL's unwrap_model_for_generation re-enables checkpointing with default settings after generating; the
    user's every_n_layers must survive every rollout (here: every second of 4 layers checkpointed)."""
    trainer = _trainer(tmp_path, tiny_tokenizer, activation_checkpointing=True,
                       activation_checkpointing_kwargs={"every_n_layers": 2, "use_reentrant": False})  # fmt: skip
    layers = trainer.accelerator.unwrap_model(trainer.model).get_base_model().model.layers
    flags = lambda: [layer.gradient_checkpointing for layer in layers]  # noqa: E731
    assert len(layers) >= 2
    seen = []
    trainer.add_callback(type("Flags", (TrainerCallback,), {"on_step_end": lambda *a, **k: seen.append(flags())})())
    trainer.train()
    assert seen and all(step == [i % 2 == 0 for i in range(len(layers))] for step in seen)
