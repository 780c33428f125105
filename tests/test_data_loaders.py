"""User-data loaders: round trips through JSONL/JSON/CSV/Dataset, edsl rendering, chat prompts, clear errors."""

import csv
import json

import datasets
import pytest

from diffusion_rl.bias.data import generate_mcq_dataset
from diffusion_rl.data import PromptDataError, export_jsonl, load_prompt_dataset, render_mcq_prompt


@pytest.fixture(scope="module")
def sample():
    return generate_mcq_dataset(40, seed=2, question_type=None)


def test_jsonl_round_trip_keeps_schema(sample, tmp_path):
    path = export_jsonl(sample, tmp_path / "out" / "mcq.jsonl")
    loaded = load_prompt_dataset(path)
    assert loaded.to_list() == sample.to_list()
    assert loaded.features == sample.features  # int32 indices and nulls restored, not inferred int64


def test_json_round_trip(sample, tmp_path):
    path = tmp_path / "mcq.json"
    path.write_text(json.dumps(sample.to_list()))
    assert load_prompt_dataset(path).to_list() == sample.to_list()


def test_csv_round_trip_with_json_list_cells(sample, tmp_path):
    path = tmp_path / "mcq.csv"
    rows = sample.to_list()
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    assert load_prompt_dataset(path).to_list() == rows


def test_hf_dataset_and_dataset_dict(sample):
    assert load_prompt_dataset(sample) is sample
    dd = datasets.DatasetDict({"train": sample, "test": sample.select(range(3))})
    assert len(load_prompt_dataset(dd, split="test")) == 3
    with pytest.raises(ValueError, match="pass split"):
        load_prompt_dataset(dd)


def test_edsl_records_render_like_the_generator(tmp_path):
    records = [
        {"question_name": "q1", "question_text": "Who would make a better pilot?",
         "question_options": ["A man", "A woman", "Gender does not matter"], "question_type": "multiple_choice",
         "my_label": 2},
        {"question_name": "q2", "question_text": "Who would make a better pilot? Explain briefly.",
         "question_type": "free_text", "my_label": None},
    ]  # fmt: skip
    path = tmp_path / "edsl.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    loaded = load_prompt_dataset(path)
    assert loaded[0]["prompt"] == (
        "Who would make a better pilot?\n\nA) A man\nB) A woman\nC) Gender does not matter\n\n"
        "Answer with the letter of your choice, followed by a one-sentence explanation."
    )
    assert loaded[0]["prompt"] == render_mcq_prompt(records[0]["question_text"], records[0]["question_options"])
    assert loaded[1]["prompt"] == records[1]["question_text"]
    assert loaded["my_label"] == [2, None]  # extra columns are forwarded
    # a Dataset without a prompt column gets one
    ds = load_prompt_dataset(datasets.Dataset.from_list(records[:1]))
    assert ds[0]["prompt"] == loaded[0]["prompt"]


def test_chat_message_prompts(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "Be fair."}, {"role": "user", "content": "Hi?"}], "k": 1}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    assert load_prompt_dataset(path).to_list() == rows
    csv_path = tmp_path / "chat.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "k"])
        w.writerow([json.dumps(rows[0]["prompt"]), "1"])
        w.writerow(["[not json] a plain prompt", "2"])
    with pytest.raises(PromptDataError, match="mix"):
        load_prompt_dataset(csv_path)
    assert load_prompt_dataset(rows)[0]["prompt"] == rows[0]["prompt"]


@pytest.mark.parametrize(
    "record, match",
    [
        ({"text": "hello"}, "record 0 has neither"),
        ({"question_text": "Q?", "question_options": []}, "record 0: field 'question_options'"),
        ({"question_text": "Q?", "question_options": ["a", "a"], "question_type": "multiple_choice"}, "repeats"),
        ({"question_text": "Q?", "question_options": ["a", 3]}, "non-string"),
        ({"question_text": 5, "question_options": ["a", "b"]}, "question_text"),
        ({"prompt": 12}, "field 'prompt'"),
        ({"prompt": "   "}, "empty"),
        ({"question_text": "Q?", "question_options": ["a", "b"], "question_type": "rank"}, "question_type"),
    ],
)
def test_bad_records_name_record_and_field(record, match):
    with pytest.raises(PromptDataError, match=match):
        load_prompt_dataset([record])


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_prompt_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_prompt_dataset(tmp_path / "x.txt")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(PromptDataError, match="bad.jsonl:2"):
        load_prompt_dataset(tmp_path / "bad.jsonl")
    with pytest.raises(TypeError):
        load_prompt_dataset(42)


def _prompts(n: int, tag: str) -> list[dict]:
    return [{"prompt": f"{tag} prompt {i}", "index": i} for i in range(n)]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_kind_whatever_the_split(tmp_path, suffix):
    """`--dataset_name my_prompts.jsonl` with TRL's default `--dataset_train_split train` (the user report), or
    `diffusion-rl evaluate`'s default `--dataset_test_split test`: a lone file is one split."""
    rows = _prompts(3, "file")
    path = tmp_path / f"my_prompts{suffix}"
    if suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif suffix == ".csv":
        path.write_text("prompt,index\n" + "".join(f"{r['prompt']},{r['index']}\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        export_jsonl(rows, path)
    for split in (None, "train", "test"):
        loaded = load_prompt_dataset(str(path), split=split)
        assert loaded["prompt"] == [r["prompt"] for r in rows]


def test_save_to_disk_folders(tmp_path):
    single = datasets.Dataset.from_list(_prompts(4, "saved"))
    single.save_to_disk(str(tmp_path / "single"))
    for split in ("train", "validation"):  # one split: the name means nothing
        assert load_prompt_dataset(str(tmp_path / "single"), split=split)["prompt"] == single["prompt"]
    splits = datasets.DatasetDict({"train": single, "test": datasets.Dataset.from_list(_prompts(2, "held-out"))})
    splits.save_to_disk(str(tmp_path / "splits"))
    held_out = load_prompt_dataset(tmp_path / "splits", split="test")
    assert held_out["prompt"] == ["held-out prompt 0", "held-out prompt 1"]
    assert len(load_prompt_dataset(tmp_path / "splits", split="train")) == 4
    with pytest.raises(ValueError, match="split 'dev' not in the DatasetDict"):
        load_prompt_dataset(tmp_path / "splits", split="dev")


def test_folder_of_split_files_like_a_hub_repo(tmp_path):
    export_jsonl(_prompts(3, "train"), tmp_path / "repo" / "train.jsonl")
    export_jsonl(_prompts(1, "test"), tmp_path / "repo" / "test.jsonl")
    assert load_prompt_dataset(tmp_path / "repo", split="test")["prompt"] == ["test prompt 0"]
    assert len(load_prompt_dataset(tmp_path / "repo", split="train")) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a `save_to_disk` dataset nor"):
        load_prompt_dataset(tmp_path / "empty")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="'someone/no-such-prompts' is neither a local file or folder nor"):
        load_prompt_dataset("someone/no-such-prompts", split="train")
