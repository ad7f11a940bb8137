"""Captions of image files with a trained captioner: the features computed in memory, files that
cannot be used reported beside the captions (``deepfeat caption generate``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from deepfeat.data.images import printable
from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.job import ExtractionOptions
from deepfeat.tasks.captioning.data import CaptionData
from deepfeat.tasks.captioning.features import image_features
from deepfeat.tasks.captioning.model import CaptionModel
from deepfeat.tasks.text.decoding import Strategy

log = logging.getLogger(__name__)


def caption_images(
    model: CaptionModel,
    paths: Sequence[str | os.PathLike],
    strategy: Strategy,
    *,
    seed: int = 0,
    extraction: ExtractionOptions | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[str], list[list[str]], list[float], list[tuple[str, str]]]:
    """Captions of image files (features computed in memory): (ids, captions, log-probabilities,
    failures)."""
    model.check_strategy(strategy)
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("no image given")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            "; ".join(f"{printable(p)}: no such image file" for p in missing[:5])
            + (f"; ... {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    data = CaptionData(
        name="images", ids=[str(p) for p in paths], paths=paths, captions=[[""] for _ in paths]
    )
    backbone = model.features.load()
    feats = image_features(
        data,
        model.features,
        backbone,
        store=None,
        extraction=extraction,
        progress=progress,
        echo=echo or log.info,
    )
    words, decoded = model.caption(feats.values, strategy, ids=feats.ids, seed=seed)
    return feats.ids, words, decoded.log_prob.tolist(), feats.failures
