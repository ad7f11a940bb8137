"""CLI: ``deepfeat detect train|evaluate|predict``: R-CNN object detection (thesis chapter 3).

The commands parse their options into the library's typed objects, call
:mod:`deepfeat.tasks.detection` and print; every long step shows progress and resumes when the
command is run again (proposals and region features are cached in the store, fine-tuning and the
SVM stage are checkpointed).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE
from deepfeat.cli.common import THREADS, VERBOSE, friendly, set_threads, setup_logging
from deepfeat.data.detection import DetectionDataset, open_detection
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.fileio import check_output_dir
from deepfeat.report.wording import counted, listed
from deepfeat.tasks import detection as det

detect_app = typer.Typer(
    help="R-CNN object detection: selective-search proposals, region features, class SVMs with hard "
    "negatives, box regression, VOC / COCO AP.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class RegionMode(str, Enum):
    warp = "warp"
    shared = "shared"


class SearchMode(str, Enum):
    fast = "fast"
    quality = "quality"
    single = "single"


class SvmLoss(str, Enum):
    hinge = "hinge"
    squared_hinge = "squared_hinge"


DATA_HELP = "A VOC folder (Annotations/, JPEGImages/, ImageSets/), a COCO instances .json, or a COCO folder."
SPLIT_HELP = "VOC image list (ImageSets/Main/<split>.txt) or COCO split (train, val)."
STORE = typer.Option(None, help="Feature store: proposals and region features (default: MODEL/store).")
WORKERS = typer.Option(2, min=0, help="Selective-search worker processes (0: in this process).")
BATCH = typer.Option(64, min=1, help="Regions per forward pass.")
DEVICE = typer.Option(None, help="Torch device (default: cpu).")
MAX_IMAGES = typer.Option(None, min=1, help="Use only the first N images (quick runs).")
MAX_PIXELS = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels.")


def _data(data: str, split: str | None, images: str | None, max_images: int | None) -> DetectionDataset:
    dataset = open_detection(data, split=split, images=images)
    for path, reason in dataset.ignored:
        typer.echo(f"ignored {path}: {reason}")
    return dataset.subset(range(min(max_images, len(dataset)))) if max_images else dataset


@friendly
def train_command(
    data: str = typer.Argument(..., help=DATA_HELP),
    out: Path = typer.Option(Path("rcnn-model"), "--out", "-o", help="Model folder (and its work files)."),
    split: str = typer.Option(None, help=SPLIT_HELP + " Default: trainval for VOC."),
    images: str = typer.Option(None, help="COCO image folder (default: found from the .json name)."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name."),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    features: str = typer.Option(
        None,
        help="SVM features as layer/pool, e.g. pool, head/avg, fc7 (default: the layer before the output).",
    ),
    bbox_features: str = typer.Option(
        None, help="Box-regression features as layer/pool (default: the pool5-like layer, e.g. stage7/grid3)."
    ),
    bbox: bool = typer.Option(
        True, "--bbox/--no-bbox", help="Train box regressors (lambda 1000, IoU > 0.6)."
    ),
    regions: RegionMode = typer.Option(
        RegionMode.warp,
        help="warp: every region warped to the network input (R-CNN); shared: pooled from one "
        "feature map per image (extension, far cheaper).",
    ),
    size: int = typer.Option(None, min=16, help="Warp side in pixels (default: the network's input size)."),
    padding: int = typer.Option(16, min=0, help="Context pixels around each region in the warped frame."),
    shared_size: int = typer.Option(600, min=16, help="Shared map: image shorter side in pixels."),
    max_proposals: int = typer.Option(
        2000, min=1, help="Proposals kept per image (selective-search rank order)."
    ),
    search: SearchMode = typer.Option(SearchMode.fast, help="Selective-search strategy."),
    search_width: int = typer.Option(500, min=16, help="Images resized to this width for the search."),
    finetune_iterations: int = typer.Option(0, min=0, help="Fine-tuning SGD iterations (0: none)."),
    finetune_from: str = typer.Option(
        None, help="Fine-tune this layer and the ones after it (default: all)."
    ),
    finetune_lr: float = typer.Option(0.001, min=0.0, help="Fine-tuning learning rate."),
    svm_loss: SvmLoss = typer.Option(SvmLoss.hinge, help="SVM loss (the reference: hinge)."),
    svm_c: float = typer.Option(0.001, min=0.0, help="SVM C (the reference: 0.001 on features of norm 20)."),
    max_images: int = MAX_IMAGES,
    store: Path = STORE,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    device: str = DEVICE,
    max_pixels: int = MAX_PIXELS,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Train an R-CNN detector on annotated images; the model is saved in --out."""
    setup_logging(verbose)
    set_threads(threads)
    options = det.DetectionOptions(
        backbone=backbone,
        weights=weights,
        features=features,
        bbox_features=bbox_features,
        bbox=bbox,
        region=det.RegionOptions(
            mode=regions.value,
            size=size,
            padding=padding,
            shared_size=shared_size,
            shared_max=max(1000, shared_size),
        ),
        proposals=det.ProposalOptions(mode=search.value, width=search_width, max_proposals=max_proposals),
        svm=det.SVMOptions(C=svm_c, loss=svm_loss.value),
        finetune=det.FinetuneOptions(iterations=finetune_iterations, train_from=finetune_from, lr=finetune_lr)
        if finetune_iterations
        else None,
        store=store,
        batch_size=batch_size,
        workers=workers,
        device=device,
        max_pixels=max_pixels,
    )
    options.validate()
    out = check_output_dir(out, "--out")
    dataset = _data(data, split or None, images, max_images)
    result = det.train(dataset, options, out, progress=True, echo=typer.echo)
    model = result.model
    untrained = [c for c, ok in zip(model.classes, model.svm.trained) if not ok]
    if untrained:
        typer.echo(
            f"warning: {counted(len(untrained), 'class', 'classes')} without a training box never "
            f"fire: {listed(untrained, 10, str)}"
        )
    typer.echo(
        f"trained {int(model.svm.trained.sum())} of {len(model.classes)} class SVMs on {model.svm_key}"
        + (f" and box regressors on {model.bbox_key}" if model.regressor is not None else "")
        + f" from {result.counts['images']} images, {result.counts['regions_per_image']:.0f} regions each"
    )
    typer.echo("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items()))
    typer.echo(f"model: {out / 'model.pt'}")


@friendly
def evaluate_command(
    data: str = typer.Argument(..., help=DATA_HELP),
    model: Path = typer.Option(..., "--model", "-m", help="Model folder written by 'detect train'."),
    split: str = typer.Option(None, help=SPLIT_HELP + " Default: test for VOC."),
    images: str = typer.Option(None, help="COCO image folder (default: found from the .json name)."),
    out: Path = typer.Option(None, "--out", "-o", help="Results folder (default: MODEL/eval-<data>)."),
    examples: int = typer.Option(6, min=0, help="Images with detections drawn in the report."),
    max_images: int = MAX_IMAGES,
    store: Path = STORE,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    device: str = DEVICE,
    max_pixels: int = MAX_PIXELS,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Detect on annotated images and score: VOC AP per class (11-point and area), COCO-style AP;
    writes results.json, report.md, precision-recall plots and example detections."""
    setup_logging(verbose)
    set_threads(threads)
    detector = det.DetectorModel.load(model)
    is_voc = Path(data).is_dir() and (Path(data) / "Annotations").is_dir()
    dataset = _data(data, split or ("test" if is_voc else None), images, max_images)
    target = check_output_dir(out or model / f"eval-{dataset.name.replace('/', '-')}", "--out")
    result = det.evaluate(
        detector,
        dataset,
        folder=model,
        store=store,
        workers=workers,
        batch_size=batch_size,
        device=device,
        max_pixels=max_pixels,
        progress=True,
        echo=typer.echo,
    )
    paths = det.write_report(result, target, n_examples=examples)
    typer.echo("")
    for line in det.report.summary_lines(result):
        typer.echo(line)
    typer.echo(f"results: {paths['results']}\nreport:  {paths['report']}")


@friendly
def predict_command(
    images: list[Path] = typer.Argument(..., help="Image files."),
    model: Path = typer.Option(..., "--model", "-m", help="Model folder written by 'detect train'."),
    out: Path = typer.Option(
        Path("detections"), "--out", "-o", help="Folder for the PNGs and predictions.json."
    ),
    threshold: float = typer.Option(
        0.0, help="Draw detections scoring above this (SVM score; 0 = the margin)."
    ),
    store: Path = STORE,
    batch_size: int = BATCH,
    workers: int = WORKERS,
    device: str = DEVICE,
    max_pixels: int = MAX_PIXELS,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Detect objects in images: one PNG with the boxes drawn per image, and predictions.json."""
    setup_logging(verbose)
    set_threads(threads)
    detector = det.DetectorModel.load(model)
    target = check_output_dir(out, "--out")
    dataset, detections, failures = det.predict(
        detector,
        images,
        folder=model,
        store=store,
        workers=workers,
        batch_size=batch_size,
        device=device,
        max_pixels=max_pixels,
        progress=True,
        echo=typer.echo,
    )
    provenance = {
        "model": str(model),
        "backbone": detector.backbone,
        "weights_id": detector.weights_id,
        "failures": [list(f) for f in failures],
    }
    paths = det.report.write_predictions(
        dataset, detections, detector.classes, target, threshold=threshold, provenance=provenance
    )
    for image_id, d in detections.items():
        shown = int((d.scores > threshold).sum())
        typer.echo(f"{image_id}: {len(d)} detections, {shown} above {threshold:g}")
    typer.echo(f"predictions: {paths['predictions']}")


detect_app.command("train")(train_command)
detect_app.command("evaluate")(evaluate_command)
detect_app.command("predict")(predict_command)
