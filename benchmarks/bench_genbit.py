"""GenBitReward vs a fresh ``genbit.GenBitMetrics`` per text (same lemmatizer): time per text and agreement.

python benchmarks/bench_genbit.py            # 200 texts per length
python benchmarks/bench_genbit.py --quick    # CI smoke run (< 15 s)
"""

from __future__ import annotations

import argparse
import random
import time

from diffusion_rl.bias.rewards import GenBitReward
from diffusion_rl.bias.rewards._genbit_compat import genbit_lemmatizer

SUBJECTS = ["he", "she", "they", "the doctor", "the nurse", "my mother", "his father", "the engineer", "her sister"]
VERBS = ["helped", "called", "was thanking", "met", "told", "is teaching", "visited", "warned", "paid"]
OBJECTS = ["the patient", "the student", "a customer", "the manager", "their friend", "the secretary", "him", "her"]
TAILS = ["at the hospital", "after the meeting", "because it was late", "in the office", "yesterday", "again"]


def make_texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences = []
        while sum(len(s.split()) for s in sentences) < words:
            parts = (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS))
            sentences.append(" ".join(parts).capitalize() + ".")
        texts.append(" ".join(sentences))
    return texts


def fresh_scores(texts: list[str]) -> list[float]:
    scores = []
    for text in texts:
        with genbit_lemmatizer("lemminflect") as genbit:
            metrics = genbit.GenBitMetrics("en")
        metrics.add_data([text])
        scores.append(-metrics.get_metrics()["genbit_score"])
    return scores


def timed(fn, *args, repeats: int = 3):
    """Result and best-of-``repeats`` wall time (the least disturbed by other processes on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few texts, for CI")
    parser.add_argument("--texts", type=int, default=200)
    args = parser.parse_args()
    n = 10 if args.quick else args.texts
    reward = GenBitReward()
    warm = make_texts(5, 50, seed=123)  # load lemminflect's tables and GenBit once, outside the timings
    reward(warm, warm)
    fresh_scores(warm)

    print(
        f"{'words/text':>10} {'texts':>6} {'fresh GenBitMetrics ms/text':>28} {'GenBitReward ms/text':>21} "
        f"{'speed-up':>9} {'max |diff|':>11}"
    )
    for words in (25, 100, 250):
        texts = make_texts(n, words, seed=words)
        reference, t_fresh = timed(fresh_scores, texts)
        ours, t_ours = timed(reward, texts, texts)
        diff = max(abs(a - b) for a, b in zip(ours, reference))
        print(
            f"{words:>10} {n:>6} {1e3 * t_fresh / n:>28.3f} {1e3 * t_ours / n:>21.3f} {t_fresh / t_ours:>8.1f}x "
            f"{diff:>11.1e}"
        )
    corpus = GenBitReward(mode="corpus")
    texts = make_texts(min(n, 64), 100, seed=7)
    _, t_corpus = timed(corpus, texts, texts)
    print(f"corpus mode (leave-one-out), {len(texts)} texts of ~100 words: {1e3 * t_corpus:.1f} ms per batch")


if __name__ == "__main__":
    main()
