"""Caption tokenisation as the COCO caption evaluation does it: Stanford's PTB tokenizer (CoreNLP 3.4.1,
``-preserveLines -lowerCase``) followed by the removal of punctuation tokens.

:func:`ptb_tokens` is an in-house re-implementation of the PTB rules that matter for captions:
lower-casing; punctuation split off words (``.`` ``,`` ``;`` ``:`` ``!`` ``?`` and runs of them,
ellipses, dashes); clitics split (``don't`` -> ``do n't``, ``it's`` -> ``it 's``, ``dogs'`` -> ``dogs '``,
``cannot`` -> ``can not``, ``gonna`` -> ``gon na``); double quotes as ``` `` ``` / ``''``; brackets as
``-lrb-`` ``-rrb-`` ``-lsb-`` ... (lower-cased, as the reference emits them); numbers (``1,000``,
``5.00``, ``5:30``, ``12/25``), hyphenated words (``3-year-old``) and abbreviations (``u.s.``, ``mr.``)
kept whole, with a ``.`` added after an abbreviation that ends the caption; non-ASCII punctuation and
symbols rewritten (curly and angle quotes, dashes, the ellipsis, fractions, some currency signs),
deleted (emoji and other characters the Java lexer cannot tokenise) or split off as tokens, as
measured on the jar character by character. :func:`tokenize` then drops
the tokens of :data:`PUNCTUATION`, the reference's list. Agreement with the Java tokenizer is tested on
every caption of the real datasets (``tests/tasks/text/test_tokenizer.py``); :func:`java_ptb_tokenize`
runs the Java tokenizer itself when Java and the jar are available.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path

#: Tokens the COCO evaluation removes after PTB tokenisation (its list, compared case-sensitively to
#: lower-cased tokens, so that ``-lrb-`` and friends stay, as they do in the reference).
PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
#: words PTB splits into two tokens
_SPLIT_WORDS = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "gotta": ("got", "ta"),
    "wanna": ("wan", "na"),
    "gimme": ("gim", "me"),
    "lemme": ("lem", "me"),
}
#: abbreviations that keep their period inside a caption (lower case, without the period)
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "mt", "ft", "vs", "etc", "inc", "co", "corp", "ltd"}
    | {"bros", "prof", "gen", "col", "lt", "sgt", "rev", "gov", "sen", "rep", "ave", "blvd", "rd", "no"}
    | {"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
)
#: non-ASCII characters PTB rewrites (CoreNLP 3.4.1, measured on the jar character by character):
#: quotes to ASCII quotes (then as ASCII ones: `` '' ` '), dashes to --, the ellipsis to ..., vulgar
#: fractions and some currency signs to their PTB spellings (split off as tokens)
_UNICODE_MAP = {
    **dict.fromkeys("«»“”", '"'),
    **dict.fromkeys("‘’‛‹›", "'"),
    **dict.fromkeys("–—―", "--"),
    "…": "...",
    **{c: f" {v} " for c, v in zip("½¼¾⅓⅔", ("1/2", "1/4", "3/4", "1/3", "2/3"))},
    **dict.fromkeys("€₠¤", " $ "),
    "£": " # ",
    "¢": " cents ",
}
#: characters PTB deletes ("untokenizable"; they separate the words around them): these BMP ranges
#: and every character beyond the BMP (emoji, mathematical letters)
_DELETED = (
    (0x2012, 0x2012), (0x2024, 0x2025), (0x2027, 0x2027), (0x203C, 0x203D), (0x2043, 0x2043),
    (0x2045, 0x205E), (0x20A1, 0x20A3), (0x20A5, 0x20AB), (0x20AD, 0x20C0), (0x20D0, 0x20F0),
    (0x2150, 0x2152), (0x215F, 0x2182), (0x2185, 0x218B), (0x3003, 0x3004), (0x3007, 0x3011),
    (0x3013, 0x3030), (0x3036, 0x303A), (0x303D, 0x303F),
)  # fmt: skip
#: hyphens deleted where they stand alone (inside a word they stay: "a‐b")
_LONE_DELETED = frozenset("\u2010\u2011")
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+$|^(?:[A-Za-z]\.)+[A-Za-z]$")
_HASHTAG = re.compile(r"#[A-Za-z]+")
_TAG_CLITIC = re.compile(r"(?i)'(?:s|re|ve|ll|d|m)(?![a-z])")
_NUMBER = re.compile(r"^[0-9]+(?:[.,:/][0-9]+)*$")
_PUNCT_RUN = re.compile(r"^[!?]+$")
# a chunk's leading and trailing punctuation
_LEAD = re.compile(r'^(\.{3,}|--+|-(?=[a-z])|[(\[{"`$]|#{2,}|#(?![a-z])|\'(?![a-z0-9]))', re.IGNORECASE)
_TRAIL = re.compile(r'(\.{3,}|\.\.|--+|(?<=[a-z])-|[!?]+|[)\]}",;:%]|\'\'|\')$', re.IGNORECASE)
_INNER = re.compile(r"(\.{3,}|--+|[()\[\]{}\"!?;]|[,:](?![0-9])|(?<![0-9])[,:]|(?<=[0-9])'(?=[0-9])|&|\$|%)")


def tokenize(text: str) -> list[str]:
    """The tokens the COCO caption evaluation scores: PTB tokens, lower-cased, without punctuation."""
    return [t for t in ptb_tokens(text) if t not in PUNCTUATION]


def ptb_tokens(text: str) -> list[str]:
    """PTB tokens of one line of text, lower-cased (punctuation kept)."""
    words = " ".join(_ascii_punctuation(str(text)).split()).split(" ")
    out: list[str] = []
    for chunk in words:
        if chunk:
            out += _chunk(chunk)
    if out and _is_abbreviation(out[-1]):
        out.append(".")  # an abbreviation ending the line also ends the sentence
    return [t.lower() for t in out]


@functools.cache
def _rewrite(ch: str) -> str:
    """What a non-ASCII character becomes before the ASCII rules (see ``_UNICODE_MAP``)."""
    if ch in _UNICODE_MAP:
        return _UNICODE_MAP[ch]
    if ch in _LONE_DELETED:
        return ch
    code = ord(ch)
    if code > 0xFFFF or any(lo <= code <= hi for lo, hi in _DELETED):
        return " "
    category = unicodedata.category(ch)
    if category[0] in "PS" or category == "No":  # other punctuation and symbols: tokens of their own
        return f" {ch} "
    return ch


def _ascii_punctuation(text: str) -> str:
    """``text`` with non-ASCII punctuation and symbols as PTB treats them: rewritten, deleted or split
    off (letters and digits of any script are kept)."""
    if text.isascii():
        return text
    out = "".join(_rewrite(ch) if not ch.isascii() else ch for ch in text)
    return " ".join(w for w in out.split(" ") if not (w and set(w) <= _LONE_DELETED))


def _is_abbreviation(token: str) -> bool:
    return token.endswith(".") and len(token) > 1 and token != "..." and not _PUNCT_RUN.match(token[:-1])


def _chunk(chunk: str) -> list[str]:
    """Tokens of one whitespace-free chunk."""
    if chunk in ('"', "'"):
        return ["''" if chunk == '"' else "'"]
    if chunk == "..":
        return [".", "."]
    if chunk.lower() == "'n'":
        return [chunk]
    tag = _HASHTAG.match(chunk)
    if tag and tag.end() < len(chunk):  # PTB's hashtag is '#' and letters: anything else ends it,
        rest = chunk[tag.end() :]  # and a symbol right after it ('/', '-', '_', an apostrophe) stands alone
        clitic = _TAG_CLITIC.match(rest)
        if clitic:  # '#tag's' -> #tag 's
            after = rest[clitic.end() :]
            if after.startswith("/"):  # ... and a slash after the clitic stands alone
                return [tag.group(), clitic.group(), "/", *(_chunk(after[1:]) if after[1:] else [])]
            return [tag.group(), clitic.group(), *(_chunk(after) if after else [])]
        if rest[0].isalnum() or rest[0] == "#" or all(not c.isalnum() for c in rest):
            return [tag.group(), *_chunk(rest)]
        return [tag.group(), rest[0], *_chunk(rest[1:])]
    lead: list[str] = []
    trail: list[str] = []
    if len(chunk) > 3 and chunk[0] == "'" and chunk[-1] == "'" and chunk[1].isalnum():
        lead, chunk, trail = ["`"], chunk[1:-1], ["'"]  # 'quoted'
    while chunk:
        m = _LEAD.match(chunk)
        if not m:
            break
        lead.append(_quote(m.group(1), opening=True))
        chunk = chunk[m.end() :]
    while chunk:
        m = _TRAIL.search(chunk)
        if m and m.start() == 0 and len(chunk) == len(m.group(1)):
            trail.insert(0, _quote(chunk, opening=not lead and not trail))
            chunk = ""
            break
        if not m:
            break
        piece = m.group(1)
        trail[0:0] = [".", "."] if piece == ".." else [_quote(piece, opening=False)]
        chunk = chunk[: m.start()]
    return lead + (_core(chunk) if chunk else []) + trail


def _quote(piece: str, *, opening: bool) -> str:
    if piece == '"':
        return "``" if opening else "''"
    if piece in _BRACKETS:
        return _BRACKETS[piece]
    if piece.startswith("...") or piece.startswith("--"):
        return piece[:3] if piece.startswith("...") else "--"
    if piece == "'" and opening:
        return "`"
    return piece


def _core(chunk: str) -> list[str]:
    """A chunk stripped of outer punctuation: split inner punctuation, then words."""
    parts = [p for p in _INNER.split(chunk) if p]
    if len(parts) > 1:
        out: list[str] = []
        for i, p in enumerate(parts):
            if _INNER.fullmatch(p):
                out.append(_quote(p, opening=i == 0 or not out))
            else:
                out += _word(p)
        return out
    return _word(chunk)


def _word(word: str) -> list[str]:
    """One word: periods, clitics and the split words."""
    if _NUMBER.match(word) or _ACRONYM.match(word):
        return [word]
    if word.endswith(".") and not word.endswith(".."):
        stem = word[:-1]
        if stem.lower() in _ABBREVIATIONS or _ACRONYM.match(word):
            return [word]
        return [*_word(stem), "."] if stem else ["."]
    head, slash, rest = word.partition("/")
    if slash and "'" in word and not head:  # a slash before a word with an apostrophe stands alone
        return ["/", *(_chunk(rest) if rest else [])]
    if slash and ("'" in head or head[:1] == "#"):  # an apostrophe or a hashtag ends PTB's word token,
        return [*_chunk(head), "/", *(_chunk(rest) if rest else [])]  # and the slash after it stands alone
    lowered = word.lower()
    if lowered in _SPLIT_WORDS:
        cut = len(_SPLIT_WORDS[lowered][0])
        return [word[:cut], word[cut:]]
    m = _CLITIC.match(word)
    if m and m.group(1) != "'":
        stem, clitic = m.group(1), m.group(2)
        return [stem, clitic] if clitic.lower() == "n't" else [*_word(stem), clitic]
    return [word]


# -- the reference tokenizer, where Java is available ----------------------------------------------
def corenlp_jar() -> Path | None:
    """The Stanford CoreNLP 3.4.1 jar the COCO evaluation uses: ``$DEEPFEAT_CORENLP_JAR``, or the one
    installed with ``pycocoevalcap``; None when neither exists."""
    env = os.environ.get("DEEPFEAT_CORENLP_JAR")
    if env and Path(env).is_file():
        return Path(env)
    try:
        import importlib.util

        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        jar = Path(root) / "tokenizer" / "stanford-corenlp-3.4.1.jar"
        if jar.is_file():
            return jar
    return None


def java_ptb_tokenize(lines: Sequence[str], *, timeout: float = 300.0) -> list[list[str]] | None:
    """Tokens of every line by the reference tokenizer itself (Java PTBTokenizer, lower-cased,
    punctuation removed as the COCO evaluation does); None when Java or the jar is missing."""
    jar = corenlp_jar()
    if jar is None or shutil.which("java") is None:
        return None
    if not lines:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lines.txt"
        path.write_text("\n".join(" ".join(str(s).split()) for s in lines), encoding="utf-8")
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", str(path)]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        return None
    rows = done.stdout.decode("utf-8").split("\n")
    rows += [""] * (len(lines) - len(rows))
    return [[t for t in row.rstrip().split(" ") if t and t not in PUNCTUATION] for row in rows[: len(lines)]]
