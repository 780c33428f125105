"""GenBit gender-bias score as a reward (Sengupta et al., 2021; package ``genbit`` 2.2.0.0).

GenBit measures how unevenly gender-neutral words co-occur with male vs female words (``he``, ``mother``, ...):
for each neutral word ``w`` that co-occurs often enough (above a percentile cut-off),
``bias(w) = log(P(w | male) / P(w | female))`` with distance-weighted, add-one-smoothed co-occurrence counts; the
score is the mean ``|bias(w)|``. The reward is ``-score``: higher means less biased.

What differs from calling ``genbit.GenBitMetrics`` yourself:

* **Offline and importable** (see :mod:`._genbit_compat`): lemminflect replaces the stanza model GenBit downloads.
* **Fast per-text scores.** A fresh ``GenBitMetrics`` per text rebuilds word lists, stop words and the lemmatizer,
  and computes statistics, per-word dictionaries and standard deviations nobody reads. We keep one instance, build
  each text's co-occurrence matrix ourselves (GenBit's steps, with the distance weights computed once), cache
  lemmas, and compute only the reported metrics, with the same floating-point operations in the same order: the
  score is bit-for-bit the one a fresh object gives with the same lemmatizer, 5-10x faster
  (``benchmarks/bench_genbit.py``). This reaches into GenBit's private methods, which is why the version is pinned.
* **Texts without gendered words score 0** (GenBit's own value: every neutral word then has equal, smoothed male and
  female counts), so the reward is ``0.0``, its maximum, and never ``None``. Avoiding gendered language altogether
  is a legitimate way to be unbiased; the empty completion also gets ``0.0``, so pair this reward with a task reward
  (e.g. :class:`~diffusion_rl.bias.rewards.choice.NeutralChoiceReward`) that an empty answer fails.
* **Corpus mode.** GenBit was designed for corpora (hundreds of documents); a single completion yields a noisy,
  often-zero score. ``mode="corpus"`` scores the batch as one corpus ``C`` and gives sample ``i`` its leave-one-out
  effect ``reward_i = score(C \\ {i}) - score(C)``: positive when removing the sample would *raise* the corpus bias
  (i.e. it makes the batch less biased). For a batch of one this is ``-score(text)``, the per-text reward.
  Co-occurrence windows never cross documents, so each text's co-occurrence counts are computed once and summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...rewards.base import as_text, check_batch
from ._genbit_compat import GENBIT_LANGUAGES, genbit_lemmatizer
from .lexicon import has_words, log_completion_metrics

_MODES = ("per_text", "corpus")
_TEXTS = ("completion", "prompt_completion")


class GenBitReward:
    """Reward ``-GenBit score`` per completion (or leave-one-out corpus attribution), with metrics for logging.

    Args:
        language_code (`str`, *optional*, defaults to `"en"`):
            One of GenBit's languages: ``en``, ``de``, ``es``, ``fr``, ``it``, ``ru``.
        context_window (`int`, *optional*, defaults to `30`):
            Words on each side of a gendered word that count as co-occurring with it.
        distance_weight (`float`, *optional*, defaults to `0.95`):
            A co-occurrence at distance ``d`` adds ``distance_weight ** d``.
        percentile_cutoff (`int`, *optional*, defaults to `80`):
            Only neutral words whose co-occurrence count reaches this percentile are scored.
        lemmatizer (`str` or `None`, *optional*, defaults to `"auto"`):
            ``"lemminflect"`` (offline, English), ``"stanza"`` (GenBit's own; needs its model downloaded beforehand),
            ``None`` (no lemmatization), or ``"auto"``: lemminflect for English, ``None`` otherwise.
        text (`str`, *optional*, defaults to `"completion"`):
            Score the ``"completion"`` alone, or ``"prompt_completion"`` (prompt and completion joined by a newline).
        mode (`str`, *optional*, defaults to `"per_text"`):
            ``"per_text"``: each text is its own corpus. ``"corpus"``: leave-one-out attribution over the batch.
        empty_score (`float`, *optional*, defaults to `-1.0`):
            Per-text reward of a completion without any word. GenBit itself scores such a text 0 - its best score -
            which would make saying nothing the cheapest way to an unbiased answer (measured: longer runs of the
            seed's recipe collapsed to 1-6-token answers). -1 is worse than the per-text scores of the default
            model's gendered answers (0.3-0.9).

    Attributes:
        last_metrics (`list[dict[str, float]]`):
            Per-text metrics (see :meth:`metrics`) of the last call.
        last_corpus_metrics (`dict[str, float]` or `None`):
            Metrics of the whole batch as one corpus, in corpus mode.
    """

    name = "genbit"

    def __init__(
        self,
        *,
        language_code: str = "en",
        context_window: int = 30,
        distance_weight: float = 0.95,
        percentile_cutoff: int = 80,
        lemmatizer: str | None = "auto",
        text: str = "completion",
        mode: str = "per_text",
        empty_score: float = -1.0,
    ):
        if not isinstance(language_code, str) or language_code.lower() not in GENBIT_LANGUAGES:
            raise ValueError(f"GenBit supports languages {GENBIT_LANGUAGES}, got {language_code!r}.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        if text not in _TEXTS:
            raise ValueError(f"text must be one of {_TEXTS}, got {text!r}.")
        if not isinstance(context_window, int) or context_window < 1:
            raise ValueError(f"context_window must be a positive int, got {context_window!r}.")
        if not 0.0 < distance_weight <= 1.0:
            raise ValueError(f"distance_weight must be in (0, 1], got {distance_weight!r}.")
        if not 0 <= percentile_cutoff <= 100:
            raise ValueError(f"percentile_cutoff must be in [0, 100], got {percentile_cutoff!r}.")
        if isinstance(empty_score, bool) or not isinstance(empty_score, (int, float)) or not math.isfinite(
            empty_score
        ):
            raise ValueError(f"empty_score must be a finite number, got {empty_score!r}.")
        self.empty_score = float(empty_score)
        language_code = language_code.lower()
        if lemmatizer == "auto":
            lemmatizer = "lemminflect" if language_code == "en" else None
        self.language_code = language_code
        self.lemmatizer = lemmatizer
        self.text = text
        self.mode = mode
        with genbit_lemmatizer(lemmatizer, language_code) as genbit:
            metrics = genbit.GenBitMetrics(language_code, context_window, distance_weight, percentile_cutoff)
        self._tokenizer = metrics._tokenizer
        self._calc = calc = metrics._metrics_calculation
        self._gendered_words = frozenset().union(
            calc._female_gendered_words,
            calc._male_gendered_words,
            calc._non_binary_gendered_words,
            calc._trans_gendered_words,
            calc._cis_gendered_words,
        )
        # GenBit keeps gendered stop words ("he", "she") and scores each token under its first binary/non-binary
        # list (female, male, non-binary, in that order) and, independently, under trans or cis.
        self._kept_words = calc._female_gendered_words | calc._male_gendered_words | calc._non_binary_gendered_words
        self._genders_of: dict[str, tuple[str, ...]] = {}
        for token in self._gendered_words:
            first = next(
                (
                    g
                    for g, words in (
                        ("female", calc._female_gendered_words),
                        ("male", calc._male_gendered_words),
                        ("non-binary", calc._non_binary_gendered_words),
                    )
                    if token in words
                ),
                None,
            )
            second = next(
                (
                    g
                    for g, words in (("trans", calc._trans_gendered_words), ("cis", calc._cis_gendered_words))
                    if token in words
                ),
                None,
            )
            self._genders_of[token] = tuple(g for g in (first, second) if g is not None)
        self._weights = [pow(distance_weight, d) for d in range(context_window + 1)]
        self.last_metrics: list[dict[str, float]] = []
        self.last_corpus_metrics: dict[str, float] | None = None

    # -- GenBit on our own co-occurrence matrices -------------------------------------------------------------------

    def _cooccurrences(self, text: str) -> dict[str, dict[str, float]]:
        """GenBit's un-lemmatized co-occurrence matrix of one document (what ``add_data([text])`` accumulates).

        Same steps and the same floating-point additions in the same order as GenBit's ``analyze_text``, with the
        distance weights ``distance_weight ** d`` computed once instead of once per co-occurrence.
        """
        calc = self._calc
        lowered = [token.lower() for token in self._tokenizer.tokenize_data([text])[0]]
        keep, stopwords = self._kept_words, calc._stopwords
        tokens = [t for t in calc._join_multiword_expressions(lowered) if t in keep or t not in stopwords]
        matrix: dict[str, dict[str, float]] = {}
        for token in tokens:
            if token in matrix:
                matrix[token]["count"] += 1
            else:
                matrix[token] = {"count": 1, "female": 0, "male": 0, "non-binary": 0, "trans": 0, "cis": 0}
        weights, window, last = self._weights, calc._context_window, len(tokens) - 1
        for i, token in enumerate(tokens):
            genders = self._genders_of.get(token)
            if not genders:
                continue
            lo, hi = max(0, i - window), min(last, i + window)
            # Left to right, as GenBit adds them: distances i - lo, ..., 1, then 1, ..., hi - i.
            neighbours = tokens[lo:i] + tokens[i + 1 : hi + 1]
            distances = weights[i - lo : 0 : -1] + weights[1 : hi - i + 1]
            for gender in genders:
                for neighbour, weight in zip(neighbours, distances):
                    matrix[neighbour][gender] += weight
        return matrix

    def _statistics(self, matrix: dict[str, dict[str, float]]) -> dict[str, float]:
        """GenBit's metrics of a corpus given its un-lemmatized matrix (``matrix``'s rows are consumed).

        Lemmatization, the frequency cut-off and the gendered-word counts are GenBit's own methods; the final loop
        repeats GenBit's ``_calculate_metrics`` arithmetic in the same order (hence bit-identical scores) for the
        metrics we report, skipping the per-word dictionaries and the standard deviations it computes and then
        overwrites with 0 (GenBit 2.2.0.0), which otherwise take most of the time on short texts.
        """
        calc = self._calc
        calc._unlemmatized_cooccurrence_matrix = matrix
        calc._cooccurrence_matrix = {}  # GenBit accumulates it across get_metrics() calls: reset per corpus
        calc._lemmatize_cooccurrence_matrix()
        calc._cutoff = cutoff = calc._calculate_cutoff()
        counts = calc._gendered_word_counts = calc._calculate_gendered_word_counts()
        lemmatized, calc._cooccurrence_matrix = calc._cooccurrence_matrix, {}

        vocabulary = len(lemmatized)
        bias_ratio = bias_ratio_abs = bias_conditional = bias_conditional_abs = 0.0
        considered = 0
        for token, row in lemmatized.items():
            if token in self._gendered_words or calc._get_cooccurrence_count(row) < cutoff:
                continue
            considered += 1
            ratio = math.log(row["male"] / row["female"])
            female_conditional = row["female"] / (counts["female"] + vocabulary)
            male_conditional = row["male"] / (counts["male"] + vocabulary)
            conditional = math.log(male_conditional / female_conditional)
            bias_ratio += ratio
            bias_ratio_abs += abs(ratio)
            bias_conditional += conditional
            bias_conditional_abs += abs(conditional)
        n_scores = max(1, considered)
        n_gendered = max(1, counts["female"] + counts["male"] + counts["non-binary"])
        return {
            "genbit_score": bias_conditional_abs / n_scores,
            "avg_bias_conditional": bias_conditional / n_scores,
            "avg_bias_conditional_absolute": bias_conditional_abs / n_scores,
            "avg_bias_ratio": bias_ratio / n_scores,
            "avg_bias_ratio_absolute": bias_ratio_abs / n_scores,
            "percentage_of_male_gender_definition_words": counts["male"] / n_gendered,
            "percentage_of_female_gender_definition_words": counts["female"] / n_gendered,
            "percentage_of_non_binary_gender_definition_words": counts["non-binary"] / n_gendered,
            "male_words": float(counts["male"]),
            "female_words": float(counts["female"]),
            "non_binary_words": float(counts["non-binary"]),
            "words_considered": float(considered),
        }

    @staticmethod
    def _merge(matrices: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
        merged: dict[str, dict[str, float]] = {}
        for matrix in matrices:
            for token, row in matrix.items():
                if token in merged:
                    target = merged[token]
                    for key, value in row.items():
                        target[key] += value
                else:
                    merged[token] = dict(row)
        return merged

    # -- public API -------------------------------------------------------------------------------------------------

    def _texts(self, prompts: Sequence[Any] | None, completions: Sequence[Any]) -> list[str]:
        if prompts is not None:
            check_batch(prompts, completions)
        elif isinstance(completions, str):
            raise TypeError("Pass a list of texts, not a single str: wrap it in a list.")
        texts = [as_text(c, "completions", i) for i, c in enumerate(completions)]
        if self.text == "prompt_completion":
            if prompts is None:
                raise ValueError("text='prompt_completion' needs the prompts.")
            texts = [f"{as_text(p, 'prompts', i)}\n{c}" for i, (p, c) in enumerate(zip(prompts, texts))]
        return texts

    def metrics(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """GenBit metrics of each text scored on its own.

        Returns, per text: ``genbit_score`` (= ``avg_bias_conditional_absolute``), the signed
        ``avg_bias_conditional`` (> 0: neutral words lean male), ``avg_bias_ratio(_absolute)``, the
        ``percentage_of_{male,female,non_binary}_gender_definition_words`` (shares of the gendered words),
        ``{male,female,non_binary}_words`` (counts) and ``words_considered`` (neutral words that were scored).
        """
        texts = self._texts(None, texts)
        return [self._statistics(self._cooccurrences(t)) for t in texts]

    def corpus_metrics(self, texts: Sequence[str]) -> dict[str, float]:
        """GenBit metrics of ``texts`` taken together as one corpus (same keys as :meth:`metrics`)."""
        texts = self._texts(None, texts)
        return self._statistics(self._merge([self._cooccurrences(t) for t in texts]))

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], log_metric=None, **kwargs: Any
    ) -> list[float]:
        """Rewards of a batch; with TRL's `log_metric` kwarg (the trainer passes it) it also reports the batch's
        lexical rates (`completions/...`), `bias/genbit` (mean per-text score) and, in corpus mode,
        `bias/genbit_corpus`."""
        rewards = self._rewards(prompts, completions)
        if log_metric is not None:
            log_completion_metrics(log_metric, completions)
            log_metric("bias/genbit", sum(m["genbit_score"] for m in self.last_metrics) / len(self.last_metrics))
            if self.last_corpus_metrics is not None:
                log_metric("bias/genbit_corpus", self.last_corpus_metrics["genbit_score"])
        return rewards

    def _rewards(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        texts = self._texts(prompts, completions)
        matrices = [self._cooccurrences(t) for t in texts]
        if self.mode == "per_text":
            self.last_metrics = [self._statistics(m) for m in matrices]
            self.last_corpus_metrics = None
            # GenBit scores a text without words 0, its best score: saying nothing must not be the cheapest answer.
            completion_texts = [as_text(c, "completions", i) for i, c in enumerate(completions)]
            return [
                0.0 - abs(m["avg_bias_conditional_absolute"]) if has_words(t) else self.empty_score
                for m, t in zip(self.last_metrics, completion_texts)
            ]
        # _statistics consumes its matrix's rows (GenBit adds its smoothing in place): corpus mode works on copies.
        self.last_metrics = [self._statistics(self._merge([m])) for m in matrices]
        self.last_corpus_metrics = self._statistics(self._merge(matrices))
        full = self.last_corpus_metrics["genbit_score"]
        rewards = []
        for i in range(len(matrices)):
            without_i = self._statistics(self._merge(matrices[:i] + matrices[i + 1 :]))["genbit_score"]
            rewards.append(without_i - full)
        return rewards
