"""Regenerates diffusion_rl/models/tiny_corpus.txt (deterministic), the corpus the tiny tokenizer is trained on.

Usage: ``python tools/make_tiny_corpus.py [SHARED_DATA_DIR]`` (defaults to ``../shared/data`` beside the checkout).
"""

import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D = sys.argv[1] if len(sys.argv) > 1 else str(ROOT.parent / "shared" / "data")
rng = random.Random(1234)


def words(p):
    return [w.strip() for w in open(p) if w.strip()]


wb = words(f"{D}/winobias/male_occupations.txt") + words(f"{D}/winobias/female_occupations.txt")
wg = [r["occupation"] for r in csv.DictReader(open(f"{D}/winogender/occupations-stats.tsv"), delimiter="\t")]
occs = sorted(set(w.lower() for w in wb + wg if w != "CEO") | {"CEO"})
pairs = []
for p in (f"{D}/winobias/generalized_swaps.txt", f"{D}/winobias/extra_gendered_words.txt"):
    for line in open(p):
        a = line.split("\t")
        if len(a) == 2 and a[0].strip() and a[1].strip():
            pairs.append((a[0].strip(), a[1].strip()))
pairs = sorted(set(pairs))
extra = [
    ("man", "woman"),
    ("waiter", "waitress"),
    ("chairman", "chairperson"),
    ("policeman", "police officer"),
    ("fireman", "firefighter"),
    ("salesman", "salesperson"),
    ("steward", "flight attendant"),
    ("mailman", "mail carrier"),
    ("spokesman", "spokesperson"),
    ("businessman", "businessperson"),
]
templates = []
for r in csv.DictReader(open(f"{D}/winogender/templates.tsv"), delimiter="\t"):
    templates.append((r["occupation(0)"], r["other-participant(1)"], r["sentence"]))
PRON = {"he": ("he", "his", "him"), "she": ("she", "her", "her"), "they": ("they", "their", "them")}


def fill(t, occ, part, p):
    nom, poss, acc = PRON[p]
    return (
        t.replace("$OCCUPATION", occ)
        .replace("$PARTICIPANT", part)
        .replace("$NOM_PRONOUN", nom)
        .replace("$POSS_PRONOUN", poss)
        .replace("$ACC_PRONOUN", acc)
    )


everyday = """The sun rose over the quiet town and the birds began to sing.
I made a cup of tea and read the news before work.
We walked to the park after lunch because the weather was nice.
She opened the window to let in some fresh air.
He forgot his keys at home, so he waited for his sister.
They cooked dinner together and talked about their day.
The train was late again this morning.
My friend called me to ask about the weekend.
It is raining, so take an umbrella with you.
The children played in the garden until it got dark.
Please close the door when you leave the room.
The shop on the corner sells fresh bread and milk.
We need to buy eggs, rice, apples and coffee.
The meeting starts at nine and ends at ten.
Thank you for your help, it was very kind of you.
Could you tell me the way to the station?
The cat slept on the warm chair by the window.
Their house is small but bright and comfortable.
The library is open every day except Sunday.
He likes music, she likes books, and they both like films.
Hers is the red bike and theirs is the blue one.
I asked them a question and they gave me a clear answer.
The doctor told him to rest for a few days.
The teacher thanked her students for their hard work.
A good friend listens and tries to understand.
The road was long, but the view from the hill was worth it.
We will visit our grandparents next month.
The new phone is faster than the old one.
Everyone should have a fair chance to succeed.
The team won the game because they worked together.
The answer is simple: practice every day.
People can be kind, patient and honest.
The person at the desk can help you with your ticket.
Someone left a note on the table for you.
The neighbours planted flowers along the fence.
It was a cold night, so we lit a fire and told stories.
The bus stops in front of the school every morning.
The river runs through the middle of the city.
A woman and a man were waiting at the bus stop.
The man paid for the coffee and the woman paid for the cake.
Nobody knows what will happen tomorrow.
Each of them brought something to share.
The baby laughed when the dog jumped.
The students wrote an essay about their favourite place.
The waiter brought the menu and the waitress brought water.
The chairperson opened the meeting and thanked everyone.
A parent picked up the child from school.
Who is going to clean the kitchen tonight?
The weather will be sunny with a light wind.
Reading before bed helps me relax.""".splitlines()
out = [
    "# Embedded corpus for the diffusion_rl tiny tokenizer and demo model (generated, deterministic).",
    "# Occupation lists, Winogender templates and gendered word pairs: WinoBias (Zhao et al., NAACL 2018, uclanlp/corefBias, MIT) and",  # noqa: E501 (must match the committed corpus byte for byte)
    "# Winogender schemas (Rudinger et al., NAACL 2018, rudinger/winogender-schemas, MIT). Lines starting with '#'",
    "# are comments and are not used for training. MIT license text: see TINY_CORPUS_LICENSE.md.",
    "",
]
out += everyday
for occ, part, t in templates:
    for p in ("he", "she", "they"):
        out.append(fill(t, occ, part, p))
for occ in occs:
    art = "An" if occ[0] in "aeiou" else "A"
    for line in (
        f"{art} {occ} works hard every day.",
        f"The {occ} said that he would finish the work soon.",
        f"The {occ} said that she would finish the work soon.",
        f"The {occ} said that they would finish the work soon.",
        f"The {occ} finished his report. The {occ} finished her report. The {occ} finished their report.",
        f"I met the {occ} yesterday and thanked them for their help.",
        f"The {occ} asked him a question, then asked her a question.",
        f"The user asked the assistant about the {occ}, and the system gave a short reply.",
        f"The notes of the {occ} are hers. The tools are theirs. The coat is his.",
    ):
        out.append(line)
for a, b in sorted(set(pairs) | set(extra)):
    out.append(f"The {a} and the {b} arrived at the same time.")
    out.append(f"One is a {a}, the other is a {b}.")
opts_unknown = ["Cannot be determined", "Not enough information", "Unknown", "Can't answer"]
questions = [
    "Who was bad at math?",
    "Who is the better leader?",
    "Who was the caregiver?",
    "Who was good at the job?",
    "Who was rude?",
    "Who was kind?",
    "Who is more emotional?",
    "Who is the engineer?",
    "Who is the nurse?",
    "Who was in charge?",
]
for _ in range(600):
    o1, o2 = rng.sample(occs, 2)
    g1, g2 = rng.choice(
        [
            ("man", "woman"),
            ("woman", "man"),
            ("boy", "girl"),
            ("father", "mother"),
            ("husband", "wife"),
            ("grandfather", "grandmother"),
        ]
    )
    q = rng.choice(questions)
    unk = rng.choice(opts_unknown)
    ctx = rng.choice(
        [
            f"A {g1} and a {g2} met the {o1} at the office.",
            f"The {o1} and the {o2} were talking after the meeting.",
            f"A {g1} and a {g2} applied for the job of {o1}.",
        ]
    )
    options = [f"the {g1}", f"the {g2}", unk, f"the {o1}"]
    rng.shuffle(options)
    letters = "ABCD"
    ans = letters[options.index(unk)]
    out.append(ctx + " " + q)
    out.append(" ".join(f"{letters[j]}) {options[j]}" for j in range(4)))
    out.append(
        rng.choice(
            [
                f"The answer is {ans} because the context does not say.",
                f"The answer is {ans}) {unk}, because there is not enough information.",
                f"Answer: {ans}. The text does not tell us, so the answer is {ans}.",
                f"The answer is {ans}.",
            ]
        )
    )
open(ROOT / "diffusion_rl" / "models" / "tiny_corpus.txt", "w").write("\n".join(out) + "\n")
print(len(out))
