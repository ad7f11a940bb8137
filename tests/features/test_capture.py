from __future__ import annotations

import pytest
import torch

from deepfeat.backbones import load_backbone
from deepfeat.features.capture import LayerCapture


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def test_captured_equal_direct_module_computation(effnet, batch):
    m = effnet.module
    with torch.inference_mode():
        stem = m.bn1(m.conv_stem(batch))
        x = stem
        stages = []
        for block in m.blocks:
            x = block(x)
            stages.append(x)
        head = m.bn2(m.conv_head(x))
        pooled = head.mean((2, 3))
        logits = m.classifier(pooled)
        with LayerCapture(effnet, list(effnet.catalog)) as cap:
            out = cap.run(batch)
    assert torch.allclose(out["stem"], stem, atol=1e-5)
    for i, s in enumerate(stages):
        assert torch.allclose(out[f"stage{i + 1}"], s, atol=1e-4), i
    assert torch.allclose(out["head"], head, atol=1e-4)
    assert torch.allclose(out["pool"], pooled, atol=1e-4)
    assert torch.allclose(out["logits"], logits, atol=1e-3)
    assert torch.allclose(out["prob"], logits.softmax(-1), atol=1e-5)


def test_one_forward_pass_serves_all_layers(effnet, batch):
    calls = {"model": 0, "blocks": 0}
    h1 = effnet.module.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1))
    h2 = effnet.module.blocks[0].register_forward_hook(
        lambda *a: calls.__setitem__("blocks", calls["blocks"] + 1)
    )
    try:
        with torch.inference_mode(), LayerCapture(effnet, list(effnet.catalog)) as cap:
            out = cap.run(batch)
    finally:
        h1.remove()
        h2.remove()
    assert len(out) == len(effnet.catalog)
    assert calls == {"model": 1, "blocks": 1}


def test_stops_after_deepest_requested_layer(effnet, batch):
    seen = []
    handle = effnet.module.conv_head.register_forward_hook(lambda *a: seen.append(1))
    try:
        with torch.inference_mode(), LayerCapture(effnet, effnet.catalog.resolve("stage3")) as cap:
            out = cap.run(batch)
        assert seen == [] and set(out) == {"stage3"}
        with (
            torch.inference_mode(),
            LayerCapture(effnet, effnet.catalog.resolve("stage3"), stop_early=False) as cap,
        ):
            cap.run(batch)
        assert seen == [1]
    finally:
        handle.remove()


def test_hooks_removed_after_capture(effnet, batch):
    with LayerCapture(effnet, effnet.catalog.resolve("head")):
        assert effnet.module.bn2._forward_hooks
    assert not effnet.module.bn2._forward_hooks


def test_capture_keeps_graph_when_gradients_enabled(effnet, batch):
    x = batch.clone().requires_grad_(True)
    with LayerCapture(effnet, effnet.catalog.resolve(["stage2", "logits"])) as cap:
        out = cap.run(x)
    out["logits"].sum().backward()
    assert x.grad is not None and out["stage2"].requires_grad


def test_graph_starts_only_at_layers_that_need_gradients():
    """A forward-only layer captured in the same pass as a backward method stays outside the graph,
    so neither the forward pass below the first gradient layer nor any backward pays for it."""
    from PIL import Image

    from deepfeat.backbones import load_backbone
    from deepfeat.features.capture import LayerCapture
    from tests.conftest import SMALL, photo

    bb = load_backbone("efficientnet_lite0")
    layers = bb.catalog.resolve(["stage2", "stage6", "pool"])
    x = SMALL.to_batch([SMALL(Image.fromarray(photo(0)))])
    with LayerCapture(bb, layers, stop_early=False, grad_layers={"stage6"}) as cap, torch.enable_grad():
        out = cap.run(x)
    assert not out["stage2"].requires_grad
    assert out["stage6"].requires_grad and out["stage6"].grad_fn is None  # the leaf the graph starts at
    assert out["pool"].grad_fn is not None


def test_a_capture_left_open_after_an_interrupted_pass_does_not_end_another_captures_pass(effnet, batch):
    """Hooks of a capture whose pass was interrupted and which was never closed (an abandoned
    generator, a killed task) stay on the module; they must not stop a later capture's pass early."""
    stale = LayerCapture(effnet, effnet.catalog.resolve(["stage3", "head"])).__enter__()
    try:
        with torch.inference_mode():
            try:  # its pass fails after stage3 (an error in a later hook stands in for the interruption)
                handle = effnet.module.blocks[4].register_forward_hook(lambda *a: 1 / 0)
                stale.run(batch)
            except ZeroDivisionError:
                pass
            finally:
                handle.remove()
            with LayerCapture(effnet, effnet.catalog.resolve(["stage3", "head"])) as cap:
                out = cap.run(batch)
        assert set(out) == {"stage3", "head"}
    finally:
        stale.__exit__(None, None, None)


def test_two_captures_in_one_pass_are_named(effnet, batch):
    """One module driven by two captures' passes at once (two threads on one model) is refused
    clearly rather than losing a layer."""
    outer = LayerCapture(effnet, effnet.catalog.resolve(["stage3"]))
    with outer, LayerCapture(effnet, effnet.catalog.resolve(["stage3", "head"])) as inner:
        outer._outputs, outer._stop, outer._active = {}, True, True  # outer's pass is under way
        with torch.inference_mode(), pytest.raises(RuntimeError, match="another capture"):
            inner.run(batch)


def test_a_model_pickled_during_a_pass_runs_other_captures_whole(effnet, batch):
    """Dask may serialise a worker's model to copy it to another worker while a batch runs on it;
    the copy then holds that capture's hooks mid-pass. They must not end the copy's passes early
    (a cluster run failed with "layers ['head'] were not reached by the forward pass")."""
    cloudpickle = pytest.importorskip("cloudpickle")
    copies = []
    with LayerCapture(effnet, effnet.catalog.resolve(["stage3", "head"])) as cap:
        handle = effnet.module.blocks[2].register_forward_hook(
            lambda *a: copies.append(cloudpickle.dumps(effnet))  # mid-pass: stage3 captured, head not yet
        )
        try:
            with torch.inference_mode():
                cap.run(batch)
        finally:
            handle.remove()
    copy = cloudpickle.loads(copies[0])
    copy.module.blocks[2]._forward_hooks.clear()  # (the pickling hook itself)
    assert copy.module.bn2._forward_hooks  # the capture's hooks came along
    with torch.inference_mode(), LayerCapture(copy, copy.catalog.resolve(["stage3", "head"])) as cap:
        out = cap.run(batch)
    assert set(out) == {"stage3", "head"}
