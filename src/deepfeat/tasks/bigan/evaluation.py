"""Evaluation of a run: 1-nearest-neighbour accuracy in the learned feature spaces (Table 5.1) and
the reconstruction error of G(E(x)) against a random pairing.

Permutation-invariant MNIST (MLP runs): every training digit is a reference, every test digit a
query; features are the last hidden layer of the feature network (E, or D for the GAN) and, for
encoders, E's linear output (the logits the reference implementation measures distances on) and
E(x) = 2 sigmoid(logits) - 1 (the code in the prior's support). Distances are Euclidean (``l2``) or
cosine; ``pixels`` gives the same table for the raw digits. Convolutional runs on labelled image data
use the dataset's own train/test split when it has one, else a seeded 70 / 30 split per class, with
conv5 (flattened) and the output as features.

Reconstruction: the mean over images of ||G(E(x)) - x||_2 (pixels in the network's range), next to
the same distance to another image's reconstruction (a seeded random pairing without fixed points),
the chance level of an encoder that ignores its input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfeat.errors import ConfigError, DataError
from deepfeat.report.provenance import environment
from deepfeat.tasks.bigan.data import TrainingData, load_mnist, open_training_data
from deepfeat.tasks.bigan.objective import to_latent
from deepfeat.tasks.bigan.runs import Run, load_run
from deepfeat.validation import check_choice

METRICS = ("l2", "cosine")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def nearest_neighbor_predict(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, metric: str = "l2", batch: int = 1024
) -> np.ndarray:
    """Label of each test row's nearest training row (Euclidean or cosine distance; the first row
    wins ties), computed in float32 in blocks of ``batch`` queries."""
    check_choice("metric", metric, METRICS)
    ref = torch.as_tensor(np.asarray(train), dtype=torch.float32)
    queries = torch.as_tensor(np.asarray(test), dtype=torch.float32)
    if ref.ndim != 2 or queries.ndim != 2 or ref.shape[1] != queries.shape[1] or len(ref) == 0:
        raise DataError(
            "1-NN needs (n, d) train and test features of one width, got "
            f"{tuple(ref.shape)} and {tuple(queries.shape)}"
        )
    if metric == "cosine":
        ref = ref / ref.norm(dim=1, keepdim=True).clamp_min(1e-12)
        queries = queries / queries.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ref_sq = (ref * ref).sum(1)
    nearest = np.empty(len(queries), dtype=np.int64)
    for s in _chunks(len(queries), batch):
        dots = queries[s] @ ref.T  # l2: ||q - r||^2 without the constant ||q||^2
        score = -dots if metric == "cosine" else ref_sq[None, :] - 2.0 * dots
        nearest[s] = score.argmin(dim=1).numpy()
    return np.asarray(train_labels)[nearest]


def nearest_neighbor_accuracy(train, train_labels, test, test_labels, metric: str = "l2") -> float:
    """Share of test rows whose nearest training row has their label."""
    return float(
        np.mean(nearest_neighbor_predict(train, train_labels, test, metric) == np.asarray(test_labels))
    )


def feature_net_name(run: Run, network: str | None = None) -> str:
    """The network whose features are evaluated: ``network``, else the run's feature network (the
    encoder; the discriminator of a GAN run)."""
    name = network or run.model["feature_net"]["state"]
    check_choice("network", name, ("encoder", "discriminator"))
    net = getattr(run.networks, name)
    if net is None:
        raise ConfigError(f"the {run.options.method} run has no {name}")
    if name == "discriminator" and run.options.method == "bigan":
        raise ConfigError("the joint discriminator D(x, z) needs z; its features are not evaluated")
    return name


@torch.no_grad()
def network_features(run: Run, x: torch.Tensor, network: str | None = None) -> dict[str, torch.Tensor]:
    """Features of a batch in the feature network (see :func:`feature_net_name`): ``last_hidden``
    and, for encoders, ``output`` (logits) and ``latent`` (E(x))."""
    name = feature_net_name(run, network)
    net = getattr(run.networks, name)
    if run.options.arch == "mlp":
        feats = net.features(x)
        out = {"last_hidden": feats["hidden2"]}
        if name == "encoder":
            out |= {"output": feats["output"], "latent": to_latent(feats["output"])}
        return out
    h = x
    for child_name, child in net.named_children():
        if child_name == "output":
            break
        h = child(h)
    out = {"last_hidden": h}  # conv5, flattened
    if name == "encoder":
        logits = net.output(h)
        out |= {"output": logits, "latent": to_latent(logits)}
    return out


def extract(
    run: Run,
    data: TrainingData,
    rows: np.ndarray | None = None,
    batch: int = 500,
    progress=None,
    network: str | None = None,
) -> dict:
    """{feature name: (n, d) float32 array} of ``rows`` of ``data`` (centre crops, no flips)."""
    rows = np.arange(len(data)) if rows is None else np.asarray(rows)
    device = next(run.networks.items()[0][1].parameters()).device
    parts: dict[str, list[np.ndarray]] = {}
    chunks = list(_chunks(len(rows), batch))
    for s in progress(chunks) if progress else chunks:
        for k, v in network_features(run, data.batch(rows[s]).to(device), network).items():
            parts.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


@torch.no_grad()
def reconstruction_error(
    run: Run, data: TrainingData, rows: np.ndarray, seed: int = 0, batch: int = 500
) -> dict | None:
    """Mean l2 distance of G(E(x)) to x and to a randomly paired other image (None without both
    G and E)."""
    G, E = run.networks.generator, run.networks.encoder
    if G is None or E is None or len(rows) < 2:
        return None
    device = next(E.parameters()).device
    own, recon_all, x_all = [], [], []
    for s in _chunks(len(rows), batch):
        x = data.batch(np.asarray(rows)[s]).to(device)
        recon = G(to_latent(E(x))).reshape(len(x), -1)
        x_all.append(x.reshape(len(x), -1).cpu())
        recon_all.append(recon.cpu())
    x, recon = torch.cat(x_all), torch.cat(recon_all)
    order = np.random.default_rng(seed).permutation(len(rows))
    partner = np.empty_like(order)
    partner[order] = np.roll(order, -1)  # a derangement: every image paired with another one
    own = (recon - x).norm(dim=1)
    other = (recon - x[partner]).norm(dim=1)
    return {
        "error": float(own.mean()),
        "random_pairing": float(other.mean()),
        "ratio": float(own.mean() / other.mean()),
        "n_images": len(rows),
        "pixel_range": [0, 1] if data.kind == "vectors" else [-1, 1],
    }


def split_rows(
    labels: np.ndarray, splits, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(reference rows, query rows): the data's train / test (or val) split, else a seeded stratified
    split holding out ``test_fraction`` of every class."""
    if splits is not None:
        names = np.char.lower(np.asarray(splits, dtype=str))
        test = np.isin(names, ["test", "val", "valid", "validation"])
        if test.any() and (names == "train").any():
            return np.flatnonzero(names == "train"), np.flatnonzero(test)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, round(test_fraction * len(rows))) if len(rows) > 1 else 0
        test += list(rows[:k])
        train += list(rows[k:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


@dataclass
class BiganEvaluation:
    """Everything ``deepfeat bigan evaluate`` reports about a run, in memory."""

    run: dict
    nearest_neighbor: list[dict]
    reconstruction: dict | None
    history: list[dict]
    samples: dict[str, str] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """1-NN accuracy (%): one row per feature set, one column per metric."""
        metrics = list(dict.fromkeys(r["metric"] for r in self.nearest_neighbor))
        names = list(dict.fromkeys(r["features"] for r in self.nearest_neighbor))
        cells = {(r["features"], r["metric"]): r["accuracy"] for r in self.nearest_neighbor}
        rows = [
            [n] + [f"{100 * cells[(n, m)]:.2f}" if (n, m) in cells else "-" for m in metrics] for n in names
        ]
        return ["features"] + [f"1-NN {m} (%)" for m in metrics], rows

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "nearest_neighbor": self.nearest_neighbor,
            "reconstruction": self.reconstruction,
            "history": self.history,
            "samples": self.samples,
        }


FEATURE_LABELS = {
    "last_hidden": "last hidden layer",
    "output": "output (logits)",
    "latent": "E(x) = 2 sigmoid - 1",
    "pixels": "raw pixels",
}


def _label(run: Run, key: str, net: str) -> str:
    prefix = {"encoder": "E", "discriminator": "D"}[net] if key != "pixels" else ""
    text = FEATURE_LABELS[key]
    if run.options.arch == "conv" and key == "last_hidden":
        text = "conv5"
    return f"{prefix}: {text}" if prefix else text


def _latest_samples(folder: Path) -> dict[str, str]:
    out = {}
    for kind in ("samples", "reconstructions"):
        found = sorted(folder.glob(f"samples/epoch-*-{kind}.png"), key=lambda p: int(p.name.split("-")[1]))
        if found:
            out[kind] = found[-1].relative_to(folder).as_posix()
    return out


def evaluate_run(
    run: str | os.PathLike | Run,
    *,
    data: str | None = None,
    metrics: tuple[str, ...] = METRICS,
    pixels: bool = True,
    network: str | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: Callable | None = None,
) -> BiganEvaluation:
    """Evaluate ``run`` (folder, checkpoint or loaded run) on its training data's labelled digits /
    images (``data`` overrides where they are read from: ``mnist:PATH`` or an image folder);
    ``network``: evaluate the encoder or the (x-only) discriminator instead of the run's feature
    network."""
    for m in metrics:
        check_choice("metric", m, METRICS)
    if not metrics:
        raise ConfigError("metrics names nothing; valid: l2, cosine")
    run = run if isinstance(run, Run) else load_run(run, device)
    opts = run.options
    network = feature_net_name(run, network)
    spec = data or run.data.get("source", {}).get("spec")
    if not spec:
        raise ConfigError(f"{run.checkpoint}: the run does not record its data; give data= (--data)")
    if opts.arch == "mlp":
        mnist = load_mnist(spec if str(spec).startswith("mnist") else f"mnist:{spec}")
        reference = TrainingData("mnist-train", "vectors", mnist.x_train, mnist.y_train)
        queries = TrainingData("mnist-test", "vectors", mnist.x_test, mnist.y_test)
        ref_rows, test_rows = np.arange(len(reference)), np.arange(len(queries))
        where = f"MNIST train ({len(reference)}) as references, test ({len(queries)}) as queries"
    else:
        reference = open_training_data(spec, "conv", opts.input_size)
        if reference.labels is None:
            raise DataError(f"{spec}: 1-NN needs single-label data")
        queries = reference
        ref_rows, test_rows = split_rows(reference.labels, reference.splits, seed=seed)
        kind = "its train / test split" if reference.splits is not None else "a seeded 70 / 30 split"
        where = f"{reference.name}, {kind}: {len(ref_rows)} references, {len(test_rows)} queries"
    train_feats = extract(run, reference, ref_rows, progress=progress, network=network)
    test_feats = extract(run, queries, test_rows, progress=progress, network=network)
    if pixels:
        train_feats["pixels"] = reference.batch(ref_rows).reshape(len(ref_rows), -1).numpy()
        test_feats["pixels"] = queries.batch(test_rows).reshape(len(test_rows), -1).numpy()
    y_train, y_test = reference.labels[ref_rows], queries.labels[test_rows]
    rows = []
    for key in train_feats:
        for m in metrics:
            acc = nearest_neighbor_accuracy(train_feats[key], y_train, test_feats[key], y_test, m)
            rows.append(
                {
                    "features": _label(run, key, network),
                    "key": key,
                    "metric": m,
                    "accuracy": acc,
                    "dim": int(train_feats[key].shape[1]),
                    "n_train": len(ref_rows),
                    "n_test": len(test_rows),
                }
            )
    recon = reconstruction_error(run, queries, test_rows, seed=seed)
    info = {
        "checkpoint": str(run.checkpoint),
        "method": opts.method,
        "arch": opts.arch,
        "epochs": run.epoch,
        "options": opts.to_dict(),
        "feature_net": run.model["feature_net"],
        "network": network,
        "evaluation_data": where,
    }
    provenance = {**environment(device), "data": run.data, "evaluated_on": str(spec), "seed": seed}
    return BiganEvaluation(info, rows, recon, run.history, _latest_samples(run.folder), provenance)
