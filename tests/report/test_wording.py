"""Counts and lists in messages."""

from __future__ import annotations

from deepfeat.report.wording import counted, listed


def test_counted_nouns_agree_with_their_number():
    assert counted(1, "file") == "1 file" and counted(0, "file") == "0 files"
    assert counted(2, "class", "classes") == "2 classes" and counted(1, "entry", "entries") == "1 entry"


def test_long_lists_say_how_many_more():
    assert listed(["a", "b"]) == "'a', 'b'"
    assert listed(list("abcdefg")) == "'a', 'b', 'c', 'd', 'e' and 2 more"
    assert listed([1, 2, 3], limit=2, form=str) == "1, 2 and 1 more"
