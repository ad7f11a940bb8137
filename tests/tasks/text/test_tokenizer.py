"""The tokenizer against the outputs of the COCO evaluation's Java PTB tokenizer (CoreNLP 3.4.1,
-preserveLines -lowerCase): fixed examples always, every caption of the real datasets when Java, the
jar and the data are there."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from deepfeat.tasks.text.tokenizer import corenlp_jar, java_ptb_tokenize, ptb_tokens, tokenize
from tests.conftest import SHARED_DATASETS

# (text, the Java tokenizer's output before punctuation removal), recorded from CoreNLP 3.4.1
JAVA_OUTPUTS = [
    ("Don't you think it's the dogs' toy?", "do n't you think it 's the dogs ' toy ?"),
    (
        'He said "hello" (loudly) [sic] {x} -- ok...',
        "he said `` hello '' -lrb- loudly -rrb- -lsb- sic -rsb- -lcb- x -rcb- -- ok ...",
    ),
    ("can't won't I'm we're they've you'll I'd", "ca n't wo n't i 'm we 're they 've you 'll i 'd"),
    (
        "black-and-white photo of a 3-year-old ... well !?",
        "black-and-white photo of a 3-year-old ... well !?",
    ),
    ("e-mail at 5:30 p.m. on 12/25", "e-mail at 5:30 p.m. on 12/25"),
    ("rock 'n' roll", "rock 'n' roll"),
    ("O'Neil's", "o'neil 's"),
    ("cannot gonna gimme", "can not gon na gim me"),
    (
        "A stuffed bear sits next to a tea cup full of tea..",
        "a stuffed bear sits next to a tea cup full of tea . .",
    ),
    (
        "A place setting, including a burger, fries, a glass",
        "a place setting , including a burger , fries , a glass",
    ),
    ("a man wearing an orange U. Miami t-shirt", "a man wearing an orange u. miami t-shirt"),
    ("(a) 'quoted' e.g. the end", "-lrb- a -rrb- ` quoted ' e.g. the end"),
    ("He is 5'11\" tall", "he is 5 ' 11 '' tall"),
    ("Wow!? Really?! ok;fine:yes", "wow !? really ?! ok ; fine : yes"),
    ("the 1990s' best, an 80's car", "the 1990s ' best , an 80 's car"),
    ("$5.00 hat, 100% cotton & 1,000 items", "$ 5.00 hat , 100 % cotton & 1,000 items"),
    ('A sign that says " park " .', "a sign that says '' park '' ."),
]


@pytest.mark.parametrize(("text", "java"), JAVA_OUTPUTS)
def test_ptb_tokens_match_the_java_tokenizer(text, java):
    assert " ".join(ptb_tokens(text)) == java


def test_punctuation_is_removed_as_the_coco_evaluation_does():
    assert tokenize('A dog, running; "fast" (very)!') == [
        "a",
        "dog",
        "running",
        "fast",
        "-lrb-",
        "very",
        "-rrb-",
    ]
    assert tokenize("") == [] and tokenize("  .  ") == []


def captions_of_real_data() -> list[str]:
    out = []
    flickr = SHARED_DATASETS / "flickr8k_mini" / "captions.csv"
    with open(flickr, encoding="utf-8") as fh:
        out += [r["caption"] for r in csv.DictReader(fh)]
    for part in ("train", "val"):
        data = json.loads(
            (SHARED_DATASETS / "coco_mini" / "annotations" / f"captions_{part}2017.json").read_text()
        )
        out += [a["caption"] for a in data["annotations"]]
    return out


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATASETS / "flickr8k_mini").is_dir(), reason="shared datasets absent")
@pytest.mark.skipif(
    shutil.which("java") is None or corenlp_jar() is None, reason="needs Java and CoreNLP's jar"
)
def test_every_real_caption_tokenises_as_the_java_tokenizer_does():
    captions = captions_of_real_data()
    java = java_ptb_tokenize(captions)
    assert java is not None
    differ = [(c, j) for c, j in zip(captions, java) if tokenize(c) != j]
    assert len(captions) == 13295
    assert not differ, f"{len(differ)} of {len(captions)} captions differ, e.g. {differ[:3]}"
