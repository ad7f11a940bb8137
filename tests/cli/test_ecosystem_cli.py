"""The command line with timm names, tar shards and Hugging Face datasets as DATA."""

from __future__ import annotations

import io
import tarfile

import pytest
from PIL import Image
from typer.testing import CliRunner

from deepfeat.cli.main import app
from tests.conftest import photo, truncated_jpeg

runner = CliRunner()


def test_backbones_all_and_typos():
    result = runner.invoke(app, ["backbones", "--all", "--match", "resnet18.*"])
    assert result.exit_code == 0 and "timm:resnet18.a1_in1k" in result.output
    tags = [line for line in result.output.splitlines() if line.startswith("timm:resnet18.")]
    assert f"{len(tags)} pretrained tags of 1 model," in result.output  # tags, not models, counted
    result = runner.invoke(app, ["backbones", "--all", "--match", "resnt18.a1*"])
    assert result.exit_code == 2 and "did you mean" in result.output and "resnet18.a1_in1k" in result.output
    # names that match, none cached: said so (it claimed no model matched, and offered look-alikes)
    result = runner.invoke(app, ["backbones", "--all", "--match", "vit_tiny*", "--cached"])
    if result.exit_code != 0:  # (0 where some vit_tiny weights are cached on this machine)
        assert result.exit_code == 2 and "has its weights in the local caches" in result.output
        assert "did you mean" not in result.output
    result = runner.invoke(app, ["layers", "timm:vit_tiny_patch16_22"])
    assert (
        result.exit_code == 2
        and "unknown timm model" in result.output
        and "vit_tiny_patch16_224" in result.output
    )
    result = runner.invoke(app, ["layers", "timm:test_vit"])
    assert result.exit_code == 0 and "stage1_cls" in result.output and "token" in result.output


def test_extract_from_tar_shards(tmp_path):
    shard = tmp_path / "data-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(5):
            buf = io.BytesIO()
            Image.fromarray(photo(i)).save(buf, format="JPEG")
            data = truncated_jpeg(i) if i == 4 else buf.getvalue()
            for name, payload in ((f"k{i}.jpg", data), (f"k{i}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    store = tmp_path / "store"
    args = ["extract", str(tmp_path / "data-{000..000}.tar"), "-b", "timm:test_vit", "--weights", "random"]
    result = runner.invoke(app, [*args, "--layers", "stage2,pool", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "5 items: 4 with features, 1 skipped" in result.output and "data-000.tar:k4.jpg" in result.output
    result = runner.invoke(
        app, ["store", "export", str(store), "pool", "--to", "npz", "--out", str(tmp_path / "p.npz")]
    )
    assert result.exit_code == 0, result.output


def test_extract_from_a_saved_hugging_face_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(photo(i)) for i in range(4)], "label": [0, 1, 0, 1]}, features=features
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "saved")
    args = ["extract", f"hf:{tmp_path / 'saved'}:train", "-b", "timm:test_vit", "--weights", "random"]
    result = runner.invoke(app, [*args, "--layers", "stage2", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "4 items: 4 with features" in result.output
    result = runner.invoke(app, ["extract", "hf:nobody/nothing", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "not in the local caches" in result.output
