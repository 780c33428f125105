import math
import os
import re
import subprocess
import sys
import time

import pytest

from diffusion_rl.bias.rewards import GenBitReward
from diffusion_rl.bias.rewards._genbit_compat import LemminflectLemmatizer, genbit_lemmatizer, import_genbit

TEXTS = [
    "",
    "The cat sat on the mat and looked at the garden for a long time.",
    "he",
    "he she",
    "He is a doctor. He works at the hospital and he treats patients every day.",
    "She is a nurse. She works at the hospital and she helps the doctor every day.",
    "The engineer fixed the bridge because he was skilled; the secretary typed the notes because she was careful.",
    "he he he he he she she doctor doctor doctor nurse nurse nurse nurse",
    "My mother and my father told their son and their daughter that the grandmother would visit the farm.",
    "The chairman thanked the businesswoman, and the actress greeted the waiter who was eating quickly.",
    "They said the manager was late because they missed the bus near the office building downtown.",
    "Don't forget: the king's brothers were eating while the queen's sisters were eaten by curiosity!",
]


def fresh_genbit(texts, lemmatizer="lemminflect", **kwargs):
    """GenBit as its authors intend it: a new GenBitMetrics, fed the texts, asked for its metrics."""
    with genbit_lemmatizer(lemmatizer, kwargs.get("language_code", "en")) as genbit:
        metrics = genbit.GenBitMetrics(kwargs.pop("language_code", "en"), **kwargs)
    metrics.add_data(list(texts))
    return metrics.get_metrics()


@pytest.fixture(scope="module")
def reward():
    return GenBitReward()


def test_import_fix_in_fresh_subprocess():
    compat = os.path.join(os.path.dirname(__file__), "..", "diffusion_rl", "bias", "rewards", "_genbit_compat.py")
    code = f"""
import importlib.util, sys
real = importlib.util.find_spec("pkg_resources") is not None
if not real:
    try:
        import genbit
        raise SystemExit("plain `import genbit` unexpectedly worked without pkg_resources")
    except ModuleNotFoundError as exc:
        assert exc.name == "pkg_resources", exc
    for name in [m for m in sys.modules if m.startswith(("genbit", "stopwordsiso"))]:
        del sys.modules[name]
spec = importlib.util.spec_from_file_location("compat", {compat!r})
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
compat.import_genbit()
import genbit, stopwordsiso
assert ("pkg_resources" in sys.modules) == real, "stand-in leaked into sys.modules"
assert len(stopwordsiso.stopwords("en")) > 500
with compat.genbit_lemmatizer("lemminflect") as g:
    m = g.GenBitMetrics("en")
m.add_data(["he is a doctor and she is a nurse"])
print("OK", real, m.get_metrics()["genbit_score"])
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")


def test_lemmatizer_patch_is_scoped():
    metrics_calculation = import_genbit()
    original = metrics_calculation.Lemmatizer
    with genbit_lemmatizer("lemminflect"):
        assert metrics_calculation.Lemmatizer is LemminflectLemmatizer
    assert metrics_calculation.Lemmatizer is original


def test_lemminflect_lemmas():
    lem = LemminflectLemmatizer("en")
    assert [lem.lemmatize_token(t) for t in ["is", "was", "were", "are", "be"]] == ["be"] * 5  # GenBit's own test
    assert [lem.lemmatize_token(t) for t in ["eats", "eating", "ate", "eaten"]] == ["eat"] * 4
    assert lem.lemmatize_token("xyzzyq") == "xyzzyq"


@pytest.mark.parametrize("lemmatizer", ["lemminflect", None])
def test_per_text_parity_with_fresh_genbit(lemmatizer):
    reward = GenBitReward(lemmatizer=lemmatizer)
    values = reward(["prompt"] * len(TEXTS), TEXTS)
    for text, value, metrics in zip(TEXTS, values, reward.last_metrics):
        expected = fresh_genbit([text], lemmatizer)
        assert metrics["genbit_score"] == pytest.approx(expected["genbit_score"], abs=1e-12, rel=0)
        # the reward is -score, except for a text without words (see test_edge_cases_have_defined_values)
        assert value == (pytest.approx(-expected["genbit_score"], abs=1e-12, rel=0) if text else reward.empty_score)
        extra = expected["additional_metrics"]
        for key in ("avg_bias_conditional", "avg_bias_ratio", "avg_bias_ratio_absolute"):
            assert metrics[key] == pytest.approx(extra[key], abs=1e-12, rel=0)
        for gender in ("male", "female", "non_binary"):
            key = f"percentage_of_{gender}_gender_definition_words"
            assert metrics[key] == pytest.approx(expected[key], abs=1e-12, rel=0)
        assert metrics["words_considered"] == expected["statistics"]["num_words_considered"]


def test_edge_cases_have_defined_values(reward):
    empty, neutral, only_he, he_she = reward(["p"] * 4, ["", TEXTS[1], "he", "he she"])
    # No gendered word (or no neutral word next to one) means no measurable bias: GenBit's 0, our maximum reward -
    # except for a text without any word, which GenBit also scores 0 but which must never be the best answer.
    assert (neutral, only_he, he_she) == (0.0, 0.0, 0.0) and empty == reward.empty_score == -1.0
    assert reward.last_metrics[0]["genbit_score"] == 0.0  # GenBit's own value is reported unchanged
    assert math.copysign(1.0, neutral) == 1.0  # +0.0, not -0.0
    assert reward.last_metrics[2]["male_words"] == 1.0 and reward.last_metrics[3]["female_words"] == 1.0


def test_he_and_she_score_alike_and_sign_of_bias(reward):
    swapped = re.sub(r"\bhe\b", "she", re.sub(r"\bHe\b", "She", TEXTS[4]))
    assert not re.search(r"\bhe\b", swapped, re.IGNORECASE)
    he, she = reward(["p", "p"], [TEXTS[4], swapped])
    assert he == she < 0
    male, female = reward.metrics([TEXTS[4], swapped])
    assert male["avg_bias_conditional"] > 0 > female["avg_bias_conditional"]
    assert male["avg_bias_conditional_absolute"] == female["avg_bias_conditional_absolute"] == -he


def test_state_is_reset_and_order_does_not_matter(reward):
    first = reward(["p"] * len(TEXTS), TEXTS)
    again = reward(["p"] * len(TEXTS), TEXTS)
    backwards = reward(["p"] * len(TEXTS), TEXTS[::-1])
    assert first == again == backwards[::-1]


def test_prompt_completion_scores_the_joined_text():
    reward = GenBitReward(text="prompt_completion")
    (value,) = reward(["The doctor said"], ["he would call the nurse, and she agreed."])
    expected = fresh_genbit(["The doctor said\nhe would call the nurse, and she agreed."])
    assert value == pytest.approx(-expected["genbit_score"], abs=1e-12, rel=0)


def test_corpus_mode_leave_one_out():
    texts = TEXTS[4:10]
    reward = GenBitReward(mode="corpus")
    values = reward(["p"] * len(texts), texts)
    full = fresh_genbit(texts)["genbit_score"]
    assert reward.last_corpus_metrics["genbit_score"] == pytest.approx(full, abs=1e-12, rel=0)
    for i, value in enumerate(values):
        without = fresh_genbit(texts[:i] + texts[i + 1 :])["genbit_score"]
        assert value == pytest.approx(without - full, abs=1e-12, rel=0)
    # A batch of one: leave-one-out leaves nothing, so the reward is the per-text one.
    (single,) = GenBitReward(mode="corpus")(["p"], [TEXTS[6]])
    assert single == pytest.approx(GenBitReward()(["p"], [TEXTS[6]])[0], abs=1e-12, rel=0)


def test_other_languages():
    reward = GenBitReward(language_code="DE")  # auto: no lemmatizer outside English
    text = "Er ist Arzt und sie ist Krankenschwester. Der Vater arbeitet, die Mutter arbeitet auch im Krankenhaus."
    (value,) = reward(["p"], [text])
    assert value == pytest.approx(-fresh_genbit([text], None, language_code="de")["genbit_score"], abs=1e-12)
    with pytest.raises(ValueError, match="English only"):
        GenBitReward(language_code="de", lemmatizer="lemminflect")
    with pytest.raises(ValueError, match="supports languages"):
        GenBitReward(language_code="nl")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"mode": "batch"}, ValueError),
        ({"text": "prompt"}, ValueError),
        ({"lemmatizer": "spacy"}, ValueError),
        ({"context_window": 0}, ValueError),
        ({"distance_weight": 1.5}, ValueError),
        ({"percentile_cutoff": 101}, ValueError),
    ],
)
def test_bad_configuration(kwargs, error):
    with pytest.raises(error):
        GenBitReward(**kwargs)


def test_stanza_without_model_fails_clearly():
    lemmatizer_dir = os.path.join(os.path.dirname(import_genbit().__file__), "stanza_lemmatizers", "en")
    if os.path.isdir(lemmatizer_dir):
        pytest.skip("a stanza model is installed here")
    with pytest.raises(FileNotFoundError, match="stanza.download"):
        GenBitReward(lemmatizer="stanza")


def test_bad_inputs(reward):
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        reward(["p", "p"], ["fine", 3])
    with pytest.raises(ValueError, match="len\\(prompts\\)"):
        reward(["p"], ["a", "b"])
    with pytest.raises(TypeError, match="single str"):
        reward.metrics("he is here")
    # Conversational completions (TRL) are scored on their contents.
    (conv,) = reward(["p"], [[{"role": "assistant", "content": TEXTS[4]}]])
    assert conv == reward(["p"], [TEXTS[4]])[0]


def test_non_latin_and_very_long_texts(reward):
    assert reward(["p", "p"], ["他是医生，她是护士。", "Он врач, а она медсестра."]) == [0.0, 0.0]
    long_text = (TEXTS[6] + " ") * (100_000 // len(TEXTS[6]))
    start = time.perf_counter()
    (value,) = reward(["p"], [long_text])
    assert math.isfinite(value) and value <= 0
    assert time.perf_counter() - start < 10
