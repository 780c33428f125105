"""Make GenBit 2.2.0.0 importable and runnable offline.

Two problems stand between ``pip install genbit`` and a working metric on a modern, offline machine:

1. ``import genbit`` fails with setuptools >= 81, which no longer ships ``pkg_resources``: GenBit's dependency
   ``stopwordsiso`` calls ``pkg_resources.resource_filename`` once, at import time, to locate its JSON file. We
   provide that single function (backed by :mod:`importlib.resources`) as a stand-in module, only when the real
   ``pkg_resources`` is missing, and only for the duration of the import, so nothing else in the process sees it.
2. GenBit's lemmatizer downloads a stanza model on first use. :class:`LemminflectLemmatizer` is an offline
   replacement (English only); on GenBit's own reference corpus it reproduces the stanza-based score to about
   4e-5 relative. GenBit instantiates ``Lemmatizer`` inside ``MetricsCalculation.__init__`` through the name bound
   in ``genbit.metrics_calculation``, so :func:`genbit_lemmatizer` swaps *that* name, and only while objects are being
   constructed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

GENBIT_LANGUAGES = ("de", "en", "es", "fr", "it", "ru")
LEMMATIZERS = ("lemminflect", "stanza", None)

_IMPORT_LOCK = threading.Lock()
_PATCH_LOCK = threading.RLock()


def _resource_filename(package: str, resource: str) -> str:
    # The only pkg_resources API stopwordsiso uses; packages installed as directories have real paths.
    return str(importlib.resources.files(package).joinpath(resource))


@contextlib.contextmanager
def _pkg_resources_stand_in() -> Iterator[None]:
    """Provide a minimal ``pkg_resources`` in ``sys.modules`` while the body runs, if the real one is missing."""
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stand_in = types.ModuleType("pkg_resources", "Minimal stand-in installed by diffusion_rl to import stopwordsiso.")
    stand_in.resource_filename = _resource_filename
    sys.modules["pkg_resources"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]


def import_genbit() -> types.ModuleType:
    """Import and return ``genbit.metrics_calculation`` (which also makes ``import genbit`` work afterwards).

    Raises:
        ImportError: if GenBit is not installed (with the pip command that fixes it).
    """
    with _IMPORT_LOCK:
        if "genbit.metrics_calculation" in sys.modules:
            return sys.modules["genbit.metrics_calculation"]
        if importlib.util.find_spec("genbit") is None:
            raise ImportError("GenBit is not installed: `pip install genbit==2.2.0.0 lemminflect`.")
        with _pkg_resources_stand_in():
            importlib.import_module("genbit")
            return importlib.import_module("genbit.metrics_calculation")


def genbit_word_list_dir(language_code: str = "en") -> str:
    """Directory holding GenBit's ``male.txt``/``female.txt`` (and ``non-binary.txt`` for English).

    Located without importing GenBit, so that the lexical metrics work even where GenBit cannot be imported.
    """
    spec = importlib.util.find_spec("genbit")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("GenBit is not installed: `pip install genbit==2.2.0.0`.")
    path = os.path.join(list(spec.submodule_search_locations)[0], "gendered-word-lists", language_code)
    if not os.path.isdir(path):
        raise ValueError(f"GenBit has no word lists for language {language_code!r}; supported: {GENBIT_LANGUAGES}.")
    return path


class LemminflectLemmatizer:
    """Offline stand-in for ``genbit.lemmatizer.Lemmatizer`` (same constructor and ``lemmatize_token``).

    Stanza lemmatizes GenBit's isolated, lower-cased tokens without any sentence context, which amounts to picking a
    dictionary lemma for the word form. We do the same with lemminflect's dictionary, preferring verb readings
    (``"was" -> "be"``, ``"left" -> "leave"``), then nouns, adjectives and adverbs; out-of-vocabulary tokens are kept.
    Results are cached per token because GenBit lemmatizes every distinct token of every text.

    Args:
        language_code (`str`):
            Must be ``"en"``: lemminflect only covers English.
    """

    _UPOS_PREFERENCE = ("VERB", "AUX", "NOUN", "ADJ", "ADV", "PROPN")

    def __init__(self, language_code: str):
        if language_code != "en":
            raise ValueError(
                f"lemminflect lemmatizes English only, got language {language_code!r}; "
                "use lemmatizer=None (no lemmatization) or lemmatizer='stanza' with a downloaded stanza model."
            )
        import lemminflect

        self._language_code = language_code
        self._get_all_lemmas = lemminflect.getAllLemmas
        self._cache: dict[str, str] = {}

    def lemmatize_token(self, token: str) -> str:
        lemma = self._cache.get(token)
        if lemma is None:
            lemma = self._cache[token] = self._lookup(token)
        return lemma

    def _lookup(self, token: str) -> str:
        lemmas = self._get_all_lemmas(token)
        for upos in self._UPOS_PREFERENCE:
            if upos in lemmas:
                return lemmas[upos][0]
        for forms in lemmas.values():
            return forms[0]
        return token


class IdentityLemmatizer:
    """No lemmatization: every token is its own lemma (works for every GenBit language)."""

    def __init__(self, language_code: str):
        self._language_code = language_code

    def lemmatize_token(self, token: str) -> str:
        return token


def _stanza_lemmatizer_class(language_code: str) -> type:
    import_genbit()
    original = importlib.import_module("genbit.lemmatizer").Lemmatizer
    model_dir = os.path.join(original._stanza_lemmatizers_location, language_code)
    if not os.path.isdir(model_dir):
        # GenBit would try to download the model here, which hangs or crashes offline.
        raise FileNotFoundError(
            f"No stanza model for {language_code!r} in {model_dir}: on a machine with internet run "
            f"`stanza.download(lang={language_code!r}, processors='tokenize,lemma', "
            f"model_dir={original._stanza_lemmatizers_location!r})`, or use lemmatizer='lemminflect' (English) "
            "or lemmatizer=None."
        )
    return original


def lemmatizer_class(lemmatizer: str | None, language_code: str) -> type:
    """Class implementing ``lemmatize_token`` for the given lemmatizer name (see :data:`LEMMATIZERS`)."""
    if lemmatizer == "lemminflect":
        if language_code != "en":
            LemminflectLemmatizer(language_code)  # raises the explanatory ValueError
        return LemminflectLemmatizer
    if lemmatizer is None:
        return IdentityLemmatizer
    if lemmatizer == "stanza":
        return _stanza_lemmatizer_class(language_code)
    raise ValueError(f"Unknown lemmatizer {lemmatizer!r}; choose one of {LEMMATIZERS}.")


@contextlib.contextmanager
def genbit_lemmatizer(lemmatizer: str | None = "lemminflect", language_code: str = "en") -> Iterator[Any]:
    """Make GenBit objects constructed inside the block use ``lemmatizer``; yields the ``genbit`` module.

    Example::

        with genbit_lemmatizer("lemminflect") as genbit:
            metrics = genbit.GenBitMetrics("en")  # keeps its lemminflect lemmatizer after the block
    """
    metrics_calculation = import_genbit()
    cls = lemmatizer_class(lemmatizer, language_code)
    with _PATCH_LOCK:
        original = metrics_calculation.Lemmatizer
        metrics_calculation.Lemmatizer = cls
        try:
            yield sys.modules["genbit"]
        finally:
            metrics_calculation.Lemmatizer = original
