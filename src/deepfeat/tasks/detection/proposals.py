"""Region proposals by selective search (OpenCV contrib's ``ximgproc.segmentation``), computed once per
image in worker processes and cached in the store, keyed by the image's bytes and the settings.

Settings follow the thesis: selective search in "fast" mode, the image resized to a fixed width of
500 pixels first (section 3.1.7.2: selective search is not scale invariant), about 2,000 boxes per
image. On top: boxes are clipped to the image, boxes narrower or lower than ``min_size`` pixels and
duplicates are removed, the whole-image box is added first (so every image has a proposal, and
large objects always have a candidate), and the first ``max_proposals`` are kept (OpenCV returns them
in its ranking order, made reproducible by seeding the C library's ``rand()`` it draws from).

OpenCV comes from the PyPI wheel ``opencv-contrib-python-headless`` only: it provides ``cv2`` with
everything the plain wheels do plus the contrib modules. Two OpenCV wheels in one environment
overwrite each other's ``cv2``; keep exactly one (``pip uninstall opencv-python
opencv-python-headless opencv-contrib-python`` before installing the contrib-headless one).

Cache files live in ``<store>/proposals/<sha256 of the image file>-<settings key>.npy``, written
atomically as each image finishes, so an interrupted run resumes with the images it had not done.
They hold every box, in rank order; ``max_proposals`` is applied when they are read, so budgets can
change without running the search again.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deepfeat.data.detection import DetectionDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS, load_image, printable
from deepfeat.errors import ConfigError, ImageError
from deepfeat.fileio import atomic_write_with
from deepfeat.tasks.detection.boxes import as_boxes, clip, iou, keep_valid, unique_boxes
from deepfeat.validation import check_choice, check_int

MODES = ("fast", "quality", "single")
ALGORITHM_VERSION = 1  # bump when the post-processing changes: cached boxes are then recomputed


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "selective search needs OpenCV's contrib modules: pip install opencv-contrib-python-headless "
            "(uninstall other OpenCV wheels first: one OpenCV distribution per environment)"
        ) from exc
    if not hasattr(cv2, "ximgproc"):
        raise ConfigError(
            f"the installed OpenCV ({cv2.__version__}) has no ximgproc module; another OpenCV wheel "
            "shadows opencv-contrib-python-headless: uninstall opencv-python, opencv-python-headless and "
            "opencv-contrib-python, then reinstall opencv-contrib-python-headless"
        )
    return cv2


@dataclass(frozen=True)
class ProposalOptions:
    """Selective search settings: ``mode`` (fast, quality or single: OpenCV's three strategies),
    ``width`` (resize to this width before the search; None: as loaded), ``max_proposals``,
    ``min_size`` (pixels in the original image), ``whole_image`` (add the image's own box)."""

    mode: str = "fast"
    width: int | None = 500
    max_proposals: int = 2000
    min_size: float = 10.0
    whole_image: bool = True

    def validate(self) -> None:
        check_choice("proposal mode", self.mode, MODES)
        if self.width is not None:
            check_int("proposal width (pixels)", self.width, 16)
        check_int("max_proposals", self.max_proposals, 1)
        if not self.min_size >= 0:
            raise ConfigError(f"min_size must be a non-negative number of pixels, got {self.min_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Hash of everything that determines the cached boxes (settings but ``max_proposals``, which
        is applied when they are read; OpenCV version; post-processing)."""
        cv2 = _cv2()
        settings = {k: v for k, v in self.to_dict().items() if k != "max_proposals"}
        text = json.dumps(
            {**settings, "opencv": cv2.__version__, "algorithm": ALGORITHM_VERSION}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _seed_c_rand(seed: int) -> None:
    """OpenCV's selective search ranks its boxes with the C library's ``rand()`` (not cv::RNG):
    seeding it makes the ranking, hence the first ``max_proposals`` boxes, the same on every call."""
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no C library handle (Windows)
        ctypes.CDLL(None).srand(int(seed))


def selective_search(image: np.ndarray, options: ProposalOptions = ProposalOptions()) -> np.ndarray:
    """Proposals (N, 4) float32 of an RGB uint8 image (H, W, 3), post-processed as the module says."""
    return _search_all(image, options)[: options.max_proposals]


def _search_all(image: np.ndarray, options: ProposalOptions) -> np.ndarray:
    """Every proposal, in rank order (not cut to ``max_proposals``: that is what the cache keeps)."""
    cv2 = _cv2()
    height, width = image.shape[:2]
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    scale = 1.0
    if options.width is not None and options.width != width:
        scale = width / options.width
        new_h = max(1, round(height / scale))
        interp = cv2.INTER_AREA if options.width < width else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (options.width, new_h), interpolation=interp)
    _seed_c_rand(0)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    {"fast": ss.switchToSelectiveSearchFast, "quality": ss.switchToSelectiveSearchQuality}.get(
        options.mode, ss.switchToSingleStrategy
    )()
    rects = np.asarray(ss.process(), dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) * scale
    boxes = clip(boxes, width, height)
    if options.whole_image:
        boxes = np.concatenate([np.array([[0, 0, width, height]], np.float32), boxes])
    boxes = boxes[keep_valid(boxes, options.min_size)]
    boxes = boxes[unique_boxes(boxes)]
    if len(boxes) == 0:  # a tiny image: its own box is the only candidate
        boxes = np.array([[0, 0, width, height]], np.float32)
    return as_boxes(boxes)


def _propose_file(path: str, options: ProposalOptions, max_pixels: int) -> tuple[np.ndarray | None, str]:
    """(boxes, "") or (None, why the image cannot be used); runs in a worker process."""
    _cv2().setNumThreads(1)
    try:
        image = np.asarray(load_image(path, max_pixels=max_pixels))
    except ImageError as exc:  # returned, not raised: the exception's own pickling loses its fields
        return None, exc.reason
    return _search_all(image, options), ""


def _propose_job(job: tuple[int, str, ProposalOptions, int]) -> tuple[int, tuple[np.ndarray | None, str]]:
    index, path, options, max_pixels = job
    return index, _propose_file(path, options, max_pixels)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (a terminal sends it to them too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_context():
    """Fork where the platform has it (the workers only run OpenCV and Pillow, and the parent's
    script needs no ``__main__`` guard), spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (the content key of its cached proposals)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ProposalSet:
    """Proposals per image id, with the images that failed (path, reason) and an account of the run."""

    boxes: dict[str, np.ndarray]
    options: ProposalOptions
    failures: list[tuple[str, str]] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0

    def __getitem__(self, image_id: str) -> np.ndarray:
        return self.boxes.get(image_id, np.zeros((0, 4), np.float32))

    def mean_count(self) -> float:
        return float(np.mean([len(b) for b in self.boxes.values()])) if self.boxes else 0.0

    def digest(self, ids: list[str]) -> str:
        """sha256 over the boxes of ``ids`` in order (part of the region features' store key)."""
        h = hashlib.sha256()
        for image_id in ids:
            h.update(image_id.encode("utf-8", "surrogateescape") + b"\0" + self[image_id].tobytes())
        return h.hexdigest()


def compute_proposals(
    dataset: DetectionDataset,
    options: ProposalOptions = ProposalOptions(),
    *,
    store: str | os.PathLike | None = None,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> ProposalSet:
    """Proposals of every image of ``dataset``: read from ``<store>/proposals`` when cached, else
    computed in ``workers`` processes (0: in this process) and cached as each image finishes; an
    interrupt stops the workers at once, keeping what finished.
    Images that cannot be decoded are reported in ``failures`` (path, reason) and get no proposal."""
    options.validate()
    check_int("workers (proposal processes)", workers, 0)
    start = time.perf_counter()
    key = options.key()
    cache = None if store is None else Path(store) / "proposals"
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    result = ProposalSet(boxes={}, options=options)
    todo: list[tuple[str, str, Path | None]] = []
    for table in dataset.images:
        try:
            digest = file_digest(table.path)
        except OSError as exc:
            result.failures.append((printable(table.path), f"cannot read file ({exc.strerror or exc})"))
            continue
        target = None if cache is None else cache / f"{digest[:32]}-{key}.npy"
        if target is not None and target.is_file():
            try:
                boxes = as_boxes(np.load(target, allow_pickle=False))
                result.boxes[table.image_id] = boxes[: options.max_proposals]
                result.n_cached += 1
                continue
            except (OSError, ValueError, EOFError):
                pass  # a damaged cache file is recomputed
        todo.append((table.image_id, str(table.path), target))
    bar = tqdm(total=len(todo), desc="proposals", unit="img", disable=not progress, dynamic_ncols=True)

    def done(image_id: str, path: str, target: Path | None, outcome: tuple[np.ndarray | None, str]) -> None:
        boxes, reason = outcome
        if boxes is None:
            result.failures.append((printable(path), reason))
        else:
            result.boxes[image_id] = boxes[: options.max_proposals]
            result.n_computed += 1
            if target is not None:
                atomic_write_with(target, lambda fh: np.save(fh, boxes), durable=False)
        bar.update(1)

    if workers == 0 or len(todo) <= 1:
        for image_id, path, target in todo:
            done(image_id, path, target, _propose_file(path, options, max_pixels))
    else:
        jobs = [(index, path, options, max_pixels) for index, (_, path, _) in enumerate(todo)]
        context = _pool_context()
        # on an interrupt the pool's exit terminates the workers at once: what finished is cached
        with context.Pool(min(workers, len(todo)), initializer=_ignore_interrupts) as pool:
            for index, outcome in pool.imap_unordered(_propose_job, jobs):
                done(*todo[index], outcome)
    bar.close()
    result.seconds = time.perf_counter() - start
    return result


def proposal_recall(
    dataset: DetectionDataset, proposals: ProposalSet, threshold: float = 0.5
) -> dict[str, dict]:
    """Per class (and ``"all"``): the share of annotated (non-difficult) boxes that some proposal
    overlaps with IoU >= ``threshold``, and the number of boxes."""
    hits = np.zeros(len(dataset.classes), dtype=np.int64)
    totals = np.zeros(len(dataset.classes), dtype=np.int64)
    for table in dataset.images:
        keep = ~table.difficult
        gt, labels = table.boxes[keep], table.labels[keep]
        if not len(gt):
            continue
        best = iou(gt, proposals[table.image_id]).max(axis=1, initial=0.0)
        np.add.at(totals, labels, 1)
        np.add.at(hits, labels, (best >= threshold).astype(np.int64))
    out = {
        c: {"recall": float(h / t) if t else None, "boxes": int(t)}
        for c, h, t in zip(dataset.classes, hits, totals)
    }
    out["all"] = {
        "recall": float(hits.sum() / totals.sum()) if totals.sum() else None,
        "boxes": int(totals.sum()),
    }
    return out
