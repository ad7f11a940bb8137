"""Reports as Markdown and as a self-contained HTML page, the page checked in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from deepfeat.report import plots
from deepfeat.report.document import Report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def sample_report(folder) -> Report:
    fig, ax = plots.figure((4, 3))
    ax.bar([0, 1, 2], [3, 1, 2], color="tab:blue")
    plots.save(fig, folder / "bars.png")
    Image.fromarray(np.full((20, 30, 3), (200, 30, 30), np.uint8)).save(folder / "example.jpg")
    doc = Report("Transfer <results> & more")
    doc.facts({"backbone": "timm:vit_tiny_patch16_224", "data": "`hf:user/tiny`"})
    doc.heading("mean per-class accuracy")
    doc.table(["features", "svm"], [["stage6 | avg", "81.25 ± 1.10"], ["pool", None]])
    doc.image("bars.png", "accuracy by features")
    doc.image("example.jpg", "an example image")
    doc.text("Every number is in `results.json`.")
    return doc


def test_markdown_and_self_contained_html(tmp_path):
    doc = sample_report(tmp_path)
    md = doc.to_markdown()
    assert "| stage6 \\| avg | 81.25 ± 1.10 |" in md and "![accuracy by features](bars.png)" in md
    page = doc.to_html(tmp_path)
    assert "<td>stage6 | avg</td>" in page and "Transfer &lt;results&gt; &amp; more" in page
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/") for s in srcs)  # nothing fetched
    png = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(png) == (tmp_path / "bars.png").read_bytes()
    assert "<code>results.json</code>" in page and "http" not in page
    md_path = doc.write(tmp_path / "report.md")
    assert md_path.read_text() == md and (tmp_path / "report.html").read_text() == page
    missing = Report("x").image("gone.png", "gone").to_html(tmp_path)
    assert "missing picture: gone.png" in missing


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.skipif(
    browser() is None, reason="no Chromium / Chrome on this machine (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path):
    doc = sample_report(tmp_path)
    page = doc.write(tmp_path / "report.md").with_suffix(".html")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    url = page.resolve().as_uri()
    subprocess.run(
        [browser(), *flags, f"--screenshot={shot}", "--window-size=1000,1400", url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    dom = subprocess.run(
        [browser(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
    ).stdout
    assert "<table>" in dom and "<td>stage6 | avg</td>" in dom and "81.25 ± 1.10" in dom
    assert dom.count("data:image/") == 2
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 10 and (pixels.sum(axis=2) < 600).mean() > 0.01  # not a blank page
    blue = (
        (abs(pixels[..., 0] - 31) < 25) & (abs(pixels[..., 1] - 119) < 25) & (abs(pixels[..., 2] - 180) < 25)
    )
    red = (pixels[..., 0] > 170) & (pixels[..., 1] < 70) & (pixels[..., 2] < 70)
    assert blue.sum() > 500 and red.sum() > 200  # the embedded plot's bars and the example image drawn
