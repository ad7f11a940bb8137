from __future__ import annotations

import pytest
import torch

from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.features.pooling import canonical_pool, derivable_from, derive, pool_maps

IDS = ["a", "b", "c"]


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 5, 6, generator=g)


def test_avg_max_unroll(maps):
    assert torch.allclose(pool_maps(maps, "avg"), maps.mean((2, 3)))
    assert torch.equal(pool_maps(maps, "max"), maps.flatten(2).max(2).values)
    assert torch.equal(pool_maps(maps, "sp-max"), pool_maps(maps, "max"))
    unrolled = pool_maps(maps, "unroll")
    assert unrolled.shape == (3, 4 * 5 * 6)
    assert torch.equal(unrolled[1, 30:60], maps[1, 1].flatten())  # channel-major order


def test_unroll_of_channels_last_is_channel_major(maps):
    cl = maps.contiguous(memory_format=torch.channels_last)
    assert torch.equal(pool_maps(cl, "unroll"), pool_maps(maps, "unroll"))


def test_sp_shuffle_preserves_each_map_multiset_and_moves_values(maps):
    out = pool_maps(maps, "sp-shuffle", item_ids=IDS, random_state=0).reshape(3, 4, 30)
    flat = maps.reshape(3, 4, 30)
    assert torch.equal(out.sort(dim=2).values, flat.sort(dim=2).values)
    assert not torch.equal(out, flat)


def test_sp_shuffle_independent_per_map_and_image():
    same = torch.arange(30.0).reshape(1, 1, 5, 6).expand(2, 3, 5, 6).contiguous()
    out = pool_maps(same, "sp-shuffle", item_ids=["x", "y"], random_state=0).reshape(2, 3, 30)
    assert not torch.equal(out[0, 0], out[0, 1])  # different maps of one image
    assert not torch.equal(out[0, 0], out[1, 0])  # same map of different images


def test_sp_shuffle_seeded_by_id_not_batch_position(maps):
    full = pool_maps(maps, "sp-shuffle", item_ids=IDS, random_state=7)
    alone = pool_maps(maps[2:], "sp-shuffle", item_ids=IDS[2:], random_state=7)
    assert torch.equal(full[2:], alone)
    other_seed = pool_maps(maps, "sp-shuffle", item_ids=IDS, random_state=8)
    assert not torch.equal(full, other_seed)
    with pytest.raises(ConfigError, match="item id"):
        pool_maps(maps, "sp-shuffle")


def test_binarisation(maps):
    b = pool_maps(maps, "bin")
    assert set(b.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(b, (maps.flatten(1) > 0).float())
    smb = pool_maps(maps, "sp-max-bin")
    assert torch.equal(smb, (maps.amax((2, 3)) > 0).float())


def test_vector_layers():
    v = torch.tensor([[-1.0, 0.0, 2.0]])
    for pool in ("avg", "max", "unroll"):
        assert torch.equal(pool_maps(v, pool), v)
        assert canonical_pool(pool, spatial=False) == "unroll"
    assert torch.equal(pool_maps(v, "bin"), torch.tensor([[0.0, 0.0, 1.0]]))
    for pool in ("sp-shuffle", "sp-max-bin"):
        with pytest.raises(ConfigError, match="needs a spatial layer"):
            canonical_pool(pool, spatial=False)


def test_unknown_pool_lists_valid():
    with pytest.raises(UnknownNameError, match="valid: avg, max, unroll, sp-shuffle"):
        canonical_pool("median")


@pytest.mark.parametrize("pool", ["avg", "max", "sp-shuffle", "bin", "sp-max-bin"])
def test_derived_from_unroll_equals_direct(maps, pool):
    stored = pool_maps(maps, "unroll")
    derived = derive(stored, "unroll", pool, (4, 5, 6), item_ids=IDS, random_state=3)
    direct = pool_maps(maps, pool, item_ids=IDS, random_state=3)
    assert torch.allclose(derived, direct, atol=1e-6)


def test_sp_max_bin_derived_from_max(maps):
    assert derivable_from("sp-max-bin") == ["max", "unroll"]
    derived = derive(pool_maps(maps, "max"), "max", "sp-max-bin", (4, 5, 6))
    assert torch.equal(derived, pool_maps(maps, "sp-max-bin"))
    with pytest.raises(ConfigError, match="cannot be derived"):
        derive(pool_maps(maps, "avg"), "avg", "bin", (4, 5, 6))
