"""METEOR 1.5 (Banerjee and Lavie 2005; Denkowski and Lavie 2014) through its Java implementation, run
as the COCO caption evaluation runs it (``-l en -norm``, one ``SCORE`` line per image, then one ``EVAL``
line for the per-image and corpus scores). Its stemmer, WordNet synonyms and paraphrase tables make an
in-house copy impractical, so METEOR is reported only where Java and the jar are available:
``$DEEPFEAT_METEOR_JAR``, or ``meteor-1.5.jar`` as installed with ``pycocoevalcap``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepfeat.tasks.text.metrics.bleu import _check


def meteor_jar() -> Path | None:
    """The METEOR 1.5 jar, or None when it cannot be found."""
    env = os.environ.get("DEEPFEAT_METEOR_JAR")
    if env and Path(env).is_file():
        return Path(env)
    import importlib.util

    try:
        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        jar = Path(root) / "meteor" / "meteor-1.5.jar"
        if jar.is_file():
            return jar
    return None


def meteor_unavailable() -> str | None:
    """Why METEOR cannot be computed here (None when it can)."""
    if shutil.which("java") is None:
        return "no Java runtime on PATH"
    if meteor_jar() is None:
        return "meteor-1.5.jar not found (install pycocoevalcap or set DEEPFEAT_METEOR_JAR)"
    return None


class Meteor:
    """One running METEOR process for many scoring calls (its start-up, loading WordNet and the
    paraphrase tables, takes most of the time); use as a context manager. Raises RuntimeError when
    METEOR is unavailable (see :func:`meteor_unavailable`)."""

    def __init__(self, memory: str = "2G"):
        why = meteor_unavailable()
        if why is not None:
            raise RuntimeError(f"METEOR unavailable: {why}")
        jar = meteor_jar()
        cmd = ["java", "-jar", f"-Xmx{memory}", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    def _ask(self, line: str) -> str:
        self._proc.stdin.write((line + "\n").encode("utf-8"))
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().decode("utf-8").strip()
        if not answer:
            raise RuntimeError("METEOR stopped answering")
        return answer

    def score(
        self, references: Sequence[Sequence[Sequence[str]]], candidates: Sequence[Sequence[str]]
    ) -> tuple[float, np.ndarray]:
        """Corpus METEOR and per-image scores."""
        _check(references, candidates)
        stats = []
        for refs, cand in zip(references, candidates):
            parts = [" ".join(r).replace("|||", "") for r in refs]
            hyp = " ".join(cand).replace("|||", "").replace("  ", " ")
            stats.append(self._ask(" ||| ".join(["SCORE", *parts, hyp])))
        first = self._ask(" ||| ".join(["EVAL", *stats]))
        scores = [float(first)] + [float(self._proc.stdout.readline().strip()) for _ in range(len(stats) - 1)]
        return float(self._proc.stdout.readline().strip()), np.array(scores)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.kill()
        self._proc.wait()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def meteor(
    references: Sequence[Sequence[Sequence[str]]],
    candidates: Sequence[Sequence[str]],
    *,
    memory: str = "2G",
    scorer: Meteor | None = None,
) -> tuple[float, np.ndarray] | None:
    """Corpus METEOR and per-image scores (with ``scorer``'s process, or a new one), or None when
    Java or the jar is missing or METEOR fails."""
    _check(references, candidates)
    if scorer is None and meteor_unavailable() is not None:
        return None
    try:
        if scorer is not None:
            return scorer.score(references, candidates)
        with Meteor(memory) as own:
            return own.score(references, candidates)
    except (RuntimeError, ValueError, OSError):
        return None
