"""Plain networks and the LightningModule that trains them. Knows nothing of folders."""

from .classifier import CatDogClassifier
from .cnn import SmallCNN
from .mlp import ACTIVATIONS, MLP

__all__ = ["ACTIVATIONS", "MLP", "CatDogClassifier", "SmallCNN"]
