"""Your own classes end to end: 2, 3 and 10 class folders of pictures the project draws (never the lesson's cat/dog
folders), trained, resumed, tested, predicted, evaluated, exported with parity and served; bad folders are one line."""

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import Server, make_tiny_config, net_spec
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catdog_lightning import load_classifier
from catdog_lightning.cli import main, predict_main
from catdog_lightning.data.synthetic import generate_classes_dataset
from catdog_lightning.inference.evaluation import evaluate, save_errors_grid
from catdog_lightning.storage.checkpoints import read_checkpoint
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge
from catdog_lightning.training.stages import evaluate_checkpoint

CLOTHES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
CLASSES = {2: ["hat", "shoes"], 3: ["hat", "pants", "shoes"], 10: CLOTHES}


@pytest.fixture(scope="module", params=sorted(CLASSES), ids=lambda n: f"{n} classes")
def trained(request, tmp_path_factory):
    names = CLASSES[request.param]
    tmp = tmp_path_factory.mktemp(f"classes{request.param}")
    root = generate_classes_dataset(tmp / "photos", names, n_train=10, n_test=3, size=24)
    config = merge(make_tiny_config(root, tmp), {"trainer": {"max_epochs": 1}, "run_name": "r"})
    return names, root, config, train(config)


def test_the_classes_are_the_folders_and_reach_the_model_and_its_checkpoint(trained):
    names, _, _, metrics = trained
    saved = read_checkpoint(metrics["best_checkpoint"])
    assert saved["hyper_parameters"]["class_names"] == names
    outputs = saved["state_dict"]["net.layers.5.bias"].shape[0]  # the MLP's last layer
    assert outputs == (1 if len(names) == 2 else len(names))
    per_class = {k for k in metrics if k.startswith("test/class_acc/")}
    if len(names) == 2:  # the lesson's metrics, as they were
        assert per_class == set() and "test/top5_acc" not in metrics
    else:
        assert per_class == {f"test/class_acc/{n}" for n in names}
        assert ("test/top5_acc" in metrics) == (len(names) >= 10)
    assert 0 <= metrics["test/acc"] <= 1 and 0 <= metrics["test/f1"] <= 1


def test_resume_test_predict_and_evaluate_agree(trained, tmp_path, capsys):
    names, root, config, metrics = trained
    further = train(merge(config, {"ckpt_path": "last", "trainer": {"max_epochs": 2}}))
    assert further["epochs_trained"] == 2
    ckpt = further["tested_checkpoint"]
    tested = evaluate_checkpoint(ckpt)
    assert tested["test/acc"] == pytest.approx(further["test/acc"])

    photos = sorted((root / "test").rglob("*.jpg"))
    predictions = load_classifier(ckpt).predict(photos)
    assert all(p.label in names and abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in predictions)
    truth = [p.parent.name for p in photos]
    right = sum(p.label == t for p, t in zip(predictions, truth, strict=True)) / len(photos)
    assert right == pytest.approx(further["test/acc"])  # test/ is the test split: the same photos, the same score

    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert predict_main([str(root / "test"), "--ckpt_path", ckpt, "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    columns = [f"p_{names[1]}"] if len(names) == 2 else [f"p_{n}" for n in names]
    assert list(rows[0]) == ["path", *columns, "label", "error"] and len(rows) == len(photos)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(photos) and {line.split("\t")[2] for line in printed} <= set(names)

    report, datamodule = evaluate(ckpt)
    assert report["classes"] == names and report["accuracy"] == pytest.approx(further["test/acc"])
    assert [c["class"] for c in report["per_class"]] == names
    counts = np.array(report["confusion_matrix"]["counts"])
    assert counts.shape == (len(names), len(names)) and counts.sum() == len(photos)
    assert np.trace(counts) == len(photos) - len(report["misclassified"])
    assert save_errors_grid(report, datamodule, tmp_path / "errors.png") == min(24, len(report["misclassified"]))
    assert main(["test", "--ckpt_path", ckpt]) == 0


def test_the_export_gives_the_checkpoints_probabilities_and_names_its_classes(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from catdog_lightning.cli import export_main

    names, root, _, metrics = trained
    ckpt = metrics["best_checkpoint"]
    output = tmp_path / "m.onnx"
    assert export_main(["--ckpt_path", ckpt, "--format", "onnx", "--output", str(output)]) == 0
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = load_classifier(ckpt).probabilities(images)
    session = ort.InferenceSession(str(output))
    (got,) = session.run(None, {"images": images.float().numpy() / 255})
    assert np.abs(got - (expected[:, 1] if len(names) == 2 else expected).numpy()).max() < 1e-5
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == names
    from catdog_lightning.inference.predictor import load_classifier as load_on

    onnx = load_on(ckpt, backend="onnx")
    assert torch.allclose(onnx.probabilities(images), expected, atol=1e-5)


def test_the_server_answers_a_label_every_probability_and_the_top_three(trained):
    pytest.importorskip("litserve")
    import httpx

    names, root, _, metrics = trained
    photo = sorted((root / "test").rglob("*.jpg"))[0]
    expected = load_classifier(metrics["best_checkpoint"]).predict([photo])[0]
    server = Server(metrics["best_checkpoint"])
    try:
        answer = httpx.post(f"{server.url}/predict", files={"image": (photo.name, photo.read_bytes())}, timeout=60)
        info = httpx.get(f"{server.url}/info", timeout=10).json()
    finally:
        server.stop()
    body = answer.json()
    assert answer.status_code == 200 and body["label"] == expected.label and "p_cat" not in body
    assert list(body["probabilities"]) == names
    assert all(abs(body["probabilities"][n] - expected.probabilities[n]) < 1e-5 for n in names)
    assert [t["label"] for t in body["top"]] == sorted(names, key=lambda n: -expected.probabilities[n])[:3]
    assert info["model"]["classes"] == names


def test_tensorboard_draws_the_confusion_matrix_and_logs_each_class(trained):
    names, _, _, metrics = trained
    events = EventAccumulator(metrics["run_dir"], size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {"val/confusion_matrix", "val/predictions"} <= set(events.Tags()["images"])
    scalars = set(events.Tags()["scalars"])
    assert all((f"val/class_acc/{n}" in scalars) == (len(names) > 2) for n in names)


def bad(tmp: Path, layout: dict[str, int]) -> Path:
    """A data folder of ``layout`` (a class folder's path under the data folder -> pictures in it)."""
    for folder, count in layout.items():
        generate_classes_dataset(tmp / "staging", ["x"], n_train=count, n_test=0, size=16)
        target = tmp / "data" / folder
        target.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(sorted((tmp / "staging" / "train" / "x").glob("*.jpg"))):
            picture.rename(target / f"{i}.jpg")
    return tmp / "data"


@pytest.mark.parametrize(
    "layout, says",
    [
        ({"train/hat": 4}, "holds one class folder (hat/): a classifier needs photos of two or more classes"),
        ({"train/hat": 4, "train/shoes": 4, "test/hat": 2, "test/socks": 2}, "socks: a class folder the model does"),
        ({"train/hat": 4, "train/shoes": 0}, "shoes holds no photo"),
        ({"train/hat": 4, "train/Hat": 4}, "class folders Hat/ and hat/ differ only in case"),
        ({"train/hat": 4, "train/ shoes": 4}, "not a usable class name"),
    ],
    ids=["one class", "a test class train lacks", "an empty class", "names clash", "a blank-edged name"],
)
def test_bad_class_folders_are_one_line_and_exit_2(tmp_path, capsys, layout, says):
    data = bad(tmp_path, layout)
    assert main(["--data.data_dir", str(data), "--data.image_size", "16", "--logs_dir", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and err.count("\n") == 0 and "Traceback" not in err and says in err, err
    assert not (tmp_path / "l").exists()  # nothing made


def test_a_class_whose_photos_are_all_unreadable_is_one_line(tmp_path, capsys):
    data = bad(tmp_path, {"train/hat": 4, "train/shoes": 4})
    for photo in (data / "train" / "shoes").glob("*.jpg"):
        photo.write_bytes(b"not a jpeg")
    assert main(["--data.data_dir", str(data), "--data.image_size", "16", "--logs_dir", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "shoes: none of its photos could be read" in err[-1], err


def test_unbalanced_folders_split_per_class_and_a_tiny_class_is_warned(tmp_path, capsys):
    from catdog_lightning.data import CatDogDataModule
    from catdog_lightning.data.datamodule import SmallClassWarning

    data = bad(tmp_path, {"train/hat": 40, "train/pants": 20, "train/skirt": 3})
    datamodule = CatDogDataModule(str(data), image_size=16, val_fraction=0.1, test_fraction=0.1)
    with pytest.warns(SmallClassWarning, match="class skirt has 3 photo"):
        datamodule.setup("fit")
    val = torch.bincount(datamodule.val_set.labels, minlength=3).tolist()
    assert val == [4, 2, 0]  # 10% of each class: stratified
    assert "hat 40, pants 20, skirt 3" in datamodule.summary


@pytest.mark.parametrize(
    "net",
    [
        {"class_path": "cnn", "init_args": {"channels": [4, 8]}},
        {"class_path": "efficientnet_lite0", "init_args": {"weights": "none"}},  # a probe
        {
            "class_path": "efficientnet_lite0",
            "init_args": {"weights": "none", "unfreeze_at_epoch": 1, "finetune_blocks": 2},
        },  # fmt: skip
        {"class_path": "efficientnet_lite0", "init_args": {"weights": "none", "unfreeze_at_epoch": 1}},
        {"class_path": "efficientnet_lite1+lite2", "init_args": {"weights": "none"}},  # the joined probe
    ],
    ids=["cnn", "probe", "block fine-tune", "whole fine-tune", "joined probe"],
)
def test_every_network_trains_on_three_classes(net, tmp_path):
    names = CLASSES[3]
    root = generate_classes_dataset(tmp_path / "photos", names, n_train=6, n_test=2, size=32)
    config = merge(make_tiny_config(root, tmp_path), {"data": {"image_size": 32, "val_fraction": 0.34},
                                                      "model": {"net": net}, "trainer": {"max_epochs": 2}})  # fmt: skip
    metrics = train(config)
    assert {f"test/class_acc/{n}" for n in names} <= set(metrics) and metrics["epochs_trained"] == 2
    predictions = load_classifier(metrics["best_checkpoint"]).predict([root / "test"])
    assert len(predictions) == 6 and all(list(p.probabilities) == names for p in predictions)


def test_the_numpy_network_stays_two_class_and_says_so_in_one_line(tmp_path, capsys):
    from lab.cli import numpy_main

    root = generate_classes_dataset(tmp_path / "photos", CLASSES[3], n_train=4, n_test=1, size=16)
    argv = ["--data.data_dir", str(root), "--data.image_size", "8", "--layer_dims", "[192, 4, 1]", "--logs_dir",
            str(tmp_path / "L")]  # fmt: skip
    assert numpy_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "two-class" in err[-1] and "holds 3 classes" in err[-1], err


def test_resuming_or_testing_after_the_class_folders_changed_is_one_line(tmp_path, capsys):
    root = generate_classes_dataset(tmp_path / "photos", CLASSES[2], n_train=6, n_test=2, size=16)
    config = merge(make_tiny_config(root, tmp_path), {"trainer": {"max_epochs": 1}, "run_name": "r"})
    ckpt = train(config)["best_checkpoint"]
    generate_classes_dataset(tmp_path / "more", ["socks"], n_train=6, n_test=2, size=16, seed=9)
    for split in ("train", "test"):
        (tmp_path / "more" / split / "socks").rename(root / split / "socks")
    logs = config["logs_dir"]
    capsys.readouterr()
    assert main(["--ckpt_path", "last", "--run_name", "r", "--logs_dir", logs, "--trainer.max_epochs", "2"]) == 2
    assert main(["test", "--ckpt_path", ckpt]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in "".join(errors)
    for line in errors:
        assert line.startswith("error: --ckpt_path: its model knows the classes hat, shoes;"), line
        assert "now holds hat, shoes, socks" in line


def test_balanced_class_weights_weigh_each_class_the_same_in_the_loss(tmp_path):
    from catdog_lightning.models import CatDogClassifier

    data = bad(tmp_path, {"train/hat": 30, "train/pants": 10, "train/skirt": 5})
    config = {
        "data": {"data_dir": str(data), "image_size": 16, "batch_size": 8},
        "model": {"net": net_spec(hidden_dims=[8]), "class_weights": "balanced"},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "logs_dir": str(tmp_path / "logs"),
    }
    captured = {}

    class Capture(L.Callback):
        def on_train_start(self, trainer, pl_module):
            captured["weight"] = pl_module.class_weight.clone()
            captured["labels"] = trainer.datamodule.train_set.labels.clone()

    train(config, callbacks=[Capture()])
    counts = torch.bincount(captured["labels"], minlength=3).double()
    assert counts.tolist() == [24, 8, 5]  # after the stratified val and test shares (10% of 5 rounds to 0)
    assert torch.allclose(captured["weight"].double(), counts.sum() / (3 * counts))  # 37/72, 37/24, 37/15
    model = CatDogClassifier(net=net_spec(hidden_dims=[8]), image_size=16, class_names=["a", "b", "c"],
                             class_weights="balanced")  # fmt: skip
    model.class_weight = captured["weight"]
    images, labels = torch.rand(6, 3, 16, 16), torch.tensor([0, 0, 0, 1, 2, 2])
    loss, _, _ = model._shared_step((images, labels), training=True)
    by_hand = torch.nn.functional.cross_entropy(model(images), labels, weight=captured["weight"])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    plain = torch.nn.functional.cross_entropy(model(images), labels)
    assert abs(loss.item() - plain.item()) > 1e-4, "the weights change the training loss"
    assert model._shared_step((images, labels))[0].item() == pytest.approx(plain.item(), rel=1e-6), "not the others"


def test_balanced_class_weights_leave_an_even_split_exactly_as_unweighted():
    """Cat/dog folders of equal counts: every weight is 1, the loss is bit for bit the lesson's BCE (the pretrained
    recipes weigh classes, and their catdog-a results stand)."""
    from catdog_lightning.models import CatDogClassifier

    model = CatDogClassifier(net=net_spec(hidden_dims=[8]), image_size=16, class_weights="balanced")
    counts = torch.tensor([900.0, 900.0], dtype=torch.float64)
    model.class_weight = (counts.sum() / (2 * counts)).float()
    images, labels = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 1, 0, 1, 1, 1, 0])
    loss, _, _ = model._shared_step((images, labels), training=True)
    assert torch.equal(model.class_weight, torch.ones(2))
    assert torch.equal(loss, torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels.float()))
