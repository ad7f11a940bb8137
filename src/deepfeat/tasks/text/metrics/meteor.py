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


def meteor(
    references: Sequence[Sequence[Sequence[str]]],
    candidates: Sequence[Sequence[str]],
    *,
    memory: str = "2G",
) -> tuple[float, np.ndarray] | None:
    """Corpus METEOR and per-image scores, or None when Java or the jar is missing."""
    _check(references, candidates)
    if meteor_unavailable() is not None:
        return None
    jar = meteor_jar()
    cmd = ["java", "-jar", f"-Xmx{memory}", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
    proc = subprocess.Popen(
        cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:

        def ask(line: str) -> str:
            proc.stdin.write((line + "\n").encode("utf-8"))
            proc.stdin.flush()
            answer = proc.stdout.readline().decode("utf-8").strip()
            if not answer:
                raise RuntimeError("METEOR stopped answering")
            return answer

        stats = []
        for refs, cand in zip(references, candidates):
            parts = [" ".join(r).replace("|||", "") for r in refs]
            hyp = " ".join(cand).replace("|||", "").replace("  ", " ")
            stats.append(ask(" ||| ".join(["SCORE", *parts, hyp])))
        first = ask(" ||| ".join(["EVAL", *stats]))
        scores = [float(first)] + [float(proc.stdout.readline().strip()) for _ in range(len(stats) - 1)]
        corpus = float(proc.stdout.readline().strip())
    except (RuntimeError, ValueError, OSError):
        return None
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    return corpus, np.array(scores)
