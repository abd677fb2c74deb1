"""The lesson's L-layer network, written from scratch in NumPy.

Read it top to bottom, as a lesson: activations, initialisation, forward pass, cost, backward
pass, update, training loop. (One file on purpose, over 250 lines: it is read as
one lesson.) Shapes follow the lesson: ``X`` is ``n_x x m`` (one example per
column), ``W[l]`` is ``n[l] x n[l-1]``, ``b[l]`` is ``n[l] x 1``, labels ``Y`` are ``1 x m``.

    forward, layer l:   Z[l] = W[l] A[l-1] + b[l]        A[l] = g[l](Z[l])
    output:             A[L] = sigmoid(Z[L]) = P(cat)
    cost:               J = -1/m sum( Y log A[L] + (1 - Y) log(1 - A[L]) )
    backward, layer l:  dZ[l] = dA[l] * g'[l](Z[l])
                        dW[l] = dZ[l] A[l-1]^T / m
                        db[l] = mean(dZ[l]) over examples
                        dA[l-1] = W[l]^T dZ[l]
    update, EVERY l:    W[l] -= lr dW[l]          b[l] -= lr db[l]

NumPy only: no framework hides a step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

LESSON_LAYER_DIMS = (12288, 20, 10, 5, 1)
ACTIVATIONS = ("sigmoid", "tanh", "relu")  # the lesson's func_choose menu
INITS = ("he", "small")


# --- activations g(Z) and their derivatives g'(Z) --------------------------------------------


def sigmoid(Z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-Z), written so that e^x is only taken of x <= 0 and can never overflow."""
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1 / (1 + e), e / (1 + e))


def activation(Z: np.ndarray, name: str) -> np.ndarray:
    if name == "sigmoid":
        return sigmoid(Z)
    if name == "tanh":
        return np.tanh(Z)
    return np.maximum(Z, 0)  # relu


def activation_derivative(Z: np.ndarray, name: str) -> np.ndarray:
    if name == "sigmoid":
        s = sigmoid(Z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(Z) ** 2
    return (Z > 0).astype(Z.dtype)  # relu


# --- initialisation ---------------------------------------------------------------------------


def initialize_parameters(
    layer_dims: Sequence[int], init: str = "he", rng: np.random.Generator | None = None, dtype=np.float64
) -> dict[str, np.ndarray]:
    """``W1..WL`` and ``b1..bL``.

    ``he``: W ~ N(0, 2 / n[l-1]), which keeps the variance of ReLU activations steady from layer to
    layer. ``small``: the lesson's ``randn * 0.01``, kept so you can watch it fail: the signal shrinks
    ~100x per layer, the output sits at sigmoid(0) = 0.5 and the cost at -log(0.5) = 0.6931.
    """
    rng = rng or np.random.default_rng(0)
    params = {}
    for l in range(1, len(layer_dims)):  # noqa: E741 (l is the lesson's layer index)
        scale = np.sqrt(2.0 / layer_dims[l - 1]) if init == "he" else 0.01
        params[f"W{l}"] = (rng.standard_normal((layer_dims[l], layer_dims[l - 1])) * scale).astype(dtype)
        params[f"b{l}"] = np.zeros((layer_dims[l], 1), dtype=dtype)
    return params


# --- forward pass -------------------------------------------------------------------------------


def forward(
    X: np.ndarray, params: dict[str, np.ndarray], hidden: Sequence[str]
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Logits ``Z[L]`` (``1 x m``) and, per layer, the cache ``(A[l-1], Z[l])`` the backward pass needs.

    ``hidden`` names the activation of each hidden layer; the output layer is always sigmoid, applied
    by the caller (cost and predict) so the cost can use the logits directly.
    """
    L = len(params) // 2
    A, caches = X, []
    for l in range(1, L + 1):  # noqa: E741
        Z = params[f"W{l}"] @ A + params[f"b{l}"]
        caches.append((A, Z))
        A = activation(Z, hidden[l - 1]) if l < L else Z
    return A, caches


# --- cost -------------------------------------------------------------------------------------


def compute_cost(ZL: np.ndarray, Y: np.ndarray) -> float:
    """The lesson's cross-entropy, computed from the logits.

    With A = sigmoid(Z): -(Y log A + (1-Y) log(1-A)) = max(Z, 0) - Z Y + log(1 + e^-|Z|).
    The right side never takes log(0) (A rounding to exactly 0 or 1) nor e^x of a large x.
    """
    return float(np.mean(np.maximum(ZL, 0) - ZL * Y + np.log1p(np.exp(-np.abs(ZL)))))


# --- backward pass ------------------------------------------------------------------------------


def backward(
    ZL: np.ndarray,
    Y: np.ndarray,
    caches: list[tuple[np.ndarray, np.ndarray]],
    params: dict[str, np.ndarray],
    hidden: Sequence[str],
    need_dX: bool = False,
) -> dict[str, np.ndarray]:
    """Gradients ``dW1..dWL``, ``db1..dbL`` of the cost, layer by layer from the output back.

    Output layer: dA[L] * sigmoid'(Z[L]) with dA[L] = -(Y/A - (1-Y)/(1-A)) simplifies to A[L] - Y,
    the same number without the divisions that blow up when A saturates at 0 or 1.
    ``dA[0]`` (the gradient with respect to the pixels) is skipped unless asked for: the update never
    uses it, and it is the most expensive product of all.
    """
    m = Y.shape[1]
    L = len(caches)
    grads = {}
    dZ = sigmoid(ZL) - Y
    for l in range(L, 0, -1):  # noqa: E741
        A_prev, _ = caches[l - 1]
        grads[f"dW{l}"] = dZ @ A_prev.T / m
        grads[f"db{l}"] = np.mean(dZ, axis=1, keepdims=True)
        if l == 1 and not need_dX:
            break
        dA_prev = params[f"W{l}"].T @ dZ
        if l > 1:
            Z_prev = caches[l - 2][1]
            dZ = dA_prev * activation_derivative(Z_prev, hidden[l - 2])
        else:
            grads["dX"] = dA_prev
    return grads


def update_parameters(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
    """Gradient descent on every layer (W and b of l = 1..L), in place."""
    for l in range(1, len(params) // 2 + 1):  # noqa: E741
        params[f"W{l}"] -= lr * grads[f"dW{l}"]
        params[f"b{l}"] -= lr * grads[f"db{l}"]


# --- the network ----------------------------------------------------------------------------------


def _hidden_activations(activations: str | Sequence[str], n_hidden: int) -> list[str]:
    names = [activations] * n_hidden if isinstance(activations, str) else list(activations)
    if len(names) != n_hidden:
        raise ValueError(f"--activations needs one name per hidden layer ({n_hidden}), got {len(names)}: {names}")
    bad = [n for n in names if n not in ACTIVATIONS]
    if bad:
        raise ValueError(f"--activations: unknown {bad}; choose from {', '.join(ACTIVATIONS)}")
    return names


class NumpyNet:
    """An L-layer binary classifier: ``layer_dims[0]`` inputs, hidden layers, one sigmoid output."""

    def __init__(
        self,
        layer_dims: Sequence[int] = LESSON_LAYER_DIMS,
        activations: str | Sequence[str] = "relu",
        init: str = "he",
        seed: int = 1,
        dtype=np.float32,
    ):
        layer_dims = [int(d) for d in layer_dims]
        if len(layer_dims) < 2 or layer_dims[-1] != 1 or min(layer_dims) < 1:
            raise ValueError(f"--layer_dims must list input size, hidden sizes and a final 1, got {layer_dims}")
        if init not in INITS:
            raise ValueError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
        self.layer_dims, self.init = layer_dims, init
        self.hidden = _hidden_activations(activations, len(layer_dims) - 2)
        self.params = initialize_parameters(layer_dims, init, np.random.default_rng(seed), dtype)

    def cost_and_grads(self, X: np.ndarray, Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        ZL, caches = forward(X, self.params, self.hidden)
        return compute_cost(ZL, Y), backward(ZL, Y, caches, self.params, self.hidden)

    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        lr: float = 0.01,
        iterations: int = 2000,
        batch_size: int | None = None,
        record_every: int = 100,
        seed: int = 0,
        on_record: Callable[[int, float], None] | None = None,
    ) -> list[tuple[int, float]]:
        """Gradient descent; each iteration is one pass over ``X`` (full batch, as in the lesson, or
        shuffled mini-batches of ``batch_size``). Returns ``(iteration, cost)`` every ``record_every``
        iterations and at the last one, each also passed to ``on_record``.
        """
        X, Y = X.astype(self.dtype, copy=False), Y.astype(self.dtype, copy=False).reshape(1, -1)
        m = X.shape[1]
        rng = np.random.default_rng(seed)
        costs = []
        for i in range(iterations):
            if batch_size is None or batch_size >= m:
                cost, grads = self.cost_and_grads(X, Y)
                update_parameters(self.params, grads, lr)
            else:
                order, total = rng.permutation(m), 0.0
                for start in range(0, m, batch_size):
                    idx = order[start : start + batch_size]
                    batch_cost, grads = self.cost_and_grads(X[:, idx], Y[:, idx])
                    update_parameters(self.params, grads, lr)
                    total += batch_cost * len(idx)
                cost = total / m
            if i % record_every == 0 or i == iterations - 1:
                costs.append((i, cost))
                if on_record is not None:
                    on_record(i, cost)
        return costs

    @property
    def dtype(self):
        return self.params["W1"].dtype

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(cat) for each column of ``X``."""
        ZL, _ = forward(X.astype(self.dtype, copy=False), self.params, self.hidden)
        return sigmoid(ZL).ravel()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 (cat) where P(cat) > 0.5, else 0 (dog)."""
        return (self.predict_proba(X) > 0.5).astype(np.int64)

    def accuracy(self, X: np.ndarray, Y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(Y).ravel()))

    def save(self, path: str | os.PathLike) -> None:
        np.savez(
            path,
            layer_dims=np.array(self.layer_dims),
            hidden=np.array(self.hidden),
            init=np.array(self.init),
            **self.params,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> NumpyNet:
        with np.load(path, allow_pickle=False) as saved:
            net = cls(saved["layer_dims"].tolist(), saved["hidden"].tolist(), str(saved["init"]))
            net.params = {k: saved[k] for k in saved.files if k[0] in "Wb" and k[1:].isdigit()}
        return net


def images_to_columns(images) -> np.ndarray:
    """``N x 3 x S x S`` uint8 images (tensor or array) -> the lesson's ``3*S*S x N`` floats in [0, 1]."""
    arr = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    return (arr / 255.0).T.copy()
