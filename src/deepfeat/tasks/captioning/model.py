"""A trained captioner as one file: the vocabulary, the sequence model, the module from stored image
features to its conditioning vectors (standardisation, and the fine-tuned CNN stages when any) and the
feature specification (backbone, weights, layer, preprocessing) to compute those features for new
images. Saved through :mod:`deepfeat.checkpoint` (kind ``"caption-model"``): state dicts plus JSON,
read back without running code from the file.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepfeat.backbones import Backbone
from deepfeat.checkpoint import keeps_rng, load_checkpoint, save_checkpoint
from deepfeat.errors import CheckpointError, ConfigError
from deepfeat.tasks.captioning.features import FeatureSpec, conditioner
from deepfeat.tasks.text.decoders import ConditionedDecoder, DecoderConfig
from deepfeat.tasks.text.decoding import Decoded, Strategy, generate
from deepfeat.tasks.text.vocabulary import Vocabulary

KIND = "caption-model"


def image_seed(seed: int, image_id: str) -> int:
    """The sampling seed of one image: a function of the run's seed and the image's id only."""
    return zlib.crc32(f"{int(seed)}\0{image_id}".encode()) & 0x7FFFFFFF


@dataclass
class CaptionModel:
    """Everything needed to caption images (see the module docstring). ``about``: how it was trained
    (data, split, options, history), plain JSON."""

    vocabulary: Vocabulary
    decoder: ConditionedDecoder
    conditioner: nn.Module
    features: FeatureSpec
    input_shape: tuple[int, ...]
    about: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        c = self.decoder.config
        return f"{c.architecture} {c.unit}" + (
            f" FT>{self.features.finetune_from}" if self.features.finetune_from else ""
        )

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @torch.no_grad()
    def conditions(self, values: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Conditioning vectors (N, cond_dim) of stored image features (N, ...), in eval mode."""
        self.conditioner.eval()
        x = torch.as_tensor(np.asarray(values, dtype=np.float32))
        parts = [
            self.conditioner(x[i : i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.decoder.config.cond_dim)

    def caption(
        self,
        values: np.ndarray | torch.Tensor,
        strategy: Strategy | None = None,
        *,
        ids: Sequence[str] | None = None,
        seed: int = 0,
        batch_size: int = 64,
        progress: bool = False,
    ) -> tuple[list[list[str]], Decoded]:
        """Captions (words) of images given by their stored features, and the raw decoding result.
        Sampling seeds derive from ``seed`` and each image's id (default: its position)."""
        ids = [str(i) for i in range(len(values))] if ids is None else list(ids)
        cond = self.conditions(values)
        decoded = generate(
            self.decoder,
            cond,
            strategy or Strategy(),
            seeds=[image_seed(seed, i) for i in ids],
            max_length=self.vocabulary.max_length,
            batch_size=batch_size,
            progress=progress,
        )
        return [self.vocabulary.decode(t) for t in decoded.tokens], decoded

    def check_strategy(self, strategy: Strategy) -> Strategy:
        """``strategy`` validated for this model: its minimum length within the model's caption limit."""
        strategy.validate()
        if strategy.min_length > self.vocabulary.max_length:
            raise ConfigError(
                f"min_length (--min-length) {strategy.min_length} is above this model's caption length limit "
                f"{self.vocabulary.max_length} (its vocabulary's max_length); give at most that"
            )
        return strategy

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically (no random states: a model, not a training checkpoint)."""
        return save_checkpoint(
            path,
            {"decoder": self.decoder.state_dict(), "conditioner": self.conditioner.state_dict()},
            kind=KIND,
            meta={
                "vocabulary": self.vocabulary.to_dict(),
                "decoder": self.decoder.config.to_dict(),
                "features": self.features.to_dict(),
                "input_shape": list(self.input_shape),
                "about": self.about,
            },
            rng=False,
        )

    @classmethod
    @keeps_rng
    def load(cls, path: str | os.PathLike, *, backbone: Backbone | None = None) -> CaptionModel:
        """Read a model written by :meth:`save` (a folder stands for its ``model.pt``); the backbone
        is needed (loaded from the spec when not given) only for fine-tuned stages."""
        path = Path(path)
        if path.is_dir():
            path = path / "model.pt"
        ckpt = load_checkpoint(path, kind=KIND)
        try:
            meta = ckpt.meta
            vocab = Vocabulary.from_dict(meta["vocabulary"])
            config = DecoderConfig.from_dict(meta["decoder"])
            spec = FeatureSpec.from_dict(meta["features"])
            shape = tuple(int(s) for s in meta["input_shape"])
            decoder = ConditionedDecoder(config)
            decoder.load_state_dict(ckpt.state["decoder"])
            state = ckpt.state["conditioner"]
            mean, std = state["mean"] if "mean" in state else state["1.mean"], None
            std = state["std"] if "std" in state else state["1.std"]
            if spec.finetune_from is not None and backbone is None:
                backbone = spec.load()
            module = conditioner(spec, mean, std, backbone=backbone, map_shape=shape)
            module.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: damaged caption model ({type(exc).__name__}: {exc})") from None
        decoder.eval()
        module.eval()
        return cls(
            vocabulary=vocab,
            decoder=decoder,
            conditioner=module,
            features=spec,
            input_shape=shape,
            about=dict(meta.get("about", {})),
        )
