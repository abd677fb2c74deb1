import lightning as L
import pytest
import torch
from helpers import net_spec
from torch import nn

from catdog_lightning.errors import ConfigError
from catdog_lightning.models import MLP, CatDogClassifier, SmallCNN


@pytest.mark.parametrize("hidden_dims", [[8], [256, 64], [32, 16, 8, 4]])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_mlp_shapes(hidden_dims, activation):
    net = MLP(image_size=12, hidden_dims=hidden_dims, activation=activation)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linears] == [3 * 12 * 12, *hidden_dims]
    assert linears[-1].out_features == 1
    assert net(torch.rand(5, 3, 12, 12)).shape == (5,)


def test_lesson_default_is_12288_256_64_1():
    linears = [m for m in MLP().modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12288, 256), (256, 64), (64, 1)]


def test_he_init_for_relu_and_xavier_for_tanh():
    torch.manual_seed(0)
    relu_w = MLP(image_size=32, hidden_dims=[512], activation="relu").layers[1].weight
    tanh_w = MLP(image_size=32, hidden_dims=[512], activation="tanh").layers[1].weight
    fan_in, fan_out = 3 * 32 * 32, 512
    assert relu_w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert tanh_w.std().item() == pytest.approx(5 / 3 * (2 / (fan_in + fan_out)) ** 0.5, rel=0.05)
    assert torch.all(MLP().layers[1].bias == 0)


def test_dropout_layers_only_when_asked():
    assert not any(isinstance(m, nn.Dropout) for m in MLP(hidden_dims=[4, 4]).modules())
    assert sum(isinstance(m, nn.Dropout) for m in MLP(hidden_dims=[4, 4], dropout=0.3).modules()) == 2


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"lr": -1.0}, "--model.lr"),
        ({"net": net_spec(hidden_dims=[])}, "--model.net.init_args.hidden_dims"),
        ({"net": net_spec(activation="gelu")}, "--model.net.init_args.activation"),
        ({"net": net_spec(dropout=1.0)}, "--model.net.init_args.dropout"),
        ({"net": net_spec(hidden_dim=[3])}, "--model.net.init_args.hidden_dim: MLP takes hidden_dims, activation"),
        ({"net": "vgg16"}, "--model.net vgg16: not a short name"),
        ({"weight_decay": -0.1}, "--model.weight_decay"),
    ],
)
def test_invalid_model_settings(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        CatDogClassifier(**kwargs)


def test_classifier_emits_logits_and_predicts_probabilities():
    model = CatDogClassifier(image_size=8, net=net_spec(hidden_dims=[4]))
    x = torch.rand(3, 3, 8, 8)
    probs = model.predict_step((x, torch.zeros(3)), 0)  # N x 2: P(dog), P(cat)
    assert probs.shape == (3, 2) and torch.allclose(probs[:, 1], torch.sigmoid(model(x)))
    assert torch.all((probs > 0) & (probs < 1)) and torch.allclose(probs.sum(1), torch.ones(3))


def test_three_classes_or_more_get_a_logit_each_cross_entropy_and_softmax():
    model = CatDogClassifier(image_size=8, net=net_spec(hidden_dims=[4]), class_names=["hat", "pants", "shoes"])
    x = torch.rand(5, 3, 8, 8)
    assert model(x).shape == (5, 3)
    probs = model.predict_step((x, torch.zeros(5)), 0)
    assert torch.allclose(probs, torch.softmax(model(x), -1)) and torch.allclose(probs.sum(1), torch.ones(5))
    labels = torch.tensor([0, 1, 2, 0, 1])
    loss, scores, _ = model._shared_step((x, labels))
    assert loss.ndim == 0 and scores.shape == (5, 3)
    assert torch.equal(loss, torch.nn.functional.cross_entropy(model(x), labels))


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = CatDogClassifier(image_size=8, net=net_spec(hidden_dims=[16]))
    batch = (torch.rand(16, 3, 8, 8), torch.randint(0, 2, (16,)))
    opt = model.configure_optimizers()
    before, _, _ = model._shared_step(batch)
    for _ in range(5):
        opt.zero_grad()
        loss, _, _ = model._shared_step(batch)
        loss.backward()
        opt.step()
    after, _, _ = model._shared_step(batch)
    assert after < before


def test_hyperparameters_are_primitives():
    model = CatDogClassifier(image_size=16, net=net_spec(hidden_dims=[8, 4], activation="tanh"))
    assert dict(model.hparams) == {
        # the network as its class_path and every argument: plain data, built again from it on loading
        "net": {
            "class_path": "catdog_lightning.models.mlp.MLP",
            "init_args": {"hidden_dims": [8, 4], "activation": "tanh", "dropout": 0.0},
        },
        "image_size": 16,
        "class_names": ["dog", "cat"],  # the lesson's, in label order (1 = cat)
        "lr": 1e-3,
        "weight_decay": 0.0,
        "scheduler": "none",
        "optimizer": "adam",
        "tta_flip": False,
        "tta_zoom": 1.0,
        "class_weights": "none",
    }


def test_the_lightning_module_takes_at_most_8_settings_and_its_network_as_one():
    """Eight settings a person gives, beside the two that follow the data through the CLI's links (the image
    size and the classes: training.settings.LINKS)."""
    import inspect

    from catdog_lightning import models
    from catdog_lightning.training.settings import LINKS

    linked = {target for _, target, _ in LINKS}
    assert linked == {"image_size", "class_names"}
    modules = [c for c in vars(models).values() if isinstance(c, type) and issubclass(c, L.LightningModule)]
    assert modules and all(len(set(inspect.signature(c).parameters) - linked) <= 8 for c in modules)
    built = SmallCNN(channels=[4])
    assert CatDogClassifier(net=built, image_size=8).net is built  # a network built by the caller, as it is


def test_tta_flip_averages_each_image_with_its_mirror_at_evaluation_only():
    torch.manual_seed(0)
    model = CatDogClassifier(image_size=8, net=net_spec(hidden_dims=[6]), tta_flip=True)
    images = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        plain, mirrored = model.net(images), model.net(images.flip(-1))
        assert not torch.allclose(plain, mirrored)
        assert torch.equal(model.train()(images), plain)  # training sees each image once
        model.eval()
        assert torch.allclose(model(images), (plain + mirrored) / 2)
        assert torch.allclose(model(images.flip(-1)), model(images))  # a picture and its mirror: one answer
        assert torch.allclose(model.network()(images), model(images))  # what exports compute


def test_centre_zoom_keeps_the_middle_of_the_picture_at_full_size():
    from catdog_lightning.models.layers import centre_zoom, zoom_margin

    assert [zoom_margin(64, z) for z in (1.0, 0.9, 0.5)] == [0, 3, 16]  # 0.9 of 64: keeps 58 pixels
    assert zoom_margin(64, 0.001) == 31 and zoom_margin(63, 0.001) == 31  # never an empty crop
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(centre_zoom(images, 0), images)
    framed = torch.zeros(2, 3, 16, 16)
    framed[..., 4:12, 4:12] = 1.0  # a bright middle half in a dark frame
    assert torch.equal(centre_zoom(framed, 4), torch.ones(2, 3, 16, 16))  # only the middle is left
    zoomed = centre_zoom(framed, 2)  # keeps 12 of 16 pixels: the frame narrows from 4 to 2 (x 16/12)
    assert zoomed.shape == framed.shape and zoomed[..., 8, 0].max() < 0.5 and zoomed[..., 8, 3].min() > 0.5


def test_tta_zoom_also_averages_the_zoomed_centre_and_its_mirror():
    from catdog_lightning.models.layers import centre_zoom

    torch.manual_seed(0)
    model = CatDogClassifier(image_size=16, net=net_spec("cnn", channels=[4, 8]), tta_flip=True, tta_zoom=0.75)
    images = torch.rand(5, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        zoomed = centre_zoom(images, 2)
        looks = [model.net(v) for v in (images, zoomed, images.flip(-1), zoomed.flip(-1))]
        assert not torch.allclose(looks[0], looks[1])
        assert torch.allclose(model(images), sum(looks) / 4, atol=1e-6)
        assert torch.allclose(model.network()(images), model(images))  # what exports compute
        model.hparams.tta_flip = False  # zoom alone: the image and its centre
        assert torch.allclose(model(images), (looks[0] + looks[1]) / 2, atol=1e-6)
        assert torch.equal(model.train()(images), model.net(images))  # training sees each image once


@pytest.mark.parametrize("zoom", [0.0, -0.5, 1.5])
def test_tta_zoom_outside_0_to_1_is_refused(zoom):
    with pytest.raises(ConfigError, match="--model.tta_zoom"):
        CatDogClassifier(tta_zoom=zoom)


@pytest.mark.parametrize(
    "name, kind", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_flag_picks_the_optimizer_and_its_weight_decay(name, kind):
    optimizer = CatDogClassifier(
        image_size=8, net=net_spec(hidden_dims=[4]), optimizer=name, weight_decay=0.05
    ).configure_optimizers()
    assert type(optimizer) is kind and optimizer.defaults["weight_decay"] == 0.05
    if name == "sgd":
        assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"]


@pytest.mark.parametrize("convs_per_block", [1, 2])
@pytest.mark.parametrize("size", [8, 16, 33, 64, 96])
def test_cnn_works_at_any_image_size(size, convs_per_block):
    from catdog_lightning.models import SmallCNN

    net = SmallCNN(channels=[4, 8, 8, 16], convs_per_block=convs_per_block).eval()
    assert net(torch.rand(3, 3, size, size)).shape == (3,)


def test_convs_per_block_stacks_convolutions_before_each_pool():
    from catdog_lightning.models import SmallCNN

    layers = [type(m).__name__ for m in SmallCNN(channels=[4, 8], convs_per_block=2).features]
    block = ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert layers == block + block
    with pytest.raises(ConfigError, match="--model.net.init_args.convs_per_block"):
        SmallCNN(channels=[4], convs_per_block=0)


def test_cnn_training_step_lowers_the_loss_and_hparams_stay_primitive():
    torch.manual_seed(0)
    model = CatDogClassifier(image_size=16, net=net_spec("cnn", channels=[4, 8]))
    assert type(model.net).__name__ == "SmallCNN" and model.hparams.net["class_path"].endswith("cnn.SmallCNN")
    batch = (torch.rand(16, 3, 16, 16), torch.randint(0, 2, (16,)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    before = model._shared_step(batch)[0].item()
    for _ in range(10):
        opt.zero_grad()
        model._shared_step(batch)[0].backward()
        opt.step()
    assert model._shared_step(batch)[0].item() < before
    with pytest.raises(ConfigError, match="--model.net.init_args.channels"):
        CatDogClassifier(net=net_spec("cnn", channels=[]))
