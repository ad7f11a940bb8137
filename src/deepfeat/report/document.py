"""A report as a list of blocks (headings, facts, tables, images, text), rendered to Markdown; every
job's ``report.md`` is built from one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepfeat.fileio import atomic_write_text
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

    def write(self, path: str | os.PathLike) -> Path:
        """Write the Markdown rendering to ``path`` atomically."""
        return atomic_write_text(path, self.to_markdown())
