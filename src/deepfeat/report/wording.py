"""Wording of counts and lists in messages and summaries: "1 file" / "3 files", and the first few
items of a long list with how many more there are."""

from __future__ import annotations

from collections.abc import Sequence


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number that fits: ``counted(1, "file")`` is "1 file", ``counted(3,
    "class", "classes")`` is "3 classes" (default plural: singular + "s")."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def listed(items: Sequence, limit: int = 5, form=repr) -> str:
    """The first ``limit`` items, each written by ``form``, joined by commas, and "and N more" when
    there are more."""
    shown = ", ".join(form(item) for item in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown
