"""Tables as aligned plain text (terminal) and as Markdown (reports): the one table formatter."""

from __future__ import annotations

from collections.abc import Sequence


def _cells(rows: Sequence[Sequence[object]], header: Sequence[object]) -> list[list[str]]:
    return [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]


def text_table(rows: Sequence[Sequence[object]], header: Sequence[object]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header; None shows as '-'."""
    cells = _cells(rows, header)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Sequence[object]], header: Sequence[object]) -> str:
    """A GitHub-flavoured Markdown table; '|' inside cells is escaped, None shows as '-'."""
    cells = [[c.replace("|", "\\|") for c in r] for r in _cells(rows, header)]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)
