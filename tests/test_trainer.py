"""DiffusionReinforceTrainer on the tiny LLaDA: what trains, what is logged, bad inputs, the model card."""

import glob
import math
import os

import pandas as pd
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from diffusion_rl.batching import RepeatSampler
from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.rewards.base import RewardError
from diffusion_rl.rewards.kl import KLReward
from diffusion_rl.trainer import DiffusionReinforceTrainer, HubPushError

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def length_reward(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def _dataset(n: int = 8) -> Dataset:
    names = ["Alex", "Sam", "Robin", "Kim", "Jo", "Lee", "Max", "Ash"]
    return Dataset.from_dict(
        {"prompt": [f"Describe {names[i % 8]}, a nurse." for i in range(n)], "index": list(range(n))}
    )


def _config(tmp_path, **overrides) -> DiffusionReinforceConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=2,
        learning_rate=1e-2,
        max_completion_length=8,
        block_length=8,
        steps=2,
        temperature=1.0,
        baseline="none",
        estimator_variance_every=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    values.update(overrides)
    return DiffusionReinforceConfig(**values)


def _lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)


def _trainer(tmp_path, tokenizer, reward_funcs=length_reward, peft=True, dataset=None, model=None, **overrides):
    return DiffusionReinforceTrainer(
        model if model is not None else build_tiny_model(tokenizer, seed=0),
        reward_funcs,
        args=_config(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else _dataset(),
        processing_class=tokenizer,
        peft_config=_lora() if peft else None,
    )


def _table(trainer, step: int) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(trainer.args.output_dir, "completions", f"train_step_{step:07d}.parquet"))


def _train_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def test_lora_changes_base_frozen_and_first_kl_is_zero(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path, tiny_tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    assert all(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)
    logs = _train_logs(trainer)
    assert len(logs) == 2
    # Zero-initialised B: policy == base on identical inputs, so KL is exactly 0 before the first update...
    assert logs[0]["kl"] == 0.0
    # ...and positive once the adapter moved.
    assert logs[1]["kl"] > 0.0


@pytest.mark.parametrize("accumulation", [1, 2])
def test_logged_loss_is_reinforce_of_recorded_quantities(tmp_path, tiny_tokenizer, accumulation):
    # The loss logged by Trainer equals -(1/M) sum_i log p_i R_i over all M completions of the optimizer step,
    # recomputed from the completions table (baseline "none": A = R; KL enters through the reward).
    trainer = _trainer(
        tmp_path,
        tiny_tokenizer,
        log_completions=True,
        gradient_accumulation_steps=accumulation,
        prompt_mask_prob=0.3,
    )
    trainer.train()
    for entry in _train_logs(trainer):
        table = pd.read_parquet(
            os.path.join(trainer.args.output_dir, "completions", f"train_step_{entry['step']:07d}.parquet")
        )
        assert len(table) == 4 * accumulation
        expected = -(table["logp"] * table["reward"]).mean()
        assert entry["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        # The total reward is length + the KL penalty the trainer added (kl_in="reward"): -kl_coef * KL.
        reward, kl = torch.tensor(table["reward"].to_numpy()), torch.tensor(table["kl"].to_numpy())
        torch.testing.assert_close(torch.tensor(table["rewards/kl"].to_numpy()), -0.1 * kl)
        torch.testing.assert_close(reward, torch.tensor(table["rewards/length_reward"].to_numpy()) - 0.1 * kl)


def test_kl_in_loss_and_group_baseline(tmp_path, tiny_tokenizer):
    trainer = _trainer(
        tmp_path, tiny_tokenizer, log_completions=True, kl_in="loss", kl_coef=0.5, baseline="group", max_steps=2
    )
    assert [type(f) for f in trainer.reward_funcs] == [type(length_reward)]  # no KLReward added
    trainer.train()
    for entry in _train_logs(trainer):
        table = pd.read_parquet(
            os.path.join(trainer.args.output_dir, "completions", f"train_step_{entry['step']:07d}.parquet")
        )
        rewards = torch.tensor(table["reward"].to_numpy()).view(-1, 2)
        advantages = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
        torch.testing.assert_close(
            torch.tensor(table["advantage"].to_numpy()).view(-1, 2), advantages, rtol=1e-4, atol=1e-5
        )
        expected = -(table["logp"] * table["advantage"]).mean() + 0.5 * table["kl"].mean()
        assert entry["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_genbit_and_kl_rewards_end_to_end(tmp_path, tiny_tokenizer):
    from diffusion_rl.bias.rewards.genbit import GenBitReward

    trainer = _trainer(
        tmp_path,
        tiny_tokenizer,
        reward_funcs=[GenBitReward(), KLReward(coef=0.1)],
        max_steps=2,
        max_completion_length=16,
        steps=4,
        estimator_variance_every=1,
        logprob_estimator="mc_elbo",
        logprob_samples=2,
    )
    trainer.train()
    logs = _train_logs(trainer)
    assert len(logs) == 2
    expected = {
        "loss", "reward", "reward_std", "rewards/genbit/mean", "kl", "bias/genbit", "completions/mean_length",
        "completions/gendered_pronoun_rate", "entropy", "logprob/estimator_std", "time/sampling", "time/reward",
        "time/logprob", "time/backward", "memory/peak_mb",
    }  # fmt: skip
    for entry in logs:
        assert expected <= set(entry), expected - set(entry)
        assert all(v is None or math.isfinite(v) for v in entry.values() if isinstance(v, float))
        assert entry["bias/genbit"] == pytest.approx(-entry["rewards/genbit/mean"], abs=1e-6)
        assert entry["logprob/estimator_std"] > 0  # two mc_elbo runs differ
        assert 1 <= entry["completions/mean_length"] <= 16


def test_model_path_and_card_and_offline_push(tmp_path, tiny_tokenizer, tiny_model_dir, monkeypatch):
    trainer = DiffusionReinforceTrainer(
        str(tiny_model_dir),
        length_reward,
        args=_config(tmp_path, max_steps=1),
        train_dataset=_dataset(),
        peft_config=_lora(),
    )
    trainer.train()
    trainer.save_model()
    out = trainer.args.output_dir
    card = open(os.path.join(out, "README.md")).read()
    assert "library_name: peft" in card
    for tag in ("diffusion-rl", "llada", "reinforce", "lora"):
        assert f"- {tag}" in card
    assert "| length_reward | 1 |" in card and "| kl | 1 |" in card
    assert "| reward |" in card and "| loss |" in card
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    # A local base model is not valid `base_model` metadata; a Hub id is.
    assert "base_model:" not in card.split("---")[1]
    trainer.model.peft_config["default"].base_model_name_or_path = "GSAI-ML/LLaDA-8B-Instruct"
    trainer.create_model_card()
    assert "base_model: GSAI-ML/LLaDA-8B-Instruct" in open(os.path.join(out, "README.md")).read()

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    files = sorted(os.listdir(out))
    with pytest.raises(HubPushError, match="saved in"):
        trainer.push_to_hub()
    assert set(files) <= set(os.listdir(out))
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))


# ---------------------------------------------------------------- bad inputs (all raised before any training)


def test_bad_inputs(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="'prompt' column"):
        _trainer(tmp_path, tiny_tokenizer, dataset=Dataset.from_dict({"text": ["a", "b"]}))
    with pytest.raises(ValueError, match="num_generations"):
        _trainer(tmp_path, tiny_tokenizer, per_device_train_batch_size=3, per_device_eval_batch_size=4)
    with pytest.raises(ValueError):
        _config(tmp_path, num_generations=1, per_device_train_batch_size=4, baseline="group")
    with pytest.raises(TypeError, match="callable"):
        _trainer(tmp_path, tiny_tokenizer, reward_funcs=["not a function"])
    no_mask = build_tiny_model(tiny_tokenizer, seed=0)
    no_mask.config.mask_token_id = None
    with pytest.raises(ValueError, match="mask_token_id"):
        _trainer(tmp_path, tiny_tokenizer, model=no_mask)
    with pytest.raises(ValueError, match=r"LoRA target modules \['attn_out'\]"):
        DiffusionReinforceTrainer(
            build_tiny_model(tiny_tokenizer, seed=0),
            length_reward,
            args=_config(tmp_path),
            train_dataset=_dataset(),
            processing_class=tiny_tokenizer,
            peft_config=LoraConfig(r=4, target_modules=["q_proj", "attn_out"]),
        )
    with pytest.raises(ValueError, match="PEFT"):
        _trainer(tmp_path, tiny_tokenizer, reward_funcs=[length_reward, KLReward()], peft=False)


@pytest.mark.parametrize("bad", ["nan", "inf", "raise"])
def test_bad_reward_raises_before_the_optimizer(tmp_path, tiny_tokenizer, bad):
    def broken(prompts, completions, **kwargs):
        if bad == "raise":
            raise RuntimeError("judge unavailable")
        return [float(bad)] * len(completions)

    trainer = _trainer(tmp_path, tiny_tokenizer, reward_funcs=[length_reward, broken])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(RewardError, match="broken"):
        trainer.train()
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_reward_kwargs_carry_dataset_columns_and_kl(tmp_path, tiny_tokenizer, capsys):
    seen = {}

    def spy(prompts, completions, index, completion_ids, kl, trainer_state, **kwargs):
        seen.update(index=list(index), n=len(completions), ids=completion_ids, kl=kl)
        return [0.0] * len(completions)

    trainer = _trainer(tmp_path, tiny_tokenizer, reward_funcs=spy, max_steps=1, num_completions_to_print=2)
    trainer.train()
    printed = capsys.readouterr().out
    assert "Step 1" in printed and "rewards/spy" in printed
    assert not os.path.exists(os.path.join(trainer.args.output_dir, "completions"))  # log_completions=False
    # Each prompt appears num_generations=2 times in a row.
    assert seen["n"] == 4 and seen["index"][0::2] == seen["index"][1::2]
    assert isinstance(seen["kl"], torch.Tensor) and seen["kl"].shape == (4,)
    assert all(isinstance(ids, list) and 1 <= len(ids) <= 8 for ids in seen["ids"])


def test_rewards_log_their_own_metrics_and_table_columns(tmp_path, tiny_tokenizer):
    """TRL's `log_metric` / `log_extra` reward kwargs: averaged over the logging interval, columns in the table;
    without them the trainer logs only generic metrics (nothing gender-specific for a user's own reward)."""
    calls = []

    def counting(prompts, completions, log_metric, log_extra, **kwargs):
        calls.append(len(calls) + 1)
        log_metric("my/call", float(calls[-1]))
        log_extra("n_chars", [len(c) for c in completions])
        return [0.0] * len(completions)

    trainer = _trainer(
        tmp_path, tiny_tokenizer, reward_funcs=counting, gradient_accumulation_steps=2, log_completions=True
    )
    trainer.train()
    logs = _train_logs(trainer)
    # The rewards score a whole generation batch at once: one call per optimizer step (steps_per_generation = 2).
    assert [entry["my/call"] for entry in logs] == [1.0, 2.0]
    table = _table(trainer, logs[0]["step"])
    assert table["n_chars"].tolist() == [len(c) for c in table["completion"]]
    assert not any(k.startswith(("bias/", "choice/")) or "gendered" in k or "balance" in k for k in logs[0])

    def bad_extra(prompts, completions, log_extra, **kwargs):
        log_extra("short", [1])
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="log_extra\\('short', values\\) got 1 values for a batch of 4"):
        _trainer(tmp_path, tiny_tokenizer, reward_funcs=bad_extra, max_steps=1).train()


def test_custom_trainer_example_overrides_a_hook(tmp_path, tiny_tokenizer):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "custom_trainer.py")
    spec = importlib.util.spec_from_file_location("custom_trainer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.build_trainer(
        build_tiny_model(tiny_tokenizer, seed=0), tiny_tokenizer, _config(tmp_path, max_steps=1, log_completions=True)
    )
    trainer.train()
    table = pd.read_parquet(glob.glob(os.path.join(trainer.args.output_dir, "completions", "*.parquet"))[0])
    # The example clips advantages to [-1, 1].
    assert table["advantage"].abs().max() <= 1.0


def test_repeat_sampler_groups_and_epoch_order():
    sampler = RepeatSampler(range(5), num_generations=3, seed=7)
    first = list(sampler)
    assert len(first) == len(sampler) == 15
    assert [first[i] for i in range(0, 15, 3)] == torch.randperm(
        5, generator=torch.Generator().manual_seed(7)
    ).tolist()
    assert all(first[i] == first[i + 1] == first[i + 2] for i in range(0, 15, 3))
    assert list(sampler) == first  # iterating again does not change the order; only the epoch does
    sampler.set_epoch(1)
    assert [list(sampler)[i] for i in range(0, 15, 3)] == torch.randperm(
        5, generator=torch.Generator().manual_seed(8)
    ).tolist()


def test_evaluate_logs_eval_metrics(tmp_path, tiny_tokenizer):
    trainer = DiffusionReinforceTrainer(
        build_tiny_model(tiny_tokenizer, seed=0),
        length_reward,
        args=_config(tmp_path, per_device_eval_batch_size=4),
        train_dataset=_dataset(),
        eval_dataset=_dataset(4),
        processing_class=tiny_tokenizer,
        peft_config=_lora(),
    )
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_reward", "eval_kl", "eval_completions/mean_length"} <= set(metrics)
    assert metrics["eval_kl"] == 0.0  # untrained zero-init adapter
    assert metrics["eval_reward"] > 0


@pytest.mark.parametrize(("num_generations_eval", "rows"), [(None, 6), (1, 3)])
def test_num_generations_eval_sets_the_evaluation_groups(tmp_path, tiny_tokenizer, num_generations_eval, rows):
    """TRL's `num_generations_eval`: each of the 3 evaluation prompts is sampled that many times (default: as in
    training, 2), and the group metrics use it (a group of one has no within-group spread)."""
    config = _config(
        tmp_path, per_device_eval_batch_size=2, num_generations_eval=num_generations_eval, log_completions=True
    )
    trainer = DiffusionReinforceTrainer(
        build_tiny_model(tiny_tokenizer, seed=0),
        length_reward,
        args=config,
        train_dataset=_dataset(),
        eval_dataset=_dataset(3),
        processing_class=tiny_tokenizer,
        peft_config=_lora(),
    )
    metrics = trainer.evaluate()
    table = pd.read_parquet(os.path.join(config.output_dir, "completions", "eval_step_0000000.parquet"))
    assert len(table) == rows and table["prompt"].nunique() == 3
    assert math.isfinite(metrics["eval_reward_std"])
    with pytest.raises(ValueError, match="per_device_eval_batch_size=3 is not a multiple of num_generations_eval=2"):
        DiffusionReinforceTrainer(
            build_tiny_model(tiny_tokenizer, seed=0),
            length_reward,
            args=_config(tmp_path, per_device_eval_batch_size=3, num_generations_eval=2),
            train_dataset=_dataset(),
            eval_dataset=_dataset(3),
            processing_class=tiny_tokenizer,
        )


def test_logprob_recompute_changes_memory_not_the_update(tmp_path, tiny_tokenizer):
    """`logprob_recompute` re-runs each draw's forward in backward: same LoRA weights after the step as without."""

    def lora_after(recompute: bool, name: str) -> dict[str, torch.Tensor]:
        trainer = _trainer(
            tmp_path / name,
            tiny_tokenizer,
            max_steps=1,
            logprob_estimator="mc_elbo",
            logprob_samples=2,
            logprob_recompute=recompute,
        )
        trainer.train()
        return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}

    with_recompute, without = lora_after(True, "on"), lora_after(False, "off")
    assert with_recompute.keys() == without.keys() and with_recompute
    for key in with_recompute:
        torch.testing.assert_close(with_recompute[key], without[key], rtol=1e-5, atol=1e-7)
