"""Pooling of layer outputs into one vector per image, and the feature ablations of Agrawal's report
(chapter 5) that ask whether the information is in where a filter fires or in how strongly.

========== =====================================================================================
name       vector per image for a map of shape (C, H, W)
========== =====================================================================================
avg        mean over the H x W positions of each map (C values)
max        max over the positions of each map (C values); ``sp-max`` is the same thing
unroll     all C x H x W values, channel-major (Caffe's blob order)
sp-shuffle unrolled after an independent random permutation of the H x W positions of every map
           of every image (seeded per image, so reruns and resumed runs agree)
bin        unrolled, then 1 where the value is > 0 and 0 elsewhere
sp-max-bin max over the positions, then binarised (> 0)
========== =====================================================================================

Vector layers (fc, logits, prob) have no spatial extent: ``avg``, ``max`` and ``unroll`` leave them
as they are (stored once, as ``unroll``), ``bin`` binarises them, and the spatial ablations
(``sp-shuffle``, ``sp-max-bin``) are refused.

Everything but ``avg`` and ``max`` can be computed later from stored ``unroll`` features (and
``sp-max-bin`` from ``max``), without running the network again: see :func:`derivable_from`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from deepfeat.errors import ConfigError, UnknownNameError

POOLINGS = ("avg", "max", "unroll", "sp-shuffle", "bin", "sp-max-bin")
ALIASES = {"sp-max": "max", "mean": "avg", "flatten": "unroll"}
SPATIAL_ONLY = ("sp-shuffle", "sp-max-bin")
NEEDS_SEED = ("sp-shuffle",)


def canonical_pool(pool: str, spatial: bool = True) -> str:
    """Canonical name of a pooling for a spatial or a vector layer (aliases resolved)."""
    name = ALIASES.get(pool, pool)
    if name not in POOLINGS:
        raise UnknownNameError("pooling", pool, [*POOLINGS, *ALIASES])
    if not spatial:
        if name in SPATIAL_ONLY:
            raise ConfigError(
                f"pooling {pool!r} needs a spatial layer (conv or pool map); for vector layers use "
                "avg, max, unroll (all the identity) or bin"
            )
        if name in ("avg", "max"):
            name = "unroll"
    return name


def item_seed(random_state: int, item_id: str) -> int:
    """Seed of the spatial permutations of one image: depends on the run's seed and the image id
    only, not on batch composition or order."""
    digest = hashlib.sha256(f"{random_state}\0{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def pool_maps(
    x: torch.Tensor,
    pool: str,
    *,
    item_ids: Sequence[str] | None = None,
    random_state: int = 0,
) -> torch.Tensor:
    """Pool a batch of layer outputs into float32 vectors of shape (N, D).

    ``x`` is (N, C, H, W) for spatial layers or (N, D) for vector layers. ``item_ids`` (one per image)
    seed ``sp-shuffle``.
    """
    spatial = x.dim() == 4
    if x.dim() not in (2, 4):
        raise ConfigError(f"expected layer outputs of shape (N, C, H, W) or (N, D), got {tuple(x.shape)}")
    name = canonical_pool(pool, spatial)
    x = x.float()
    if not spatial:
        return (x > 0).float() if name == "bin" else x.contiguous()
    if name == "avg":
        return x.mean(dim=(2, 3))
    if name == "max":
        return x.amax(dim=(2, 3))
    if name == "sp-max-bin":
        return (x.amax(dim=(2, 3)) > 0).float()
    if name == "unroll":
        return x.flatten(1)
    if name == "bin":
        return (x > 0).float().flatten(1)
    # sp-shuffle
    if item_ids is None or len(item_ids) != x.shape[0]:
        raise ConfigError("sp-shuffle needs one item id per image to seed its permutations")
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    perms = torch.empty((n, c, h * w), dtype=torch.long)
    gen = torch.Generator()
    for i, item_id in enumerate(item_ids):
        gen.manual_seed(item_seed(random_state, item_id))
        perms[i] = torch.rand((c, h * w), generator=gen).argsort(dim=1)
    return flat.gather(2, perms.to(flat.device)).flatten(1)


def derivable_from(pool: str) -> list[str]:
    """Stored poolings from which ``pool`` can be computed without the network (best first)."""
    name = ALIASES.get(pool, pool)
    if name == "unroll":
        return []
    if name == "sp-max-bin":
        return ["max", "unroll"]
    return ["unroll"]


def derive(
    stored: torch.Tensor,
    stored_pool: str,
    pool: str,
    shape: tuple[int, ...],
    *,
    item_ids: Sequence[str] | None = None,
    random_state: int = 0,
) -> torch.Tensor:
    """Compute pooling ``pool`` from stored vectors of pooling ``stored_pool``.

    ``shape`` is the per-image layer shape, (C, H, W) for spatial layers; the result equals
    :func:`pool_maps` applied to the original maps.
    """
    if stored_pool == "max" and ALIASES.get(pool, pool) == "sp-max-bin":
        return (stored > 0).float()
    if stored_pool != "unroll":
        raise ConfigError(f"pooling {pool!r} cannot be derived from stored {stored_pool!r} features")
    maps = stored.reshape(stored.shape[0], *shape)
    return pool_maps(maps, pool, item_ids=item_ids, random_state=random_state)
