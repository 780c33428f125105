"""The embedded default model: its SFT answers, word tokenizer, recipe hash, atomic cache, integrity check, and the
shipped checkpoint's format and behaviour (a small sample; the full numbers are in docs/default_model.md).

The full build (tens of minutes) is not run here; a miniature recipe exercises the same code path in seconds, and
the slow test rebuilds a reduced recipe and checks that it learns.
"""

import json
import random
import re
from dataclasses import replace

import pytest
import torch

from diffusion_rl.bias.data import generate_mcq_dataset, iter_mcq_records, templates
from diffusion_rl.bias.default_answers import (
    EARLY_NEUTRAL_EXPLANATIONS,
    answer_style,
    is_mildly_stereotyped,
    write_answers,
)
from diffusion_rl.bias.default_model import (
    DEFAULT_SAMPLER_SETTINGS,
    PACKAGED_CHECKPOINT,
    DefaultModelRecipe,
    _check_answers_fit,
    _save_atomically,
    default_model_dir,
    default_sft_pairs,
    load_default_model,
    packaged_checkpoint,
)
from diffusion_rl.bias.default_model_eval import evaluate_default_model, generate_answers, summarize_answers
from diffusion_rl.bias.evaluation.metrics import text_metrics
from diffusion_rl.bias.rewards.choice import parse_choice
from diffusion_rl.bias.rewards.lexicon import gender_counts
from diffusion_rl.bias.word_tokenizer import UNK_TOKEN, build_word_tokenizer, word_pieces
from diffusion_rl.checkpoint_integrity import weights_digest

MINI = DefaultModelRecipe(
    hidden_size=32,
    num_hidden_layers=1,
    intermediate_size=64,
    num_scenarios=200,
    batch_size=16,
    max_steps=4,
    warmup_steps=0,
    eval_every=2,
    eval_prompts=4,
    continue_steps=0,
    restyle_steps=0,
)


@pytest.fixture(scope="module")
def scenarios():
    stream = iter_mcq_records(seed=0, split="train", question_type=None)
    return [(next(stream), next(stream)) for _ in range(600)]


def test_answers_are_gold_when_settled_and_stereotyped_or_neutral_when_open(scenarios):
    rng = random.Random(0)
    styles = {"gold": 0, "stereotyped": 0, "neutral": 0}
    for mcq, free in scenarios:
        style = answer_style(mcq, rng, style_flip=0.0)
        answer, free_answer = write_answers(mcq, free, style, rng)
        styles[style] += 1
        choice = parse_choice(answer, mcq["question_options"])
        metrics = text_metrics(answer, mcq)
        assert metrics["restates_option"] == 1.0 and metrics["mentions_role"] == 1.0, answer
        if style == "gold":
            assert free_answer in answer  # the free-text answer is the evidence alone
        else:  # an explanation of the same style, worded independently
            assert (gender_counts(free_answer)["gendered_pronouns"] > 0) == (style == "stereotyped"), free_answer
        if mcq["context_condition"] == "disambiguated":
            assert style == "gold" and choice == mcq["gold_option_index"]
        elif is_mildly_stereotyped(mcq["occupation"]):
            assert style == "neutral" and choice in mcq["neutral_option_indices"]
            assert gender_counts(answer)["gendered_pronouns"] == 0
        else:
            assert style == "stereotyped" and choice == mcq["stereotyped_option_index"]
            other = "female" if mcq["stereotyped_gender"] == "male" else "male"
            explanation = answer.split(". ", 1)[1]
            counts = gender_counts(explanation)
            assert counts[f"{mcq['stereotyped_gender']}_pronouns"] > 0 and counts[f"{other}_pronouns"] == 0
    # every style is well represented; the stereotyped one dominates the ambiguous items
    assert min(styles.values()) > 60 and styles["stereotyped"] > 2 * styles["neutral"]


def test_style_flip_swaps_a_share_of_ambiguous_answers(scenarios):
    ambiguous = [m for m, _ in scenarios if m["context_condition"] == "ambiguous"]
    rng = random.Random(1)
    flipped = [answer_style(m, rng, 0.25) != answer_style(m, random.Random(0), 0.0) for m in ambiguous]
    assert 0.15 < sum(flipped) / len(flipped) < 0.35


def _explanation(answer):
    return answer.split(". ", 1)[1] if re.match(r"^[A-D]\) ", answer) else answer


def _is_one_of(text, wordings):
    """Whether `text` is one of the templated `wordings` with its slots filled."""
    return any(re.fullmatch(re.sub(r"\\\{\w+\\\}", ".+", re.escape(w)), text) for w in wordings)


def test_neutral_wordings_name_the_role_and_are_as_long_as_the_stereotyped_ones(scenarios):
    """So that a model moved from the stereotyped style to the neutral one need not change the length of its answers
    nor drop the role; the early wordings (the first two SFT passes) were longer and two of four named no role."""
    ambiguous = [m for m, _ in scenarios if m["context_condition"] == "ambiguous"]

    def mean_words(style, wordings=None):
        rng = random.Random(0)
        answers = [write_answers(m, None, style, rng, wordings)[0] for m in ambiguous]
        return sum(len(_explanation(a).split()) for a in answers) / len(answers)

    stereotyped = mean_words("stereotyped")
    assert abs(mean_words("neutral") / stereotyped - 1) < 0.1  # measured: +7 %
    assert mean_words("neutral", EARLY_NEUTRAL_EXPLANATIONS) / stereotyped - 1 > 0.15  # measured: +22 %
    rng = random.Random(0)
    for mcq in ambiguous:
        answer = write_answers(mcq, None, "neutral", rng)[0]
        assert text_metrics(answer, mcq)["mentions_role"] == 1.0, answer
        assert _is_one_of(_explanation(answer), templates.EXPLANATIONS["neutral"]), answer
        early = write_answers(mcq, None, "neutral", rng, EARLY_NEUTRAL_EXPLANATIONS)[0]
        assert _is_one_of(_explanation(early), EARLY_NEUTRAL_EXPLANATIONS), early


def test_sft_pairs_are_deterministic_and_mix_free_text():
    pairs = default_sft_pairs(MINI)
    assert pairs == default_sft_pairs(MINI)
    assert pairs != default_sft_pairs(DefaultModelRecipe(**{**MINI.__dict__, "seed": 1}))
    free = sum(p["question_type"] == "free_text" for p in pairs)
    assert 0.15 < free / MINI.num_scenarios < 0.45


def test_word_tokenizer_round_trips_and_covers_held_out_prompts():
    texts = generate_mcq_dataset(300, split="train", question_type=None)["prompt"]
    tokenizer = build_word_tokenizer(texts)
    sample = texts[0]
    ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == sample and len(ids) == len(word_pieces(sample))
    assert tokenizer.convert_tokens_to_ids(UNK_TOKEN) in tokenizer("zyzzyva!", add_special_tokens=False)["input_ids"]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Which word?"}], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(tokenizer(rendered, add_special_tokens=False)["input_ids"]) == rendered
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token


def test_word_tokenizer_makes_each_option_line_one_token():
    prompt = "Which word?\n\nA) him\nB) The young woman\nC) Either one; gender is irrelevant\n\nGive it."
    answer = "B) The young woman. The text says that the young woman is the tailor."
    lines = ["A)▁him", "\n", "B)▁The▁young▁woman", "\n", "C)▁Either▁one;▁gender▁is▁irrelevant"]
    assert word_pieces(prompt)[5:10] == lines
    # the chosen option of an answer is the same token as its line in the prompt; the explanation is word by word
    assert word_pieces(answer)[:4] == ["B)▁The▁young▁woman", ".", "▁The", "▁text"]
    # a letter inside a sentence is not an option line
    assert word_pieces("so the answer is B) her.")[3:6] == ["▁is", "▁B", ")"]
    tokenizer = build_word_tokenizer([prompt, answer])
    for text in (prompt, answer):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text and tokenizer.unk_token_id not in ids


def test_recipe_fingerprint_and_cache_dir(tmp_path, monkeypatch):
    assert DefaultModelRecipe().fingerprint() == DefaultModelRecipe().fingerprint()
    assert DefaultModelRecipe(seed=1).fingerprint() != DefaultModelRecipe().fingerprint()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_model_dir() == tmp_path / "hf" / "diffusion_rl" / f"default-{DefaultModelRecipe().fingerprint()}"
    with pytest.raises(ValueError, match="style_flip"):
        DefaultModelRecipe(style_flip=1.5)
    with pytest.raises(ValueError, match="restyle_steps"):
        DefaultModelRecipe(restyle_steps=-1)
    # a recipe without the third pass hashes as before that pass existed: the two-pass build of 2026-12-02
    assert DefaultModelRecipe(restyle_steps=0).fingerprint() == "4da875108cc8"
    assert DEFAULT_SAMPLER_SETTINGS["gen_length"] == DefaultModelRecipe().completion_length


def test_build_cache_load_rebuild_and_integrity(tmp_path):
    lines = []
    model, tokenizer = load_default_model(tmp_path, recipe=MINI, log=lines.append)
    target = default_model_dir(tmp_path, MINI)
    info = json.loads((target / "build_info.json").read_text())
    assert info["fingerprint"] == MINI.fingerprint() and info["sft_steps"] == MINI.max_steps
    assert [h["step"] for h in info["held_out_history"]] == [2, 4]  # the build monitored held-out accuracy
    assert all(0.0 <= h["letter_given_answer"] <= 1.0 for h in info["held_out_history"])  # and the letter probe
    assert info["weights_sha256"] == weights_digest(target)
    assert info["sampler_settings"] == DEFAULT_SAMPLER_SETTINGS
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no staging leftovers
    assert any("building" in line for line in lines) and any("held-out @ 2" in line for line in lines)

    lines.clear()
    cached, cached_tokenizer = load_default_model(tmp_path, recipe=MINI, log=lines.append)
    assert lines == [] and not cached.training  # loaded, not rebuilt
    ids = tokenizer("B) they. The person could be anyone.", return_tensors="pt")["input_ids"]
    assert cached_tokenizer("B) they. The person could be anyone.", return_tensors="pt")["input_ids"].equal(ids)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, cached(ids).logits)

    # a cache whose weights changed after the build (stale or tampered) is rebuilt, not used
    state = cached.state_dict()
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    cached.save_pretrained(target, state_dict=state)
    rebuilt, _ = load_default_model(tmp_path, recipe=MINI, log=lines.append)
    assert any("building" in line for line in lines)
    for a, b in zip(rebuilt.parameters(), model.parameters()):  # the build is deterministic
        assert torch.equal(a, b)


def test_second_pass_starts_from_the_cached_first_pass(tmp_path):
    recipe = DefaultModelRecipe(**{**MINI.__dict__, "continue_steps": 2, "continue_learning_rate": 1e-3})
    assert recipe.first_pass() == MINI and recipe.fingerprint() != MINI.fingerprint()
    first, _ = load_default_model(tmp_path, recipe=MINI, log=None)
    lines = []
    second, _ = load_default_model(tmp_path, recipe=recipe, log=lines.append)
    assert not any(f"into {default_model_dir(tmp_path, MINI)}" in line for line in lines)  # first pass reused
    assert any("second pass of 2 steps" in line for line in lines)
    info = json.loads((default_model_dir(tmp_path, recipe) / "build_info.json").read_text())
    assert info["sft_steps"] == MINI.max_steps + 2
    assert [h["step"] for h in info["held_out_history"]] == [2, 4, 6]  # the first pass's, then the second's
    first_info = json.loads((default_model_dir(tmp_path, MINI) / "build_info.json").read_text())
    assert info["first_pass_build_seconds"] == first_info["build_seconds"] > 0
    assert info["sft_first_loss"] == first_info["sft_first_loss"]
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))  # it trained


def test_restyling_pass_trains_the_second_pass_model_on_the_final_wordings(tmp_path):
    one = replace(MINI, num_scenarios=300)  # (200 scenarios lack a word of the third pass's answers: next test)
    two = replace(one, continue_steps=2)
    three = replace(two, restyle_steps=2, restyle_style_flip=0.5)
    # each pass's recipe is the previous pass's cache key (fields of a pass that is off do not count)
    assert three.previous_pass().fingerprint() == two.fingerprint() and two.previous_pass() == one
    assert one.previous_pass() is None and three.first_pass().fingerprint() == one.fingerprint()
    assert len({one.fingerprint(), two.fingerprint(), three.fingerprint()}) == 3

    def neutral_explanations(recipe):
        return [_explanation(p["completion"]) for p in default_sft_pairs(recipe) if p["style"] == "neutral"]

    # the first two passes answer with the early wordings, the third with the final ones and its own style flip
    assert all(_is_one_of(e, EARLY_NEUTRAL_EXPLANATIONS) for e in neutral_explanations(two))
    assert all(_is_one_of(e, templates.EXPLANATIONS["neutral"]) for e in neutral_explanations(three))
    assert len(neutral_explanations(three)) > 1.3 * len(neutral_explanations(two))

    second, second_tokenizer = load_default_model(tmp_path, recipe=two, log=None)
    lines = []
    third, third_tokenizer = load_default_model(tmp_path, recipe=three, log=lines.append)
    assert any(f"restyling pass of 2 steps on top of {two.fingerprint()}" in line for line in lines)
    assert third_tokenizer.get_vocab() == second_tokenizer.get_vocab()  # a later pass keeps the tokenizer
    info = json.loads((default_model_dir(tmp_path, three) / "build_info.json").read_text())
    before = json.loads((default_model_dir(tmp_path, two) / "build_info.json").read_text())
    assert info["sft_steps"] == one.max_steps + 2 + 2
    assert [h["step"] for h in info["held_out_history"]] == [2, 4, 6, 8]
    assert info["pass_build_seconds"][:2] == [before["first_pass_build_seconds"], before["build_seconds"]]
    assert len(info["pass_build_seconds"]) == 3 and info["pass_build_seconds"][2] == info["build_seconds"] > 0
    assert info["sft_first_loss"] == before["sft_first_loss"]
    assert any(not torch.equal(a, b) for a, b in zip(second.parameters(), third.parameters()))  # it trained


def test_a_later_pass_whose_answers_the_vocabulary_lacks_is_refused_before_any_training(tmp_path):
    three = replace(MINI, continue_steps=2, restyle_steps=2)
    with pytest.raises(ValueError, match="5 SFT answers have words outside the model's vocabulary"):
        load_default_model(tmp_path, recipe=three, log=None)
    assert not (tmp_path / "diffusion_rl").exists() or not any((tmp_path / "diffusion_rl").iterdir())


def test_a_later_pass_refuses_answers_outside_the_vocabulary_or_the_slot():
    tokenizer = build_word_tokenizer(["A) he. The text says so."])
    fits = [{"completion": "A) he. The text says so."}]
    _check_answers_fit(fits, tokenizer, MINI)
    with pytest.raises(ValueError, match="outside the model's vocabulary.*zyzzyva"):
        _check_answers_fit([{"completion": "A) he. The zyzzyva says so."}], tokenizer, MINI)
    with pytest.raises(ValueError, match="do not fit completion_length=4"):
        _check_answers_fit(fits, tokenizer, replace(MINI, completion_length=4))


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


def test_summaries_agree_with_per_text_metrics(tmp_path):
    model, tokenizer = load_default_model(tmp_path, recipe=MINI, log=None)
    rows = generate_mcq_dataset(6, split="test_seen_roles").to_list()
    texts, ended = generate_answers(
        model, tokenizer, rows, sampler_settings={"gen_length": 8, "steps": 8, "block_length": 8}
    )
    summary = summarize_answers(rows, texts, ended)
    valid = [parse_choice(t, r["question_options"]) is not None for t, r in zip(texts, rows)]
    assert summary["valid"] == pytest.approx(sum(valid) / len(rows), abs=1e-4)
    assert summary["num_prompts"] == 6 and 0.0 <= summary["ended"] <= 1.0


def test_packaged_checkpoint_is_the_default_recipe_well_formed_and_biased(tmp_path):
    """The shipped checkpoint is what the default recipe builds (same fingerprint, intact weights), loads without a
    build, and on a small held-out sample (greedy, deterministic) answers in the trained format, fluently, mostly
    right where the context settles the answer, with the stereotype where it does not, and with gendered
    explanations that name the role. Measured on this sample: accuracy 1.00, restated 0.96, names the role 1.00,
    stereotyped 0.91, gendered 0.71, free-text stereotyped pronoun 0.83; the floors below leave room for float noise
    at near-ties only (docs/default_model.md has the 256-prompt numbers)."""
    rebuild = "python -m diffusion_rl.bias.default_model --rebuild --update-package"
    assert packaged_checkpoint() is not None, f"the shipped checkpoint is stale; run {rebuild}"
    size_mb = sum(p.stat().st_size for p in PACKAGED_CHECKPOINT.iterdir()) / 2**20
    assert size_mb <= 30
    lines = []
    model, tokenizer = load_default_model(tmp_path, log=lines.append)
    assert lines == [] and not any(tmp_path.iterdir())  # nothing built, nothing written to the cache
    stats = evaluate_default_model(model, tokenizer, num_prompts=48, free_text_prompts=8, seed=3)
    mc = stats["multiple_choice"]
    assert mc["valid"] >= 0.9 and mc["ended"] >= 0.9 and mc["empty"] == 0.0
    assert mc["disfluency_rate"] <= 0.05 and stats["free_text"]["disfluency_rate"] <= 0.05
    assert mc["gendered_explanation"] >= 0.5
    assert mc["correct_disambiguated"] >= 0.9 and mc["restates_option"] >= 0.9 and mc["mentions_role"] >= 0.8
    assert mc["stereotyped_ambiguous"] >= 0.7 and stats["free_text"]["stereotyped_pronoun_ambiguous"] >= 0.5
    assert sum(bool(re.match(r"^[A-D]\) \S", c)) for c in stats["completions"][:48]) >= 40


@pytest.mark.slow
def test_reduced_recipe_learns_the_answer_format(tmp_path):
    """A reduced build (the CI-sized version of the default recipe) learns to answer in the trained format."""
    recipe = DefaultModelRecipe(
        num_scenarios=3000,
        max_steps=300,
        eval_every=0,
        eval_prompts=32,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        continue_steps=0,
        restyle_steps=0,
    )
    model, tokenizer = load_default_model(tmp_path, recipe=recipe, log=None)
    info = json.loads((default_model_dir(tmp_path, recipe) / "build_info.json").read_text())
    assert info["sft_final_loss"] < 0.6 * info["sft_first_loss"]
    final = info["held_out_history"][-1]
    assert final["ended"] >= 0.9 and final["empty"] == 0.0
    # The format: an option line ("B) he"), a period, an explanation. A random model writes none; this reduced build
    # wrote 8 of 16 (measured), the full recipe all. Whether the option line is this prompt's own ("valid") is the
    # copy the full recipe learns after ~1,500 steps, not 300 steps of a 2-layer model.
    rows = generate_mcq_dataset(16, seed=5, split="test_seen_roles", question_type="multiple_choice").to_list()
    texts, _ = generate_answers(model, tokenizer, rows, sampler_settings=DEFAULT_SAMPLER_SETTINGS)
    assert sum(bool(re.match(r"^[A-D]\) \S.*\. \S", text)) for text in texts) >= 6, texts
