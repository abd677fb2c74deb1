"""Using a trained model: predict, evaluate, export, and loading checkpoints safely."""

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import ROOT, make_tiny_config, write_image
from PIL import Image

from catdog_lightning import load_classifier
from catdog_lightning.cli import evaluate_main, export_main, predict_main
from catdog_lightning.data import CatDogDataModule, scan_folder
from catdog_lightning.data.decode import decode_many
from catdog_lightning.errors import ConfigError
from catdog_lightning.models import CatDogClassifier
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    # Normalised and averaged over 4 views, so predict, evaluate and both exports must all apply both.
    overrides = {
        "trainer": {"max_epochs": 3},
        "seed_everything": 1,
        "data": {"normalize": True},
        "model": {"tta_flip": True, "tta_zoom": 0.75},
    }
    metrics = train(merge(make_tiny_config(tiny_dataset, tmp), overrides))
    return Path(metrics["best_checkpoint"]), tmp / "logs", metrics


def test_predict_files_folders_and_bad_files_then_read_csv_and_json_back(trained, tiny_dataset, tmp_path, capsys):
    ckpt, _, _ = trained
    folder = tiny_dataset / "test"
    single = next((tiny_dataset / "train" / "cat").iterdir())
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    args = [str(folder), str(single), str(tmp_path / "bad.jpg"), "--ckpt_path", str(ckpt)]
    for suffix in ("csv", "json"):
        out = tmp_path / f"preds.{suffix}"
        assert predict_main([*args, "--output", str(out)]) == 0
        captured = capsys.readouterr()
        lines = captured.out.strip().splitlines()
        assert len(lines) == 17  # 16 test images + 1 file
        assert "skipped" in captured.err and "bad.jpg" in captured.err and "17 predicted, 1 skipped" in captured.err
        rows = list(csv.DictReader(out.open())) if suffix == "csv" else json.loads(out.read_text())
        assert len(rows) == 18
        by_path = {r["path"]: r for r in rows}
        bad = by_path[str(tmp_path / "bad.jpg")]
        assert bad["p_cat"] in ("", None) and bad["error"]
        for line in lines:
            path, p, label = line.split("\t")
            assert float(by_path[path]["p_cat"]) == pytest.approx(float(p), abs=1e-4)
            assert label == ("cat" if float(p) > 0.5 else "dog") == by_path[path]["label"]


def test_predict_equals_trainer_predict_on_the_same_images(trained, tiny_dataset):
    ckpt, _, _ = trained
    model = CatDogClassifier.load_from_checkpoint(ckpt, weights_only=True)
    dm = CatDogDataModule(str(tiny_dataset), image_size=16, cache=False)
    dm.setup()
    expected = torch.cat(L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).predict(model, dm))[:, 1]
    paths = [f.path for f in scan_folder(tiny_dataset / "test").files]
    got = torch.tensor([p.p_cat for p in load_classifier(ckpt).predict(paths)])
    assert torch.allclose(got, expected, atol=1e-6)


def test_evaluate_numbers_match_a_hand_count_of_its_own_predictions(trained, tiny_dataset, tmp_path, capsys):
    ckpt, _, _ = trained
    report_path = tmp_path / "report.json"
    argv = [
        "--ckpt_path",
        str(ckpt),
        "--data.data_dir",
        str(tiny_dataset),
        "--report",
        str(report_path),
        "--errors_grid",
        str(tmp_path / "errors.png"),
    ]
    assert evaluate_main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["folder"] == str(tiny_dataset / "test") and report["images"] == 16
    preds = load_classifier(ckpt).predict([f.path for f in scan_folder(tiny_dataset / "test").files])
    truth = [f.label for f in scan_folder(tiny_dataset / "test").files]
    called = [int(p.p_cat > 0.5) for p in preds]
    tp = sum(c == 1 and t == 1 for c, t in zip(called, truth, strict=True))
    tn = sum(c == 0 and t == 0 for c, t in zip(called, truth, strict=True))
    fp = sum(c == 1 and t == 0 for c, t in zip(called, truth, strict=True))
    fn = sum(c == 0 and t == 1 for c, t in zip(called, truth, strict=True))
    assert report["confusion_matrix"]["counts"] == [[tn, fp], [fn, tp]]
    assert report["accuracy"] == pytest.approx((tp + tn) / 16)
    assert report["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
    assert report["recall"] == pytest.approx(tp / (tp + fn))
    assert len(report["misclassified"]) == fp + fn
    # AUROC by hand: the share of (cat, dog) pairs the model ranks the right way round.
    cats = [p.p_cat for p, t in zip(preds, truth, strict=True) if t == 1]
    dogs = [p.p_cat for p, t in zip(preds, truth, strict=True) if t == 0]
    pairs = [(c > d) + 0.5 * (c == d) for c in cats for d in dogs]
    assert report["auroc"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    assert Image.open(tmp_path / "errors.png").size[0] > 0
    assert "accuracy" in capsys.readouterr().out


def test_no_flags_after_training_use_the_latest_run(trained, tmp_path, monkeypatch, capsys):
    ckpt, logs, _ = trained
    assert predict_main([str(ckpt.parent.parent.parent.parent / "cache"), "--logs_dir", str(logs)]) == 2
    assert "no image files" in capsys.readouterr().err
    assert evaluate_main(["--logs_dir", str(logs), "--report", str(tmp_path / "r.json")]) == 0
    assert f"Using {ckpt}" in capsys.readouterr().err


class Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('ran')",))


@pytest.mark.parametrize("main", [predict_main, evaluate_main])
def test_malicious_corrupt_and_foreign_checkpoints_are_refused_with_exit_2(
    main, trained, tmp_path, capsys, tiny_dataset
):
    ckpt, _, _ = trained
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Exploit()}, evil)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    foreign = tmp_path / "foreign.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    saved["hyper_parameters"]["hidden_dims"] = [32]  # weights of another shape
    torch.save(saved, foreign)
    text = tmp_path / "text.ckpt"
    text.write_text("hello")
    extra = [str(tiny_dataset / "test")] if main is predict_main else ["--data.data_dir", str(tiny_dataset)]
    expected = {
        evil: "refused",
        truncated: "not a readable checkpoint",
        foreign: "not a checkpoint of this model",
        text: "not a readable checkpoint",
    }
    for path, message in expected.items():
        assert main([*extra, "--ckpt_path", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err and err.count("\n") == 1, err
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists(), "unpickling ran the payload"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)


def test_resume_from_a_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"\x80\x04 truncated pickle")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--ckpt_path", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2 and "not a readable checkpoint" in out.stderr and "Traceback" not in out.stderr


def real_images(tiny_dataset, size):
    paths = [f.path for f in scan_folder(tiny_dataset / "test").files]
    images, _, _ = decode_many(paths, size, workers=1)
    return torch.from_numpy(images)


def test_torchscript_export_gives_the_same_probabilities(trained, tiny_dataset, tmp_path):
    ckpt, _, _ = trained
    assert export_main(["--ckpt_path", str(ckpt), "--format", "torchscript", "--output", str(tmp_path / "m.pt")]) == 0
    images = real_images(tiny_dataset, 16)
    expected = load_classifier(ckpt).probabilities(images)[:, 1]  # the file gives P(cat), as it always has
    files = {"contract.json": ""}
    scripted = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=files)
    got = scripted(images.float() / 255)
    assert (got - expected).abs().max().item() < 1e-5
    assert "N x 3 x 16 x 16" in json.loads(files["contract.json"])["input"]


def test_onnx_export_gives_the_same_probabilities(trained, tiny_dataset, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ckpt, _, _ = trained
    assert export_main(["--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 0
    images = real_images(tiny_dataset, 16)
    expected = load_classifier(ckpt).probabilities(images)[:, 1].numpy()  # P(cat), the file's p_cat
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (got,) = session.run(None, {"images": images.float().numpy() / 255})
    assert np.abs(got - expected).max() < 1e-5
    meta = session.get_modelmeta().custom_metadata_map
    assert "RGB" in meta["input"] and "P(cat)" in meta["output"] and json.loads(meta["classes"]) == ["dog", "cat"]
    assert [o.name for o in session.get_outputs()] == ["p_cat"]


def test_bad_tool_flags_are_one_line_exit_2(trained, tmp_path, capsys):
    ckpt, _, _ = trained
    cases = [
        (predict_main, [str(tmp_path / "nope.jpg"), "--ckpt_path", str(ckpt)], "no such file or folder"),
        (predict_main, [str(ckpt), "--ckpt_path", str(ckpt), "--output", "x.txt"], "--output x.txt"),
        (export_main, ["--ckpt_path", str(ckpt), "--format", "pickle", "--output", "m"], "--format must be one of"),
        (export_main, ["--ckpt_path", str(ckpt)], "--output is required"),
        (evaluate_main, ["--ckpt_path", str(ckpt), "--data.data_dir", str(tmp_path / "none")], "does not exist"),
        (predict_main, [str(ckpt), "--logs_dir", str(tmp_path / "empty")], "no trained run"),
    ]
    for main, argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: "), err


def test_load_classifier_api(trained, tmp_path):
    ckpt, _, _ = trained
    write_image(tmp_path / "red.png", colour=(250, 0, 0))
    (tmp_path / "broken.jpg").write_bytes(b"")
    first, second = load_classifier(ckpt).predict([tmp_path / "red.png", tmp_path / "broken.jpg"])
    assert 0 < first.p_cat < 1 and first.label in ("cat", "dog") and first.error is None
    assert second.p_cat is None and second.label is None and second.error
    with pytest.raises(ConfigError):
        load_classifier(tmp_path / "broken.jpg")


def test_docs_export_snippet_runs_as_written(trained, tiny_dataset, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    ckpt, _, _ = trained
    page = (ROOT / "docs" / "using.md").read_text()
    snippet = page.split("<!-- export-snippet -->")[1].split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    assert export_main(["--ckpt_path", str(ckpt), "--format", "onnx", "--output", "model.onnx"]) == 0
    cat = next(iter(sorted((tiny_dataset / "test" / "cat").iterdir())))
    (tmp_path / "cat.jpg").write_bytes(cat.read_bytes())
    capsys.readouterr()
    exec(compile("\n".join(line[2:] for line in snippet.splitlines()), "docs/using.md snippet", "exec"), {})
    label, p_cat = capsys.readouterr().out.split()
    expected = load_classifier(ckpt).predict([str(cat)])[0]
    assert label == expected.label and float(p_cat) == pytest.approx(expected.p_cat, abs=1e-5)


def test_small_tool_behaviours(trained, tiny_dataset, tmp_path, capsys):
    ckpt, _, _ = trained
    # load_classifier().predict takes folders, as predict.py does
    predictions = load_classifier(ckpt).predict([tiny_dataset / "test" / "cat"])
    assert len(predictions) == 8 and all(p.p_cat is not None for p in predictions)
    # predict.py with nothing readable: exit 2
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    assert predict_main(["--ckpt_path", str(ckpt), str(tmp_path / "bad.jpg")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: none of the 1 image")
    # evaluate.py says when it replaces an earlier report
    report = tmp_path / "r.json"
    for _ in range(2):
        assert evaluate_main(["--ckpt_path", str(ckpt), "--report", str(report)]) == 0
    assert "replaced the previous report" in capsys.readouterr().out


@pytest.mark.parametrize("size", [-64, 100_000, "64"])
def test_a_checkpoint_claiming_an_impossible_image_size_is_one_line_everywhere(trained, tmp_path, capsys, size):
    ckpt, _, _ = trained
    saved = torch.load(ckpt, weights_only=True)
    saved["hyper_parameters"]["image_size"] = size
    bad = tmp_path / "bad.ckpt"
    torch.save(saved, bad)
    photo = write_image(tmp_path / "p.jpg")
    calls = [
        (predict_main, [str(photo), "--ckpt_path", str(bad)]),
        (export_main, ["--ckpt_path", str(bad), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]),
    ]
    from catdog_lightning.cli import serve_main

    calls.append((serve_main, ["--ckpt_path", str(bad)]))
    for main, argv in calls:
        assert main(argv) == 2, main
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "its image size" in err and "damaged or hand-made" in err and "Traceback" not in err, err
