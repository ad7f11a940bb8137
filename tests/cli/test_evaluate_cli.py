from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deepfeat.cli.main import app

runner = CliRunner()


def test_evaluate_writes_results_and_reuses_everything(image_tree, tmp_path):
    out = tmp_path / "out"
    args = [
        "evaluate",
        str(image_tree),
        "--layers",
        "stage6,pool",
        "--protocol",
        "kshot:2",
        "--splits",
        "2",
        "--probe",
        "svm,logreg",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mean_class_accuracy (%), mean ± std over 2 splits" in result.output
    assert "stage6/avg" in result.output and "pool" in result.output
    data = json.loads((out / "results.json").read_text())["result"]
    assert data["protocol"]["name"] == "kshot2" and len(data["records"]) == 2 * 2 * 2
    prov = data["features"]["stage6/avg"]["provenance"]
    assert prov["backbone"] == "efficientnet_lite0" and prov["layer"] == "stage6" and prov["pool"] == "avg"
    assert (out / "report.md").exists() and (out / "metric_by_features.png").exists()
    assert "data:image/png;base64," in (out / "report.html").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 through the network" in again.output
    assert json.loads((out / "results.json").read_text())["result"]["records"] == data["records"]


def test_evaluate_bad_inputs_exit_2(image_tree, tmp_path):
    out = ["--out", str(tmp_path / "o")]
    r = runner.invoke(app, ["evaluate", str(image_tree), "--protocol", "kshot:4", *out])
    assert r.exit_code == 2 and "classes have fewer than 5 images" in r.output and "'ants' (4)" in r.output
    r = runner.invoke(
        app,
        ["evaluate", str(image_tree), "--no-extract", "--layers", "stage3", "--protocol", "kshot:2", *out],
    )
    assert r.exit_code == 2 and "'stage3/avg'" in r.output and "missing in the store" in r.output
    r = runner.invoke(app, ["evaluate", str(image_tree), "--protocol", "da", *out])
    assert r.exit_code == 2 and "--target" in r.output
    r = runner.invoke(app, ["evaluate", str(image_tree), "--probe", "forest", *out])
    assert r.exit_code == 2 and "unknown probe 'forest'; valid: svm" in r.output
    r = runner.invoke(app, ["evaluate", str(image_tree), "--layers", "fc7", *out])
    assert r.exit_code == 2 and "unknown layer 'fc7'" in r.output
    # another method's options were ignored silently
    r = runner.invoke(
        app, ["evaluate", str(image_tree), "--method", "fisher", "--pool", "max", "--p", "1", *out]
    )
    assert r.exit_code == 2 and "--pool, --p: not options of --method fisher" in r.output
    assert "belong to --method activations / interactive" in r.output
    # the kernel probe's option without the kernel probe, and the linear probes' with only it
    r = runner.invoke(app, ["evaluate", str(image_tree), "--kernel-normalize", "none", *out])
    assert r.exit_code == 2 and "(--kernel-normalize)" in r.output and "add 'ksvm'" in r.output
    r = runner.invoke(app, ["evaluate", str(image_tree), "--probe", "ksvm", "--normalize", *out])
    assert r.exit_code == 2 and "(--kernel-normalize)" in r.output


def test_single_class_data_is_refused(tmp_path):
    from PIL import Image

    from tests.conftest import photo

    for i in range(6):
        (tmp_path / "data" / "only").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(i)).save(tmp_path / "data" / "only" / f"{i}.png")
    r = runner.invoke(
        app, ["evaluate", str(tmp_path / "data"), "--protocol", "kshot:2", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "holds 1 class" in r.output


def test_evaluate_gradient_method_with_forward_baselines(image_tree, tmp_path):
    out = tmp_path / "grad"
    args = [
        "evaluate",
        str(image_tree),
        "--method",
        "gradient",
        "--layers",
        "logits",
        "--protocol",
        "kshot:2",
    ]
    args += ["--splits", "2", "--probe", "ksvm,svm", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())["result"]
    pairs = {(r["features"], r["probe"]) for r in data["summary"]}
    # the factored gradient goes to the kernel probe only; the forward baselines to both probes
    assert pairs == {
        ("logits/grad", "ksvm"),
        *((f, p) for f in ("logits/x_in", "logits/x_out", "logits/x_in;x_out") for p in ("ksvm", "svm")),
    }
    prov = data["features"]["logits/grad"]["provenance"]
    assert prov["form"] == "factored" and prov["d_in"] == 1280 and prov["d_out"] == 1000
    assert prov["target"] == "uniform"
    r = runner.invoke(app, [*args[:-2], "--probe", "svm", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "'logits/grad' are factored gradients" in r.output and "ksvm" in r.output
    r = runner.invoke(app, ["evaluate", str(image_tree), "--method", "gradient", "--layers", "stage3"])
    assert r.exit_code == 2 and "no weight layer" in r.output and "valid: head, logits" in r.output


def test_evaluate_interactive_rows_and_concatenation(image_tree, tmp_path):
    out = tmp_path / "ia"
    args = ["evaluate", str(image_tree), "--method", "interactive", "--layers", "stage4,head"]
    args += ["--preprocess", "interactive", "--config", "last,next", "--p", "2", "--concat"]
    args += ["--protocol", "kshot:2", "--splits", "1", "--probe", "svm", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())["result"]
    rows = {r["features"] for r in data["summary"]}
    per_layer = {
        f"{layer}/{kind}" for layer in ("stage4", "head") for kind in ("avg", "max", "last-p2", "next-p2")
    }
    assert rows == per_layer | {f"concat/{kind}" for kind in ("avg", "max", "last-p2", "next-p2")}
    prov = data["features"]["head/last-p2"]["provenance"]
    assert (
        prov["top"] == "pool" and prov["preprocess"]["resize"] == "area" and prov["preprocess"]["size"] == 512
    )
    assert data["features"]["stage4/next-p2"]["provenance"]["top"] == "stage5"
    r = runner.invoke(app, [*args[:-2], "--p", "3", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown score norm p '3'; valid: 1, 2" in r.output


def test_explicit_gradients_go_to_linear_probes(image_tree, tmp_path):
    out = tmp_path / "explicit"
    args = [
        "evaluate",
        str(image_tree),
        "--method",
        "gradient",
        "--layers",
        "logits",
        "--forms",
        "factored,explicit",
    ]
    args += ["--protocol", "kshot:2", "--splits", "1", "--probe", "ksvm,svm", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())["result"]
    pairs = {(r["features"], r["probe"]) for r in data["summary"]}
    assert pairs == {
        ("logits/grad", "ksvm"),
        ("logits/grad-explicit", "ksvm"),
        ("logits/grad-explicit", "svm"),
    }
    by = {(r["features"], r["probe"]): r for r in data["summary"]}
    # the same kernel: factored (normalised factors) and explicit (L2-normalised rows) agree exactly
    a = by[("logits/grad", "ksvm")]["mean_class_accuracy"]["mean"]
    b = by[("logits/grad-explicit", "ksvm")]["mean_class_accuracy"]["mean"]
    assert a == pytest.approx(b, abs=1e-9)


def test_evaluate_fisher_vectors_fitted_per_split(image_tree, tmp_path):
    out = tmp_path / "fv"
    args = ["evaluate", str(image_tree), "--method", "fisher", "--layers", "stage6", "--components", "4"]
    args += ["--pca-dim", "16", "--protocol", "kshot:2", "--splits", "2", "--probe", "svm", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())["result"]
    assert {(r["features"], r["probe"]) for r in data["summary"]} == {("stage6/fv4", "svm")}
    assert data["features"]["stage6/fv4"]["provenance"]["pool"] == "unroll"
    encoder = data["features"]["stage6/fv4"]["encoder"]
    assert encoder["class"] == "FisherEncoder" and encoder["n_components"] == 4
    assert all(r["encoded_dim"] == (2 * 16 + 1) * 4 for r in data["records"])  # fitted per split
    bad = ["evaluate", str(image_tree), "--method", "fisher", "--layers", "pool", "--protocol", "kshot:2"]
    r = runner.invoke(app, [*bad, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "layer 'pool' has no spatial map" in r.output
    assert not (tmp_path / "x" / "store").exists()  # refused before the network ran


def test_fisher_vectors_over_several_scales(image_tree, tmp_path):
    out = tmp_path / "ms"
    args = ["evaluate", str(image_tree), "--method", "fisher", "--layers", "stage6", "--components", "2"]
    args += [
        "--pca-dim",
        "8",
        "--scales",
        "64,96",
        "--protocol",
        "kshot:2",
        "--splits",
        "1",
        "--probe",
        "svm",
    ]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())["result"]
    prov = data["features"]["stage6/fv2"]["provenance"]
    assert [p["preprocess"]["crop"] for p in prov["scales"]] == [64, 96]  # 2x2 and 3x3 maps: 13 descriptors
    r = runner.invoke(app, [*args[:-8], "--scales", "big", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--scales takes comma-separated whole numbers" in r.output


def test_balanced_class_weights(image_tree, tmp_path):
    from PIL import Image

    from tests.conftest import photo

    # one more image of 'ants' makes the classes unequal under a random split
    Image.fromarray(photo(99)).save(image_tree / "ants" / "extra.png")
    out = tmp_path / "out"
    args = ["evaluate", str(image_tree), "--layers", "pool", "--protocol", "random:0.5", "--splits", "1"]
    result = runner.invoke(app, [*args, "--probe", "logreg", "--balanced", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())["result"]
    assert data["probes"]["logreg"]["class_weight"] == "balanced"
    # multi-label data has no class to weight: refused before any extraction
    (tmp_path / "m.csv").write_text(
        "path,labels,split\n"
        + "".join(
            f"{image_tree}/ants/img{i}.{'jpg' if i % 2 == 0 else 'png'},ants;bees,train\n" for i in range(4)
        )
    )
    refused = runner.invoke(
        app, ["evaluate", str(tmp_path / "m.csv"), "--balanced", "--out", str(tmp_path / "o2")]
    )
    assert refused.exit_code == 2 and "class weights apply to single-label" in refused.output
    assert not (tmp_path / "o2" / "store").exists()


def test_dropout_with_a_probe_that_cannot_use_it_names_the_options(tmp_path):
    for probe in ("svm-hinge", "svm,ksvm"):
        r = CliRunner().invoke(
            app,
            ["evaluate", str(tmp_path), "--probe", probe, "--dropout", "0.5", "--out", str(tmp_path / "o")],
        )
        assert r.exit_code == 2, r.output
        assert "--dropout trains on dropout copies" in r.output and "--probe" in r.output
        assert "loss=" not in r.output
    r = CliRunner().invoke(
        app,
        ["evaluate", str(tmp_path), "--method", "gradient", "--dropout", "0.5", "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 2 and "--probe ksvm (the default of --method gradient) cannot use" in r.output
