"""CLI: ``deepfeat bigan train`` and ``deepfeat bigan evaluate`` (thesis chapter 5)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from tqdm.auto import tqdm

from deepfeat.cli.common import THREADS, VERBOSE, friendly, set_threads, setup_logging
from deepfeat.cli.parsing import ints, names
from deepfeat.report.tables import text_table
from deepfeat.tasks.bigan import TrainOptions, evaluate_run, open_training_data, train, write_report

bigan_app = typer.Typer(
    help="BiGAN: unsupervised features whose encoder becomes a backbone (thesis chapter 5).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class Arch(str, Enum):
    mlp = "mlp"
    conv = "conv"


class BiganMethod(str, Enum):
    bigan = "bigan"
    gan = "gan"
    lr = "lr"
    jlr = "jlr"
    ae_l2 = "ae-l2"
    ae_l1 = "ae-l1"
    random = "random"


class Network(str, Enum):
    encoder = "encoder"
    discriminator = "discriminator"


class Decay(str, Enum):
    exponential = "exponential"
    none = "none"


@friendly
def train_command(
    data: str = typer.Argument(
        ...,
        help="'mnist' (../shared/datasets/mnist/mnist.npz, $DEEPFEAT_MNIST) or mnist:PATH for --arch mlp; "
        "an image folder or manifest (or mnist) for --arch conv.",
    ),
    arch: Arch = typer.Option(Arch.mlp, help="mlp (permutation-invariant MNIST) or conv (images)."),
    method: BiganMethod = typer.Option(
        BiganMethod.bigan,
        help="bigan, or a baseline of Section 5.3.1: gan (discriminator features), lr / jlr (latent "
        "regressor, joint), ae-l2 / ae-l1 (autoencoders), random (initialisation only).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint, history, sample PNGs."),
    epochs: int = typer.Option(10, min=0, help="Passes over the data (the thesis: 400 on MNIST)."),
    batch_size: int = typer.Option(128, min=2, help="Images per step."),
    lr: float = typer.Option(2e-4, help="Adam step size."),
    beta1: float = typer.Option(0.5, help="Adam beta1."),
    weight_decay: float = typer.Option(2.5e-5, help="l2 decay of multiplicative weights."),
    decay: Decay = typer.Option(
        Decay.exponential, help="exponential: constant for half the epochs, then down to lr/100; or none."
    ),
    latent_dim: int = typer.Option(None, min=1, help="Latent dimension (default 50 for mlp, 64 for conv)."),
    hidden: int = typer.Option(1024, min=1, help="MLP hidden units."),
    input_size: int = typer.Option(32, help="conv: input side, 32 or 64 pixels."),
    encoder_widths: str = typer.Option("24,64,96,96,64", help="conv: encoder channels conv1..conv5."),
    gan_width: int = typer.Option(32, min=1, help="conv: base channels of G and the joint D."),
    latent_init_scale: float = typer.Option(
        25.0, help="conv: D's weights on z start N(0, 0.02 x this) (thesis 25; 1: standard)."
    ),
    minimax: bool = typer.Option(
        False, "--minimax", help="G and E descend V instead of the inverted objective."
    ),
    alternate: bool = typer.Option(
        False, "--alternate", help="Update D, then G/E (default: simultaneously)."
    ),
    sample_every: int = typer.Option(1, min=1, help="Epochs between sample / reconstruction PNGs."),
    max_images: int = typer.Option(None, min=2, help="Train on a seeded subset of this many images."),
    seed: int = typer.Option(0, min=0, help="Seed of the initialisation, order, latents, crops."),
    device: str = typer.Option(None, help="Torch device (default: cpu)."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Train a BiGAN or a baseline; a checkpoint every epoch (run the same command again to resume)."""
    setup_logging(verbose)
    set_threads(threads)
    options = TrainOptions(
        method=method.value,
        arch=arch.value,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        beta1=beta1,
        weight_decay=weight_decay,
        decay=decay.value,
        latent_dim=latent_dim,
        hidden=hidden,
        input_size=input_size,
        encoder_widths=tuple(ints(encoder_widths, "--encoder-widths", minimum=1)),
        gan_width=gan_width,
        latent_init_scale=latent_init_scale,
        inverted=not minimax,
        simultaneous=not alternate,
        sample_every=sample_every,
        max_images=max_images,
        seed=seed,
        device=device,
    ).validate()
    prepared = open_training_data(
        data, options.arch, options.input_size, progress=lambda it: tqdm(it, desc="decoding", unit="batch")
    )
    used = len(prepared) if max_images is None else min(max_images, len(prepared))
    subset = f", training on a seeded subset of {used}" if used < len(prepared) else ""
    typer.echo(
        f"{prepared.name}: {len(prepared)} images ({prepared.kind}), {len(prepared.skipped)} skipped{subset}"
    )
    for path, reason in prepared.skipped:
        typer.echo(f"skipped {path}: {reason}")
    result = train(options, prepared, out, progress=True, echo=typer.echo)
    total = sum(h["seconds"] for h in result.history)
    typer.echo(f"{len(result.history)} epochs ({total:.0f} s of training); checkpoint: {result.checkpoint}")
    if options.arch == "conv":
        typer.echo(
            f"as a backbone: deepfeat evaluate DATA --backbone bigan:{result.checkpoint} "
            "--layers conv1,conv2,conv3,conv4,conv5"
        )
    typer.echo(f"evaluate: deepfeat bigan evaluate {out}")


@friendly
def evaluate_command(
    run: Path = typer.Argument(..., help="The --out folder of 'deepfeat bigan train' (or its last.pt)."),
    data: str = typer.Option(None, help="Where the labelled data is (default: the run's own data)."),
    metric: str = typer.Option("l2,cosine", help="1-NN distances: l2 and/or cosine."),
    pixels: bool = typer.Option(True, "--pixels/--no-pixels", help="Also the 1-NN accuracy on raw pixels."),
    network: Network = typer.Option(
        None, help="encoder or discriminator (default: the run's feature network: E, or D of a gan run)."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Where results.json and report.md go (default: RUN)."),
    seed: int = typer.Option(0, min=0, help="Seed of the reconstruction pairing and image splits."),
    device: str = typer.Option(None, help="Torch device (default: cpu)."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """1-NN accuracy in the learned features (Table 5.1), reconstruction error; results.json + report.md."""
    setup_logging(verbose)
    set_threads(threads)
    metrics = tuple(names(metric, "--metric"))
    evaluation = evaluate_run(
        run,
        data=data,
        metrics=metrics,
        pixels=pixels,
        network=None if network is None else network.value,
        seed=seed,
        device=device,
        progress=lambda it: tqdm(it, desc="features", unit="batch", leave=False),
    )
    folder = out or (run if run.is_dir() else run.parent)
    paths = write_report(evaluation, folder)
    header, rows = evaluation.table()
    typer.echo(text_table(rows, header))
    rec = evaluation.reconstruction
    if rec:
        typer.echo(
            f"reconstruction l2 error {rec['error']:.4f} vs {rec['random_pairing']:.4f} for random pairs "
            f"(ratio {rec['ratio']:.3f})"
        )
    typer.echo(f"results: {paths['results']}\nreport:  {paths['report']}")


bigan_app.command("train")(train_command)
bigan_app.command("evaluate")(evaluate_command)
