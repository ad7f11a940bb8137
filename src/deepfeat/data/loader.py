"""Batches of decoded, preprocessed images, prepared by a small thread pool ahead of the network.

PIL releases the GIL while decoding and resizing, so threads overlap image work with the forward pass
of the previous batch without the cost of worker processes; at most ``prefetch`` batches are held.
Images that fail to decode come back as :class:`~deepfeat.errors.ImageError` in their slot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from deepfeat.data.base import ImageDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError, ImageError


@dataclass
class Batch:
    """Rows of one batch, each with its preprocessed image (uint8 HxWx3) or the error it raised."""

    rows: np.ndarray
    images: list[np.ndarray | ImageError]

    @property
    def ok(self) -> list[int]:
        """Positions (within the batch) of the images that decoded."""
        return [i for i, im in enumerate(self.images) if not isinstance(im, ImageError)]

    @property
    def errors(self) -> dict[int, ImageError]:
        """Dataset row -> error, for the images that failed."""
        return {int(self.rows[i]): im for i, im in enumerate(self.images) if isinstance(im, ImageError)}


def load_one(
    dataset: ImageDataset, row: int, preprocess: Preprocess, max_pixels: int
) -> np.ndarray | ImageError:
    """Decode and preprocess one item; decoding problems are returned, not raised."""
    draft = preprocess.draft_size if preprocess.jpeg_draft else None
    try:
        return preprocess(dataset.load(row, max_pixels=max_pixels, draft=draft))
    except ImageError as exc:
        return exc


def iter_batches(
    dataset: ImageDataset,
    rows: Sequence[int],
    preprocess: Preprocess,
    *,
    batch_size: int = 32,
    workers: int = 2,
    prefetch: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Batch]:
    """Yield batches of the given dataset rows, in order, preparing the next ones in the background."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"workers must be 0 (load in the calling thread) or more, got {workers}")
    rows = np.asarray(rows, dtype=np.int64)
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    if workers == 0:
        for chunk in chunks:
            yield Batch(chunk, [load_one(dataset, int(r), preprocess, max_pixels) for r in chunk])
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepfeat-load")
    pending: deque[tuple[np.ndarray, list[Future]]] = deque()

    def submit(chunk: np.ndarray) -> None:
        pending.append(
            (chunk, [pool.submit(load_one, dataset, int(r), preprocess, max_pixels) for r in chunk])
        )

    try:
        next_chunk = 0
        while next_chunk < len(chunks) and len(pending) < max(1, prefetch):
            submit(chunks[next_chunk])
            next_chunk += 1
        while pending:
            chunk, futures = pending.popleft()
            if next_chunk < len(chunks):
                submit(chunks[next_chunk])
                next_chunk += 1
            yield Batch(chunk, [f.result() for f in futures])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
