"""The lesson's network as a plain ``nn.Module``: flattened pixels -> hidden layers -> one logit (one per class
for three classes or more)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError
from .layers import one_logit_flat, refuse_oversized

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """``3*S*S -> hidden_dims... -> num_outputs``; the lesson's default is ``[256, 64]`` with ReLU and one logit."""

    def __init__(
        self,
        image_size: int = 64,
        hidden_dims: Sequence[int] = (256, 64),
        activation: Literal["relu", "tanh", "sigmoid"] = "relu",
        dropout: float = 0.0,
        num_outputs: int = 1,
    ):
        """
        Args:
            image_size: the input's side (follows --data.image_size).
            num_outputs: logits per image (follows the data's classes: 1 for two, else one per class).
            hidden_dims: hidden layer sizes, any length (the lesson: [256, 64]).
            activation: the hidden layers' activation: relu, tanh or sigmoid.
            dropout: dropout after each hidden layer (0 = off).
        """
        super().__init__()
        self.num_outputs = num_outputs
        if not hidden_dims or any(int(d) < 1 for d in hidden_dims):
            raise ConfigError(
                f"--model.net.init_args.hidden_dims must be a non-empty list of positive sizes, got {list(hidden_dims)}; "  # noqa: E501
                "try [256, 64]."
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"--model.net.init_args.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"--model.net.init_args.dropout must be in [0, 1), got {dropout}.")
        dims = [3 * image_size * image_size, *(int(d) for d in hidden_dims)]
        refuse_oversized(
            sum(a * b for a, b in zip(dims, [*dims[1:], num_outputs], strict=True)), "--model.net.init_args.hidden_dims"
        )
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=False):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-1], num_outputs))
        self.layers = nn.Sequential(*layers)
        self._init_weights(activation)

    def _init_weights(self, activation: str) -> None:
        # He keeps ReLU activations' variance steady through depth; Xavier does the same for tanh/sigmoid.
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        for layer in linears:
            if activation == "relu":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain(activation))
            nn.init.zeros_(layer.bias)
        nn.init.xavier_normal_(linears[-1].weight)  # the output layer feeds a sigmoid, not the hidden activation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``N x 3 x S x S`` floats in [0, 1] -> ``N`` logits (P(cat) = sigmoid(logit)), or ``N x num_outputs``."""
        return one_logit_flat(self.layers(images), self.num_outputs)
