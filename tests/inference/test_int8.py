"""The INT8 path: ONNX Runtime's static quantisation of the export, calibrated on the run's training photos, used
by export.py, predict.py, evaluate.py and serve.py alike, and agreeing with the fp32 model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_config, net_spec

from catdog_lightning import load_classifier
from catdog_lightning.cli import evaluate_main, export_main, predict_main
from catdog_lightning.data.decode import decode_many
from catdog_lightning.data.scan import find_images
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cnn(tiny_dataset, tmp_path_factory) -> Path:
    """A small CNN (convolutions, BatchNorm, per-channel weights: what quantisation has to get right)."""
    tmp = tmp_path_factory.mktemp("int8")
    overrides = {"trainer": {"max_epochs": 4}, "seed_everything": 0, "data": {"image_size": 32},
                 "model": {"net": net_spec("cnn", channels=[8, 16]), "lr": 3e-3}}  # fmt: skip
    return Path(train(merge(make_tiny_config(tiny_dataset, tmp), overrides))["best_checkpoint"])


def test_the_int8_export_is_quantised_and_agrees_with_fp32(cnn, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "model.int8.onnx"
    assert export_main(["--ckpt_path", str(cnn), "--format", "onnx-int8", "--output", str(out)]) == 0
    assert "N x 3 x 32 x 32" in capsys.readouterr().out
    import onnx

    graph = onnx.load(str(out)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8_weights, "the convolution weights are stored as int8"
    paths = find_images([tiny_dataset / "test"])
    images = torch.from_numpy(decode_many(paths, 32)[0])
    fp32 = load_classifier(cnn).probabilities(images)[:, 1].numpy()
    (int8,) = ort.InferenceSession(str(out)).run(None, {"images": images.numpy().astype(np.float32) / 255})
    assert np.abs(int8 - fp32).max() < 0.1 and ((int8 > 0.5) == (fp32 > 0.5)).mean() >= 0.9
    assert not np.allclose(int8, fp32, atol=1e-6)  # really computed in other arithmetic


def test_predict_and_evaluate_take_the_int8_backend(cnn, tiny_dataset, tmp_path, capsys):
    assert predict_main([str(tiny_dataset / "test"), "--ckpt_path", str(cnn), "--backend", "int8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    torch_lines = {p.path: p.p_cat for p in load_classifier(cnn).predict([tiny_dataset / "test"])}
    assert len(lines) == len(torch_lines) == 16
    for line in lines:
        path, p_cat, _ = line.split("\t")
        assert abs(float(p_cat) - torch_lines[path]) < 0.1
    reports = {}
    for backend in ("torch", "int8"):
        report = tmp_path / f"{backend}.json"
        assert evaluate_main(["--ckpt_path", str(cnn), "--backend", backend, "--report", str(report)]) == 0
        reports[backend] = json.loads(report.read_text())
    assert "(int8)" in capsys.readouterr().out
    assert reports["int8"]["backend"] == "int8" and reports["int8"]["images"] == reports["torch"]["images"]
    assert abs(reports["int8"]["accuracy"] - reports["torch"]["accuracy"]) <= 2 / reports["torch"]["images"]


def test_a_bad_backend_is_one_line(cnn, tiny_dataset, capsys):
    assert predict_main([str(tiny_dataset / "test"), "--ckpt_path", str(cnn), "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backend must be one of torch, onnx, int8" in err
