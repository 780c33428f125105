"""check_reward_columns: a reward whose `required_columns` no training row fills is refused before the model loads;
mixed datasets (some rows with the columns, some without) stay allowed."""

import pytest
from datasets import Dataset

from diffusion_rl.bias.data import generate_mcq_dataset
from diffusion_rl.bias.rewards import GenBitReward, GenderedLanguageReward, NeutralChoiceReward
from diffusion_rl.checks import check_reward_columns


@pytest.fixture(scope="module")
def mcq():
    return generate_mcq_dataset(8, seed=0, split="train", question_type="multiple_choice")


def _free_text(n: int = 4) -> Dataset:
    return Dataset.from_dict({"prompt": [f"Describe person {i}." for i in range(n)]})


def test_prompt_only_dataset_is_refused():
    with pytest.raises(ValueError, match=r"reward 'neutral_choice_restated' applies to no row of train_dataset") as e:
        check_reward_columns([NeutralChoiceReward(require_restated_option=True)], _free_text(), "train_dataset")
    message = str(e.value)
    for column in ("question_options", "context_condition", "neutral_option_indices", "gold_option_index"):
        assert column in message
    assert "columns: ['prompt']" in message and "remove the reward" in message


def test_rewards_without_required_columns_are_not_checked():
    check_reward_columns([GenBitReward(), GenderedLanguageReward(only_where_gender_is_open=True)], _free_text(), "x")


def test_mcq_data_and_mixed_data_pass(mcq):
    reward = NeutralChoiceReward()
    check_reward_columns([reward], mcq, "train_dataset")
    free = generate_mcq_dataset(8, seed=0, split="train", question_type="free_text")
    with pytest.raises(ValueError, match=r"'question_options'"):  # only empty option lists: absent
        check_reward_columns([reward], free, "train_dataset")
    mixed = Dataset.from_list([*free.to_list(), mcq[0]])  # one row out of nine is scored: legitimate
    check_reward_columns([reward], mixed, "train_dataset")


def test_one_target_index_is_enough(mcq):
    check_reward_columns([NeutralChoiceReward()], mcq.remove_columns(["gold_option_index"]), "d")
    check_reward_columns([NeutralChoiceReward()], mcq.remove_columns(["neutral_option_indices"]), "d")
    neither = mcq.remove_columns(["gold_option_index", "neutral_option_indices"])
    with pytest.raises(
        ValueError, match=r"needs the column\(s\) one of 'neutral_option_indices' / 'gold_option_index'"
    ):
        check_reward_columns([NeutralChoiceReward()], neither, "d")


def test_null_column_counts_as_absent_and_selections_are_honoured(mcq):
    rows = [{"prompt": "Q1", "question_options": None}, {"prompt": "Q2", "question_options": ["a", "b"]}]
    data = Dataset.from_list(rows)

    def needs_options(prompts, completions, **kwargs):
        return [None] * len(completions)

    needs_options.required_columns = "question_options"  # a lone name is one column, not its characters
    check_reward_columns([needs_options], data, "d")
    with pytest.raises(ValueError, match=r"reward 'needs_options' applies to no row of d"):
        check_reward_columns([needs_options], data.select([0]), "d")  # the selected row is null


def test_custom_reward_declaration_and_dict_of_datasets():
    class NeedsLabel:
        name = "label_match"
        required_columns = ("label",)

        def __call__(self, prompts, completions, **kwargs):
            return [0.0] * len(completions)

    data = _free_text()
    check_reward_columns([NeedsLabel()], data.add_column("label", ["x"] * len(data)), "d")
    with pytest.raises(ValueError, match=r"applies to no row of d\['b'\]"):
        check_reward_columns([NeedsLabel()], {"a": data.add_column("label", ["x"] * len(data)), "b": data}, "d")
    NeedsLabel.required_columns = ("label", ())
    with pytest.raises(TypeError, match="required_columns of reward 'label_match'"):
        check_reward_columns([NeedsLabel()], data, "d")


def test_list_of_dicts_is_not_scanned():
    # Rows of a plain list may differ in their keys: not refused on the first row's.
    check_reward_columns([NeutralChoiceReward()], [{"prompt": "Q"}], "train_dataset")


def test_trainer_refuses_before_loading_the_model(tmp_path):
    from diffusion_rl.config import DiffusionReinforceConfig
    from diffusion_rl.trainer import DiffusionReinforceTrainer

    args = DiffusionReinforceConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        block_length=8,
        steps=2,
        report_to=[],
    )
    # The model is a path that does not exist: reaching the load would be a different error.
    with pytest.raises(ValueError, match="applies to no row of train_dataset"):
        DiffusionReinforceTrainer(
            str(tmp_path / "no-model"), [NeutralChoiceReward()], args=args, train_dataset=_free_text()
        )


def test_job_refuses_free_text_synthetic_data(tmp_path, monkeypatch):
    from diffusion_rl.bias import train as train_bias

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the rewards' columns were checked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_bias, "load_model_and_tokenizer", no_model)
    argv = ["--question_type", "free_text", "--rewards", "genbit", "neutral_choice", "--output_dir", "out"]
    with pytest.raises(ValueError, match=r"synthetic training data \(--question_type free_text\).*--question_type"):
        train_bias.main(argv)
