"""INT8 copies of an fp32 ONNX export: ONNX Runtime's static quantisation, calibrated on the run's training photos.

Weights per output channel in int8, activations in uint8 with ranges calibrated on the run's own training photos
(decoded as training decoded them), QDQ format, so ONNX Runtime's integer kernels (VNNI/AMX on x86, dot-product on
Arm) do the multiplications. Accuracy and speed against fp32, measured: docs/performance.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..storage.checkpoints import read_checkpoint

CALIBRATION_PHOTOS = 128  # training photos whose activations set the INT8 ranges
_CALIBRATION_BATCH = 8


def calibration_images(ckpt: str | os.PathLike, count: int = CALIBRATION_PHOTOS) -> np.ndarray:
    """``count`` photos of the checkpoint's own training split (evenly spread over it), ``N x 3 x S x S`` uint8."""
    from ..training.stages import checkpoint_data

    datamodule = checkpoint_data(read_checkpoint(ckpt), {"augment": False})
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.train_set
    rows = torch.linspace(0, len(train) - 1, min(count, len(train))).round().long()
    return train.take(rows).numpy()


class _Photos:
    """ONNX Runtime's CalibrationDataReader over uint8 photos: float batches in [0, 1], as the model takes them."""

    def __init__(self, images: np.ndarray):
        self.batches = iter(np.array_split(images, max(1, len(images) // _CALIBRATION_BATCH)))

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch.astype(np.float32) / 255}


def quantize(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, images: np.ndarray) -> None:
    """Write the INT8 copy of an fp32 export, calibrated on ``images`` (uint8 ``N x 3 x S x S``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="catdog-int8-") as tmp:
        prepared = str(Path(tmp) / "prepared.onnx")
        quant_pre_process(str(fp32_path), prepared, skip_symbolic_shape=True)  # folds and infers shapes
        quantize_static(
            prepared,
            str(int8_path),
            _Photos(images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
