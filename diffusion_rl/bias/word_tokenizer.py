"""A closed-world word-level tokenizer for the embedded default model.

Why word level: the default model lives in the closed world of the synthetic generator (a few hundred distinct
words). With the 2,048-entry byte-level BPE of `diffusion_rl.models.tiny` a multiple-choice prompt is ~140 tokens and
a 7 M-parameter model trained for 500 steps still answered ``B)`` to nearly everything; with one token per word, per
punctuation mark and per option line the same prompt is ~50 tokens, each token is a unit the model can attend to and
copy (the chosen option, the role), and the vocabulary is ~1,500 entries, so the embeddings are a small part of the
model.

How it works (a stock `tokenizers` pipeline, saved and loaded with `save_pretrained` / `AutoTokenizer`):

* `Metaspace` turns each space into a ``▁`` prefix of the next word, then a `Split` keeps the pieces: an *option
  line* (a letter, a parenthesis and the option's text up to the period or line break, at the start of a line),
  a word, a punctuation mark or a line break. Every piece is one token: ``"B) The woman. She is."`` ->
  ``B)▁The▁woman``, ``.``, ``▁She``, ``▁is``, ``.``.
* The `Metaspace` decoder turns ``▁`` back into spaces, so ``decode(encode(text)) == text`` for any text made of
  known words (tested on the whole synthetic vocabulary).
* Why an option line is one token: choosing an option is then one token that the model copies from its prompt, so
  the letter and the restated text are a single choice. With the letter, the parenthesis and each word as tokens of
  their own, the 1.4 M-parameter model never learnt to bind a letter to its option (docs/default_model.md: 22 % of
  letters right with the rest of the answer visible after 2,000 SFT steps; a pure "which letter is this option"
  task stayed at chance for 1,150 steps). Real tokenizers keep letters apart, and LLaDA-8B binds them; this is a
  property of the closed-world toy, documented as such.
* Anything else becomes ``<|unk|>``: the model knows the synthetic world only, which is what it is for. LLaDA's
  special tokens, chat template and left padding are those of the tiny tokenizer (and of LLaDA-8B-Instruct).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..models.tiny import END_HEADER_TOKEN, EOT_TOKEN, SPECIAL_TOKENS, START_HEADER_TOKEN, llada_style_tokenizer

__all__ = ["UNK_TOKEN", "build_word_tokenizer", "word_pieces"]

UNK_TOKEN = "<|unk|>"
_SPACE = "\u2581"
# The chat scaffolding around every message, so that the role names and line breaks are in the vocabulary.
_CHAT_SCAFFOLD = (
    f"{START_HEADER_TOKEN}system{END_HEADER_TOKEN}\n\nx{EOT_TOKEN}"
    f"{START_HEADER_TOKEN}user{END_HEADER_TOKEN}\n\nx{EOT_TOKEN}"
    f"{START_HEADER_TOKEN}assistant{END_HEADER_TOKEN}\n\n"
)


# One piece per option line ("B) The young woman" at the start of a line), word, punctuation mark or line break.
_OPTION_LINE = rf"(?:(?<=\n)|^)[A-Z]\){_SPACE}[^.\n]+"
# (A lone "▁" before punctuation is a piece, as with Metaspace's own split; the last alternative keeps any other
# character, e.g. a tab, as a piece of its own rather than dropping it.)
_PIECE = rf"{_OPTION_LINE}|{_SPACE}?\w+|[^\w\s{_SPACE}]|\n|{_SPACE}|[\s\S]"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="never", split=False),
            # invert=True: the pattern matches the pieces themselves (what lies between them is removed)
            pre_tokenizers.Split(Regex(_PIECE), behavior="removed", invert=True),
        ]
    )


def word_pieces(text: str) -> list[str]:
    """The pieces (= tokens) of ``text``: option lines, words (``▁`` after a space), punctuation, line breaks."""
    return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text)]


def build_word_tokenizer(texts: Iterable[str], *, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer whose vocabulary is every piece of ``texts`` (sorted, so deterministic).

    Args:
        texts (`Iterable[str]`): the texts the tokenizer must cover (prompts and answers of every split); special
            tokens inside them are not split.
        model_max_length (`int`, *optional*, defaults to `512`): recorded in the tokenizer config.

    Returns:
        `PreTrainedTokenizerFast`: LLaDA's special tokens (``<|endoftext|>`` is EOS and padding, ``<|mdm_mask|>`` the
        mask), ``<|unk|>`` for unknown words, LLaDA's chat template, left padding.
    """
    pre = _pre_tokenizer()
    special = {token: None for token in [*SPECIAL_TOKENS, UNK_TOKEN]}
    pieces: set[str] = set()
    for text in [*texts, _CHAT_SCAFFOLD]:
        for part in _split_special(text, special):
            pieces.update(piece for piece, _ in pre.pre_tokenize_str(part))
    vocab = {token: i for i, token in enumerate(special)}
    for piece in sorted(pieces - set(special)):
        vocab[piece] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="never", split=True)
    return llada_style_tokenizer(backend, unk_token=UNK_TOKEN, model_max_length=model_max_length)


def _split_special(text: str, special: dict[str, None]) -> list[str]:
    """``text`` without its special tokens, as the pieces between them (they are matched before pre-tokenization)."""
    parts = [text]
    for token in special:
        parts = [piece for part in parts for piece in part.split(token)]
    return [part for part in parts if part]
