"""Plain networks (``--model.net``: the MLP, the small CNN, pretrained backbones, or one of your own) and the
LightningModule that trains any of them. Knows nothing of folders."""

from .classifier import CatDogClassifier
from .cnn import SmallCNN
from .mlp import ACTIVATIONS, MLP
from .pretrained import PretrainedNet

__all__ = ["ACTIVATIONS", "MLP", "CatDogClassifier", "PretrainedNet", "SmallCNN"]
