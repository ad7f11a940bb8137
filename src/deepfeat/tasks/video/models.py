"""Clip classifiers over per-frame CNN features: the single-frame baseline and LRCN (thesis Section 4.3).

- :class:`SingleFrame`: every frame classified on its own by a linear softmax layer (dropout first);
  a clip's or video's probabilities are the average of its frames' softmax outputs.
- :class:`LRCN`: the frames' features, in order, into an LSTM (the unit of Section 4.1; torch's
  ``nn.LSTM``), dropout, and a linear softmax layer at every time step; a clip's probabilities are the
  average of its steps' softmax outputs and a video's the average over its clips (16 frames with a
  stride of 8 at test time).

Both are trained to predict the video's class at every time step. With ``top`` (see
:func:`top_stages`), the last stages of the CNN run inside the model on cached maps of a lower layer,
so that they are fine-tuned with it; by default the CNN is frozen and its features come from the store.
:class:`VideoClassifier` wraps a trained network with its class names and settings: sequences of
frame features in, class probabilities out, for any label set.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deepfeat.backbones.backbone import Backbone
from deepfeat.data.video import clip_windows
from deepfeat.errors import ConfigError
from deepfeat.tasks.video.features import grid_pool

MODELS = ("single", "lrcn")


@dataclass(frozen=True)
class TopSpec:
    """The fine-tunable top of a backbone: the layer whose maps are cached (``source``), the modules
    that turn them into the ``output`` layer (``"flatten"`` flattens), in order."""

    source: str
    modules: tuple[str, ...]
    output: str


TOP_STAGES = {
    "efficientnet_lite0": TopSpec("stage7", ("conv_head", "bn2"), "head"),
    "alexnet": TopSpec(
        "pool5", ("avgpool", "flatten", "classifier.0", "classifier.1", "classifier.2"), "fc6"
    ),
    "vgg16": TopSpec("pool5", ("avgpool", "flatten", "classifier.0", "classifier.1"), "fc6"),
    "resnet50": TopSpec("res4", ("layer4",), "res5"),
}


def top_spec(backbone: Backbone, layer: str) -> TopSpec:
    """The top stages of ``backbone`` ending at ``layer``; a ConfigError naming what is supported."""
    spec = TOP_STAGES.get(backbone.name)
    if spec is None:
        raise ConfigError(
            f"fine-tuning top stages is defined for {', '.join(TOP_STAGES)}, not {backbone.name!r}; "
            "train on frozen features (fine_tune='none')"
        )
    if layer != spec.output:
        raise ConfigError(
            f"fine-tuning the top stages of {backbone.name} trains {spec.source} -> {spec.output}; "
            f"use layer {spec.output!r} (got {layer!r})"
        )
    return spec


class TopStages(nn.Module):
    """Trainable copies of a backbone's top modules, then grid pooling; frozen BatchNorm statistics."""

    def __init__(self, backbone: Backbone, spec: TopSpec, grid: int):
        super().__init__()
        self.grid = grid
        self.names = list(spec.modules)
        self.stages = nn.ModuleList(
            nn.Flatten(1) if n == "flatten" else copy.deepcopy(backbone.submodule(n)) for n in spec.modules
        )
        for p in self.stages.parameters():
            p.requires_grad_(True)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps
        for stage in self.stages:
            x = stage(x)
        return grid_pool(x, self.grid)

    def train(self, mode: bool = True) -> TopStages:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class SingleFrame(nn.Module):
    """Dropout and a linear layer per frame: (B, T, D) -> logits (B, T, C)."""

    def __init__(self, dim: int, n_classes: int, dropout: float = 0.5):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(x))


class LRCN(nn.Module):
    """Dropout, an LSTM over time, dropout, a linear layer per step: (B, T, D) -> logits (B, T, C)."""

    def __init__(
        self,
        dim: int,
        n_classes: int,
        hidden: int = 256,
        layers: int = 1,
        dropout_in: float = 0.5,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.drop_in = nn.Dropout(dropout_in)
        self.lstm = nn.LSTM(
            dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.drop_in(x))
        return self.out(self.drop(h))


class VideoNet(nn.Module):
    """Optional trainable top stages on cached maps, then the temporal head: (B, T, *frame) -> logits."""

    def __init__(self, head: nn.Module, top: TopStages | None = None):
        super().__init__()
        self.head = head
        self.top = top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.top is not None:
            b, t = x.shape[:2]
            x = self.top(x.reshape(b * t, *x.shape[2:])).reshape(b, t, -1)
        return self.head(x)


def build_net(
    model: str,
    frame_shape: Sequence[int],
    n_classes: int,
    *,
    hidden: int = 256,
    layers: int = 1,
    dropout_in: float = 0.5,
    dropout: float = 0.5,
    top: TopStages | None = None,
) -> VideoNet:
    """The network of ``model`` (``single`` or ``lrcn``) for frames of ``frame_shape``."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if top is not None:
        with torch.no_grad():
            dim = top.eval()(torch.zeros(1, *frame_shape)).shape[1]
    else:
        dim = int(np.prod(frame_shape))
    if model == "single":
        head = SingleFrame(dim, n_classes, dropout=dropout_in)
    else:
        head = LRCN(dim, n_classes, hidden=hidden, layers=layers, dropout_in=dropout_in, dropout=dropout)
    return VideoNet(head, top)


class VideoClassifier:
    """A trained clip classifier: sequences of frame features of one stream -> class probabilities.

    ``config`` holds the model's settings (``model``, ``stream``, ``clip_length``, ``clip_stride``,
    the frame features, ...); ``classes`` the label set, in the order of the probabilities.
    """

    def __init__(self, net: VideoNet, classes: Sequence[str], config: dict, frame_shape: Sequence[int]):
        self.net = net.eval()
        self.classes = list(classes)
        self.config = dict(config)
        self.frame_shape = tuple(int(s) for s in frame_shape)

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def stream(self) -> str:
        return self.config["stream"]

    @property
    def name(self) -> str:
        return f"{self.model}/{self.stream}"

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def clip_proba(self, clips: np.ndarray | torch.Tensor) -> np.ndarray:
        """Clips (B, T, *frame) -> (B, C): the softmax at every step, averaged over the steps."""
        x = torch.from_numpy(np.array(clips, dtype=np.float32)).to(self._device())  # a copy
        if x.shape[2:] != self.frame_shape:
            raise ConfigError(
                f"clips of frames {tuple(x.shape[2:])} given; this model reads {self.frame_shape}"
            )
        with torch.inference_mode():
            return self.net.eval()(x).softmax(-1).mean(1).float().cpu().numpy()

    def video_proba(self, sequence: np.ndarray, batch: int = 64) -> np.ndarray:
        """One video's frame features (T, *frame) -> (C,): single-frame, the frames' average; LRCN, the
        average over its clip windows (``clip_length`` frames every ``clip_stride``)."""
        seq = np.asarray(sequence, dtype=np.float32)
        if self.model == "single":
            sums = [self.clip_proba(seq[i : i + batch][:, None]).sum(0) for i in range(0, len(seq), batch)]
            return np.sum(sums, axis=0) / len(seq)
        windows = clip_windows(len(seq), self.config["clip_length"], self.config["clip_stride"])
        clips = np.stack([seq[a:b] for a, b in windows])
        probs = np.concatenate([self.clip_proba(clips[i : i + batch]) for i in range(0, len(clips), batch)])
        return probs.mean(0)

    def predict_proba(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """(n_videos, C) probabilities of videos given as frame-feature sequences."""
        return (
            np.stack([self.video_proba(s) for s in sequences])
            if len(sequences)
            else np.zeros((0, len(self.classes)))
        )

    def predict(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Class indices (into ``classes``) of videos."""
        return self.predict_proba(sequences).argmax(1)

    def to(self, device: str | torch.device) -> VideoClassifier:
        self.net.to(device)
        return self

    def __repr__(self) -> str:
        return f"VideoClassifier({self.name}, {len(self.classes)} classes, frames {self.frame_shape})"
