"""The lesson's NumPy network: its maths checked against finite differences and torch autograd."""

import json

import numpy as np
import pytest
import torch

from catdog_lightning import numpy_net as nn_np
from catdog_lightning.numpy_net import NumpyNet


def toy(m=12, n_x=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_x, m)), (rng.random((1, m)) > 0.5).astype(np.float64)


def numerical_grads(net, X, Y, eps=1e-6):
    grads = {}
    for key, value in net.params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + eps
            plus = nn_np.compute_cost(nn_np.forward(X, net.params, net.hidden)[0], Y)
            value[idx] = old - eps
            minus = nn_np.compute_cost(nn_np.forward(X, net.params, net.hidden)[0], Y)
            value[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads["d" + key] = g
    return grads


def relative_error(analytic, numeric):
    a = np.concatenate([analytic[k].ravel() for k in sorted(numeric)])
    n = np.concatenate([numeric[k].ravel() for k in sorted(numeric)])
    return np.linalg.norm(a - n) / (np.linalg.norm(a) + np.linalg.norm(n))


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
def test_gradient_check_every_activation_three_hidden_layers(act):
    X, Y = toy()
    net = NumpyNet([7, 5, 4, 3, 1], act, init="he", seed=2, dtype=np.float64)
    for key in net.params:  # non-zero biases so every term of the maths is exercised
        if key.startswith("b"):
            net.params[key] += 0.1
    _, analytic = net.cost_and_grads(X, Y)
    assert relative_error(analytic, numerical_grads(net, X, Y)) < 1e-7


def test_mixed_activations_gradient_check():
    X, Y = toy(seed=3)
    net = NumpyNet([7, 6, 5, 4, 1], ["relu", "tanh", "sigmoid"], seed=4, dtype=np.float64)
    _, analytic = net.cost_and_grads(X, Y)
    assert relative_error(analytic, numerical_grads(net, X, Y)) < 1e-7


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
def test_same_weights_same_cost_and_gradients_as_torch(act):
    X, Y = toy(m=20, n_x=9, seed=5)
    net = NumpyNet([9, 8, 6, 4, 1], act, seed=6, dtype=np.float64)
    cost, grads = net.cost_and_grads(X, Y)
    layers = []
    L = len(net.layer_dims) - 1
    for l in range(1, L + 1):  # noqa: E741
        lin = torch.nn.Linear(net.layer_dims[l - 1], net.layer_dims[l]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(net.params[f"W{l}"]))
            lin.bias.copy_(torch.from_numpy(net.params[f"b{l}"].ravel()))
        layers.append(lin)
        if l < L:
            layers.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[act]())
    model = torch.nn.Sequential(*layers)
    logits = model(torch.from_numpy(X.T)).squeeze(1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(Y.ravel()))
    loss.backward()
    assert abs(loss.item() - cost) < 1e-10
    for l, lin in enumerate(model[::2], start=1):  # noqa: E741
        assert np.abs(lin.weight.grad.numpy() - grads[f"dW{l}"]).max() < 1e-10
        assert np.abs(lin.bias.grad.numpy() - grads[f"db{l}"].ravel()).max() < 1e-10


def test_dX_matches_finite_differences():
    X, Y = toy(m=4, n_x=3, seed=8)
    net = NumpyNet([3, 4, 1], "tanh", seed=1, dtype=np.float64)
    ZL, caches = nn_np.forward(X, net.params, net.hidden)
    dX = nn_np.backward(ZL, Y, caches, net.params, net.hidden, need_dX=True)["dX"]
    eps, numeric = 1e-6, np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += eps
        Xm[idx] -= eps
        numeric[idx] = (
            nn_np.compute_cost(nn_np.forward(Xp, net.params, net.hidden)[0], Y)
            - nn_np.compute_cost(nn_np.forward(Xm, net.params, net.hidden)[0], Y)
        ) / (2 * eps)
    # dA[0] is the gradient of the *summed* per-example losses' mean: the 1/m lives in dW, not in dA.
    assert np.allclose(dX / Y.shape[1], numeric, atol=1e-8)


def test_saturated_outputs_give_finite_cost_and_gradients():
    ZL = np.array([[50.0, -50.0, 50.0, -50.0, 800.0, -800.0]])
    Y = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 1.0]])
    cost = nn_np.compute_cost(ZL, Y)
    assert np.isfinite(cost) and cost == pytest.approx((50 + 50 + 800 + 800) / 6, rel=1e-9)
    assert np.all(np.isfinite(nn_np.sigmoid(np.array([-1000.0, 1000.0]))))
    net = NumpyNet([2, 3, 1], "sigmoid", dtype=np.float64)
    net.params["W2"][:] = 1000.0  # drive the output into saturation
    _, grads = net.cost_and_grads(np.array([[5.0, -5.0], [5.0, -5.0]]), np.array([[0.0, 1.0]]))
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_every_layer_is_updated():
    X, Y = toy()
    net = NumpyNet([7, 5, 4, 1], "relu", dtype=np.float64)
    before = {k: v.copy() for k, v in net.params.items()}
    net.fit(X, Y, lr=0.1, iterations=1)
    assert all(not np.array_equal(before[k], net.params[k]) for k in before if k.startswith("W"))


def test_full_batch_and_mini_batch_both_learn():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 200))
    Y = (X[0:1] + X[1:2] > 0).astype(float)
    for batch_size in (None, 32):
        net = NumpyNet([5, 8, 1], "relu", seed=0, dtype=np.float64)
        costs = net.fit(X, Y, lr=0.1, iterations=200, batch_size=batch_size, record_every=50)
        assert [i for i, _ in costs] == [0, 50, 100, 150, 199]
        assert costs[-1][1] < 0.5 * costs[0][1]
        assert net.accuracy(X, Y) > 0.9


def test_save_then_load_gives_identical_predictions(tmp_path):
    X, _ = toy(m=30)
    net = NumpyNet([7, 6, 3, 1], ["tanh", "relu"], init="small", seed=9)
    net.save(tmp_path / "net.npz")
    loaded = NumpyNet.load(tmp_path / "net.npz")
    assert loaded.layer_dims == [7, 6, 3, 1] and loaded.hidden == ["tanh", "relu"] and loaded.init == "small"
    assert np.array_equal(net.predict_proba(X), loaded.predict_proba(X))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer_dims": [5, 3, 2]}, "final 1"),
        ({"layer_dims": [5]}, "layer_dims"),
        ({"activations": "gelu"}, "unknown"),
        ({"activations": ["relu"]}, "one name per hidden layer"),
        ({"init": "zeros"}, "--init"),
    ],
)
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NumpyNet(**{"layer_dims": [5, 4, 3, 1], **kwargs})


@pytest.fixture(scope="module")
def builtin_columns(tmp_path_factory):
    """200 built-in training pictures at the lesson's 64x64, as the lesson's 12288 x m matrix."""
    from catdog_lightning.data import generate_dataset
    from catdog_lightning.data.cache import decode_files
    from catdog_lightning.data.scan import scan_folder

    root = generate_dataset(tmp_path_factory.mktemp("np") / "d", n_train=200, n_test=2, seed=0)
    decoded = decode_files(scan_folder(root / "train").files, 64)
    return nn_np.images_to_columns(decoded.images), decoded.labels.numpy().reshape(1, -1).astype(np.float32)


def test_lesson_warning_small_init_is_stuck_at_log_2_and_he_init_learns(builtin_columns):
    X, Y = builtin_columns
    assert X.shape == (12288, 200)
    small = NumpyNet(nn_np.LESSON_LAYER_DIMS, "relu", init="small", seed=1)
    he = NumpyNet(nn_np.LESSON_LAYER_DIMS, "relu", init="he", seed=1)
    small_costs = small.fit(X, Y, lr=0.01, iterations=300, record_every=100)
    he_costs = he.fit(X, Y, lr=0.01, iterations=300, record_every=100)
    assert all(abs(c - np.log(2)) < 1e-3 for _, c in small_costs), small_costs
    assert he_costs[-1][1] < 0.6, he_costs


def test_train_numpy_script_uses_the_same_split_and_logs_to_tensorboard(tiny_dataset, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from catdog_lightning.data import CatDogDataModule
    from lab.cli import numpy_main

    argv = [
        "--data.data_dir",
        str(tiny_dataset),
        "--data.image_size",
        "8",
        "--data.cache_dir",
        str(tmp_path / "c"),
        "--layer_dims",
        "[192, 6, 1]",
        "--iterations",
        "120",
        "--print_every",
        "50",
        "--logs_dir",
        str(tmp_path / "L"),
    ]
    assert numpy_main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "Cost after iteration 0:" in out and "Cost after iteration 100:" in out and "Cost after iteration 119:" in out
    )
    run = tmp_path / "L" / "numpy_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(0 <= metrics[k] <= 1 for k in ("train/acc", "val/acc", "test/acc"))
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 50, 100, 119]
    assert "val/acc" in acc.Tags()["scalars"] and "test/acc" in acc.Tags()["scalars"]
    # The same test images as the Lightning run: the DataModule's split, evaluated by the saved network.
    dm = CatDogDataModule(str(tiny_dataset), image_size=8, cache_dir=str(tmp_path / "c"))
    dm.setup()
    net = NumpyNet.load(run / "numpy_net.npz")
    test_acc = net.accuracy(nn_np.images_to_columns(dm.test_set.images), dm.test_set.labels.numpy())
    assert test_acc == metrics["test/acc"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--layer_dims", "[100, 5, 1]"], "--layer_dims starts with 100"),
        (["--lr", "0"], "--lr must be positive"),
        (["--activations", "[relu]"], "one name per hidden layer"),
        (["--init", "zero"], "--init"),
    ],
)
def test_train_numpy_errors_are_one_line_exit_2(argv, expected, capsys):
    from lab.cli import numpy_main

    assert numpy_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
