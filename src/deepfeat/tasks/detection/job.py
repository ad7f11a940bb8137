"""Training an R-CNN detector: typed options checked before any work, then the pipeline of chapter 3
(proposals -> optional fine-tuning -> region features -> class SVMs with hard negatives -> box
regressors), every step cached or checkpointed under the output folder so that a rerun resumes.

    from deepfeat.data.detection import open_detection
    from deepfeat.tasks.detection import DetectionOptions, train

    trained = train(open_detection("voc07_5class", split="trainval"), DetectionOptions(), out="model/")
    # trained.model is saved in model/; evaluate it with deepfeat.tasks.detection.evaluate
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepfeat.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.data.detection import DetectionDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.store import FeatureStore
from deepfeat.fileio import check_output_dir, to_jsonable
from deepfeat.tasks.detection.bbox import BBoxOptions, BoxRegressor, train_regressors
from deepfeat.tasks.detection.extract import RegionSet, extract_regions
from deepfeat.tasks.detection.finetune import FinetuneOptions, finetune_detector
from deepfeat.tasks.detection.model import DetectorModel, TestOptions
from deepfeat.tasks.detection.proposals import ProposalOptions, compute_proposals, proposal_recall
from deepfeat.tasks.detection.regions import RegionEncoder, RegionOptions, output_key, parse_output
from deepfeat.tasks.detection.svm import MiningState, SVMOptions, SVMResult, train_svms
from deepfeat.validation import check_device, check_int

log = logging.getLogger(__name__)


def default_features(backbone: Backbone, mode: str) -> str:
    """SVM features when none are named: the layer before the output (fc7, or the global pool) for
    warped regions; the last spatial layer, average-pooled, for shared maps."""
    layers = [lay for lay in backbone.catalog if lay.kind not in ("logits", "prob")]
    if mode == "shared":
        spatial = [lay for lay in layers if lay.spatial]
        return f"{spatial[-1].name}/avg"
    last = layers[-1]
    return f"{last.name}/avg" if last.spatial else last.name


def default_bbox_features(backbone: Backbone) -> str:
    """Regression features when none are named: the last spatial layer of at most 512 channels (the
    counterpart of pool5: AlexNet/VGG pool5, EfficientNet-Lite0 stage7) pooled to a 3 x 3 grid."""
    spatial = [lay for lay in backbone.catalog if lay.spatial and lay.channels <= 512]
    if not spatial:
        spatial = [lay for lay in backbone.catalog if lay.spatial]
    return f"{spatial[-1].name}/grid3"


@dataclass
class DetectionOptions:
    """Everything training needs, typed.

    ``features``: the SVM features as 'layer/pool' (None: :func:`default_features`).
    ``bbox_features``: the regressors' features (None: :func:`default_bbox_features`); ``bbox``:
    False to train no regressor. ``finetune``: None or iterations 0 for no fine-tuning.
    ``store``: the feature store (default: ``<out>/store``); ``workers``: proposal processes.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    features: str | None = None
    bbox_features: str | None = None
    bbox: bool = True
    region: RegionOptions = field(default_factory=RegionOptions)
    proposals: ProposalOptions = field(default_factory=ProposalOptions)
    svm: SVMOptions = field(default_factory=SVMOptions)
    regression: BBoxOptions = field(default_factory=BBoxOptions)
    finetune: FinetuneOptions | None = None
    test: TestOptions = field(default_factory=TestOptions)
    store: str | os.PathLike | None = None
    batch_size: int = 64
    workers: int = 2
    device: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self) -> None:
        """Cheap checks of every option, before any image is read or model loaded."""
        for part in (self.region, self.proposals, self.svm, self.regression, self.test):
            part.validate()
        if self.finetune is not None:
            self.finetune.validate()
            if self.finetune.iterations and self.region.mode != "warp":
                raise ConfigError("fine-tuning trains on warped windows; use region mode 'warp'")
        for spec in (self.features, self.bbox_features):
            if spec is not None:
                parse_output(spec)
        check_int("batch_size (regions per forward pass)", self.batch_size, 1)
        check_int("workers (proposal processes)", self.workers, 0)
        check_int("max_pixels", self.max_pixels, 1)
        check_device(self.device)

    def outputs(self, backbone: Backbone) -> tuple[str, str | None]:
        """(SVM key, regression key or None) as canonical 'layer/pool', checked on ``backbone``."""
        keys = []
        for spec, default in ((self.features, default_features), (self.bbox_features, None)):
            if spec is None and default is None:
                spec = default_bbox_features(backbone) if self.bbox else None
            elif spec is None:
                spec = default(backbone, self.region.mode)
            if spec is None:
                keys.append(None)
                continue
            layer_name, pool = parse_output(spec)
            keys.append(output_key(backbone.catalog.get(layer_name), pool))
        return keys[0], keys[1] if self.bbox else None

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self))


@dataclass
class TrainResult:
    """A trained detector and an account of its training (timings in seconds by step)."""

    model: DetectorModel
    out: Path
    recall: dict
    timings: dict
    counts: dict
    failures: list[tuple[str, str]]
    finetune_history: list[dict] = field(default_factory=list)


def train(
    dataset: DetectionDataset,
    options: DetectionOptions | None = None,
    out: str | os.PathLike = "rcnn-model",
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train an R-CNN detector on ``dataset`` and save it in folder ``out`` (see the module docstring)."""
    echo = echo or log.info
    options = options or DetectionOptions()
    options.validate()
    out = check_output_dir(out, "out")
    store = FeatureStore(options.store or out / "store")
    timings: dict[str, float] = {}
    echo(dataset.summary())
    t = time.perf_counter()
    backbone = load_backbone(options.backbone, weights=options.weights)
    svm_key, bbox_key = options.outputs(backbone)  # names checked before the long steps
    region = options.region.resolved(backbone)
    timings["load"] = time.perf_counter() - t
    proposals = compute_proposals(
        dataset,
        options.proposals,
        store=store.root,
        workers=options.workers,
        max_pixels=options.max_pixels,
        progress=progress,
    )
    timings["proposals"] = proposals.seconds
    recall = proposal_recall(dataset, proposals)
    echo(
        f"proposals: {proposals.mean_count():.0f} per image ({proposals.n_cached} cached), "
        f"recall at IoU 0.5: {100 * (recall['all']['recall'] or 0):.1f}%"
    )
    regions = RegionSet.build(dataset, proposals, with_gt=True)
    weights_file, history = None, []
    if options.finetune is not None and options.finetune.iterations:
        t = time.perf_counter()
        backbone, weights_file, history = finetune_detector(
            options.backbone,
            dataset,
            regions,
            options.finetune,
            region,
            out / "finetune",
            weights=options.weights,
            device=options.device,
            progress=progress,
        )
        timings["finetune"] = time.perf_counter() - t
    keys = [svm_key] + ([bbox_key] if bbox_key and bbox_key != svm_key else [])
    encoder = RegionEncoder(
        backbone,
        [parse_output(k) for k in keys],
        region,
        device=options.device,
        batch_size=options.batch_size,
    )
    extraction = extract_regions(
        dataset, regions, encoder, store=store, max_pixels=options.max_pixels, progress=progress
    )
    timings["features"] = extraction.seconds
    for path, reason in extraction.failures:
        echo(f"skipped {path}: {reason}")
    if not extraction.features[svm_key].valid.any():
        raise DataError(f"{dataset.name}: no region features could be computed (every image failed)")
    t = time.perf_counter()
    svm = _svms(dataset, regions, extraction.features[svm_key], options, out, progress)
    timings["svm"] = time.perf_counter() - t
    regressor: BoxRegressor | None = None
    if bbox_key is not None:
        t = time.perf_counter()
        regressor = train_regressors(
            dataset, regions, extraction.features[bbox_key], options.regression, progress=progress
        )
        timings["bbox"] = time.perf_counter() - t
    model = DetectorModel(
        classes=list(dataset.classes),
        backbone=backbone.name,
        weights_id=backbone.weights_id,
        svm_key=svm_key,
        region=region,
        proposals=options.proposals,
        svm=svm,
        regressor=regressor,
        bbox_key=bbox_key,
        test=options.test,
        settings={
            "options": options.to_dict(),
            "train_data": dataset.name,
            "n_images": len(dataset),
            "store": str(store.root),
        },
        category_ids=dataset.category_ids,
    )
    model.save(out, backbone_weights=weights_file)
    counts = {
        "images": len(dataset),
        "regions": len(regions),
        "regions_per_image": len(regions) / max(len(dataset), 1),
        "svm_dim": extraction.features[svm_key].dim,
        "bbox_dim": None if bbox_key is None else extraction.features[bbox_key].dim,
        "regions_computed": extraction.n_computed,
        "regions_per_second": extraction.n_computed / extraction.network_seconds
        if extraction.network_seconds
        else None,
    }
    return TrainResult(model, out, recall, timings, counts, proposals.failures + extraction.failures, history)


def _svms(dataset, regions, features, options: DetectionOptions, out: Path, progress: bool) -> SVMResult:
    """The SVM stage, resumed from ``<out>/work/svms.pt`` when it finished before on the same features,
    else from the mining state in ``<out>/work/svms-mining.pt`` (saved every minute and on Ctrl-C)."""
    import torch

    path = out / "work" / "svms.pt"
    partial = out / "work" / "svms-mining.pt"
    # the annotations too: a relabelled box (same coordinates, same region features) changes the SVMs
    key = {
        "features": features.provenance,
        "svm": options.svm.to_dict(),
        "classes": dataset.classes,
        "annotations": dataset.fingerprint(),
    }
    key = to_jsonable(key)
    if path.exists():
        ck = load_checkpoint(path, kind="rcnn-svms")
        if ck.meta.get("key") == key:
            s = ck.state
            return SVMResult(
                s["weights"].numpy(),
                s["biases"].numpy(),
                float(ck.meta["scale"]),
                s["trained"].numpy().astype(bool),
                ck.meta.get("history") or {},
            )
    resume = None
    if partial.exists():
        ck = load_checkpoint(partial, kind="rcnn-svm-mining")
        if ck.meta.get("key") == key:
            s, m = ck.state, ck.meta
            resume = MiningState(
                int(m["step"]),
                bool(m["first"]),
                s["weights"].numpy(),  # train_svms works on its own copy
                s["biases"].numpy(),
                s["added"].numpy(),
                [s[f"neg_keys_{c}"].numpy() for c in range(len(dataset.classes))],
                {c: list(h) for c, h in m["history"].items()},
                float(m["seconds"]),
            )

    def save(state: MiningState) -> None:
        tensors = {
            "weights": torch.from_numpy(state.weights),
            "biases": torch.from_numpy(state.biases),
            "added": torch.from_numpy(state.added),
            **{f"neg_keys_{c}": torch.from_numpy(k) for c, k in enumerate(state.neg_keys)},
        }
        meta = {"key": key, "step": state.step, "first": state.first, "history": state.history}
        partial.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            partial, tensors, kind="rcnn-svm-mining", meta={**meta, "seconds": state.seconds}, rng=False
        )

    result = train_svms(
        dataset, regions, features, options.svm, progress=progress, resume=resume, on_state=save
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "weights": torch.from_numpy(result.weights),
        "biases": torch.from_numpy(result.biases),
        "trained": torch.from_numpy(result.trained.astype("uint8")),
    }
    save_checkpoint(
        path,
        state,
        kind="rcnn-svms",
        meta={"key": key, "scale": result.scale, "history": result.history},
        rng=False,
    )
    partial.unlink(missing_ok=True)
    return result
