"""An embedded tiny LLaDA and its offline tokenizer: the default for tests, demos and CPU benchmarks.

Both are built from nothing but this package: the tokenizer is a byte-level BPE trained (deterministically, in well
under a second) on ``tiny_corpus.txt``, an English corpus with everyday sentences, pronouns, gendered words,
occupations and multiple-choice answers; the model is a ``LladaForMaskedDiffusion`` whose weights are drawn from a
local ``torch.Generator``. Special tokens, chat template and padding side mirror GSAI-ML/LLaDA-8B-Instruct so code
written against the tiny pair runs unchanged on the real model.
"""

from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .llada import LladaConfig, LladaForMaskedDiffusion

CORPUS_PATH = Path(__file__).with_name("tiny_corpus.txt")

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"  # also the padding token, as in LLaDA
MASK_TOKEN = "<|mdm_mask|>"
EOT_TOKEN = "<|eot_id|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, EOT_TOKEN, START_HEADER_TOKEN, END_HEADER_TOKEN]

# Same shape as LLaDA-8B-Instruct's template: BOS once, then "<|start_header_id|>role<|end_header_id|>\n\n" + content +
# "<|eot_id|>" per message (system messages included), then the assistant header when a generation prompt is asked.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

TINY_VOCAB_SIZE = 2048


def tiny_corpus() -> list[str]:
    """The embedded English corpus (one sentence or short passage per item), e.g. to pre-train the tiny model."""
    text = CORPUS_PATH.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@lru_cache(maxsize=1)
def _trained_tokenizer_json(vocab_size: int) -> str:
    # Training is deterministic for a fixed corpus and settings; caching the serialised result makes repeated
    # build_tiny_tokenizer() calls cheap while still returning independent tokenizer objects.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no unknown tokens
        show_progress=False,
    )
    tokenizer.train_from_iterator(tiny_corpus(), trainer=trainer)
    return tokenizer.to_str()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Build the offline tiny tokenizer (byte-level BPE, ~2k tokens, LLaDA special tokens and chat template).

    The result is deterministic, needs no network, pads on the left, does not add BOS/EOS on plain encoding (the chat
    template adds BOS, as with LLaDA) and round-trips arbitrary text through ``encode`` / ``decode``.

    Returns:
        `PreTrainedTokenizerFast`: with ``bos_token`` ``<|startoftext|>``, ``eos_token`` = ``pad_token`` =
        ``<|endoftext|>``, ``mask_token`` ``<|mdm_mask|>`` and the additional special tokens ``<|eot_id|>``,
        ``<|start_header_id|>``, ``<|end_header_id|>``.
    """
    return llada_style_tokenizer(Tokenizer.from_str(_trained_tokenizer_json(TINY_VOCAB_SIZE)))


def llada_style_tokenizer(backend: Tokenizer, **kwargs) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` whose vocabulary holds `SPECIAL_TOKENS` the way LLaDA-8B-Instruct's is set up:
    BOS, EOS = padding, the mask and turn tokens, the chat template, left padding. `kwargs` add or override
    `PreTrainedTokenizerFast` arguments (e.g. an `unk_token`)."""
    settings = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "mask_token": MASK_TOKEN,
        "additional_special_tokens": [EOT_TOKEN, START_HEADER_TOKEN, END_HEADER_TOKEN],
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
    }
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{**settings, **kwargs})


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    dtype: torch.dtype = torch.float32,
) -> LladaForMaskedDiffusion:
    """Build a randomly initialised tiny LLaDA whose special ids match ``tokenizer``.

    Args:
        tokenizer (`PreTrainedTokenizerFast`, *optional*):
            Tokenizer giving the vocabulary size and special ids; defaults to ``build_tiny_tokenizer()``.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the local ``torch.Generator`` the weights are drawn from (same seed, same weights, bit for bit;
            the global RNG is neither used nor reseeded).
        hidden_size (`int`, *optional*, defaults to `64`):
            Model width.
        num_hidden_layers (`int`, *optional*, defaults to `2`):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to `4`):
            Attention heads (as many key/value heads, like LLaDA-8B).
        intermediate_size (`int`, *optional*, defaults to `128`):
            SwiGLU hidden size.
        max_position_embeddings (`int`, *optional*, defaults to `512`):
            Longest sequence the config declares (RoPE itself has no hard limit).
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Share the input embedding and the output projection (LLaDA-8B does not; a small model that must copy
            tokens from its prompt learns that faster with them tied).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`):
            Parameter dtype.

    Returns:
        `LladaForMaskedDiffusion`: in eval mode.
    """
    if tokenizer is None:
        tokenizer = build_tiny_tokenizer()
    if tokenizer.mask_token_id is None:
        raise ValueError("The tokenizer has no mask token; LLaDA needs one (set `mask_token`, e.g. '<|mdm_mask|>').")
    eot_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    config = LladaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        eot_token_id=eot_id if eot_id != tokenizer.unk_token_id else None,
        tie_word_embeddings=tie_word_embeddings,
    )
    # The constructor initialises weights from the global RNG; fork_rng restores its state afterwards and every
    # parameter is then overwritten from the local generator, so the result depends on `seed` only.
    with torch.random.fork_rng(devices=[]):
        model = LladaForMaskedDiffusion(config)
    generator = torch.Generator().manual_seed(seed)
    std = config.initializer_range
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model.to(dtype).eval()
