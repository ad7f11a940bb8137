"""Caption generation throughput and retrieval scoring time, against the straightforward alternatives.

Model: the LRCN_2f LSTM of the experiment (experiments/results/lrcn_captioning_tables/models/lstm_2f,
``--small`` sizes, vocabulary of flickr8k_mini's training captions) when it exists, else the same
architecture randomly initialised (then captions run to the length limit: a worst case). Inputs: the
conditioning vectors of flickr8k_mini's 250 test images (from the feature store when present, else
Gaussian vectors of the same size), and for retrieval their 1,250 reference captions.

Compared, in the same run, interleaved (:func:`_timing.interleaved`):

- generation, batched over images (deepfeat) vs one image at a time (a loop over images, the way a
  per-image decoder is usually written): greedy (beam 1), beam 5, and best of N = 100 samples at
  T = 1.5 (the thesis' strategy); captions per second;
- retrieval scoring of every (image, caption) pair: :func:`pair_log_likelihood` (the caption-only layers
  and the caption's share of the conditioned layer computed once per caption, captions in blocks of
  similar length) vs teacher-forced scoring of each image against every caption
  (:func:`sequence_log_likelihood` per image: the straightforward batched way). The alternative runs on
  ``--naive-images`` images and is extrapolated linearly to all (said in the JSON); both timed
  interleaved, medians of ``--repeats``.

Writes benchmarks/results/bench_caption.json (bench_caption_random_model.json, with a warning, when
the trained model is absent: its weights are not kept in the repository). Usage:
python benchmarks/bench_caption.py [--threads N] [--repeats R] [--images N] [--naive-images K]
(--images below 250: the retrieval time of 250 x 1,250 pairs is extrapolated linearly, said in the JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads

from deepfeat.tasks.text.decoders import ConditionedDecoder, DecoderConfig
from deepfeat.tasks.text.decoding import Strategy, generate, pair_log_likelihood, sequence_log_likelihood

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODEL = REPO / "experiments" / "results" / "lrcn_captioning_tables" / "models" / "lstm_2f"
DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS") or REPO.parent / "shared" / "datasets")
STORE = REPO / "experiments" / ".cache" / "store"
SPLIT = REPO / "experiments" / "splits" / "flickr8k_mini.json"
TARGET = {"retrieval_250x1250_minutes_at_most": 10}
FULL_PAIRS = 250 * 1250


def inputs(n_images: int):
    """(decoder, conditioning vectors, captions as index lists, description, whether the model is
    the trained one)."""
    from deepfeat.tasks.captioning import CaptionModel, read_captions, read_split

    if (MODEL / "model.pt").is_file() and (DATASETS / "flickr8k_mini").is_dir():
        model = CaptionModel.load(MODEL)
        data = read_captions(DATASETS / "flickr8k_mini")
        ids = read_split(SPLIT, data)["test"][:n_images]
        from deepfeat.tasks.captioning.features import image_features

        feats = image_features(data, model.features, model.features.load(), store=_store(), progress=False)
        index = {i: r for r, i in enumerate(feats.ids)}
        cond = model.conditions(feats.values[[index[i] for i in ids]])
        tokens = data.tokens()
        captions = [model.vocabulary.encode(t) for i in ids for t in tokens[data.index(i)]]
        what = f"trained model {MODEL.relative_to(REPO)}, flickr8k_mini test"
        return model.decoder, cond, captions, what, True
    torch.manual_seed(0)
    decoder = ConditionedDecoder(
        DecoderConfig(vocab_size=1429, cond_dim=1280, hidden_size=256, embed_size=256)
    )
    cond = torch.randn(n_images, 1280)
    rng = np.random.default_rng(0)
    captions = [[*rng.integers(4, 1429, size=rng.integers(8, 16)).tolist(), 2] for _ in range(5 * n_images)]
    return (
        decoder.eval(),
        cond,
        captions,
        "random LRCN_2f (256/256, V=1429), Gaussian inputs, random captions",
        False,
    )


def _store():
    from deepfeat.features.store import FeatureStore

    return FeatureStore(STORE) if STORE.is_dir() else None


def one_at_a_time(decoder, cond, strategy):
    out = []
    for i in range(len(cond)):
        out += generate(decoder, cond[i : i + 1], strategy, seeds=[i]).tokens
    return out


def naive_scores(decoder, cond, captions):
    rows = []
    for i in range(len(cond)):
        rows.append(
            sequence_log_likelihood(decoder, cond[i : i + 1].expand(len(captions), -1), captions).numpy()
        )
    return np.stack(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=250)
    parser.add_argument("--naive-images", type=int, default=10)
    args = parser.parse_args(argv)
    decoder, cond, captions, what, trained = inputs(args.images)
    if not trained:  # the weights are not in the repository (.gitignore): say so, keep the real result
        print(
            f"warning: no trained model at {MODEL.relative_to(REPO) / 'model.pt'} (or no flickr8k_mini): "
            "timing a random model on Gaussian inputs, written to bench_caption_random_model.json; train "
            "it with: python experiments/lrcn_captioning_tables.py train --model lstm_2f --threads 2",
            file=sys.stderr,
        )
    out = {"inputs": what, "trained_model": trained, "n_images": len(cond), "n_captions": len(captions)}
    with pinned_threads(args.threads) as threads, LoadGuard() as guard:
        gen = {}
        for label, strategy in {
            "greedy": Strategy(beam=1),
            "beam5": Strategy(beam=5),
            "sample100_T1.5": Strategy(samples=100, temperature=1.5),
        }.items():
            sub = cond if label != "sample100_T1.5" else cond[:50]
            timings, results = interleaved(
                {
                    "batched": lambda s=strategy, c=sub: (
                        generate(decoder, c, s, seeds=list(range(len(c)))).tokens
                    ),
                    "one_at_a_time": lambda s=strategy, c=sub: one_at_a_time(decoder, c, s),
                },
                repeats=args.repeats,
                warmup=0,
            )
            same = results["batched"] == results["one_at_a_time"]
            gen[label] = {
                "images": len(sub),
                "captions_per_second": {k: len(sub) / v["median"] for k, v in timings.items()},
                "speedup": timings["one_at_a_time"]["median"] / timings["batched"]["median"],
                "same_captions": same,
                "timings": timings,
            }
            print(label, json.dumps(gen[label]["captions_per_second"]), "same:", same, flush=True)
        out["generation"] = gen
        k = min(args.naive_images, len(cond))
        timings, results = interleaved(
            {
                "pair_log_likelihood": lambda: pair_log_likelihood(decoder, cond, captions),
                "per_image_teacher_forcing": lambda: naive_scores(decoder, cond[:k], captions),
            },
            repeats=args.repeats,
            warmup=0,
        )
        scores, naive = results["pair_log_likelihood"], results["per_image_teacher_forcing"]
        ours = timings["pair_log_likelihood"]["median"]
        naive_seconds = timings["per_image_teacher_forcing"]["median"] * len(cond) / k
        out["retrieval"] = {
            "pairs": int(scores.size),
            "pair_log_likelihood_seconds": ours,
            "naive_seconds_extrapolated": naive_seconds,
            "naive_measured_on_images": k,
            "timings": timings,
            "speedup": naive_seconds / ours,
            "max_abs_difference_on_measured_rows": float(np.abs(naive - scores[:k]).max()),
            # the cost is linear in the number of pairs: the thesis-size test set (250 images x 1,250
            # captions) from the measured seconds per pair when fewer images were given
            "seconds_250x1250": ours * FULL_PAIRS / scores.size,
            "seconds_250x1250_extrapolated": scores.size != FULL_PAIRS,
        }
        print(json.dumps(out["retrieval"]), flush=True)
    out["threads"] = threads
    out["load"] = guard.to_dict()
    out["target"] = TARGET
    out["target_met"] = (
        out["retrieval"]["seconds_250x1250"] / 60 <= TARGET["retrieval_250x1250_minutes_at_most"]
    )
    out["machine"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "bench_caption.json" if trained else "bench_caption_random_model.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
