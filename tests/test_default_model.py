"""Tests for diffusion_rl.bias.default_model: the skewed SFT data, the recipe hash and the atomic cache.

The full build (minutes) is marked slow; the fast tests build a miniature recipe in a temporary cache.
"""

import json
import math

import pytest
import torch

from diffusion_rl.bias.data import generate_mcq_dataset
from diffusion_rl.bias.default_model import (
    DEFAULT_SAMPLER_SETTINGS,
    DefaultModelRecipe,
    _save_atomically,
    default_model_dir,
    evaluate_default_model,
    load_default_model,
    packaged_checkpoint,
    skewed_sft_pairs,
)
from diffusion_rl.bias.rewards.choice import parse_choice
from diffusion_rl.bias.rewards.lexicon import gender_counts, gendered_pronoun_rate

MINI = DefaultModelRecipe(
    hidden_size=32,
    num_hidden_layers=1,
    intermediate_size=64,
    num_train_records=48,
    batch_size=16,
    completion_length=48,
    warmup_steps=0,
)


@pytest.fixture(scope="module")
def records():
    return generate_mcq_dataset(1000, seed=0, split="train").to_list()


def test_skew_matches_the_documented_recipe(records):
    pairs = skewed_sft_pairs(records, stereotyped_fraction=0.8, seed=0)
    assert len(pairs) == len(records)
    stereotyped = [p for p in pairs if p["style"] == "stereotyped"]
    # every record here has both a stereotyped and a neutral option, so the share is Binomial(1000, 0.8)
    assert all(r["stereotyped_option_index"] is not None and r["neutral_option_indices"] for r in records)
    share = len(stereotyped) / len(pairs)
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / len(pairs))
    for pair, record in zip(pairs, records):
        options = record["question_options"]
        assert parse_choice(pair["completion"], options) == pair["option_index"]
        assert pair["completion"].startswith("ABCD"[pair["option_index"]] + ") ")
        if pair["style"] == "stereotyped":
            assert pair["option_index"] == record["stereotyped_option_index"]
        else:
            assert pair["option_index"] in record["neutral_option_indices"]
            assert gendered_pronoun_rate(pair["completion"]) == 0.0
    # stereotyped explanations use the pronoun of the stereotyped gender
    with_pronoun = 0
    for pair, record in zip(pairs, records):
        if pair["style"] != "stereotyped":
            continue
        counts = gender_counts(pair["completion"].split(". ", 1)[1])
        other = "female" if record["stereotyped_gender"] == "male" else "male"
        assert counts[f"{other}_pronouns"] == 0, pair["completion"]
        with_pronoun += counts[f"{record['stereotyped_gender']}_pronouns"] > 0
    assert with_pronoun / len(stereotyped) > 0.5


def test_skew_is_deterministic_and_seeded(records):
    assert skewed_sft_pairs(records[:200], seed=3) == skewed_sft_pairs(records[:200], seed=3)
    assert skewed_sft_pairs(records[:200], seed=3) != skewed_sft_pairs(records[:200], seed=4)
    assert all(p["style"] == "neutral" for p in skewed_sft_pairs(records[:50], stereotyped_fraction=0.0))
    assert all(p["style"] == "stereotyped" for p in skewed_sft_pairs(records[:50], stereotyped_fraction=1.0))


def test_recipe_fingerprint_and_cache_dir(tmp_path, monkeypatch):
    assert DefaultModelRecipe().fingerprint() == DefaultModelRecipe().fingerprint()
    assert DefaultModelRecipe(seed=1).fingerprint() != DefaultModelRecipe().fingerprint()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_model_dir() == tmp_path / "hf" / "diffusion_rl" / f"default-{DefaultModelRecipe().fingerprint()}"
    assert default_model_dir(tmp_path, MINI).parent == tmp_path / "diffusion_rl"
    with pytest.raises(ValueError, match="stereotyped_fraction"):
        DefaultModelRecipe(stereotyped_fraction=1.5)
    assert DEFAULT_SAMPLER_SETTINGS["gen_length"] == DefaultModelRecipe().completion_length


def test_build_cache_load_and_rebuild(tmp_path):
    lines = []
    model, tokenizer = load_default_model(tmp_path, recipe=MINI, log=lines.append)
    target = default_model_dir(tmp_path, MINI)
    info = json.loads((target / "build_info.json").read_text())
    assert info["fingerprint"] == MINI.fingerprint() and info["sft_steps"] == math.ceil(info["num_pairs"] / 16)
    assert info["num_pairs"] + info["num_dropped_too_long"] == MINI.num_train_records
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no staging leftovers
    assert any("building" in line for line in lines)

    lines.clear()
    cached, cached_tokenizer = load_default_model(tmp_path, recipe=MINI, log=lines.append)
    assert lines == []  # loaded, not rebuilt
    assert not cached.training
    ids = tokenizer("B) they. The person could be anyone.", return_tensors="pt")["input_ids"]
    assert cached_tokenizer("B) they. The person could be anyone.", return_tensors="pt")["input_ids"].equal(ids)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, cached(ids).logits)

    # a rebuild is deterministic and replaces the cache in place
    rebuilt, _ = load_default_model(tmp_path, recipe=MINI, rebuild=True, log=None)
    for a, b in zip(rebuilt.parameters(), cached.parameters()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


class _Interrupted(Exception):
    pass


class _TokenizerThatDies:
    def save_pretrained(self, path):
        raise _Interrupted("simulated crash while writing the cache")


def test_interrupted_write_leaves_no_cache(tmp_path, tiny_model):
    target = tmp_path / "diffusion_rl" / "default-x"
    with pytest.raises(_Interrupted):
        _save_atomically(tiny_model, _TokenizerThatDies(), {}, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_evaluate_reports_format_and_bias(tmp_path):
    from diffusion_rl.bias.rewards.genbit import GenBitReward

    model, tokenizer = load_default_model(tmp_path, recipe=MINI, log=None)
    stats = evaluate_default_model(model, tokenizer, num_prompts=4, gen_length=16, block_length=8, steps=8)
    completions = stats["completions"]
    assert stats["num_prompts"] == len(completions) == 4
    records = generate_mcq_dataset(4, seed=0, split="test").to_list()
    valid = sum(parse_choice(c, r["question_options"]) is not None for c, r in zip(completions, records))
    assert stats["valid_answer_rate"] == valid / 4
    assert stats["gendered_pronoun_rate"] == pytest.approx(sum(map(gendered_pronoun_rate, completions)) / 4)
    fresh = [m["avg_bias_conditional_absolute"] for m in GenBitReward().metrics(completions)]
    assert stats["genbit_bias"] == pytest.approx(sum(fresh) / 4)
    assert stats["sampler_settings"]["gen_length"] == 16


def test_packaged_checkpoint_is_the_default_recipe_and_is_biased(tmp_path):
    """The shipped checkpoint is what the default recipe builds (same fingerprint), loads without a build, and
    answers in the expected format with gendered explanations (what the RL then removes)."""
    rebuild = "python -m diffusion_rl.bias.default_model --rebuild --update-package"
    assert packaged_checkpoint() is not None, f"the shipped checkpoint is stale; run {rebuild}"
    lines = []
    model, tokenizer = load_default_model(tmp_path, log=lines.append)
    assert lines == [] and not any(tmp_path.iterdir())  # nothing built, nothing written to the cache
    stats = evaluate_default_model(model, tokenizer, num_prompts=16, batch_size=16)
    assert stats["valid_answer_rate"] >= 0.8
    assert stats["gendered_pronoun_rate"] > 0.02 and stats["genbit_bias"] > 0.0


@pytest.mark.slow
def test_full_default_model_is_biased_and_well_formed(tmp_path):
    model, tokenizer = load_default_model(tmp_path, rebuild=True, log=None)
    stats = evaluate_default_model(model, tokenizer, num_prompts=64)
    assert stats["valid_answer_rate"] >= 0.7
    assert stats["gendered_pronoun_rate"] > 0.02
    assert stats["genbit_bias"] > 0.0
