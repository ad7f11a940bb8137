"""Transfer evaluation: train probes on feature sets under a protocol and score them on held-out data.

For every feature set, every split of the protocol and every probe that accepts the features, a fresh
probe is fitted on the split's training rows (C chosen by cross-validation inside them) and scored on
its test rows: accuracy, mean per-class accuracy, top-5 accuracy and per-class accuracy for
single-label data; mean average precision (area and VOC07 11-point) and per-class AP for multi-label
data. Feature sets with a per-split encoder (e.g. Fisher vectors of unrolled conv maps) have the
encoder fitted on the split's training rows only, then every probe trains on the encoded rows
(:mod:`deepfeat.evaluation.encoders`).

Fits run feature set by feature set, so each set's rows are read once; ``n_jobs > 1`` runs the
(feature set, split) units in worker processes, each with its share of the CPU threads. Each
finished record is appended to a checkpoint file when one is given, so an interrupted evaluation
resumes without refitting what was done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deepfeat._runtime import usable_cores
from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.encoders import encode_split, encoder_description
from deepfeat.evaluation.probing import accepts, prepare_probe
from deepfeat.evaluation.protocols import Protocol
from deepfeat.evaluation.records import content_hash, read_checkpoint, record_key
from deepfeat.evaluation.result import EvaluationResult
from deepfeat.evaluation.scoring import chosen_C, score_method, scores_of, takes_ignore
from deepfeat.features.featureset import FeatureKind, FeatureSet
from deepfeat.probes.registry import probe_for
from deepfeat.validation import as_names, check_int


def _stack(sets: dict[str, FeatureSet], rows: dict[str, np.ndarray], key: str):
    Xs, ys, ds = [], [], []
    for domain, idx in rows.items():
        fs = sets[domain]
        Xs.append(np.asarray(fs.features[idx]))
        ys.append(fs.targets[idx])
        ds.append(None if fs.difficult is None else fs.difficult[idx])
    X = np.concatenate(Xs) if len(Xs) > 1 else Xs[0]
    bad = ~np.isfinite(X)
    if bad.any():
        raise DataError(
            f"features {key!r} hold {int(bad.sum())} NaN or infinite values in "
            f"{int(bad.any(axis=1).sum())} images; re-extract them or drop those images"
        )
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    difficult = None if any(d is None for d in ds) else np.concatenate(ds)
    return X, y, difficult


def _fit_unit(unit: dict, threads: int | None = None) -> list[dict]:
    """Fit and score every pending probe of one (feature set, split): runs in this process or a worker."""
    if threads is not None:  # a worker process: its share of the cores
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(threads)
    X_train, y_train, ignore = unit["train"]
    X_test, y_test, difficult = unit["test"]
    fs, encoder = unit["features"], unit["encoder"]
    encoded_info = {}
    if encoder is not None:
        start = time.perf_counter()
        X_train, X_test, _ = encode_split(encoder, fs, X_train, X_test)
        encoded_info = {"encoder_seconds": time.perf_counter() - start, "encoded_dim": int(X_train.shape[1])}
    out = []
    for probe_name, template, key in unit["probes"]:
        probe = prepare_probe(template, fs, encoded=encoder is not None)
        start = time.perf_counter()
        # 'difficult' entries are left out of a label's loss by probes whose fit takes ignore=; others
        # (scikit-learn's) train on them as labelled, which the record says
        masked = unit["multilabel"] and ignore is not None and takes_ignore(probe)
        if masked:
            probe.fit(X_train, y_train, ignore=ignore)
        else:
            probe.fit(X_train, y_train)
        unmasked = unit["multilabel"] and not masked and ignore is not None and np.any(ignore)
        extra = {"difficult_in_training": "trained as labelled (fit takes no ignore=)"} if unmasked else {}
        fit_seconds = time.perf_counter() - start
        metrics, per_class = scores_of(
            probe, X_test, y_test, unit["n_classes"], unit["multilabel"], difficult
        )
        split = unit["split"]
        out.append(
            {
                "key": key,
                "split": split.name,
                "seed": split.seed,
                "mode": split.info.get("mode"),
                "features": unit["name"],
                "probe": probe_name,
                "metrics": metrics,
                "per_class": per_class,
                "C": chosen_C(probe),
                "cv": getattr(probe, "cv_results_", None),
                "n_train": len(X_train),
                "n_test": len(X_test),
                "fit_seconds": fit_seconds,
                **encoded_info,
                **extra,
            }
        )
    return out


def draw_splits(protocol: Protocol, first: FeatureSet, target: FeatureSet | None, source_name=None):
    """The protocol's splits of a feature set's rows (and of the target domain's, for adaptation)."""
    if protocol.two_domains:
        if target is None:
            raise ConfigError("domain adaptation needs target-domain feature sets")
        if list(target.classes) != list(first.classes):
            raise DataError(f"source and target have different classes: {first.classes} vs {target.classes}")
        return protocol.splits(
            first.targets, first.classes, target_targets=target.targets, source_name=source_name
        )
    return protocol.splits(first.targets, first.classes, split_names=first.splits)


def _check_label_training_rows(splits, source: FeatureSet, target: FeatureSet | None) -> None:
    """Multi-label data: every label needs positive and negative training images in every split (a
    one-vs-rest probe has nothing to learn otherwise); the labels are named, before any fit."""
    sets = {"data": source, "source": source, "target": target}
    for split in splits:
        Y = np.concatenate([np.asarray(sets[domain].targets)[idx] for domain, idx in split.train.items()])
        counted = np.concatenate(  # 'difficult' entries are left out of their label's loss
            [
                np.ones_like(np.asarray(sets[d].targets)[idx], dtype=bool)
                if sets[d].difficult is None
                else ~np.asarray(sets[d].difficult, dtype=bool)[idx]
                for d, idx in split.train.items()
            ]
        )
        positives, negatives = (Y.astype(bool) & counted).sum(0), (~Y.astype(bool) & counted).sum(0)
        bad = np.flatnonzero((positives == 0) | (negatives == 0))
        if bad.size:
            labels = ", ".join(repr(source.classes[i]) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise DataError(
                f"split {split.name!r}: labels {labels} are positive for none or all of its {len(Y)} "
                "training images, not counting 'difficult' ones; a one-vs-rest probe needs both (give "
                "them training positives, or leave them out)"
            )


def _probes_by_name(probes) -> dict[str, object]:
    """``probes`` as estimators by name: a mapping as it is, probe names built by ``probe_for``."""
    if isinstance(probes, Mapping):
        for name, probe in probes.items():
            if score_method(probe) is None:
                raise ConfigError(
                    f"probe {name!r} ({type(probe).__name__}) has neither decision_function nor "
                    "predict_proba; the metrics (accuracies, average precision) rank classes by one of them"
                )
        return dict(probes)
    names = (
        as_names(probes, "probes")
        if isinstance(probes, str)
        else list(probes)
        if isinstance(probes, Sequence)
        else None
    )
    if names is None or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            "probes must be estimators by name (a dict, e.g. {'svm': LinearProbe()}) or probe names "
            f"(e.g. ['svm', 'logreg']), got {type(probes).__name__}"
        )
    return {name: probe_for(name) for name in names}


def evaluate(
    features: Mapping[str, FeatureSet] | FeatureSet,
    protocol: Protocol,
    probes: Mapping[str, object] | str | Sequence[str],
    *,
    target: Mapping[str, FeatureSet] | None = None,
    encoders: Mapping[str, object] | None = None,
    checkpoint: str | Path | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    source_name: str | None = None,
) -> EvaluationResult:
    """Evaluate every feature set with every probe that accepts it, under ``protocol``.

    ``features``: feature sets by name (all of the same dataset and rows), or one feature set.
    ``probes``: unfitted estimators by name (cloned for every fit), or probe names such as
    ``["svm", "logreg"]`` (:func:`deepfeat.probes.probe_for` with its defaults). ``target``: the
    target domain's feature sets, same names, for
    :class:`~deepfeat.evaluation.domain_adaptation.DomainAdaptation`. ``encoders``: per feature set name, an
    unfitted transformer fitted on each split's training rows before the probes (needed for unrolled
    conv maps). ``checkpoint``: a JSON-lines file of finished records, read first and appended to,
    so a rerun resumes. ``n_jobs``: worker processes for the fits (1: in this process).
    """
    if isinstance(features, FeatureSet):
        features = {features.key: features}
    if not isinstance(features, Mapping):
        raise ConfigError(
            f"features must be feature sets by name (a dict) or one FeatureSet, got {type(features).__name__}"
        )
    if not features:
        raise ConfigError("no feature sets to evaluate")
    probes = _probes_by_name(probes)
    if not probes:
        raise ConfigError("no probe given")
    n_jobs = check_int("n_jobs", n_jobs, 1)
    encoders = dict(encoders or {})
    names = list(features)
    first = features[names[0]]
    for name in names[1:]:
        if features[name].ids != first.ids:
            raise DataError(f"feature sets {names[0]!r} and {name!r} cover different images")
    if protocol.two_domains and (target is None or set(target) != set(features)):
        raise ConfigError(
            "domain adaptation needs target feature sets with the same names as the source ones"
        )
    splits = draw_splits(protocol, first, None if target is None else target[names[0]], source_name)
    multilabel = first.multilabel
    if multilabel:
        _check_label_training_rows(splits, first, None if target is None else target[names[0]])
    n_classes = len(first.classes)
    usable = {}
    for name in names:  # fail before any fitting
        fs = features[name]
        if name in encoders and fs.kind is not FeatureKind.MAPS:
            raise ConfigError(
                f"features {name!r} are not unrolled conv maps; the encoder "
                f"{type(encoders[name]).__name__} needs them (pool 'unroll' of a conv layer)"
            )
        usable[name] = [p for p, t in probes.items() if accepts(t, fs, encoded=name in encoders)]
        if not usable[name]:
            prepare_probe(next(iter(probes.values())), fs, encoded=name in encoders)  # raises why

    checkpoint = None if checkpoint is None else Path(checkpoint)
    done = read_checkpoint(checkpoint)
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)

    units, records_by_key, order = [], {}, []
    for name in names:
        fs = features[name]
        enc = encoders.get(name)
        # the values only matter to a checkpoint (hashing a large memory-mapped set reads it once)
        content = "" if checkpoint is None else content_hash(fs, None if target is None else target[name])
        for split in splits:
            pending = []
            for probe_name in usable[name]:
                template = probes[probe_name]
                key = record_key(name, fs, enc, probe_name, template, split, content)
                order.append(key)
                if key in done:
                    records_by_key[key] = done[key]
                else:
                    pending.append((probe_name, template, key))
            if pending:
                units.append((name, split, pending))
    total = len(order)
    bar = tqdm(total=total, desc="evaluate", unit="fit", disable=not progress, dynamic_ncols=True)
    bar.update(len(records_by_key))

    def materialise(name, split, pending) -> dict:
        domains = (
            {"data": features[name]}
            if not protocol.two_domains
            else {"source": features[name], "target": target[name]}
        )
        return {
            "name": name,
            "features": features[name],
            "encoder": encoders.get(name),
            "split": split,
            "probes": pending,
            "train": _stack(domains, split.train, name),
            "test": _stack(domains, split.test, name)[:3],
            "multilabel": multilabel,
            "n_classes": n_classes,
        }

    def finished(recs: list[dict]) -> None:
        for rec in recs:
            records_by_key[rec["key"]] = rec
            if checkpoint is not None:
                with checkpoint.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")
            bar.set_postfix_str(f"{rec['features']} / {rec['probe']}", refresh=False)
            bar.update()

    try:
        if n_jobs == 1 or len(units) <= 1:
            for name, split, pending in units:
                finished(_fit_unit(materialise(name, split, pending)))
        else:
            _run_parallel(units, materialise, finished, n_jobs)
    finally:
        bar.close()
    return EvaluationResult(
        records=[records_by_key[k] for k in order],
        splits=splits,
        classes=list(first.classes),
        multilabel=multilabel,
        protocol=protocol.to_dict(),
        probes={k: {"class": type(p).__name__, **p.get_params()} for k, p in probes.items()},
        features={
            name: {
                "provenance": fs.provenance,
                "kind": fs.kind.value,
                "dim": fs.dim,
                "n": len(fs),
                "encoder": encoder_description(encoders.get(name)),
            }
            for name, fs in features.items()
        }
        | (
            {}
            if target is None
            else {f"target:{n}": {"provenance": fs.provenance, "n": len(fs)} for n, fs in target.items()}
        ),
    )


def _run_parallel(units, materialise, finished, n_jobs: int) -> None:
    """Fit units in ``n_jobs`` worker processes (loky), each with cores // n_jobs threads."""
    from joblib import Parallel, delayed

    threads = max(1, usable_cores() // n_jobs)
    jobs = (delayed(_fit_unit)(materialise(*u), threads) for u in units)
    for recs in Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(jobs):
        finished(recs)
