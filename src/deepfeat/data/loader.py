"""Batches of decoded, preprocessed images, prepared ahead of the network.

Two ways to prepare them:

- threads (the default, for the CPU): PIL releases the GIL while decoding and resizing, so a small
  thread pool overlaps image work with the forward pass of the previous batch without the cost of
  worker processes; at most ``prefetch`` batches are held;
- processes (``processes=True``, for a GPU): DataLoader-style worker processes decode a whole batch
  each and also build its normalised float tensors, optionally in pinned (page-locked) memory so
  that the copy to the GPU runs asynchronously. A GPU consumes images faster than the threads of one
  process can decode them, and the tensor work moves off the process that drives the GPU.

Images that fail to decode come back as :class:`~deepfeat.errors.ImageError` in their slot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from deepfeat.data.base import ImageDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError, ImageError


@dataclass
class Batch:
    """Rows of one batch, each with its preprocessed image (uint8 HxWx3) or the error it raised.

    Batches from worker processes carry their network ``inputs`` already built (the images that
    decoded, grouped by shape, as normalised float NCHW tensors); their image slots are then None.
    """

    rows: np.ndarray
    images: list[np.ndarray | ImageError | None]
    inputs: list[tuple[list[int], torch.Tensor]] | None = None

    @property
    def ok(self) -> list[int]:
        """Positions (within the batch) of the images that decoded."""
        return [i for i, im in enumerate(self.images) if not isinstance(im, ImageError)]

    @property
    def errors(self) -> dict[int, ImageError]:
        """Dataset row -> error, for the images that failed."""
        return {int(self.rows[i]): im for i, im in enumerate(self.images) if isinstance(im, ImageError)}

    def network_inputs(
        self, positions: Sequence[int], preprocess: Preprocess, channels_last: bool = True
    ) -> list[tuple[list[int], torch.Tensor]]:
        """The images at ``positions`` grouped by shape: (their positions, normalised float NCHW)."""
        if self.inputs is None:
            return [
                (group, preprocess.to_batch([self.images[i] for i in group], channels_last=channels_last))
                for group in group_by_shape(self.images, positions)
            ]
        keep = set(positions)
        out = []
        for group, tensor in self.inputs:
            chosen = [j for j, i in enumerate(group) if i in keep]
            if len(chosen) == len(group):
                out.append((group, tensor))
            elif chosen:
                out.append(([group[j] for j in chosen], tensor[chosen]))
        return out

    def pin_memory(self) -> Batch:
        """The batch with its network inputs in pinned memory (called by DataLoader's pin thread)."""
        if self.inputs is not None:
            self.inputs = [(group, tensor.pin_memory()) for group, tensor in self.inputs]
        return self


def group_by_shape(images: Sequence, positions: Sequence[int]) -> list[list[int]]:
    """``positions`` grouped by the shape of their image, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i in positions:
        groups.setdefault(images[i].shape, []).append(i)
    return list(groups.values())


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
    processes: bool = False,
    pin_memory: bool = False,
    channels_last: bool = True,
) -> Iterator[Batch]:
    """Yield batches of the given dataset rows, in order, preparing the next ones in the background.

    ``workers`` threads (default) or, with ``processes``, worker processes (0: everything in the
    calling thread); ``pin_memory`` (processes only) puts the network inputs in pinned memory.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"workers must be 0 (load in the calling thread) or more, got {workers}")
    rows = np.asarray(rows, dtype=np.int64)
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    if processes:
        yield from _process_batches(
            _BatchSource(dataset, chunks, preprocess, max_pixels, channels_last),
            workers=workers,
            prefetch=prefetch,
            pin_memory=pin_memory,
        )
        return
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


class _BatchSource(TorchDataset):
    """Batch ``i`` decoded and turned into network inputs, in whichever process asks for it."""

    def __init__(self, dataset, chunks, preprocess, max_pixels, channels_last):
        self.dataset = dataset
        self.chunks = chunks
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Batch:
        chunk = self.chunks[i]
        images = [load_one(self.dataset, int(r), self.preprocess, self.max_pixels) for r in chunk]
        batch = Batch(chunk, images)
        batch.inputs = batch.network_inputs(batch.ok, self.preprocess, self.channels_last)
        batch.images = [im if isinstance(im, ImageError) else None for im in images]
        return batch


def _same(batch: Batch) -> Batch:
    return batch


def _process_batches(
    source: _BatchSource, *, workers: int, prefetch: int, pin_memory: bool
) -> Iterator[Batch]:
    loader = DataLoader(
        source,
        batch_size=None,  # each item is a whole batch already
        shuffle=False,
        num_workers=workers,
        collate_fn=_same,
        pin_memory=pin_memory,
        prefetch_factor=max(1, prefetch) if workers else None,
    )
    yield from loader
