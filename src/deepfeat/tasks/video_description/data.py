"""Videos with sentences: a CSV manifest ``path,sentence[,split]`` (one row per sentence, several rows
per video allowed; paths relative to the manifest's folder unless absolute), as TACoS-style data
is written. A folder is read as its ``descriptions.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from deepfeat.data.images import printable
from deepfeat.errors import DataError
from deepfeat.tasks.text.tokenizer import tokenize

MANIFEST = "descriptions.csv"


@dataclass
class DescriptionSet:
    """Videos (``ids`` as the manifest spells them, ``paths`` resolved), the sentences of each video
    and its split (None when the manifest has no split column)."""

    name: str
    ids: list[str]
    paths: list[Path]
    sentences: list[list[str]]
    splits: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, split: str | None) -> list[int]:
        """Rows of ``split`` (every row for None)."""
        if split is None:
            return list(range(len(self)))
        if self.splits is None:
            raise DataError(
                f"{self.name}: the manifest has no 'split' column; it cannot give the {split!r} part"
            )
        rows = [i for i, s in enumerate(self.splits) if s == split]
        if not rows:
            raise DataError(
                f"{self.name}: no video in split {split!r}; splits: {', '.join(sorted(set(self.splits)))}"
            )
        return rows

    def tokens(self, rows: list[int]) -> list[list[list[str]]]:
        """Tokenised sentences (the caption metrics' tokens) of each row."""
        return [[tokenize(s) for s in self.sentences[r]] for r in rows]

    def fingerprint(self) -> str:
        blob = json.dumps([self.ids, self.sentences, self.splits]).encode()
        return hashlib.sha256(blob).hexdigest()


def read_descriptions(path: str | os.PathLike) -> DescriptionSet:
    """The videos and sentences of a ``path,sentence[,split]`` CSV (or a folder holding
    ``descriptions.csv``); every problem is named with its line."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    where = printable(path)
    if not path.is_file():
        raise DataError(f"{where}: no description manifest here (a CSV with columns path,sentence[,split])")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read the manifest ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    fields = set(reader.fieldnames or [])
    if not {"path", "sentence"} <= fields:
        raise DataError(
            f"{where}: needs the columns path and sentence (optional: split); found {sorted(fields)}"
        )
    order: dict[str, int] = {}
    paths: list[Path] = []
    sentences: list[list[str]] = []
    splits: list[str | None] = []
    for line, row in enumerate(reader, start=2):
        raw, sentence = (row.get("path") or "").strip(), (row.get("sentence") or "").strip()
        if not raw:
            raise DataError(f"{where}, line {line}: empty path")
        if not tokenize(sentence):
            raise DataError(f"{where}, line {line}: empty sentence")
        split = (row.get("split") or "").strip().lower() or None
        if raw not in order:
            order[raw] = len(order)
            p = Path(raw)
            paths.append(p if p.is_absolute() else path.parent / p)
            sentences.append([])
            splits.append(split)
        i = order[raw]
        if splits[i] != split:
            raise DataError(
                f"{where}, line {line}: {raw!r} is in split {splits[i]!r} on an earlier line, {split!r} here"
            )
        sentences[i].append(sentence)
    if not order:
        raise DataError(f"{where}: the manifest lists no video")
    has = [s is not None for s in splits]
    if any(has) and not all(has):
        raise DataError(f"{where}: 'split' is empty for {has.count(False)} videos but set for others")
    return DescriptionSet(
        name=where,
        ids=list(order),
        paths=paths,
        sentences=sentences,
        splits=[str(s) for s in splits] if all(has) else None,
    )
