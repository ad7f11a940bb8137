"""Region features of a whole dataset, streamed into the feature store.

A :class:`RegionSet` fixes the regions of every image (annotated boxes first when training, then the
proposals). :func:`extract_regions` computes their features image by image with a
:class:`~deepfeat.tasks.detection.regions.RegionEncoder` and writes them into one store entry per
output (layer/pool), one row per region, journaled image by image: an interrupted run resumes at
the first image not journaled, a repeated run reads everything back without the network, and a
damaged entry is repaired (its untrusted rows computed again). The key of an entry is its full
provenance: the images (ids, file sizes and times), a digest of every region box, the backbone and
its weights id, layer, pooling and region settings, and the deepfeat version.

Images that cannot be decoded are reported (path, reason); their rows are marked failed (NaN,
``valid`` False) and nothing else is lost.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deepfeat._version import __version__
from deepfeat.data.detection import DetectionDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS, printable
from deepfeat.errors import ImageError
from deepfeat.features.store import FeatureStore, MemoryEntry
from deepfeat.tasks.detection.boxes import as_boxes
from deepfeat.tasks.detection.proposals import ProposalSet
from deepfeat.tasks.detection.regions import RegionEncoder

log = logging.getLogger(__name__)


@dataclass
class RegionSet:
    """The regions of every image: ``boxes[i]`` (N_i, 4), whose first ``n_gt[i]`` rows are the
    image's annotated boxes (when built ``with_gt``); rows of image i are ``offsets[i]:offsets[i+1]``."""

    image_ids: list[str]
    boxes: list[np.ndarray]
    n_gt: list[int]

    @classmethod
    def build(cls, dataset: DetectionDataset, proposals: ProposalSet, *, with_gt: bool) -> RegionSet:
        boxes, n_gt = [], []
        for table in dataset.images:
            gt = table.boxes if with_gt else np.zeros((0, 4), np.float32)
            boxes.append(np.concatenate([as_boxes(gt), as_boxes(proposals[table.image_id])]))
            n_gt.append(len(gt))
        return cls(dataset.ids, boxes, n_gt)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(b) for b in self.boxes])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def row_ids(self) -> list[str]:
        return [f"{image_id}#{k}" for image_id, b in zip(self.image_ids, self.boxes) for k in range(len(b))]

    def digest(self) -> str:
        h = hashlib.sha256()
        for image_id, b, g in zip(self.image_ids, self.boxes, self.n_gt):
            h.update(f"{image_id}\0{g}\0".encode("utf-8", "surrogateescape") + as_boxes(b).tobytes())
        return h.hexdigest()


@dataclass
class RegionFeatures:
    """One output's rows for a RegionSet: ``data`` (R, D) (memory-mapped from the store), ``valid``
    (R,) bool, and ``scale`` applied by :meth:`rows` (set by the SVM stage; 1 by default)."""

    key: str
    data: np.ndarray
    valid: np.ndarray
    offsets: np.ndarray
    provenance: dict
    source: str | None = None

    @property
    def dim(self) -> int:
        return int(self.data.shape[1]) if self.data.ndim == 2 else 0

    def image_rows(self, i: int) -> np.ndarray:
        """float32 features of image ``i``'s regions (its annotated boxes first)."""
        return np.asarray(self.data[self.offsets[i] : self.offsets[i + 1]], dtype=np.float32)

    def image_valid(self, i: int) -> bool:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return bool(hi > lo and self.valid[lo:hi].all())


@dataclass
class RegionExtraction:
    """Features of every output and an account of the run (timings in seconds)."""

    features: dict[str, RegionFeatures]
    failures: list[tuple[str, str]] = field(default_factory=list)
    n_images: int = 0
    n_regions: int = 0
    n_computed: int = 0  # regions through the network (or pooled from a shared map) in this run
    seconds: float = 0.0
    network_seconds: float = 0.0


def image_identity(dataset: DetectionDataset) -> str:
    """sha256 over image ids and file identity (size, modification time), not the annotations."""
    h = hashlib.sha256()
    for t in dataset.images:
        h.update(t.file_identity())
    return h.hexdigest()


def extract_regions(
    dataset: DetectionDataset,
    regions: RegionSet,
    encoder: RegionEncoder,
    *,
    store: FeatureStore | str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> RegionExtraction:
    """Features of every region of ``regions`` for every output of ``encoder``, through the store."""
    start = time.perf_counter()
    if isinstance(store, str | Path):
        store = FeatureStore(store)
    n = len(regions)
    base = {
        "deepfeat": __version__,
        "task": "rcnn-regions",
        "images": image_identity(dataset),
        "regions": regions.digest(),
        "n_regions": n,
        **encoder.backbone.provenance(),
        "normalize": {
            "mean": list(encoder.backbone.preprocess.mean),
            "std": list(encoder.backbone.preprocess.std),
        },
        "region_options": encoder.options.to_dict(),
        "max_pixels": int(max_pixels),
    }
    entries = {}
    ids = regions.row_ids() if store is not None else None
    for key, (layer, pool) in encoder.outputs.items():
        prov = {**base, "layer": layer.name, "pool": pool}
        entries[key] = store.entry(prov, n, ids) if store is not None else MemoryEntry(prov, n)
    offsets = regions.offsets
    result = RegionExtraction(features={}, n_images=len(dataset), n_regions=n)
    locked = []
    try:
        done = np.ones(n, dtype=bool)
        for entry in entries.values():
            if store is not None and entry.check().finished:
                continue
            entry.lock()
            locked.append(entry)
            if store is not None:
                problems = entry.repair()
                if problems:
                    log.warning("repaired %s: %s", entry.path, "; ".join(problems))
            done &= entry.status().done
        pending = [
            i
            for i in range(len(dataset))
            if offsets[i + 1] > offsets[i] and not done[offsets[i] : offsets[i + 1]].all()
        ]
        if pending and locked:
            _run(dataset, regions, encoder, locked, entries, pending, max_pixels, progress, result)
        for entry in locked:
            entry.finish_if_complete()
    finally:
        for entry in locked:
            entry.unlock()
    failed: dict[int, str] = {}
    for key, entry in entries.items():
        status = entry.status()
        failed.update(status.failed)
        data = entry.read() if status.valid.any() else np.zeros((n, 0), np.float32)
        result.features[key] = RegionFeatures(
            key=key,
            data=data,
            valid=status.valid,
            offsets=offsets,
            provenance=entry.provenance,
            source=None if entry.path is None else str(entry.path),
        )
    reported = {}
    for row, reason in failed.items():
        image = int(np.searchsorted(offsets, row, side="right") - 1)
        reported.setdefault(image, reason)
    result.failures = [(printable(dataset.images[i].path), r) for i, r in sorted(reported.items())]
    result.seconds = time.perf_counter() - start
    return result


def _run(dataset, regions, encoder, locked, entries, pending, max_pixels, progress, result) -> None:
    offsets = regions.offsets
    todo = {id(e): ~e.status().done for e in locked}

    def load(i):
        try:
            return np.asarray(dataset.load(i, max_pixels=max_pixels))
        except ImageError as exc:
            return exc

    bar = tqdm(total=len(pending), desc=f"regions ({encoder.options.mode})", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=1) as pool:  # decode the next image while this one computes
        upcoming = pool.submit(load, pending[0])
        for k, i in enumerate(pending):
            image = upcoming.result()
            if k + 1 < len(pending):
                upcoming = pool.submit(load, pending[k + 1])
            rows = np.arange(offsets[i], offsets[i + 1])
            if isinstance(image, ImageError):
                for entry in locked:
                    need = rows[todo[id(entry)][rows]]
                    entry.commit([], failed={int(r): image.reason for r in need})
                bar.update(1)
                continue
            t0 = time.perf_counter()
            feats = encoder.encode(image, regions.boxes[i])
            result.network_seconds += time.perf_counter() - t0
            result.n_computed += len(rows)
            for key, entry in entries.items():
                if entry not in locked:
                    continue
                need = todo[id(entry)][rows]
                values = feats[key][need]
                if len(values):
                    entry.write(rows[need], values, (values.shape[1],))
                entry.commit(rows[need].tolist())
            bar.update(1)
            bar.set_postfix(regions_per_s=f"{result.n_computed / max(result.network_seconds, 1e-9):.0f}")
    bar.close()
