"""CLI: ``deepfeat video``: make the moving-digit set, train a clip classifier (single frame or LRCN,
RGB or flow), evaluate trained models per video with RGB / flow fusion, classify video files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE
from deepfeat.cli.common import (
    THREADS,
    VERBOSE,
    friendly,
    quiet_opencv,
    set_threads,
    setup_logging,
)
from deepfeat.cli.parsing import OnBadImage, ints, names
from deepfeat.cli.video_describe import describe_app
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.errors import ConfigError
from deepfeat.report.tables import text_table
from deepfeat.report.writer import write_result

video_app = typer.Typer(
    help="Activity recognition on video (LRCN, thesis chapter 4): moving digits, train, evaluate, predict.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

STORE_HELP = "Feature store shared by the video commands (per-frame features and flow images, computed once)."


class Stream(str, Enum):
    rgb = "rgb"
    flow = "flow"


class ModelKind(str, Enum):
    single = "single"
    lrcn = "lrcn"


class FlowMethod(str, Enum):
    farneback = "farneback"
    tvl1 = "tvl1"


class FineTune(str, Enum):
    none = "none"
    top = "top"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class VideoFormat(str, Enum):
    mp4 = "mp4"
    avi = "avi"


class FramePreprocess(str, Enum):
    backbone = "backbone"
    warp = "warp"
    decaf = "decaf"


def _floats(text: str, option: str) -> list[float]:
    out = []
    for item in names(text, option):
        try:
            out.append(float(item.split("/")[0]) / float(item.split("/")[1]) if "/" in item else float(item))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{option} takes numbers or fractions like 1/3, got {item!r}") from None
    return out


@video_app.command("make-moving-digits")
@friendly
def make_moving_digits_command(
    out: Path = typer.Argument(..., help="Folder to write the videos and split lists into."),
    digits: str = typer.Option("0,1,2", help="Digits, comma-separated (each with every --motions)."),
    motions: str = typer.Option(
        "left,right,up,down", help="left, right, up, down, zoom-in, zoom-out, rotate-cw, rotate-ccw."
    ),
    classes: str = typer.Option(None, help="Explicit classes DIGIT-MOTION (e.g. 3-left,7-zoom-in)."),
    clips_per_class: int = typer.Option(16, min=2, help="Videos per class."),
    test_fraction: float = typer.Option(0.3, help="Share of each class's videos in the test list."),
    frames: int = typer.Option(24, min=2, help="Frames per video."),
    size: int = typer.Option(64, min=56, help="Frame side in pixels."),
    fps: float = typer.Option(25.0, help="Frame rate written in the files."),
    video_format: VideoFormat = typer.Option(VideoFormat.mp4, "--format", help="mp4 (MPEG-4) or avi (XVID)."),
    digits_per_clip: int = typer.Option(1, min=1, max=2, help="Instances of the digit per video."),
    seed: int = typer.Option(0, help="Seed: the same settings and seed give the same videos."),
    mnist: Path = typer.Option(
        None, help="MNIST as .npz (x_train, y_train, x_test, y_test); default: scikit-learn's bundled digits."
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Write moving-digit videos (class = digit x motion) in UCF-101's layout, with split lists."""
    from deepfeat.tasks.video.moving_digits import MovingDigits, make_moving_digits

    setup_logging(verbose)
    quiet_opencv()
    spec = MovingDigits(
        digits=tuple(ints(digits, "--digits", minimum=0)),
        motions=tuple(names(motions, "--motions")),
        classes=None if classes is None else tuple(names(classes, "--classes")),
        clips_per_class=clips_per_class,
        test_fraction=test_fraction,
        frames=frames,
        size=size,
        fps=fps,
        format=video_format.value,
        digits_per_clip=digits_per_clip,
        seed=seed,
    )
    if mnist is None:
        typer.echo("digits: scikit-learn's bundled 8x8 digits (give --mnist mnist.npz for MNIST)")
    record = make_moving_digits(out, spec, mnist)
    typer.echo(
        f"{len(record['classes'])} classes, {record['n_train']} training and {record['n_test']} test videos "
        f"in {out} (split lists trainlist01.txt / testlist01.txt)"
    )


@video_app.command("train")
@friendly
def train_command(
    data: str = typer.Argument(
        ..., help="Video folder root/<class>/<clip> (UCF-101 split lists used) or manifest."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder (checkpoints, model.pt, history.json)."),
    stream: Stream = typer.Option(
        Stream.rgb, "--input", help="Input stream: RGB frames or optical-flow images."
    ),
    model: ModelKind = typer.Option(
        ModelKind.lrcn, "--model", help="single (frames averaged) or lrcn (LSTM)."
    ),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="CNN giving the frame features."),
    weights: str = typer.Option(None, help="Weights file of the backbone (default: its own)."),
    layer: str = typer.Option("head", help="Layer giving the frame features (e.g. head, pool, fc6)."),
    grid: int = typer.Option(2, min=0, help="Average over a GRID x GRID of cells (1: global; 0: whole map)."),
    preprocess: FramePreprocess = typer.Option(FramePreprocess.backbone, help="Frame preprocessing preset."),
    input_size: int = typer.Option(None, min=16, help="Warp whole frames to this side instead."),
    sampling: str = typer.Option("all", help="Frames used: all, fps:RATE or count:N."),
    flow: FlowMethod = typer.Option(FlowMethod.farneback, help="Optical flow (tvl1 needs opencv-contrib)."),
    flow_scale: float = typer.Option(16.0, help="Flow image units per pixel of motion (128 = no motion)."),
    hidden: int = typer.Option(None, min=1, help="LSTM units (default: 256 for RGB, 1024 for flow)."),
    lstm_layers: int = typer.Option(1, "--lstm-layers", min=1, help="Stacked LSTMs."),
    dropout_in: float = typer.Option(0.5, help="Dropout on the frame features."),
    dropout: float = typer.Option(0.5, help="Dropout on the LSTM output."),
    clip_length: int = typer.Option(16, min=1, help="Frames per clip (training and test)."),
    clip_stride: int = typer.Option(8, min=1, help="Frames between test clips."),
    clips_per_video: int = typer.Option(1, min=1, help="Random training clips per video per epoch."),
    epochs: int = typer.Option(30, min=1, help="Passes over the training videos."),
    batch_size: int = typer.Option(24, min=1, help="Clips per training step."),
    optimizer: Optimizer = typer.Option(Optimizer.adam, help="adam, or sgd (momentum 0.9)."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    weight_decay: float = typer.Option(1e-4, help="Weight decay."),
    fine_tune: FineTune = typer.Option(
        FineTune.none, help="none: frozen CNN; top: its top stages train too."
    ),
    seed: int = typer.Option(0, help="Seed of the initialisation, clip sampling and dropout."),
    device: str = typer.Option(None, help="Torch device (cpu, cuda, cuda:1)."),
    split: int = typer.Option(1, min=1, help="UCF-101 split number (trainlistNN.txt / testlistNN.txt)."),
    lists: Path = typer.Option(None, help="Folder of the split lists (default: found beside the videos)."),
    store: Path = typer.Option(Path("deepfeat-store"), help=STORE_HELP),
    frames_per_batch: int = typer.Option(32, min=1, help="Frames per CNN forward pass."),
    workers: int = typer.Option(2, min=0, help="Video decoding threads."),
    on_bad_frame: OnBadImage = typer.Option(OnBadImage.skip, help="Skip undecodable frames or stop."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse frames with more pixels."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Train a clip classifier; rerun the same command to resume after an interruption."""
    from deepfeat.data.flow import FlowOptions
    from deepfeat.data.video import FrameSampling
    from deepfeat.tasks.video import FrameFeatures, TrainJob, TrainOptions, train

    setup_logging(verbose)
    set_threads(threads)
    quiet_opencv()
    job = TrainJob(
        data=data,
        options=TrainOptions(
            model=model.value,
            stream=stream.value,
            hidden=hidden,
            layers=lstm_layers,
            dropout_in=dropout_in,
            dropout=dropout,
            clip_length=clip_length,
            clip_stride=clip_stride,
            clips_per_video=clips_per_video,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer.value,
            lr=lr,
            weight_decay=weight_decay,
            fine_tune=fine_tune.value,
            seed=seed,
            device=device,
        ),
        features=FrameFeatures(
            backbone=backbone,
            weights=weights,
            layer=layer,
            grid=grid,
            preprocess=preprocess.value,
            input_size=input_size,
            sampling=FrameSampling.parse(sampling),
            flow=FlowOptions(method=flow.value, scale=flow_scale),
            batch_size=frames_per_batch,
            workers=workers,
            on_bad_frame=on_bad_frame.value,
            max_pixels=max_pixels,
            device=device,
        ),
        split=split,
        lists=lists,
        store=store,
        out=out,
    )
    result = train(job, progress=True, echo=typer.echo)
    for source, why in result.failures[:20]:
        typer.echo(f"skipped {source}: {why}")
    if len(result.failures) > 20:
        typer.echo(f"... and {len(result.failures) - 20} more frames or videos")
    last = result.history[-1] if result.history else {}
    loss, acc = last.get("loss", float("nan")), last.get("clip_accuracy", float("nan"))
    typer.echo(
        f"{result.classifier.name} on {result.n_videos} training videos: loss {loss:.4f}, "
        f"training clips {100 * acc:.1f}% after {len(result.history)} epochs"
    )
    typer.echo(f"model: {result.model_path}")


@video_app.command("evaluate")
@friendly
def evaluate_command(
    data: str = typer.Argument(..., help="Video folder (its test split is used) or manifest."),
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="Trained model folder; repeat (or comma-separate)."
    ),
    fusion: str = typer.Option("1/2,1/3", help="Weights of RGB in the fused rows (flow: the rest)."),
    out: Path = typer.Option(
        Path("deepfeat-video-eval"), "--out", "-o", help="results.json, report.md, plots."
    ),
    split: int = typer.Option(1, min=1, help="UCF-101 split number."),
    lists: Path = typer.Option(None, help="Folder of the split lists."),
    store: Path = typer.Option(Path("deepfeat-store"), help=STORE_HELP),
    frames_per_batch: int = typer.Option(32, min=1, help="Frames per CNN forward pass."),
    workers: int = typer.Option(2, min=0, help="Video decoding threads."),
    on_bad_frame: OnBadImage = typer.Option(OnBadImage.skip, help="Skip undecodable frames or stop."),
    device: str = typer.Option(None, help="Torch device."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Accuracy per video of each model, and of RGB + flow fused: results.json + report.md."""
    from deepfeat.tasks.video import EvaluateJob, evaluate, write_report

    setup_logging(verbose)
    set_threads(threads)
    quiet_opencv()
    models = [m for text in model for m in names(text, "--model")]
    job = EvaluateJob(
        data=data,
        models=models,
        fusion=_floats(fusion, "--fusion"),
        split=split,
        lists=lists,
        store=store,
        out=out,
        batch_size=frames_per_batch,
        workers=workers,
        on_bad_frame=on_bad_frame.value,
        device=device,
    )
    result = evaluate(job, progress=True, echo=typer.echo)
    paths = write_report(
        result,
        out,
        title=f"deepfeat video evaluation: {result.provenance['data']}",
        context={"data": data, "models": ", ".join(models)},
    )
    typer.echo(f"\naccuracy per video (%), {len(result.video_ids)} videos:")
    header, rows = result.table()
    typer.echo(text_table(rows, header))
    for source, why in result.unscored[:10]:
        typer.echo(f"not scored {source}: {why}")
    typer.echo(f"results: {paths['results']}\nreport:  {paths['report']}")


@video_app.command("predict")
@friendly
def predict_command(
    clips: list[Path] = typer.Argument(..., help="Video files to classify."),
    model: list[str] = typer.Option(..., "--model", "-m", help="Model folder; two (RGB and flow) are fused."),
    fusion: str = typer.Option("1/3", help="Weight of RGB when fusing an RGB and a flow model."),
    top: int = typer.Option(5, min=1, help="Classes shown per file."),
    json_out: Path = typer.Option(None, "--json", help="Also write every probability to this JSON file."),
    store: Path = typer.Option(None, help="Feature store to keep the clips' features in (default: none)."),
    device: str = typer.Option(None, help="Torch device."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Classify video files with a trained model (or an RGB and a flow model, fused)."""
    from deepfeat.tasks.video import predict_videos

    if json_out is not None and json_out.suffix != ".json":
        raise ConfigError(f"--json: {json_out} must end in .json")
    setup_logging(verbose)
    set_threads(threads)
    quiet_opencv()
    models = [m for text in model for m in names(text, "--model")]
    (weight,) = _floats(fusion, "--fusion")[:1]
    preds = predict_videos(
        clips, models, fusion=weight, top_k=top, store=store, device=device, progress=False
    )
    for p in preds:
        if p.error:
            typer.echo(f"{p.path}: cannot classify ({p.error})")
        else:
            typer.echo(f"{p.path}: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in p.top))
    if json_out is not None:
        write_result(
            json_out.parent,
            json_out.stem,
            {"models": models, "fusion": weight, "predictions": [p.to_dict() for p in preds]},
            kind="video-predictions",
            device=device,
        )
    if all(p.error for p in preds):
        raise typer.Exit(2)


video_app.add_typer(describe_app, name="describe")
