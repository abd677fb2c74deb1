"""Which network a run trains: ``--model.net``, a class_path/init_args mapping as LightningCLI takes it, or a
short name (``mlp``, ``cnn``, a backbone such as ``efficientnet_lite1``).

A network is any ``nn.Module`` from ``N x 3 x S x S`` float images to ``N`` logits (two classes) or ``N x C``
(C classes); one that takes an ``image_size`` argument is given the data's, one that takes ``num_outputs`` is
given the logits the data's classes need. Its own settings are its own ``init_args``. What checkpoints
record is the mapping with every argument filled in: plain data, read back only after the allow-list has
passed its class_path (the callers check it: settings files, runs, checkpoints).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect

from torch import nn

from ..errors import ConfigError
from .backbones import BACKBONES

FLAG = "--model.net"
MLP_PATH, CNN_PATH = "catdog_lightning.models.mlp.MLP", "catdog_lightning.models.cnn.SmallCNN"
PRETRAINED_PATH = "catdog_lightning.models.pretrained.PretrainedNet"
# The lesson's network: the LightningModule's default (a mapping, so --model.net.init_args.* flags need no class).
DEFAULT_NET = {"class_path": MLP_PATH}
# The same classes by the names catdog_lightning.models exports them under (the recipes use those).
EXPORTED = {f"catdog_lightning.models.{p.rpartition('.')[2]}": p for p in (MLP_PATH, CNN_PATH, PRETRAINED_PATH)}
SHORT_NAMES = ("mlp", "cnn", *BACKBONES)
LINKED = ("image_size", "num_outputs")  # a network's arguments that follow the data, never set by hand


def expand(net: str | dict | None) -> dict:
    """``{"class_path": ..., "init_args": {...}}`` for a short name, a class path or a (partial) mapping; a
    mapping without a class_path means the default network with those arguments."""
    if net is None:
        net = {}
    if isinstance(net, str):
        net = {"class_path": net}
    if not isinstance(net, dict) or not isinstance(net.get("init_args") or {}, dict):
        raise ConfigError(f"{FLAG}: give a short name ({', '.join(SHORT_NAMES[:3])}, ...) or class_path and init_args.")
    path, init_args = str(net.get("class_path") or MLP_PATH), dict(net.get("init_args") or {})
    for linked in LINKED:  # the data's, always (a parser fills in the class's default)
        init_args.pop(linked, None)
    path = EXPORTED.get(path, path)
    if path in ("mlp", "cnn"):
        path = MLP_PATH if path == "mlp" else CNN_PATH
    elif path in BACKBONES:
        path, init_args = PRETRAINED_PATH, {"arch": path, **init_args}
    elif "." not in path:
        close = difflib.get_close_matches(path, SHORT_NAMES, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f": {', '.join(SHORT_NAMES)}"
        raise ConfigError(f"{FLAG} {path}: not a short name nor module.ClassName{hint}")
    return {"class_path": path, "init_args": init_args}


def short_name(spec: dict) -> str:
    """What a person calls the network: mlp, cnn, the backbone, or the class path of one of their own."""
    spec = expand(spec)
    path, names = spec["class_path"], {MLP_PATH: "mlp", CNN_PATH: "cnn"}
    return spec["init_args"].get("arch", path) if path == PRETRAINED_PATH else names.get(path, path)


def _plain(value):
    """Tuples as lists, so the settings are YAML's and a checkpoint's plain data."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value


def net_class(spec: dict) -> type[nn.Module]:
    module_name, _, name = spec["class_path"].rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name, None)
    except ImportError as exc:
        raise ConfigError(f"{FLAG} {spec['class_path']}: cannot import it ({exc}).") from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ConfigError(f"{FLAG} {spec['class_path']}: not a torch.nn.Module class.")
    return found


def build_net(net: str | dict | None, image_size: int, num_outputs: int = 1) -> tuple[nn.Module, dict]:
    """The network, and its settings with every argument filled in (those in :data:`LINKED` aside: the data's)."""
    spec = expand(net)
    cls = net_class(spec)
    parameters = inspect.signature(cls).parameters
    unknown = [k for k in spec["init_args"] if k not in parameters]  # (expand has set image_size aside)
    if unknown:
        accepted = ", ".join(p for p in parameters if p not in ("self", *LINKED))
        raise ConfigError(f"{FLAG}.init_args.{unknown[0]}: {cls.__name__} takes {accepted or 'no arguments'}.")
    filled = {
        name: copy.deepcopy(p.default)
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty and name not in LINKED
    }
    init_args = _plain({**filled, **spec["init_args"]})
    linked = {"image_size": image_size, "num_outputs": num_outputs}
    sized = {name: value for name, value in linked.items() if name in parameters}
    try:
        module = cls(**sized, **init_args)
    except TypeError as exc:  # a required argument missing, or one of the wrong kind
        raise ConfigError(f"{FLAG} {spec['class_path']}: {' '.join(str(exc).split())[:200]}") from None
    return module, {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
