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
    # non-ASCII punctuation and symbols: rewritten, deleted or split off; trailing apostrophes
    ("a dog — runs", "a dog -- runs"),
    ("a dog – runs", "a dog -- runs"),
    ("a dog―runs", "a dog -- runs"),
    ("a dog‒runs", "a dog runs"),
    ("a dog—runs", "a dog -- runs"),
    ("two «soccer» kids", "two `` soccer '' kids"),
    ("two “soccer” kids", "two `` soccer '' kids"),
    ("two ‘soccer’ kids", "two ` soccer ' kids"),
    ("two ‹soccer› kids", "two ` soccer ' kids"),
    ("the dog’s bone", "the dog 's bone"),
    ("dogs’ bones", "dogs ' bones"),
    ("a dog .. running", "a dog . . running"),
    ("a dog ... running", "a dog ... running"),
    ("a dog … running", "a dog ... running"),
    ("a dog…running", "a dog ... running"),
    ("a dog 🐕 runs", "a dog runs"),
    ("a dog🐕runs", "a dog runs"),
    ("a dog ★ runs", "a dog ★ runs"),
    ("a dog • runs", "a dog • runs"),
    ("café au lait", "café au lait"),
    ("a ½ cup", "a 1/2 cup"),
    ("a dog ¿ runs ¡ now", "a dog ¿ runs ¡ now"),
    ("a dog · runs", "a dog · runs"),
    ("naïve ﬁsh", "naïve ﬁsh"),
    ("a dog‐runs", "a dog‐runs"),
    ("a dog − runs", "a dog − runs"),
    ("a dog ‼ runs", "a dog runs"),
    ("a dog ™ runs", "a dog ™ runs"),
    ("a dog © runs", "a dog © runs"),
    ("a 5° angle", "a 5 ° angle"),
    ("a dog → runs", "a dog → runs"),
    ("a dog ° runs", "a dog ° runs"),
    ("x × y", "x × y"),
    ("a dog ’ runs", "a dog ' runs"),
    ("€5 price", "$ 5 price"),
    ("£5 price", "# 5 price"),
    ("¥5 price", "¥ 5 price"),
    ("a dog ... .. . runs", "a dog ... . . . runs"),
    ("a dog !! ?? runs", "a dog !! ?? runs"),
    ("a dog .... runs", "a dog ... runs"),
    ("rock n' roll", "rock n ' roll"),
    ("goin' home", "goin ' home"),
    ("soccer' x", "soccer ' x"),
    ("dogs' x", "dogs ' x"),
    ("o' x", "o ' x"),
    ("the cat' s", "the cat ' s"),
    # a clitic or a hashtag ends the word token, so the slash after it stands alone; '#' splits off
    # only before a digit, and a run of them before a word
    ("he can't/won't go", "he ca n't / wo n't go"),
    ("it's/its", "it 's / its"),
    ("o'neil/smith", "o'neil / smith"),
    ("its/it's and/or", "its/it 's and/or"),
    ("a #tag here", "a #tag here"),
    ("a #tag/b", "a #tag / b"),
    ("##hash #1 winner", "## hash # 1 winner"),
]


@pytest.mark.parametrize(("text", "java"), JAVA_OUTPUTS)
def test_ptb_tokens_match_the_java_tokenizer(text, java):
    assert " ".join(ptb_tokens(text)) == java


# (text, the Java tokenizer's tokens after the COCO evaluation's punctuation removal), CoreNLP 3.4.1:
# a hashtag is '#' and letters, and whatever follows it starts a new token
JAVA_TOKENS = [
    ("the boys'/girls' room", "the boys / girls room"),
    ("a dog #nyc2015 photo", "a dog #nyc 2015 photo"),
    ("#dog-lover", "#dog lover"),
    ("#tag#tag", "#tag #tag"),
    ("#big.dog", "#big dog"),
    ("#can't", "#can t"),
    ("#tag's", "#tag 's"),
    ("#ab's/cd", "#ab 's / cd"),
    ("can't//won't", "ca n't / / wo n't"),
]


@pytest.mark.parametrize(("text", "java"), JAVA_TOKENS)
def test_tokens_match_the_java_tokenizer(text, java):
    assert tokenize(text) == java.split()


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


@pytest.mark.skipif(
    shutil.which("java") is None or corenlp_jar() is None, reason="needs Java and CoreNLP's jar"
)
def test_every_non_ascii_punctuation_and_symbol_tokenises_as_the_java_tokenizer_does():
    """Each character of Latin-1, general punctuation, letter-like symbols, arrows, mathematical
    operators, shapes, dingbats, CJK punctuation and fullwidth forms, and some beyond the BMP, between
    two words and alone."""
    import unicodedata

    ranges = [(0xA1, 0x250), (0x2000, 0x2300), (0x2500, 0x27C0), (0x3000, 0x3040), (0xFF00, 0xFF66)]
    chars = [
        chr(c) for lo, hi in ranges for c in range(lo, hi) if unicodedata.category(chr(c))[0] not in "CZ"
    ]
    chars += ["\U0001f415", "\U0001f600", "\U0001d49c"]
    lines = [f"a {ch} b" for ch in chars]
    java = java_ptb_tokenize(lines)
    assert java is not None
    differ = [(line, j, tokenize(line)) for line, j in zip(lines, java) if tokenize(line) != j]
    assert not differ, f"{len(differ)} of {len(lines)} differ, e.g. {differ[:5]}"


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
