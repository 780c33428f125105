"""DiffusionSFTTrainer: the loss against a float64 hand computation, learning, exact resume, LoRA, dataset formats,
and bad inputs rejected before any forward pass (tiny LLaDA on CPU)."""

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.models.tiny import build_tiny_model
from diffusion_rl.output_lock import OutputDirLockedError
from diffusion_rl.resume import IncompleteCheckpointError
from diffusion_rl.sft import tokenize_sft_pairs
from diffusion_rl.sft_config import DiffusionSFTConfig
from diffusion_rl.sft_trainer import DiffusionSFTTrainer

# Prompts of different lengths, so that the left padding is exercised.
PROMPTS = ["Who is Ana?", "Describe the nurse who works nights at the clinic.", "Name a job.", "Who fixed the car?"]
ANSWERS = ["Ana is a pilot.", "She is kind.", "Engineer.", "The mechanic fixed it quickly."]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _config(tmp_path, **kwargs) -> DiffusionSFTConfig:
    defaults = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    return DiffusionSFTConfig(**{**defaults, **kwargs})


def _dataset(n: int = 4) -> Dataset:
    return Dataset.from_dict({"prompt": (PROMPTS * 2)[:n], "completion": (ANSWERS * 2)[:n]})


def _trainer(tmp_path, tokenizer, dataset=None, model=None, **kwargs) -> DiffusionSFTTrainer:
    peft_config = kwargs.pop("peft_config", None)
    eval_dataset = kwargs.pop("eval_dataset", None)
    return DiffusionSFTTrainer(
        model if model is not None else build_tiny_model(tokenizer, seed=0),
        args=_config(tmp_path, **kwargs),
        train_dataset=dataset if dataset is not None else _dataset(),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def _trainable(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------ the objective


def test_compute_loss_matches_float64_hand_computation(tmp_path, tiny_tokenizer):
    trainer = _trainer(tmp_path, tiny_tokenizer)
    batch = trainer._prepare_inputs(trainer.data_collator(_dataset().to_list()))
    ids, answer, attention = batch["input_ids"], batch["answer_mask"], batch["attention_mask"]  # (B, L)
    assert (attention == 0).any(), "the prompts should need left padding"
    draws = torch.Generator().set_state(trainer._mask_generator.get_state())
    global_rng = torch.get_rng_state()
    model = trainer.model.train()
    loss = trainer.compute_loss(model, batch)
    assert torch.equal(torch.get_rng_state(), global_rng), "the global RNG must not be used"
    assert not torch.equal(trainer._mask_generator.get_state(), draws.get_state()), "the masks come from the trainer"

    # The same draws, in forward_process's order: t (B,), then one uniform per position (B, L).
    eps = trainer.args.mask_eps
    p_mask = (1 - eps) * torch.rand(ids.shape[0], generator=draws) + eps
    masked = (torch.rand(ids.shape, generator=draws) < p_mask[:, None]) & answer
    assert masked.any()
    noisy = ids.masked_fill(masked, trainer.mask_token_id)
    with torch.no_grad():
        logits = model(input_ids=noisy, attention_mask=attention).logits.double()  # (B, L, V), every position
    log_probs = logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]  # (B, L)
    expected = 0.0
    for b in range(ids.shape[0]):
        expected += float(-log_probs[b][masked[b]].sum()) / float(p_mask[b]) / int(answer[b].sum())
    expected /= ids.shape[0]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_training_reduces_the_eval_loss_on_a_memorisation_set(tmp_path, tiny_tokenizer):
    trainer = _trainer(
        tmp_path,
        tiny_tokenizer,
        eval_dataset=_dataset(),
        max_steps=8,
        learning_rate=1e-2,
        per_device_train_batch_size=4,
    )
    before = trainer.evaluate()["eval_loss"]
    # The eval masks are re-drawn identically at each evaluation: the same model gives the same eval loss.
    assert trainer.evaluate()["eval_loss"] == before
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.75 * before, (before, after)  # measured: 8.92 -> 4.93


# ------------------------------------------------------------------ checkpoints


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_tokenizer):
    # Full fine-tuning (optimizer state everywhere), 8 rows / batch 2: resuming at step 2 is mid-epoch.
    def run(name: str, resume: str | None = None) -> DiffusionSFTTrainer:
        trainer = _trainer(
            tmp_path / name, tiny_tokenizer, dataset=_dataset(8), max_steps=4, save_strategy="steps", save_steps=2
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run("straight")
    expected = _trainable(straight)
    checkpoint = tmp_path / "straight" / "out" / "checkpoint-2"
    assert (checkpoint / "diffusion_rng_state_0.pth").is_file()

    torch.rand(1000)  # consume the global RNG differently from the straight run
    resumed = run("resumed", str(checkpoint))
    got = _trainable(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e and e["step"] > 2] for t in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 2

    # Without the mask generator's state a resume would draw other masks: it is refused, naming the file.
    os.remove(checkpoint / "diffusion_rng_state_0.pth")
    with pytest.raises(IncompleteCheckpointError, match=r"diffusion_rng_state_0\.pth"):
        run("refused", str(checkpoint))
    # resume_from_checkpoint=True skips the incomplete checkpoint-2 for the newest complete one (checkpoint-4)
    assert (tmp_path / "straight" / "out" / "checkpoint-4").is_dir()
    again = _trainer(tmp_path / "straight", tiny_tokenizer, dataset=_dataset(8), max_steps=4, save_strategy="no")
    again.train(resume_from_checkpoint=True)
    assert again.state.global_step == 4


def test_a_second_run_on_the_same_output_dir_is_refused(tmp_path, tiny_tokenizer):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "busy" / "out")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirLockedError, match=rf"pid {holder.pid}"):
            _trainer(tmp_path / "busy", tiny_tokenizer)
    finally:
        holder.kill()
        holder.wait()


_HOLD_LOCK = """
import sys, time
from diffusion_rl.output_lock import OutputDirLock
OutputDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_lora_trains_only_the_adapter_and_writes_a_card(tmp_path, tiny_tokenizer):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS)
    trainer = _trainer(tmp_path, tiny_tokenizer, peft_config=lora, max_steps=3, learning_rate=1e-2)
    trainable = set(_trainable(trainer))
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    after = {n: p.detach() for n, p in trainer.model.named_parameters()}
    for name in (n for n in after if "lora_B" in n):  # zero-initialised: must have moved
        assert after[name].abs().sum() > 0, name
    base = build_tiny_model(tiny_tokenizer, seed=0).state_dict()
    frozen = {n: p for n, p in after.items() if "lora_" not in n}
    assert len(frozen) == len(base)
    for name, value in frozen.items():
        assert torch.equal(value, base[name.removeprefix("base_model.model.").replace(".base_layer", "")]), name

    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: peft" in card and "DiffusionSFTTrainer" in card
    assert "- sft" in card and "- lora" in card and "- reinforce" not in card
    assert f"| completion_length | {trainer.completion_length} |" in card and "Reward configuration" not in card


# ------------------------------------------------------------------ dataset formats


def _formats(system: bool) -> dict[str, tuple[Dataset, dict]]:
    head = [{"role": "system", "content": "Be brief."}] if system else []
    user = [head + [{"role": "user", "content": p}] for p in PROMPTS]
    assistant = [[{"role": "assistant", "content": a}] for a in ANSWERS]
    extra = {"id": list(range(len(PROMPTS)))}  # an unused column
    return {
        "string": (Dataset.from_dict({"prompt": PROMPTS, "completion": ANSWERS, **extra}), {}),
        "conversational": (Dataset.from_dict({"prompt": user, "completion": assistant, **extra}), {}),
        "messages": (Dataset.from_dict({"messages": [u + a for u, a in zip(user, assistant)], **extra}), {}),
        "renamed": (
            Dataset.from_dict({"question": user, "answer": ANSWERS, **extra}),
            {"dataset_prompt_field": "question", "dataset_completion_field": "answer"},
        ),
    }


@pytest.mark.parametrize("remove_unused_columns", [False, True])
@pytest.mark.parametrize("system", [False, True])
@pytest.mark.parametrize("name", ["string", "conversational", "messages", "renamed"])
def test_every_format_gives_the_tokens_of_the_string_format(
    tmp_path, tiny_tokenizer, name, system, remove_unused_columns
):
    dataset, fields = _formats(system)[name]
    # The string format gets the system message from the config, the conversational ones carry it.
    system_prompt = "Be brief." if system and name == "string" else None
    trainer = _trainer(
        tmp_path, tiny_tokenizer, dataset=dataset, completion_length=12, system_prompt=system_prompt,
        remove_unused_columns=remove_unused_columns, **fields,
    )  # fmt: skip
    batch = next(iter(trainer.get_eval_dataloader(dataset)))
    expected = tokenize_sft_pairs(
        tiny_tokenizer, PROMPTS, ANSWERS, completion_length=12, system_prompt="Be brief." if system else None
    )
    assert batch.keys() == expected.keys()
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
    # The answer slot is the sampler's canvas: answer, EOT, then EOS up to completion_length.
    assert batch["answer_mask"].sum(1).tolist() == [12] * len(PROMPTS)


def test_completion_length_defaults_to_the_longest_answer_with_eot(tmp_path, tiny_tokenizer):
    eval_answers = ["A much longer answer than any of the training answers, by far."]
    eval_dataset = Dataset.from_dict({"prompt": ["Hi?"], "completion": eval_answers})
    trainer = _trainer(tmp_path, tiny_tokenizer, eval_dataset={"held_out": eval_dataset})
    lengths = [len(tiny_tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in ANSWERS + eval_answers]
    assert trainer.completion_length == max(lengths)
    assert trainer.evaluate()["eval_held_out_loss"] > 0


def test_model_path_loads_model_tokenizer_and_default_config(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative
    trainer = DiffusionSFTTrainer(str(tiny_model_dir), train_dataset=_dataset())
    assert trainer.args.output_dir.endswith(f"{tiny_model_dir.name}-DiffusionSFT")
    assert trainer.processing_class.chat_template is not None
    assert trainer.mask_token_id == trainer.processing_class.mask_token_id
    assert all(p.requires_grad for p in trainer.model.parameters())  # no peft_config: full fine-tuning


# ------------------------------------------------------------------ bad inputs, before any compute


def _no_mask_model(tokenizer):
    model = build_tiny_model(tokenizer, seed=0)
    model.config.mask_token_id = None
    return model


def _tokenizer_without(attribute: str, value):
    def make(tokenizer):
        tokenizer = copy.deepcopy(tokenizer)
        setattr(tokenizer, attribute, value)
        return tokenizer

    return make


def _rows(**columns) -> Dataset:
    return Dataset.from_dict(columns)


LONG_PROMPT = "word " * 80
BAD_INPUTS = {
    "wrong columns": (
        {"dataset": _rows(question=["q"], answer=["a"])},
        "neither 'prompt'/'completion' nor 'messages'",
    ),
    "no completion column": ({"dataset": _rows(prompt=["q"])}, "no 'completion' column"),
    "two formats": (
        {"dataset": _rows(prompt=["q"], completion=["a"], messages=[[{"role": "user", "content": "q"}]])},
        "both a 'prompt' and a 'messages' column",
    ),
    "answer too long": (
        {"dataset": _rows(prompt=["q", "r"], completion=["a", "a b c d e f g h"]), "completion_length": 3},
        "train_dataset row 1: the answer needs",
    ),
    "eval answer too long": (
        {"eval_dataset": _rows(prompt=["q"], completion=["word " * 20]), "completion_length": 10},
        "eval_dataset row 0: the answer needs",
    ),
    "prompt too long": (
        {"dataset": _rows(prompt=["q", LONG_PROMPT], completion=["a", "b"]), "max_prompt_length": 40},
        "train_dataset row 1: prompt 0 is",
    ),
    "empty prompt": ({"dataset": _rows(prompt=["q", "  "], completion=["a", "b"])}, "row 1 has an empty prompt"),
    "last message not assistant": (
        {"dataset": _rows(messages=[[{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]])},
        "last message must be the assistant's answer",
    ),
    "two completion messages": (
        {"dataset": _rows(prompt=["q"], completion=[[{"role": "assistant", "content": "a"}] * 2])},
        "exactly one assistant message",
    ),
    "completion not from the assistant": (
        {"dataset": _rows(prompt=["q"], completion=[[{"role": "user", "content": "a"}]])},
        "it must be 'assistant'",
    ),
    "message without content": (
        {"dataset": _rows(prompt=[[{"role": "user", "text": "q"}]], completion=["a"])},
        "prompt message 0 needs string 'content'",
    ),
    "system prompt twice": (
        {
            "dataset": _rows(
                prompt=[[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]], completion=["a"]
            ),
            "system_prompt": "Be brief.",
        },
        "already starts with a system message",
    ),  # fmt: skip
    "mask token in the answer": (
        {"dataset": _rows(prompt=["q"], completion=["a <|mdm_mask|> b"])},
        "row 0: the answer contains the mask token",
    ),
    "mask token in the prompt": (
        {"dataset": _rows(prompt=["q <|mdm_mask|>"], completion=["a"])},
        # refused by tokenize_prompts as a special token in user text (diffusion_rl.data.chat)
        r"row 0: prompt 0 contains the special token\(s\) \['<\|mdm_mask\|>'\]",
    ),
    "empty dataset": ({"dataset": _rows(prompt=[], completion=[])}, "train_dataset is empty"),
    "no dataset": ({"dataset": None, "eval_dataset": None}, "pass a train_dataset"),
    "no mask token id": ({"model": _no_mask_model}, "config has no mask_token_id"),
    "no chat template": ({"tokenizer": _tokenizer_without("chat_template", None)}, "no chat_template"),
    "pad is the mask": ({"tokenizer": _tokenizer_without("pad_token", "<|mdm_mask|>")}, "pad_token_id is the mask"),
    "bad LoRA targets": ({"peft_config": LoraConfig(target_modules=["query"])}, r"LoRA target modules \['query'\]"),
    "adapter twice": (
        {
            "model": lambda tok: get_peft_model(build_tiny_model(tok), LoraConfig(target_modules=LORA_TARGETS)),
            "peft_config": LoraConfig(target_modules=LORA_TARGETS),
        },
        "already a PeftModel",
    ),
    "nothing trainable": ({"model": lambda tok: build_tiny_model(tok).requires_grad_(False)}, "requires_grad=True"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_before_any_forward_pass(case, tmp_path, tiny_tokenizer):
    spec, message = BAD_INPUTS[case]
    spec = dict(spec)
    tokenizer = spec.pop("tokenizer", lambda tok: tok)(tiny_tokenizer)
    model = spec.pop("model", lambda tok: build_tiny_model(tok, seed=0))(tokenizer)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    dataset = spec.pop("dataset", _dataset())
    with pytest.raises(ValueError, match=message):
        DiffusionSFTTrainer(
            model,
            args=_config(tmp_path, **{k: v for k, v in spec.items() if k not in ("eval_dataset", "peft_config")}),
            train_dataset=dataset,
            eval_dataset=spec.get("eval_dataset"),
            processing_class=tokenizer,
            peft_config=spec.get("peft_config"),
        )
    assert not calls, "a forward pass ran before the error"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_eps": 1.0}, r"mask_eps must be in \[0, 1\)"),
        ({"mask_eps": float("nan")}, r"mask_eps must be in \[0, 1\)"),
        ({"mask_eps": -0.1}, r"mask_eps must be in \[0, 1\)"),
        ({"completion_length": 0}, "completion_length must be a positive integer or None"),
        ({"completion_length": True}, "completion_length must be a positive integer or None"),
        ({"max_prompt_length": -1}, "max_prompt_length must be a positive integer or None"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number"),
        ({"system_prompt": ""}, "system_prompt must be a non-empty string"),
        ({"dataset_completion_field": "prompt"}, "must name different columns"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionSFTConfig(output_dir="unused", report_to="none", **kwargs)


def test_config_defaults_follow_trl_sft():
    config = DiffusionSFTConfig(output_dir="unused")
    assert config.learning_rate == 2e-5 and config.logging_steps == 10 and config.mask_eps == 1e-3
    assert config.remove_unused_columns is False and config.completion_length is None and config.bf16 is False


def test_streaming_dataset_needs_completion_length_and_rl_config_is_rejected(tmp_path, tiny_tokenizer):
    stream = _dataset().to_iterable_dataset()
    with pytest.raises(ValueError, match="streaming dataset.*set completion_length"):
        _trainer(tmp_path, tiny_tokenizer, dataset=stream, max_steps=1)
    trainer = _trainer(tmp_path, tiny_tokenizer, dataset=stream, max_steps=1, completion_length=12)
    trainer.train()
    assert trainer.state.global_step == 1
    with pytest.raises(TypeError, match="args must be a DiffusionSFTConfig"):
        DiffusionSFTTrainer(
            build_tiny_model(tiny_tokenizer),
            args=DiffusionReinforceConfig(output_dir="unused"),
            train_dataset=_dataset(),
        )


# ------------------------------------------------------------------ distributed


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(
    "config",
    [
        "cpu_ddp.yaml",
        pytest.param(
            "cpu_zero3.yaml",
            marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed"),
        ),
    ],
)
def test_two_process_sft(config, tmp_path):
    from test_distributed import CONFIGS, ROOT, _base_name, _free_port

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [accelerate, "launch", "--config_file", str(CONFIGS / config), "--main_process_port", str(_free_port())]
    command += [str(ROOT / "tests" / "distributed_sft_train.py"), str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"accelerate launch failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]

    assert [r["world_size"] for r in ranks] == [2, 2]
    # Each rank draws its own masks; the gradients are averaged, so the weights stay identical.
    assert not torch.equal(ranks[0]["mask_state"], ranks[1]["mask_state"])
    after = ranks[0]["after"]
    for name in after:
        assert torch.equal(after[name], ranks[1]["after"][name]), f"{name} differs between ranks"
    lora_b = [name for name in after if "lora_B" in name]
    assert lora_b and all(not torch.equal(after[n], ranks[0]["start"][n]) for n in lora_b)
    for name in (n for n in after if "lora_" not in n):
        assert torch.equal(after[name], ranks[0]["base_before"][_base_name(name)]), f"base weight {name} changed"
    # The eval loss is gathered over both ranks' rows: one value, the same everywhere.
    assert ranks[0]["eval_loss"] == ranks[1]["eval_loss"] and ranks[0]["eval_loss"] > 0
