"""evaluate_model on the tiny LLaDA with LoRA: pairing, exact KL, aggregation, determinism, bad input."""

import copy

import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from diffusion_rl.bias.data import generate_mcq_dataset
from diffusion_rl.bias.evaluation import evaluate_model, report_evaluation
from diffusion_rl.evaluation.generate import AdapterMismatchError, completion_kl, generate_completions, load_adapter
from diffusion_rl.models.tiny import build_tiny_model

SAMPLER = {"steps": 4, "gen_length": 8, "block_length": 4}
LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)


@pytest.fixture(scope="module")
def dataset():
    # Both question types, same scenarios: 2 multiple-choice + 2 free-text rows of the held-out split.
    return generate_mcq_dataset(4, seed=0, split="test", question_type=None)


@pytest.fixture(scope="module")
def zero_lora(tiny_model):
    return get_peft_model(copy.deepcopy(tiny_model), LORA).eval()


@pytest.fixture(scope="module")
def trained_lora(tiny_model):
    model = get_peft_model(copy.deepcopy(tiny_model), LORA).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return model


@pytest.fixture(scope="module")
def zero_result(zero_lora, tiny_tokenizer, dataset):
    return evaluate_model(
        zero_lora, tiny_tokenizer, dataset, temperatures=(0.0, 1.0), sampler_kwargs=SAMPLER, batch_size=4, seed=3
    )


def test_zero_lora_arms_identical_and_kl_exactly_zero(zero_result):
    result = zero_result
    base, adapter = result.variant("base"), result.variant("adapter")
    assert len(base) == len(adapter) == 2 * 4
    # Same seeds per batch: with a zero adapter both arms generate the same text, also at T=1.
    assert base["completion"].tolist() == adapter["completion"].tolist()
    assert (adapter["kl"] == 0.0).all() and (base["kl"] == 0.0).all()
    # Per-setting metrics are the means of the records, separately per question type.
    assert set(result.metrics["question_type"]) == {"multiple_choice", "free_text"}
    assert len(result.metrics) == 2 * 2 * 2  # temperatures x variants x question types
    for _, row in result.metrics.iterrows():
        group = result.records[
            (result.records["temperature"] == row["temperature"])
            & (result.records["variant"] == row["variant"])
            & (result.records["question_type"] == row["question_type"])
        ]
        assert row["n"] == len(group) == 2
        assert row["length"] == pytest.approx(group["length"].mean())
        assert row["pronoun_rate"] == pytest.approx(group["pronoun_rate"].mean())
    mcq = result.metrics[result.metrics["question_type"] == "multiple_choice"]
    assert mcq["valid"].notna().all()
    assert result.metrics[result.metrics["question_type"] == "free_text"]["valid"].isna().all()


def test_core_generation_is_the_unscored_half(zero_lora, tiny_tokenizer, dataset, zero_result):
    # The core's generate_completions gives the same records as the bias evaluation, without any metric column.
    generated = generate_completions(
        zero_lora, tiny_tokenizer, dataset, temperatures=(0.0, 1.0), sampler_kwargs=SAMPLER, batch_size=4, seed=3
    )
    columns = [
        "index",
        "id",
        "question_type",
        "temperature",
        "variant",
        "prompt",
        "completion",
        "length",
        "ended",
        "kl",
    ]
    assert generated.records.columns.tolist() == columns and generated.metrics.empty and not generated.notes
    # a stop token closed the answer exactly when the kept tokens end before the canvas does, or end on EOS/EOT
    assert (generated.records["ended"] | (generated.records["length"] == SAMPLER["gen_length"])).all()
    pd.testing.assert_frame_equal(generated.records, zero_result.records[columns])
    assert generated.config == zero_result.config


def test_kl_matches_hand_computation(trained_lora, tiny_tokenizer, dataset):
    result = evaluate_model(
        trained_lora, tiny_tokenizer, dataset.select(range(2)), sampler_kwargs=SAMPLER, batch_size=2, seed=0
    )
    adapter = result.variant("adapter")
    assert (adapter["kl"] > 0).all()
    # Independent computation for prompt 0 alone (no padding): masked completion of the generated length.
    from diffusion_rl.data import tokenize_prompts

    enc = tokenize_prompts(tiny_tokenizer, [dataset[0]["prompt"]])
    mask_id = trained_lora.config.mask_token_id
    length = int(adapter["length"][0])
    ids = torch.cat([enc["input_ids"], torch.full((1, SAMPLER["gen_length"]), mask_id)], dim=1)
    with torch.no_grad():
        p = trained_lora(input_ids=ids).logits[0, -SAMPLER["gen_length"] :].double().log_softmax(-1)
        with trained_lora.disable_adapter():
            q = trained_lora(input_ids=ids).logits[0, -SAMPLER["gen_length"] :].double().log_softmax(-1)
    per_position = (p.exp() * (p - q)).sum(-1)  # (G,)
    expected = per_position[:length].mean().item()
    assert adapter["kl"][0] == pytest.approx(expected, rel=1e-4)


def test_deterministic_and_batch_seeds(trained_lora, tiny_tokenizer, dataset):
    kwargs = {"temperatures": (1.0,), "sampler_kwargs": SAMPLER, "batch_size": 2, "compare_base": False}
    a = evaluate_model(trained_lora, tiny_tokenizer, dataset, seed=5, **kwargs)
    b = evaluate_model(trained_lora, tiny_tokenizer, dataset, seed=5, **kwargs)
    assert a.records["completion"].tolist() == b.records["completion"].tolist()
    assert set(a.records["variant"]) == {"adapter"}
    state = torch.get_rng_state()
    evaluate_model(trained_lora, tiny_tokenizer, dataset.select(range(1)), seed=5, **kwargs)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched


def test_plain_model_and_save(tiny_model, tiny_tokenizer, dataset, tmp_path):
    result = evaluate_model(
        tiny_model, tiny_tokenizer, dataset.select(range(2)), sampler_kwargs=SAMPLER, compare_base=False
    )
    assert set(result.records["variant"]) == {"model"} and result.records["kl"].isna().all()
    out = result.save(tmp_path / "eval")
    assert {p.name for p in out.iterdir()} == {"records.jsonl", "metrics.csv", "eval_config.json"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset": []}, "empty"),
        ({"temperatures": (-0.1,)}, "out of range"),
        ({"temperatures": (float("nan"),)}, r"finite number, got nan\. Use values in \[0, 10\]"),
        ({"temperatures": (11.0,)}, "out of range"),
        ({"temperatures": ()}, "empty"),
        ({"temperatures": (0.0, 0.0)}, "duplicates"),
        ({"sampler_kwargs": {**SAMPLER, "temperature": 1.0}}, "temperatures"),
        ({"dataset": [{"question_text": "x"}]}, "prompt"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input(zero_lora, tiny_tokenizer, dataset, kwargs, match):
    args = {"dataset": dataset.select(range(1)), "sampler_kwargs": SAMPLER, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_model(zero_lora, tiny_tokenizer, **args)


def test_compare_base_needs_peft(tiny_model, tiny_tokenizer, dataset):
    with pytest.raises(ValueError, match="PEFT"):
        evaluate_model(tiny_model, tiny_tokenizer, dataset.select(range(1)), sampler_kwargs=SAMPLER)
    with pytest.raises(TypeError, match="PEFT"):
        completion_kl(
            tiny_model, torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2), torch.ones(1, 2), mask_token_id=0
        )


def test_load_adapter_round_trip_and_mismatch(trained_lora, tiny_model, tiny_tokenizer, tmp_path):
    trained_lora.save_pretrained(tmp_path / "adapter")
    loaded = load_adapter(copy.deepcopy(tiny_model), tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, trained_lora(input_ids=ids).logits)
    wider = build_tiny_model(tiny_tokenizer, seed=0, hidden_size=32, intermediate_size=64)
    with pytest.raises(AdapterMismatchError, match="does not fit"):
        load_adapter(wider, tmp_path / "adapter")
    mlp_only = LoraConfig(r=2, target_modules=["gate_proj"])
    get_peft_model(copy.deepcopy(tiny_model), mlp_only).save_pretrained(tmp_path / "mlp")
    no_gate = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(AdapterMismatchError, match="gate_proj"):
        load_adapter(no_gate, tmp_path / "mlp")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(tiny_model, tmp_path / "nothing")


def test_report_from_real_generations(zero_result, tmp_path):
    history = [{"step": s, "loss": 1.0 / s, "reward": -1.0 / s, "kl": 0.01 * s} for s in (1, 2, 3)]
    path = report_evaluation(zero_result, tmp_path, log_history=history, num_resamples=200, num_examples=1)
    text = path.read_text()
    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    assert plots == {"training.png", "before_after.png", "bias_T0.png", "bias_T1.png"}
    assert (tmp_path / "comparison.csv").is_file() and (tmp_path / "records.jsonl").is_file()
    comparison = pd.read_csv(tmp_path / "comparison.csv")
    # Zero adapter: every paired difference is exactly 0 with a degenerate interval.
    assert (comparison["diff"].fillna(0) == 0).all() and (comparison["ci_high"].fillna(0) == 0).all()
    # The examples section quotes the real first prompt and its generation.
    first = zero_result.variant("adapter").iloc[0]
    assert "## Examples before and after" in text and first["completion"] in text
    assert "## BBQ-style scores" in text and "## Limitations" in text


def test_records_carry_the_requested_metadata(zero_lora, tiny_tokenizer, dataset):
    generated = generate_completions(
        zero_lora,
        tiny_tokenizer,
        dataset.select(range(3)),
        sampler_kwargs=SAMPLER,
        batch_size=2,
        metadata_columns=["question_options", "gold_option_index", "not_a_column"],
    )
    rows = dataset.select(range(3)).to_list()
    for record in generated.records.to_dict("records"):
        row = rows[record["index"]]
        assert record["question_options"] == row["question_options"] and record["not_a_column"] is None
        if row["gold_option_index"] is None:  # free text: a null (NaN in the frame, null in records.jsonl)
            assert pd.isna(record["gold_option_index"])
        else:
            assert record["gold_option_index"] == row["gold_option_index"]


def test_sequence_kl_columns(zero_lora, trained_lora, tiny_tokenizer, dataset, tiny_model):
    kwargs = {"temperatures": (0.0, 1.0), "sampler_kwargs": SAMPLER, "batch_size": 2, "seed": 4}
    zero = evaluate_model(zero_lora, tiny_tokenizer, dataset, sequence_kl_paths=True, **kwargs)
    assert (zero.records["kl_sequence"] == 0).all() and (zero.records["kl_sequence_total"] == 0).all()
    with_kl = evaluate_model(trained_lora, tiny_tokenizer, dataset, sequence_kl_paths=True, **kwargs)
    without = evaluate_model(trained_lora, tiny_tokenizer, dataset, **kwargs)
    # Its own random stream: the completions are those of an evaluation without it.
    assert with_kl.records["completion"].tolist() == without.records["completion"].tolist()
    assert "kl_sequence" not in without.records
    adapter = with_kl.variant("adapter")
    assert (adapter["kl_sequence_total"] > 0).all()
    # One path per prompt, on every adapter row of that prompt (both temperatures); the base arm is 0.
    assert adapter.groupby("index")["kl_sequence"].nunique().eq(1).all()
    assert (with_kl.variant("base")["kl_sequence"] == 0).all()
    again = evaluate_model(trained_lora, tiny_tokenizer, dataset, sequence_kl_paths=True, **kwargs)
    assert again.records["kl_sequence"].tolist() == with_kl.records["kl_sequence"].tolist()
    assert "kl_sequence" in with_kl.metrics.columns
    with pytest.raises(ValueError, match="sequence_kl_paths=True .* PEFT"):
        evaluate_model(tiny_model, tiny_tokenizer, dataset, compare_base=False, sequence_kl_paths=True, **kwargs)
