from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from deepfeat.cli.main import app
from deepfeat.features.store import FeatureStore

runner = CliRunner()


def states(listing: str) -> list[str]:
    """The state column of ``deepfeat store list``'s table (the rows above its notes), sorted."""
    lines = listing.splitlines()
    column = lines[0].index("state")
    rows = []
    for line in lines[2:]:
        if line.startswith(("damaged:", "the next extraction")):
            break
        rows.append(line[column:].split()[0])
    return sorted(rows)


def test_backbones_and_layers():
    result = runner.invoke(app, ["backbones"])
    assert result.exit_code == 0 and "efficientnet_lite0" in result.output and "vgg16" in result.output
    result = runner.invoke(app, ["layers", "alexnet"])
    assert result.exit_code == 0
    assert "pool5" in result.output and "fc7" in result.output and "4096" in result.output


def test_unknown_names_give_one_line_and_exit_2(image_tree, tmp_path, monkeypatch):
    result = runner.invoke(app, ["layers", "alexnett"])
    assert result.exit_code == 2
    assert "unknown backbone 'alexnett'; valid: efficientnet_lite0" in result.output
    result = runner.invoke(
        app, ["extract", str(image_tree), "--layers", "fc7", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "unknown layer 'fc7'; valid: stem, stage1" in result.output
    assert "Traceback" not in result.output
    monkeypatch.chdir(tmp_path)  # the default store is relative: a mistake must not create it
    result = runner.invoke(app, ["extract", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such folder or manifest" in result.output
    assert not (tmp_path / "deepfeat-out").exists()


def test_extract_reports_and_reuses(bad_tree, tmp_path):
    out = tmp_path / "store"
    args = [
        "extract",
        str(bad_tree),
        "--layers",
        "stage6,pool",
        "--pool",
        "avg,max",
        "--store",
        str(out),
        "--batch-size",
        "8",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "16 items: 12 with features, 4 skipped" in result.output
    assert "zero.jpg: empty file" in result.output and "bomb.png: image too large" in result.output
    assert "stage6/max" in result.output and "network" in result.output
    assert len(FeatureStore(out).entries()) == 3  # stage6/avg, stage6/max, pool
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 through the network" in again.output
    listing = runner.invoke(app, ["store", "list", str(out)])
    assert listing.exit_code == 0 and listing.output.count("complete") == 3
    assert listing.output.splitlines()[0].split()[:3] == ["layer", "pool", "method"]
    assert listing.output.count(" activations ") == 3
    # damage shows in the listing (it said "complete" for a cut features.npy), and is repaired
    entry = next(p for p in (out / "entries").iterdir() if p.name.startswith("stage6-max"))
    data = entry / "features.npy"
    data.write_bytes(data.read_bytes()[:-8])
    listing = runner.invoke(app, ["store", "list", str(out)])
    assert listing.exit_code == 0 and states(listing.output) == ["complete", "complete", "damaged"]
    assert f"damaged: {entry.name}: features.npy is" in listing.output and "repairs" in listing.output
    assert runner.invoke(app, args).exit_code == 0
    assert states(runner.invoke(app, ["store", "list", str(out)]).output) == ["complete"] * 3
    # a changed row only shows with --checksums (it reads all the data)
    values = np.load(data, mmap_mode="r+")
    values[np.flatnonzero(np.load(entry / "valid.npy"))[0], 0] += 1.0
    values.flush()
    del values
    assert "damaged" not in runner.invoke(app, ["store", "list", str(out)]).output
    checked = runner.invoke(app, ["store", "list", str(out), "--checksums"])
    assert "do not match their journal checksum" in checked.output
    other = runner.invoke(app, ["store", "list", str(tmp_path)])
    assert other.exit_code == 2 and "not a feature store" in other.output


def test_extract_fail_mode_exits_2(bad_tree, tmp_path):
    result = runner.invoke(
        app, ["extract", str(bad_tree), "--on-bad-image", "fail", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "ants/" in result.output and "on_error='fail'" in result.output


def test_predict_cat(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    result = runner.invoke(app, ["predict", str(path), "--top", "3"])
    assert result.exit_code == 0 and "cat" in result.output.lower()


def test_predict_skips_bad_files_and_refuses_a_bad_top(tmp_path):
    good = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(good)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    result = runner.invoke(app, ["predict", str(bad), str(good)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "notes.jpg: skipped" in result.output and "cat" in result.output.lower()  # the rest still runs
    assert result.output.count("notes.jpg") == 1  # the path was printed twice
    folder = runner.invoke(app, ["predict", str(tmp_path)])
    assert (
        folder.exit_code == 1
        and folder.output.count(str(tmp_path)) == 1
        and "Is a directory" in folder.output
    )
    for top in ("0", "-3"):
        result = runner.invoke(app, ["predict", str(good), "--top", top])
        assert result.exit_code == 2 and "--top must be at least 1" in result.output, result.output


def test_demo_runs_offline_on_the_embedded_default(tmp_path):
    """The README's first command, reduced to one early layer and one split to keep the test short."""
    import json

    from typer.testing import CliRunner

    from deepfeat.cli.main import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--layers", "stage2", "--splits", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "digits: 1797 items, 10 classes" in result.output and "stage2/avg" in result.output
    data = json.loads((out / "results.json").read_text())["result"]
    assert data["protocol"]["name"] == "kshot30" and data["summary"][0]["mean_class_accuracy"]["mean"] > 0.5


def test_version_and_help_list_choices():
    from deepfeat import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"deepfeat {__version__}"
    text = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"}).output
    assert "activations|gradient|interactive|fisher" in text and "skip|fail" in text
    assert "--extract" in text and "--no-extract" in text and "--no-no-extract" not in text
    assert "<bool>" not in text


def test_scale_options_are_listed_and_checked_before_any_work(image_tree, tmp_path):
    for command in ("extract", "evaluate"):
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--cluster" in text and "--device" in text and "--amp" in text and "threads|processes" in text
    store = tmp_path / "s"
    bad = runner.invoke(app, ["extract", str(image_tree), "--store", str(store), "--cluster", "local:zero"])
    assert bad.exit_code == 2 and "local:N" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["extract", str(image_tree), "--store", str(store), "--device", "tpu"])
    assert bad.exit_code == 2 and "device must be" in bad.output
    bad = runner.invoke(app, ["evaluate", str(image_tree), "--out", str(tmp_path / "o"), "--cluster", "a b"])
    assert bad.exit_code == 2 and "cluster" in bad.output
    assert not (store / "entries").exists() and not (tmp_path / "o" / "store").exists()


def test_store_list_tells_entries_of_one_layer_and_pool_apart_by_their_method_settings():
    from deepfeat.cli.extract import _method_text

    common = {"layer": "head", "pool": "avg", "backbone": "b", "dataset": "d", "preprocess": {}}
    assert _method_text({**common, "method": "activations"}) == "activations"
    last = _method_text({**common, "method": "activeness", "config": "last", "p": 1})
    nxt = _method_text({**common, "method": "activeness", "config": "next", "p": 1})
    assert last == "activeness config=last p=1" and last != nxt


def test_store_list_shows_the_preprocessing_of_each_entry():
    from deepfeat.cli.extract import _preprocess_text

    assert _preprocess_text({"resize": "shorter", "size": 256, "crop": 224, "interpolation": "bicubic"}) == (
        "shorter 256/224"
    )
    assert _preprocess_text({"resize": "warp", "size": 224, "crop": None, "interpolation": "bilinear"}) == (
        "warp 224 bilinear"
    )
    assert _preprocess_text({"resize": "area", "size": 512, "crop": None, "multiple": 32}) == "area 512/32"
