"""deepfeat analyze: every command end to end on a small generated tree."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from deepfeat.cli.main import app
from tests.conftest import photo

runner = CliRunner()


def tree(root, n_per_class: int = 6):
    """Three classes that differ in colour, so that filters and probes have something to find."""
    for c, name in enumerate(["red", "green", "blue"]):
        for i in range(n_per_class):
            im = photo(10 * c + i, (64, 64)).astype(np.int32)
            im[..., c] = np.clip(im[..., c] + 90, 0, 255)
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im.astype(np.uint8)).save(path)
    return root


def test_entropy_selectivity_filters_embed(tmp_path):
    data = str(tree(tmp_path / "tree"))
    out = tmp_path / "out"
    common = ["--out", str(out)]
    r = runner.invoke(
        app, ["analyze", "entropy", data, "--layers", "stage6,head", "--thresholds", "20", *common]
    )
    assert r.exit_code == 0, r.output
    result = json.loads((out / "entropy.json").read_text())
    head = result["result"]["network"]["head"]
    assert set(head) == {"label", "weighted", "spmax"} and len(head["label"]["aue"]) == 1280
    assert "weighted" not in result["result"]["network"]["stage6"]  # residual outputs go negative
    assert result["result"]["skipped"]
    assert max(head["spmax"]["aue"]) <= np.log(3) + 1e-9
    assert head["label"]["classes"] == ["blue", "green", "red"]  # names, not 0, 1, 2
    assert (out / "entropy_mcaue_label.png").exists() and (out / "entropy_aue_hist_spmax.png").exists()

    r = runner.invoke(app, ["analyze", "selectivity", data, "--layer", "stage6", *common])
    assert r.exit_code == 0, r.output
    sel = json.loads((out / "selectivity_stage6.json").read_text())["result"]
    assert (
        np.array(sel["top_filters"]).shape == (3, 5) and (out / "selectivity_stage6_precision.png").exists()
    )

    r = runner.invoke(app, ["analyze", "filters", data, "--layer", "stage6", *common])
    assert r.exit_code == 0, r.output
    filt = json.loads((out / "filters_stage6.json").read_text())["result"]
    assert len(filt["table"]) == 3 and filt["ks"][-1] == 192
    assert filt["classes"] == [row["class"] for row in filt["table"]] == ["blue", "green", "red"]
    assert "class=blue" in r.output

    r = runner.invoke(app, ["analyze", "embed", data, "--layer", "pool", "--perplexity", "5", *common])
    assert r.exit_code == 0, r.output
    emb = json.loads((out / "embed_pool_tsne.json").read_text())
    assert np.isfinite(np.array(emb["result"]["coords"])).all() and (out / "embed_pool_tsne_map.png").exists()
    for pool in ("max", "avg"):  # each pooling its own files (the second overwrote the first)
        r = runner.invoke(
            app, ["analyze", "embed", data, "--layer", "stage6", "--pool", pool, "--perplexity", "5", *common]
        )
        assert r.exit_code == 0, r.output
    assert (out / "embed_stage6-max_tsne.json").exists() and (out / "embed_stage6-avg_tsne.json").exists()


def test_ablations_and_checkpoints(tmp_path):
    data = str(tree(tmp_path / "tree", 5))
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "analyze",
            "ablations",
            data,
            "--layers",
            "stage6",
            "--protocol",
            "kshot:2",
            "--splits",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    table = json.loads((out / "ablations.json").read_text())["result"]["table"]
    assert set(table["stage6"]) == {
        f"{p} (svm)" for p in ("unroll", "sp-shuffle", "sp-max", "sp-max-bin", "bin")
    }
    # the table is printed too, as the JSON holds it (one split: the mean alone)
    assert "accuracy (%), one split:" in r.output or "(%), one split:" in r.output
    printed = next(line for line in r.output.splitlines() if line.startswith("stage6"))
    assert f"{100 * table['stage6']['bin (svm)']['mean']:.2f}" in printed

    # two checkpoints of a (one-epoch) fine-tuning run, analysed layer by layer
    ck = tmp_path / "ck"
    r = runner.invoke(
        app, ["finetune", data, "--epochs", "2", "--batch-size", "5", "--lr", "0.01", "--out", str(ck)]
    )
    assert r.exit_code == 0, r.output
    files = f"{ck / 'epoch-1.pt'},{ck / 'epoch-2.pt'}"
    r = runner.invoke(
        app,
        [
            "analyze",
            "checkpoints",
            data,
            "--checkpoints",
            files,
            "--layers",
            "stage6,pool",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "checkpoints.json").read_text())["result"]
    assert set(res["table"]) == {"stage6", "pool"} and all(len(v) == 2 for v in res["table"].values())
    assert all(0 <= x <= 1 for v in res["table"].values() for x in v.values())
    assert (out / "checkpoints_curves.png").exists()
    printed = next(line for line in r.output.splitlines() if line.startswith("pool"))
    assert f"{100 * list(res['table']['pool'].values())[-1]:.2f}" in printed


def test_bad_inputs(tmp_path):
    data = str(tree(tmp_path / "tree", 3))
    r = runner.invoke(app, ["analyze", "entropy", data, "--layers", "stage9", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "stage9" in r.output
    r = runner.invoke(app, ["analyze", "embed", data, "--method", "pca", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "pca" in r.output


def test_entropy_refuses_a_bad_after_file_or_method_before_any_work(tmp_path):
    data = str(tree(tmp_path / "tree", n_per_class=2))
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["analyze", "entropy", data, "--after", str(tmp_path / "bad.pt"), "--out", str(out)]
    )
    assert r.exit_code == 2 and "bad.pt" in r.output, r.output
    r = runner.invoke(app, ["analyze", "entropy", data, "--methods", "label,entropic", "--out", str(out)])
    assert r.exit_code == 2 and "unknown entropy method 'entropic'" in r.output, r.output
    assert not (out / "store").exists()  # nothing extracted


def test_weighted_entropy_of_signed_layers_only_names_the_cause_and_bad_files_are_listed(tmp_path):
    """stage4 (a residual block's output) has negative responses: with weighted entropy alone there
    was 'methods must be a non-empty list', and the files left out were only in the JSON."""
    data = tree(tmp_path / "tree", n_per_class=2)
    (data / "red" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "analyze",
            "entropy",
            str(data),
            "--layers",
            "stage4",
            "--methods",
            "weighted",
            "--thresholds",
            "5",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 2 and "needs non-negative responses" in r.output and "stage4" in r.output
    assert "non-empty list" not in r.output
    assert "skipped 1 files" in r.output and "broken.png" in r.output


def test_one_class_is_refused_by_name_before_any_extraction(tmp_path):
    data = tree(tmp_path / "tree", n_per_class=2)
    for name in ("green", "blue"):
        for f in (data / name).iterdir():
            f.unlink()
        (data / name).rmdir()
    for command in (["entropy"], ["selectivity", "--layer", "stage6"], ["filters", "--layer", "pool"]):
        out = tmp_path / command[0]
        r = runner.invoke(app, ["analyze", *command, str(data), "--out", str(out)])
        assert r.exit_code == 2, r.output
        assert "the images are of 1 class ('red')" in r.output and "needs 2 or more" in r.output
        assert not (out / "store").exists()  # refused before the network ran
