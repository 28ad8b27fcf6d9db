#!/usr/bin/env python3
"""Generate the reference data for `internvl::evaluation` (tests/evaluation.rs).

Writes, under tests/fixtures/evaluation/:

* captions.json        a small hand-made caption set (8 images x 5 references and one
                       candidate each) with pycocoevalcap's PTB-tokenised strings and its
                       BLEU-1..4 and CIDEr(-D) scores;
* ptb_cases.json       tokeniser cases (hand-written edge cases plus seeded random
                       caption-like lines), each with the raw output of Stanford CoreNLP's
                       PTBTokenizer (`-preserveLines -lowerCase`, the jar shipped in
                       pycocoevalcap) and the string pycocoevalcap's wrapper returns;
* retrieval.json       similarity matrices (images x texts) with ties and several captions
                       per image, and recall@k computed by a small pure-Python version of
                       clip_benchmark's definition (see `recall_hits`);
* classification.json  logits and labels, with top-k accuracy (pure Python, same
                       definition as clip_benchmark's `accuracy`) and scikit-learn's
                       `balanced_accuracy_score` and `confusion_matrix` of the argmax.

Scores are computed by the real packages; nothing here re-implements pycocoevalcap.

Usage (pycocoevalcap 1.2, scikit-learn 1.9.1 and OpenJDK 17 were used for the committed data):
    python3 -m venv /tmp/evalvenv
    /tmp/evalvenv/bin/pip install pycocoevalcap==1.2 scikit-learn==1.9.1
    /tmp/evalvenv/bin/python scripts/gen_eval_refs.py
"""

import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

import pycocoevalcap
import sklearn
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/evaluation"

# ----------------------------------------------------------------------------------------
# Captioning

# Image id -> (five references, candidate). Ids are COCO-like integers, in ascending order
# (the Rust side tokenises in key order; pycocoevalcap in dict order).
CAPTIONS = {
    42: (
        [
            "A man riding a skateboard down the street.",
            "A skateboarder rolls down a sunny street.",
            "a young man is skateboarding on a city road",
            "A guy on a skate-board in the middle of the road.",
            "Man riding his skateboard on an empty street",
        ],
        "A man riding a skate-board down the street.",
    ),
    73: (
        [
            "Two dogs' toys are lying on the grass.",
            "The dog's toy is on the lawn; it isn't moving.",
            "A dog can't reach its toy under the bench.",
            "Two puppies playing with their toys in a yard",
            "It's a sunny day and the dogs are playing.",
        ],
        "The dog's playing with it's toy, isn't it?",
    ),
    139: (
        [
            "A clock tower showing 10:30 on a cloudy day.",
            "The clock on the tower reads 10:30.",
            "A tall clock tower, about 1,000 feet high.",
            "A clock that is 3.5 meters wide on a brick tower",
            "An old clock tower with roman numerals",
        ],
        "A clock tower shows 10:30 and it's 3 1/2 feet tall.",
    ),
    285: (
        [
            'A red "STOP" sign on a pole at the corner.',
            "A stop sign at the corner of Main St. and 5th Ave.",
            "The stop sign is next to a street sign that says Elm St.",
            "A red stop sign with a sticker that reads the letter A.",
            "The red sign says STOP in white letters.",
        ],
        'A "stop" sign at the corner of Main St. and 5th Ave.',
    ),
    632: (
        [
            "A large pizza with pepperoni and cheese on a table.",
            "Two slices of pizza on a white plate.",
            "A pizza topped with olives, peppers and mushrooms.",
            "Someone is cutting a pizza with a knife.",
            "A hot pizza fresh out of the oven.",
        ],
        "Zebras graze quietly.",
    ),
    724: (
        [
            "A cat sleeping on a laptop keyboard.",
            "The cat is lying on top of a computer.",
            "A gray cat naps on an open laptop.",
            "A kitten curled up on the keys of a notebook computer.",
            "a cat that is laying down on a laptop",
        ],
        "Cat.",
    ),
    1000: (
        [
            "A BLACK/WHITE photo (circa 1950) of a steam train...",
            "An old black and white picture of a train -- very old!",
            "A steam locomotive pulling cars, e.g. coal cars, etc.",
            "A vintage train; it's black-and-white [archive photo].",
            "The train is gonna leave the U.S. station soon.",
        ],
        "A BLACK/WHITE photo (circa 1950) of a train... wow!!",
    ),
    1296: (
        [
            "A café’s menu board with “fancy” prices.",
            "A menu on a chalkboard — prices in €.",
            "The café sign says 'open' and shows 5 dishes.",
            "A chalkboard menu outside a French café 😀",
            "A blackboard listing coffees & teas at a café.",
        ],
        "A café’s menu — with “fancy” prices €5! 🍕",
    ),
}


def pycoco_tokenize(captions_by_id):
    """pycocoevalcap's PTBTokenizer over {id: [captions]}."""
    data = {k: [{"caption": c} for c in caps] for k, caps in captions_by_id.items()}
    return PTBTokenizer().tokenize(data)


def caption_fixture():
    refs = {k: v[0] for k, v in CAPTIONS.items()}
    cands = {k: [v[1]] for k, v in CAPTIONS.items()}
    gts = pycoco_tokenize(refs)
    res = pycoco_tokenize(cands)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_per_image = Cider().compute_score(gts, res)
    images = [
        {
            "image_id": k,
            "references": refs[k],
            "candidate": cands[k][0],
            "references_tokenized": gts[k],
            "candidate_tokenized": res[k][0],
            "cider": float(s),
        }
        for k, s in zip(CAPTIONS, cider_per_image)
    ]
    return {
        "source": f"pycocoevalcap {pycocoevalcap_version()} (Bleu(4) option 'closest', Cider n=4 sigma=6)",
        "images": images,
        "bleu": [float(b) for b in bleu],
        "cider": float(cider),
    }


def pycocoevalcap_version():
    from importlib.metadata import version

    return version("pycocoevalcap")


# ----------------------------------------------------------------------------------------
# Tokeniser cases

HAND_CASES = [
    "It's a dog's well-known toy.",
    "I can't, won't and don't!",
    "I'm sure you're right; we've seen he'll go and she'd stay.",
    "They're here. DON'T touch. HE'S gone.",
    "dogs' bones and the boss's desk",
    "cannot gonna wanna gotta gimme lemme 'twas 'tis",
    "o'clock O'Neil d'Angelo y'all rock'n'roll 'em '90s 'til 'cause c'mon li'l",
    "a 3.5-inch screen, a 5-year-old kid, an x-ray, a t-shirt, e-mail, anti-war",
    "black/white and/or 24/7 1/2 3 1/2 ½ ¼ ⅓ 12/25/2015 a/b/c",
    "3.5 1,000 -5 +3 10:30 .22 1. 2nd 1990s 123abc abc123 5% $5 US$ #1",
    "#beach @user __ ** *** & AT&T r&b S&P-500 &amp; &quot;hi&quot; &lt;b&gt;",
    "wait... what.... no...... . . . … ! !! ?! ? ??",
    "a - b -- c --- d ---- e ----- f — g – h",
    "(left) [right] {curly} <angle> << >> = == / \\ | ~ ^ + * @ # _",
    '"hello" " hello" \'hi\' “quoted” ‘single’ «guillemets» ‚low „low ` `` \'\'',
    ";) :) :-) :D :P =) ^_^ -_- (^_^) x_x <3",
    "www.google.com amazon.com Amazon.com amazon.com/books http://example.com/a. john@example.com",
    "image.jpg photo.JPG file.tar.gz 123.png",
    "é naïve Zürich 日本 € £ ¢ ¥ © ° × → • ™ ² H₂O x²",
    "emoji 😀 👍🏽 and soft\u00adhyphen and \u200bzero width",
    "etc. St. Dr. Mr. Mrs. Ave. Mt. vs. U.S. a.m. p.m. e.g. i.e. No. 5 no. fig. 3",
    "Inc. Co. Ltd. Jan. Sept. Wed. Calif. La. la. Pa. Mass. Miss. miss. jr. sr.",
    "the letter A. The end",
    "the letter A. the end",
    "plan B. It works",
    "in the U.S. The end",
    "a.k.a. cf. sq. est. co. ltd pty. ltd U.S.A. Ph.D.",
    "dog.a wow!great what?no dog., etc., word.; A.B.",
    "<unk> <b>bold</b> <br/> <a href=\"x\">link</a>",
    "call 555-1234 or (555) 123-4567 or 555 123 4567 or +1 555 123 4567",
    "C++ c# F# cap'n c'est C.D.s -LRB- cont'd",
    "A man riding a wave on top of a surfboard.",
    "A group of people standing around a table with food.",
    "Two giraffes standing next to each other in a field.",
    "the letter",
    "A.",
    "",
    "a caption with trailing spaces   ",
    "   leading spaces",
    "tab\tseparated\twords",
    "no-break\u00a0space",
]

WORDS = (
    "a an the man woman dog cat bus two three people sitting on top of with next to in "
    "front riding skateboard street sign red blue white black is are it its this that there "
    "here they He She The A An It There This We You St Dr Mr Mrs Ms Ave Mt no No fig etc Inc "
    "Co Ltd Jan Feb Wed Fri La Pa Mass Miss miss Calif U.S U.S.A a.m p.m e.g i.e vs Ph.D US "
    "UK TV"
).split()

FRAGMENTS = [
    "it's", "don't", "can't", "won't", "I'm", "you're", "we've", "he'll", "she'd", "isn't",
    "ain't", "DON'T", "HE'S", "they're", "dog's", "dogs'", "cannot", "gonna", "wanna",
    "o'clock", "O'Neil", "y'all", "'em", "'90s", "it’s", "don’t", "n't", "'s", "'",
    "well-known", "x-ray", "3.5-inch", "5-year-old", "anti-war", "snake_case", "café-bar",
    "black/white", "and/or", "1/2", "3 1/2", "½", "12/25/2015", "3.5", "1,000", "-5", "+3",
    "10:30", "2nd", "1990s", "5%", "$5", "US$", "#1", "&", "AT&T", "r&b", "&amp;",
    "...", "....", ". . .", "…", "!", "!!", "?!", "?", ".", ",", ";", ":", "-", "--", "---",
    "-----", "—", "–", "(", ")", "[", "]", "{", "}", "<", ">", "=", "/", "*", "@", "#", "_",
    '"', '"hello"', "'hi'", "“quoted”", "‘single’", "`", "``", "''", ";)", ":)", "^_^",
    "www.google.com", "amazon.com", "john@example.com", "image.jpg", "é", "naïve", "😀",
    "€", "£", "°", "×", "™", "etc.", "St.", "Dr.", "Mr.", "U.S.", "a.m.", "e.g.", "No.",
    "no.", "Fig.", "Inc.", "Co.", "Jan.", "La.", "Mass.", "A.", "B.", "a.", "x.", "I.",
    "U.S.A.", "Ph.D.", "dog.a", "wow!great", "dog.,", "<unk>", "<b>", "555-1234",
]


def random_cases(count, seed=20240607):
    rng = random.Random(seed)
    separators = [" "] * 12 + ["", "  ", "\t"]
    endings = [".", " .", "!", "?", "...", '."', '".', "'", ")"]
    lines = []
    for _ in range(count):
        parts = [
            rng.choice(WORDS) if rng.random() < 0.45 else rng.choice(FRAGMENTS)
            for _ in range(rng.randint(1, 10))
        ]
        line = "".join(p + rng.choice(separators) for p in parts[:-1]) + parts[-1]
        if rng.random() < 0.4:
            line += rng.choice(endings)
        lines.append(line)
    return lines


def java_ptb(lines):
    """Raw CoreNLP output lines, run exactly as pycocoevalcap runs it."""
    jar_dir = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
    with tempfile.NamedTemporaryFile("wb", delete=False, dir=jar_dir) as f:
        f.write("\n".join(line.replace("\n", " ") for line in lines).encode())
        name = f.name
    try:
        cmd = [
            "java", "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR,
            "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
            os.path.basename(name),
        ]
        out = subprocess.run(cmd, cwd=jar_dir, capture_output=True, check=True).stdout
    finally:
        os.remove(name)
    return out.decode().split("\n")


def ptb_fixture():
    lines = HAND_CASES + random_cases(300)
    raw = java_ptb(lines)
    assert len(raw) == len(lines), (len(raw), len(lines))
    wrapped = pycoco_tokenize({0: lines})[0]
    return {
        "source": "Stanford CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase "
        f"(jar of pycocoevalcap {pycocoevalcap_version()}); `tokenized` is PTBTokenizer.tokenize",
        "cases": [
            {"text": t, "ptb": r, "tokenized": w} for t, r, w in zip(lines, raw, wrapped)
        ],
    }


# ----------------------------------------------------------------------------------------
# Retrieval


def ranked(scores):
    """Indices by descending score, ties by lower index (a stable descending sort)."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))


def recall_hits(scores, positives, k):
    """clip_benchmark's recall@k for one query: 1 if any positive is in the top k."""
    return 1.0 if any(j in positives for j in ranked(scores)[:k]) else 0.0


def retrieval_case(name, sim, text_to_image, ks=(1, 5, 10)):
    n_images, n_texts = len(sim), len(sim[0])
    texts_of = [{t for t in range(n_texts) if text_to_image[t] == i} for i in range(n_images)]
    i2t = [sum(recall_hits(sim[i], texts_of[i], k) for i in range(n_images)) / n_images for k in ks]
    t2i = [
        sum(recall_hits([sim[i][t] for i in range(n_images)], {text_to_image[t]}, k) for t in range(n_texts))
        / n_texts
        for k in ks
    ]
    return {
        "name": name,
        "similarity": sim,
        "text_to_image": text_to_image,
        "ks": list(ks),
        "image_to_text": i2t,
        "text_to_image_recall": t2i,
    }


def random_matrix(rng, rows, cols, levels):
    """Scores that are multiples of 1/levels (exact in f32), so ties are frequent."""
    return [[rng.randint(-levels, levels) / levels for _ in range(cols)] for _ in range(rows)]


def retrieval_fixture():
    rng = random.Random(7)
    cases = []
    # 3 images, 2 captions each; ties inside rows and columns.
    sim = [
        [0.5, 0.25, 0.5, 0.75, 0.0, 0.5],
        [0.25, 0.25, 0.75, 0.75, 0.125, 0.0],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    ]
    cases.append(retrieval_case("ties_3x6", sim, [0, 0, 1, 1, 2, 2], ks=(1, 2, 3, 10)))
    for rows, per_image, levels in [(12, 5, 8), (25, 3, 64), (40, 1, 1024)]:
        text_to_image = [i for i in range(rows) for _ in range(per_image)]
        rng.shuffle(text_to_image)
        sim = random_matrix(rng, rows, rows * per_image, levels)
        cases.append(retrieval_case(f"random_{rows}x{rows * per_image}_levels{levels}", sim, text_to_image))
    return {"definition": "stable descending ranking; hit if any positive in the top k", "cases": cases}


# ----------------------------------------------------------------------------------------
# Classification


def top_k(logits, labels, k):
    return sum(1.0 for row, y in zip(logits, labels) if y in ranked(row)[:k]) / len(labels)


def argmax(row):
    return ranked(row)[0]


def classification_case(name, logits, labels):
    n_classes = len(logits[0])
    predictions = [argmax(r) for r in logits]
    return {
        "name": name,
        "logits": logits,
        "labels": labels,
        "acc1": top_k(logits, labels, 1),
        "acc5": top_k(logits, labels, 5) if n_classes >= 5 else None,
        "mean_per_class_recall": float(balanced_accuracy_score(labels, predictions)),
        "confusion": confusion_matrix(labels, predictions, labels=list(range(n_classes))).tolist(),
    }


def classification_fixture():
    rng = random.Random(11)
    cases = []
    for n, classes, levels in [(30, 4, 4), (120, 10, 16), (200, 7, 1024)]:
        labels = [rng.randrange(classes) for _ in range(n)]
        logits = random_matrix(rng, n, classes, levels)
        # Make the models better than chance: raise the true class's logit sometimes.
        for row, y in zip(logits, labels):
            if rng.random() < 0.6:
                row[y] = 1.0
        cases.append(classification_case(f"random_{n}x{classes}_levels{levels}", logits, labels))
    # A class that never occurs among the labels but is predicted (left out of the mean).
    logits = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    cases.append(classification_case("unused_class", logits, [0, 1, 1, 1]))
    return {"source": f"scikit-learn {sklearn.__version__}", "cases": cases}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    outputs = {
        "captions.json": caption_fixture(),
        "ptb_cases.json": ptb_fixture(),
        "retrieval.json": retrieval_fixture(),
        "classification.json": classification_fixture(),
    }
    for name, data in outputs.items():
        with open(OUT / name, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
