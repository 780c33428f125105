"""Time the synthetic generator and the BBQ loader; print counts used in docs/datasheet.md.

python benchmarks/bench_data.py
"""

import time
from collections import Counter

from diffusion_rl.bias.data import generate_mcq_dataset, load_bbq_gender


def timed(label, fn):
    start = time.perf_counter()
    out = fn()
    print(f"{label:<45} {time.perf_counter() - start:6.2f} s  ({len(out):,} rows)")
    return out


def main() -> None:
    train = timed("generate_mcq_dataset() train, 150k MCQ", generate_mcq_dataset)
    timed("generate_mcq_dataset(question_type='free_text')", lambda: generate_mcq_dataset(question_type="free_text"))
    test = timed("generate_mcq_dataset(split='test'), 5k", lambda: generate_mcq_dataset(split="test"))
    timed("load_bbq_gender()", load_bbq_gender)
    print("unique prompts (train):", len(set(train["prompt"])))
    print("families:", dict(Counter(train["template_family"])))
    print("context_condition:", dict(Counter(train["context_condition"])))
    print("options per item:", dict(Counter(len(o) for o in train["question_options"])))
    print("occupations train/test:", len(set(train["occupation"])), len(set(test["occupation"])))
    print("templates train/test:", len(set(train["template_id"])), len(set(test["template_id"])))


if __name__ == "__main__":
    main()
