"""A report as a list of blocks (headings, facts, tables, images, text), rendered to Markdown and to a
self-contained HTML page (:mod:`deepfeat.report.html`: tables, plots and images embedded, nothing
fetched); every job writes its ``report.md`` and ``report.html`` from one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepfeat.fileio import atomic_write_text
from deepfeat.report import html as _html
from deepfeat.report.tables import markdown_table


@dataclass
class Report:
    """Blocks in reading order; add them with the methods, render with :meth:`to_markdown`."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Report:
        self.blocks.append(("heading", text, level))
        return self

    def facts(self, items: Mapping[str, object]) -> Report:
        """A bullet list of ``key: value`` lines."""
        self.blocks.append(("facts", dict(items)))
        return self

    def table(self, header: Sequence[object], rows: Sequence[Sequence[object]]) -> Report:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))
        return self

    def image(self, file: str | os.PathLike, caption: str) -> Report:
        """A picture, by its path relative to the report's folder."""
        self.blocks.append(("image", Path(file).as_posix(), caption))
        return self

    def text(self, text: str) -> Report:
        self.blocks.append(("text", text))
        return self

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                lines += [f"{'#' * block[2]} {block[1]}", ""]
            elif kind == "facts":
                lines += [f"- **{k}**: {v}" for k, v in block[1].items()] + [""]
            elif kind == "table":
                lines += [markdown_table(block[2], block[1]), ""]
            elif kind == "image":
                lines += [f"![{block[2]}]({block[1]})", ""]
            else:
                lines += [block[1], ""]
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self, base: str | os.PathLike | None = None) -> str:
        """One self-contained HTML page; pictures are read from ``base`` (the report's folder) and
        embedded."""
        return _html.render(self.title, self.blocks, None if base is None else Path(base))

    def write(self, path: str | os.PathLike) -> Path:
        """Write the Markdown rendering to ``path`` and the HTML page beside it (same name, ``.html``),
        both atomically; returns the Markdown path."""
        path = Path(path)
        self.write_html(path.with_suffix(".html"))
        return atomic_write_text(path, self.to_markdown())

    def write_html(self, path: str | os.PathLike) -> Path:
        """Write the HTML page to ``path`` atomically (pictures relative to its folder)."""
        path = Path(path)
        return atomic_write_text(path, self.to_html(path.parent))
