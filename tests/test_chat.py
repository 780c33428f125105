"""tokenize_prompts: chat template + left padding, one BOS, length checks."""

import pytest
import torch

from diffusion_rl.data import tokenize_prompts


def reference_ids(tok, messages):
    """Independent path: the template rendered by transformers, tokenized without extra special tokens."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def test_left_padding_and_template(tiny_tokenizer):
    tok = tiny_tokenizer
    prompts = ["Who would make a better nurse?", [{"role": "user", "content": "Hi"}]]
    batch = tokenize_prompts(tok, prompts)
    refs = [reference_ids(tok, [{"role": "user", "content": prompts[0]}]), reference_ids(tok, prompts[1])]
    width = max(map(len, refs))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, width)
    assert batch["input_ids"].dtype == torch.long
    for row, mask, ref in zip(batch["input_ids"], batch["attention_mask"], refs):
        assert row[width - len(ref) :].tolist() == ref
        assert mask.tolist() == [0] * (width - len(ref)) + [1] * len(ref)
        assert (row[: width - len(ref)] == tok.pad_token_id).all()


def test_single_bos_and_generation_prompt(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tokenize_prompts(tok, ["Hello there"])["input_ids"][0].tolist()
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    text = tok.decode(ids)
    assert text.rstrip().endswith("<|start_header_id|>assistant<|end_header_id|>")


def test_system_prompt(tiny_tokenizer):
    tok = tiny_tokenizer
    with_sys = tokenize_prompts(tok, ["Q"], system_prompt="Be fair.")["input_ids"][0].tolist()
    ref = reference_ids(tok, [{"role": "system", "content": "Be fair."}, {"role": "user", "content": "Q"}])
    assert with_sys == ref
    with pytest.raises(ValueError, match="already starts with a system"):
        conversation = [{"role": "system", "content": "x"}, {"role": "user", "content": "Q"}]
        tokenize_prompts(tok, [conversation], system_prompt="y")


def test_max_length_error_and_left_truncation(tiny_tokenizer):
    tok = tiny_tokenizer
    n = tokenize_prompts(tok, ["a long prompt " * 5])["input_ids"].shape[1]
    with pytest.raises(ValueError, match="prompt 0 is .* tokens long"):
        tokenize_prompts(tok, ["a long prompt " * 5], max_prompt_length=n - 1)
    full = tokenize_prompts(tok, ["a long prompt " * 5])["input_ids"][0]
    cut = tokenize_prompts(tok, ["a long prompt " * 5], max_prompt_length=n - 3, truncate_left=True)["input_ids"][0]
    assert cut.tolist() == full[3:].tolist()


@pytest.mark.parametrize("prompts", [[], "just a string", [5], [[{"content": "no role"}]]])
def test_bad_prompts(tiny_tokenizer, prompts):
    with pytest.raises((TypeError, ValueError)):
        tokenize_prompts(tiny_tokenizer, prompts)


def test_tokenizer_without_template(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        tokenize_prompts(tok, ["Q"])


PREFILL = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "The answer is"}]


def test_assistant_prefill_is_continued(tiny_tokenizer):
    # As TRL renders a prompt that ends with an assistant message: continue_final_message, no generation prompt.
    tok = tiny_tokenizer
    row, mask = (t[0] for t in tokenize_prompts(tok, [PREFILL, "Who is the nurse?"]).values())
    text = tok.decode(row[mask.bool()].tolist())
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nThe answer is")
    assert text.count("<|eot_id|>") == 1  # the user's turn only: the prefill is left open
    assert text.count("<|start_header_id|>assistant") == 1  # no second assistant header
    reference = tok.apply_chat_template(PREFILL, tokenize=False, continue_final_message=True)
    assert row[mask.bool()].tolist() == tok(reference, add_special_tokens=False)["input_ids"]


def test_prefill_trailing_space_and_other_rows(tiny_tokenizer):
    tok = tiny_tokenizer
    spaced = [PREFILL[0], {"role": "assistant", "content": "The answer is "}]
    batch = tokenize_prompts(tok, [spaced, [{"role": "user", "content": "Q"}]])
    texts = [tok.decode(r[m.bool()].tolist()) for r, m in zip(batch["input_ids"], batch["attention_mask"])]
    assert texts[0].endswith("\n\nThe answer is")  # the template trims content; so does the continuation
    assert texts[1].endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")  # unchanged


def test_prefill_with_system_prompt_and_assistant_turn_before_user(tiny_tokenizer):
    tok = tiny_tokenizer
    text = tok.decode(tokenize_prompts(tok, [PREFILL], system_prompt="Be fair.")["input_ids"][0].tolist())
    assert text.startswith("<|startoftext|><|start_header_id|>system") and text.endswith("The answer is")
    # Only the last message decides: an earlier assistant turn is closed as before.
    conversation = [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Q"}]
    assert tokenize_prompts(tok, [conversation])["input_ids"][0].tolist() == reference_ids(tok, conversation)


def test_sft_answer_continues_the_prefill(tiny_tokenizer):
    from diffusion_rl.sft import tokenize_sft_pairs

    tok = tiny_tokenizer
    batch = tokenize_sft_pairs(tok, [PREFILL], [" unknown."], completion_length=8)
    text = tok.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist())
    assert "\n\nThe answer is unknown.<|eot_id|>" in text
