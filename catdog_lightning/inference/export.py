"""Export a trained model to ONNX or TorchScript, with its input contract written into the file."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..allow_list import allowed_modules
from ..classes import is_catdog
from ..errors import ConfigError
from ..models.loading import load_model
from ..storage.runs import DEFAULT_LOGS_DIR, resolve_checkpoint
from .locate import checkpoint_or_latest

FORMATS = ("onnx", "onnx-int8", "torchscript")


class ProbabilityModel(nn.Module):
    """What an exported file computes: ``N x 3 x S x S`` float RGB in [0, 1] -> ``N`` values of P(second class)
    (P(cat) for the lesson's) for two classes, else ``N x C`` class probabilities."""

    def __init__(self, net: nn.Module, count: int = 2):
        super().__init__()
        self.net, self.count = net, count

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        return torch.sigmoid(logits) if self.count == 2 else torch.softmax(logits, -1)


def needs_export_extra() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401 (torch's ONNX exporter needs it)
    except ImportError:
        raise ConfigError(
            "ONNX export and --backend onnx/int8 need the export extra: pip install -e '.[export]'"
        ) from None


def output_name(classes: list[str]) -> str:
    """The graph's output: p_cat for the lesson's classes, probability (of the second class) for two others,
    probabilities for more."""
    return "p_cat" if is_catdog(classes) else "probability" if len(classes) == 2 else "probabilities"


def input_contract(image_size: int, classes: list[str]) -> dict:
    if is_catdog(classes):
        output = "p_cat: float32 tensor N, P(cat); label = cat if p_cat > 0.5 else dog"
    elif len(classes) == 2:
        output = f"probability: float32 tensor N, P({classes[1]}); label = {classes[1]} if above 0.5 else {classes[0]}"
    else:
        output = f"probabilities: float32 tensor N x {len(classes)}, one column per class in the order of 'classes'"
    return {
        "input": f"images: float32 tensor N x 3 x {image_size} x {image_size}, RGB, values in [0, 1]",
        "preprocess": f"apply EXIF orientation, convert to RGB (transparency over white), resize to "
        f"{image_size}x{image_size} bilinear (catdog_lightning.data.decode_image does all of it, giving S x S x 3 "
        "uint8), transpose to 3 x S x S, divide by 255; "
        "per-channel standardisation, if the model was trained with it, happens inside the model",
        "output": output,
        "classes": json.dumps(classes),
    }


def export_model(
    ckpt_path: str | os.PathLike | None, fmt: str, output: str | os.PathLike, allowed: tuple[str, ...] = ()
) -> dict:
    """Write the model at ``ckpt_path`` to ``output``; returns its input contract. ``allowed``: modules beyond
    this package its network may come from."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    ckpt_path = resolve_checkpoint(ckpt_path, DEFAULT_LOGS_DIR)
    trained = load_model(ckpt_path, allowed=allowed)
    size = int(trained.hparams.image_size)
    classes = list(trained.hparams.class_names)
    model = ProbabilityModel(trained.network(), len(classes)).eval()
    example = torch.rand(2, 3, size, size)
    contract = input_contract(size, classes)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx-int8":  # the fp32 graph, then its INT8 copy
        needs_export_extra()
        from .quantize import calibration_images, quantize

        with tempfile.TemporaryDirectory(prefix="catdog-export-") as tmp:
            export_model(ckpt_path, "onnx", Path(tmp) / "fp32.onnx", allowed)
            quantize(Path(tmp) / "fp32.onnx", output, calibration_images(ckpt_path))
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # torch.jit is deprecated upstream, yet still what TorchScript users load
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example)
            torch.jit.save(traced, str(output), _extra_files={"contract.json": json.dumps(contract)})
    else:
        needs_export_extra()
        import onnx

        batch = torch.export.Dim("batch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["images"],
                output_names=[output_name(classes)],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
        proto = program.model_proto
        proto.doc_string = json.dumps(contract)
        for key, value in contract.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(output))
    return contract


def export_command(args: dict) -> None:
    """scripts/export.py: write the file and print its input contract."""
    if not args.get("output"):
        raise ConfigError("--output is required, e.g. --output model.onnx")
    ckpt = checkpoint_or_latest(args.get("ckpt_path"), args["logs_dir"])
    contract = export_model(ckpt, args["format"], args["output"], allowed_modules(args))
    print(f"wrote {args['output']} ({args['format']})")
    for key, value in contract.items():
        print(f"  {key:<10} {value}")
