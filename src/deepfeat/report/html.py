"""A report's blocks as one self-contained HTML page: tables as ``<table>``, plots and example images
embedded as base64 ``data:`` URIs, the style inline; no script, font, stylesheet or image is fetched from
anywhere, so the file opens the same offline, attached to a mail or in an archive years later."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1b1f23; line-height: 1.45; background: #fff; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2, h3 { border-bottom: 1px solid #d8dee4; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 13px; }
code { background: #f3f5f7; padding: 0 3px; border-radius: 3px; font-size: 90%; }
ul.facts li { margin: .15em 0; }
.missing { color: #b42318; }
"""

_NUMBER = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?%?( ± [-+]?\d[\d.]*%?)?$")


def inline(text: str) -> str:
    """Escape ``text`` and render its Markdown code spans and bold (the only inline marks reports use)."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; None shows as '-', numbers are right-aligned."""
    head = "".join(f"<th>{inline(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            text = "-" if cell is None else str(cell)
            cls = ' class="num"' if _NUMBER.match(text.strip()) else ""
            cells.append(f"<td{cls}>{inline(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def image(file: str, caption: str, base: Path | None) -> str:
    """A figure with the picture embedded (read from ``base / file``); a visible note when it is missing."""
    path = Path(file) if base is None or Path(file).is_absolute() else base / file
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<p class="missing">[missing picture: {html.escape(str(file))}]</p>'
    alt = html.escape(caption)
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{alt}">'
        f"<figcaption>{inline(caption)}</figcaption></figure>"
    )


def render(title: str, blocks: Sequence[tuple], base: Path | None) -> str:
    """The whole page for a report's title and blocks (see :class:`deepfeat.report.document.Report`)."""
    parts = [f"<h1>{inline(title)}</h1>"]
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            level = min(6, max(2, int(block[2])))
            parts.append(f"<h{level}>{inline(block[1])}</h{level}>")
        elif kind == "facts":
            items = "".join(
                f"<li><strong>{inline(k)}</strong>: {inline(v)}</li>" for k, v in block[1].items()
            )
            parts.append(f'<ul class="facts">{items}</ul>')
        elif kind == "table":
            parts.append(table(block[1], block[2]))
        elif kind == "image":
            parts.append(image(block[1], block[2], base))
        else:
            paragraphs = [p for p in str(block[1]).split("\n\n") if p.strip()]
            parts += [f"<p>{inline(p)}</p>" for p in paragraphs]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
